"""The worker process: runs the tasks of whoever leased it, or hosts one actor.

::

    owner ──EXECUTE──▶ worker socket ─┐                      ┌─▶ DONE(results) ──▶ owner
    node  ──EXECUTE (actor creation)──┤ main thread reads,   ├─▶ LOG (prints)  ──▶ owner
                                      └─▶ inbox ─▶ run task ─┘   ACTOR_READY   ──▶ node
                      short tasks back to back: DONEs held (replies.py) ──▶ one batch
                      when the inbox runs low, a task blocks in get(), or (the
                      "watch" thread) one is held over 20 ms
    "watch" thread, while a task runs: every 20 ms it sends replies held over 20 ms; once
        the same task has run 20 ms, it reads the sockets (a steal, a cancel, more tasks),
        then sleeps in select() until more comes, read at once; a new task, or replies
        held (the main thread writes the nudge pipe), ends that wait

Workers are forked by the zygote with the runtime already imported, so a
new one is ready in milliseconds. The main thread both reads the sockets
and runs tasks (no hand-off between threads on the hot path). A task's
top-level ObjectRef arguments arrive resolved (inline bytes, or the path
of a shared-memory segment); its return values are pickled here and
written to shared memory when large. An actor worker keeps its instance
between calls; with ``max_concurrency > 1`` calls run on a thread pool,
and ``async def`` methods on an event loop, while the main thread reads.
A task that blocks in `get` hands the tasks queued behind it back to
their owners, who run them elsewhere. A steal (an idle worker of the same
owner takes the later half of this one's queue) is answered for all its
tasks as soon as it is read: REJECTED, and they are skipped when the loop
reaches them. The main thread reads between tasks; while one task runs over
20 ms, the watch thread reads for it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import config as cfg
from .. import session
from ..client import NODE, Client
from ..exceptions import ObjectLostError, TaskCancelledError, TaskError, task_error_from_exception
from ..prctl import block_sigint, set_process_name, sigint_blocked
from ..remote_traceback import RemoteTraceback
from ..timeline import EVENTS_LATE_S, Recorder
from ..wire import serialization, transport
from ..wire.protocol import ACTOR_CALL, ACTOR_CREATE, Kind, TaskSpec, spec_of
from ..wire.serialization import Dep
from . import output
from .replies import LATE_S, Replies

log = logging.getLogger(__name__)

PARK_AFTER = 50  # idle looks of the watch thread (LATE_S apart: a second) before it parks
QUIET_S = 5.0  # s: the watch thread, asleep until the sockets have something (or a nudge), looks again


class Current:
    """What the running task is (for get_runtime_context and nested submissions)."""

    __slots__ = ("task_id", "actor_id", "ctx", "name")

    def __init__(self, task_id: bytes, actor_id: bytes, ctx: Any, name: str) -> None:
        self.task_id, self.actor_id, self.ctx, self.name = task_id, actor_id, ctx, name


_local = threading.local()
_process_task: list[Current | None] = [None]


def current_task() -> Current | None:
    cur = getattr(_local, "task", None)
    return cur if cur is not None else _process_task[0]


def helper_thread(name: str, target: Any, *args: Any) -> None:
    """Start a daemon thread of the worker's own, which never takes SIGINT: a cancel's
    signal must land in the main thread, where it cuts the task's blocking call short."""
    with sigint_blocked():
        threading.Thread(target=target, args=args, name=name, daemon=True).start()


class WorkerLoop:
    def __init__(self, client: Client, conf: dict) -> None:
        self.client = client
        self.conf = conf
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.functions: dict[bytes, Any] = {}
        self.instance: Any = None
        self.actor_id = b""
        self.class_name = ""
        self.pool: ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.async_slots: threading.Semaphore | None = None
        self.in_task = False
        self.sigint_seen = False  # a SIGINT came between tasks (a cancel's, maybe of the next)
        self.cancelled: dict[bytes, str] = {}  # task id -> "drop" | "interrupt"
        self.queued: set[bytes] = set()  # ids of the tasks in the inbox (not started)
        self.claim = threading.Lock()  # taking a task from the inbox, or giving it back
        self.pid = os.getpid()
        ip = conf.get("ip", "127.0.0.1")
        self.ip_suffix = "" if ip in ("127.0.0.1", "localhost") else f", ip={ip}"
        self.where = f"{socket.gethostname()} (pid={self.pid}{self.ip_suffix})"
        self.events = Recorder(conf["cluster_id"], conf["node_id"], self.pid)
        self.replies = Replies()  # DONEs held back while short tasks run back to back
        self._watch: threading.Event | None = None  # wakes the watch thread (watch())
        self.watching = False  # the watch thread is awake: no need to wake it
        self.started = 0  # tasks started by the main thread (the watch thread's clock)
        self.quiet = False  # the watch thread sleeps until the sockets have something
        self.nudge_r = self.nudge_w = -1  # ... or this pipe: replies held meanwhile
        client.on_message = self.on_message
        client.on_blocked = self.hand_back_queued

    def on_message(self, msg: tuple, link: transport.Link | None) -> None:
        """Called by whichever thread reads the sockets."""
        kind = msg[0]
        if kind == Kind.EXECUTE:
            spec = spec_of(msg[1]) if len(msg) == 4 else None
            if spec is None:
                log.warning("dropped an EXECUTE whose task is not a TaskSpec's fields")
                return
            with self.claim:
                self.queued.add(spec.task_id)
                self.inbox.put((spec, msg[2], msg[3], link))
        elif kind == Kind.CANCEL:
            task_id, mode = msg[1], msg[2]
            with self.claim:
                if mode != "steal":
                    self.cancelled[task_id] = mode
                elif task_id in self.queued:
                    # Not started: its owner has a free worker for it now, not once this
                    # one reaches it (a steal takes the later half of a queue). Skipped then.
                    # (Started or done: its DONE answers the steal.)
                    self.queued.discard(task_id)
                    self.cancelled[task_id] = "drop"
                    self.client.queue(link, (Kind.REJECTED, [task_id]))
        elif kind == Kind.EXIT:
            self.inbox.put(None)

    def on_sigint(self, signum, frame) -> None:
        # An owner cancels a running task with SIGINT (cancel(force=False)).
        # Outside a task it must not interrupt the worker's own bookkeeping.
        if self.in_task:
            raise KeyboardInterrupt
        self.sigint_seen = True  # the next task looks for its CANCEL before it starts

    def hand_back_queued(self) -> None:
        """The running task blocks in get(): tasks queued behind it go back to their owners."""
        self.release()  # what it waits for may be a result held here
        if self.actor_id:
            return  # an actor's calls must run here, in order
        kept, back = [], {}
        with self.claim:
            while not self.inbox.empty():
                item = self.inbox.get()
                if (
                    item is not None
                    and item[3] is not None
                    and item[0].kind not in (ACTOR_CALL, ACTOR_CREATE)
                ):
                    task_id = item[0].task_id
                    if self.cancelled.get(task_id) == "drop":
                        # Stolen and answered already: a second REJECTED would take the task
                        # from the worker it went to next, and this mark, left behind,
                        # would swallow it if it came back here (the owner then waits forever).
                        del self.cancelled[task_id]
                        continue
                    back.setdefault(item[3], []).append(task_id)
                    self.queued.discard(task_id)
                else:
                    kept.append(item)
            for item in kept:
                self.inbox.put(item)
        for link, task_ids in back.items():
            self.client.queue(link, (Kind.REJECTED, task_ids))

    def run(self) -> None:
        signal.signal(signal.SIGINT, self.on_sigint)
        inbox = self.inbox
        client = self.client
        events = self.events

        def came() -> bool:
            return not inbox.empty()

        just_read = False
        while True:
            try:
                if inbox.empty():
                    if self.replies.held or events.held:
                        self.release()
                    # Held events are written within EVENTS_LATE_S, also when idle.
                    client.pump(EVENTS_LATE_S if events.held else 1.0, came)
                    just_read = True
                    continue
                if not self.actor_id and not just_read:
                    client.pump(0)  # a cancel or a steal may be waiting for the next task
                just_read = False
                with self.claim:
                    item = inbox.get()
                    if item is not None:
                        self.queued.discard(item[0].task_id)
                if item is None:
                    self.release()
                    self.events.flush()
                    break
                spec, resolved, gpu_ids, link = item
                now = time.monotonic()
                if self.replies.held:
                    if not self.replies.may_hold(spec.function_id, now, inbox.qsize()):
                        self.release()
                elif self.events.due(now):  # a busy worker's events too
                    self.events.flush()
                self.started += 1
                if not self.watching:  # parked after a second without tasks
                    self.watching = True
                    self.watch().set()
                if self.cancelled.get(spec.task_id) == "drop":
                    del self.cancelled[spec.task_id]
                    continue
                if gpu_ids:
                    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
                if spec.kind == ACTOR_CALL:
                    self.dispatch_call(spec, resolved, link)
                elif spec.kind == ACTOR_CREATE:
                    self.create_actor(spec, resolved)
                else:
                    self.run_task(spec, resolved, link)
            except KeyboardInterrupt:
                continue  # an interrupt that arrived after its task ended
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        client.flush()

    # -- functions --------------------------------------------------------
    def function(self, function_id: bytes) -> Any:
        fn = self.functions.get(function_id)
        if fn is not None:
            return fn
        client = self.client
        if function_id not in client.function_blobs:
            client.send(NODE, (Kind.FUNC_FETCH, function_id))
            deadline = time.monotonic() + 30
            while function_id not in client.function_blobs and not client.dead_reason:
                if time.monotonic() > deadline:
                    break
                client.pump(0.05, lambda: function_id in client.function_blobs)
        data, sys_path = client.function_blobs.get(function_id, (None, []))
        if data is None:
            raise RuntimeError(f"function {function_id.hex()} is unknown to this node")
        for entry in sys_path:
            if entry not in sys.path:
                sys.path.append(entry)
        fn = self.functions[function_id] = pickle.loads(data)
        return fn

    # -- arguments and results ---------------------------------------------
    def decode_args(self, spec: TaskSpec, resolved: dict) -> tuple[tuple, dict]:
        args, kwargs = serialization.deserialize(spec.args)
        if not spec.deps:
            return args, kwargs
        values = []
        cache: dict[bytes, Any] = {}
        for dep in spec.deps:
            if dep not in cache:
                is_error, value = resolved[dep]
                try:
                    obj = serialization.deserialize(value)
                except FileNotFoundError:  # spilled after the owner resolved it: ask our node
                    is_error, obj = self.refetch(dep, spec.name, value)
                if is_error:
                    raise obj
                cache[dep] = obj
            values.append(cache[dep])
        args = tuple(values[a.index] if type(a) is Dep else a for a in args)
        if kwargs:
            kwargs = {k: values[v.index] if type(v) is Dep else v for k, v in kwargs.items()}
        return args, kwargs

    def refetch(self, object_id: bytes, task: str, value: Any) -> tuple[bool, Any]:
        """The value of an argument whose segment moved (spilled to disk) since it was resolved.

        Gone from where the node says it is too: ObjectLostError.
        """
        from ..object_ref import ObjectRef

        client = self.client
        ref = ObjectRef(object_id, client)  # held while we read: arrivals are kept for refs we hold
        try:
            for _attempt in range(3):
                client.forget(object_id)
                try:
                    client.fetch([object_id], timeout=10)
                except TimeoutError:
                    break
                is_error, value = client.memstore[object_id]
                try:
                    return is_error, serialization.deserialize(value)
                except FileNotFoundError:
                    continue
        finally:
            del ref
        raise ObjectLostError(
            f"argument {object_id.hex()} of {task}() is lost: its value at {value} is gone "
            "(deleted outside the runtime?) and cannot be rebuilt; compute or put it again"
        )

    def encode_results(self, spec: TaskSpec, value: Any) -> list[tuple]:
        ids = spec.return_ids
        n = len(ids)
        if n == 1:
            values = [value]
        elif n == 0:
            values = []
        else:
            try:
                values = list(value)
            except TypeError:
                values = None
            if values is None or len(values) != n:
                got = f"{type(value).__name__}" + (f" of length {len(values)}" if values is not None else "")
                raise ValueError(
                    f"{spec.name}() was declared with num_returns={n} but returned {got}; "
                    f"return a tuple or list of {n} values"
                )
        out = []
        client = self.client
        for object_id, v in zip(ids, values, strict=True):
            plain = serialization.dumps_plain(v)
            if plain is not None:  # builtin scalars (most results): inline, no segment to name
                out.append((object_id, False, plain, len(plain), ()))
                continue
            wire, size, contained = serialization.serialize_full(v, client.segment(object_id))
            if contained:
                client.promote(contained)  # refs we made, now leaving with the result
            out.append((object_id, False, wire, size, contained))
        return out

    def encode_error(self, spec: TaskSpec, exc: BaseException) -> tuple[list[tuple], bool]:
        if isinstance(exc, KeyboardInterrupt):
            err: BaseException = TaskCancelledError(spec.name)
            retryable = False
        else:
            err = task_error_from_exception(spec.name, exc, self.where)
            retryable = bool(spec.retry_exceptions) and not isinstance(exc, TaskError)
        try:
            data = serialization.cloudpickle_dumps(err)
        except Exception:
            assert isinstance(err, TaskError)
            data = pickle.dumps(TaskError(err.function_name, err.traceback, None, err.where))
        return [(object_id, True, data, len(data), ()) for object_id in spec.return_ids], retryable

    # -- plain tasks ------------------------------------------------------
    def run_task(self, spec: TaskSpec, resolved: dict, link: transport.Link | None) -> None:
        client = self.client
        started = time.time()
        self.begin(spec, f"{spec.name} pid={self.pid}{self.ip_suffix}", link)
        retryable = False
        try:
            client.executing = True
            self.in_task = True
            if self.sigint_seen:  # a cancel whose SIGINT came before the task started?
                self.sigint_seen = False
                client.pump(0)  # its CANCEL says which task it was for
            if self.cancelled.pop(spec.task_id, None) == "interrupt":
                raise KeyboardInterrupt
            fn = self.function(spec.function_id)
            args, kwargs = self.decode_args(spec, resolved)
            value = fn(*args, **kwargs)
            self.in_task = False
            results = self.encode_results(spec, value)
            ok = True
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the owner
            self.in_task = False
            results, retryable = self.encode_error(spec, exc)
            ok = False
        finally:
            self.in_task = False
            client.executing = False
            self.cancelled.pop(spec.task_id, None)  # a CANCEL read while it ran (its SIGINT ended it)
        ended = time.time()
        self.replies.ran(spec.function_id, ended - started)
        self.end(spec, results, retryable, link, hold=True, took=ended - started)
        self.events.record(spec.name, started, ended, ok, hold=True)

    def begin(
        self, spec: TaskSpec, label: str, link: transport.Link | None, thread_only: bool = False
    ) -> None:
        cur = Current(spec.task_id, spec.actor_id, spec.ctx, spec.name)
        if thread_only:
            _local.task = cur
        else:
            _process_task[0] = cur
            _local.task = None
        output.set_current(output.TaskOutput(spec.owner, spec.ctx, label, link), thread_only)

    def end(
        self,
        spec: TaskSpec,
        results: list,
        retryable: bool,
        link: transport.Link | None,
        hold: bool = False,
        took: float = 0.0,
    ) -> None:
        """Send the task's DONE (after its prints), or hold it (`replies`: the main thread's).
        `took`: the seconds it ran, how its owner learns how deep to fill workers with its shape."""
        sys.stdout.flush()
        sys.stderr.flush()
        msg = (Kind.DONE, spec.task_id, results, retryable, took)
        if getattr(link, "direct", False):  # a caller on another node (wire/direct.py)
            moved = [r[2] for r in results if type(r[2]) is str]
            if moved:  # our node keeps them until the caller's node has moved them
                self.client.send(NODE, (Kind.TRANSIT, moved))
        held = (
            hold and link is not None and self.replies.hold(link, msg, time.monotonic(), self.inbox.qsize())
        )
        if not held:
            self.client.queue(link, msg)
        elif self.quiet:
            self.nudge()  # the watch thread, asleep on the sockets, sends it if the next task runs long

    def watch(self) -> threading.Event:
        """The event that wakes the watch thread, which looks after the worker while its
        main thread runs a task: every LATE_S it sends replies held that long (a task
        expected short runs long), and once a task has run LATE_S it reads the sockets.
        What came for the tasks sent here meanwhile (a steal, a cancel) is then answered
        within ~LATE_S, not when the long task ends (the main thread reads between tasks).
        Woken by the first task after a pause, parked after PARK_AFTER idle looks: a task
        costs the main thread a flag test, not a wake-up."""
        if self._watch is None:
            self._watch = threading.Event()
            self.nudge_r, self.nudge_w = os.pipe()
            os.set_blocking(self.nudge_r, False)
            helper_thread("watch", self._watch_loop, self._watch)
        return self._watch

    def _watch_loop(self, armed: threading.Event) -> None:
        replies, inbox, client = self.replies, self.inbox, self.client
        while True:
            armed.wait()
            armed.clear()
            seen, idle = -1, 0
            while True:
                time.sleep(LATE_S)
                if replies.overdue(time.monotonic()):
                    self.send_held()
                running = self.running()
                if running == seen and running >= 0 and not self.actor_id:
                    # The same task for LATE_S or more: read what came, then sleep until more comes.
                    if client.io.read_now() and not replies.held and self.wait_quiet(running):
                        # Something came for the task that runs now: read it once that one
                        # has run LATE_S (the main thread reads between short tasks).
                        running = self.running()
                seen = running
                if client.executing or replies.held or not inbox.empty():
                    idle = 0
                    continue
                idle += 1
                if idle >= PARK_AFTER:
                    self.watching = False  # the next task wakes it
                    if client.executing or not inbox.empty():  # one just started: stay
                        self.watching = True
                        continue
                    break

    def wait_quiet(self, running: int) -> bool:
        """The watch thread, task `running` having run LATE_S and what waited read: asleep
        (in select, without the interpreter) until a socket has something, read at once.
        A wake-up every LATE_S took the interpreter from the task ~50 times a second (a
        Monte Carlo burst's workers: ~2.5 of their ~6 ms outside the chunks). True: another
        task runs and something came for it; False: the ticks again (no task, replies held
        (the main thread nudges), or the main thread reads the sockets itself: in get())."""
        io = self.client.io
        self.quiet = True
        try:
            while not self.replies.held:
                ready = io.wait_readable(QUIET_S, self.nudge_r)
                if ready is None:
                    return False  # a socket closed meanwhile: the ticks read what is left
                if self.nudge_r in ready:
                    try:
                        os.read(self.nudge_r, 4096)
                    except OSError:
                        pass
                current = self.running()
                if current != running:
                    return current >= 0 and bool(ready)
                if ready:
                    if not io.read_now():
                        return False
                    time.sleep(0.001)  # a read a ms at most: nothing keeps this thread spinning
            return False
        finally:
            self.quiet = False

    def running(self) -> int:
        """The running task's number (`started`), -1 between tasks: the watch thread's clock."""
        return self.started if self.client.executing else -1

    def nudge(self) -> None:
        try:
            os.write(self.nudge_w, b"x")
        except OSError:
            pass

    def send_held(self) -> None:
        """Send the held DONEs, one batch per owner (any thread)."""
        held = self.replies.take()
        if held:
            for link, msg in held:
                self.client.queue(link, msg, urgent=False)
            self.client.flush()

    def release(self) -> None:
        """Send the held DONEs, one batch per owner; write the held task events once due
        (a write per sync task cost the worker ~5 % of a round trip)."""
        if self.replies.held:
            self.send_held()
        events = self.events
        if events.held and events.due(time.monotonic()):
            events.flush()

    # -- actors -----------------------------------------------------------
    def create_actor(self, spec: TaskSpec, resolved: dict) -> None:
        opts = spec.options or {}
        self.actor_id = spec.actor_id
        self.class_name = spec.name.split(".")[0]
        set_process_name(f"nbc:{self.class_name}")  # `top` shows which actor this is, as Ray's ray::Name
        self.begin(spec, f"{self.class_name} pid={self.pid}{self.ip_suffix}", None)
        error = None
        try:
            cls = self.function(spec.function_id)
            args, kwargs = self.decode_args(spec, resolved)
            self.instance = cls(*args, **kwargs)
            is_async = any(
                inspect.iscoroutinefunction(m) for _, m in inspect.getmembers(cls, inspect.isfunction)
            )
            concurrency = opts.get("max_concurrency") or (1000 if is_async else 1)
            if is_async:
                self.loop = asyncio.new_event_loop()
                self.async_slots = threading.Semaphore(concurrency)
                helper_thread("actor-loop", self.loop.run_forever)
            elif concurrency > 1:
                self.pool = ThreadPoolExecutor(
                    concurrency, thread_name_prefix="actor", initializer=block_sigint
                )
        except BaseException as exc:  # noqa: BLE001
            error = RemoteTraceback.capture(exc).render()
        sys.stdout.flush()
        sys.stderr.flush()
        # After a failed constructor the node ends this process once it has read why:
        # exiting here could let the node see the death before the reason.
        self.client.send(NODE, (Kind.ACTOR_READY, spec.actor_id, error))

    def dispatch_call(self, spec: TaskSpec, resolved: dict, link: transport.Link | None) -> None:
        if self.loop is not None:
            self.async_slots.acquire()
            asyncio.run_coroutine_threadsafe(self.run_call_async(spec, resolved, link), self.loop)
        elif self.pool is not None:
            self.pool.submit(self.run_call, spec, resolved, link, True)
        else:
            self.run_call(spec, resolved, link, False)

    def run_call(self, spec: TaskSpec, resolved: dict, link: transport.Link | None, threaded: bool) -> None:
        started = time.time()
        self.begin(spec, f"{self.class_name} pid={self.pid}{self.ip_suffix}", link, thread_only=threaded)
        retryable = False
        try:
            method = getattr(self.instance, spec.function_id.decode())
            args, kwargs = self.decode_args(spec, resolved)
            results = self.encode_results(spec, method(*args, **kwargs))
            ok = True
        except BaseException as exc:  # noqa: BLE001
            results, retryable = self.encode_error(spec, exc)
            ok = False
        ended = time.time()
        if not threaded:  # the main thread's: held as a task's (an actor's calls keep their order)
            self.replies.ran(spec.function_id, ended - started)
        self.end(spec, results, retryable, link, hold=not threaded, took=ended - started)
        self.events.record(spec.name, started, ended, ok, "actor call", not threaded)

    async def run_call_async(self, spec: TaskSpec, resolved: dict, link: transport.Link | None) -> None:
        try:
            self.begin(spec, f"{self.class_name} pid={self.pid}{self.ip_suffix}", link, thread_only=True)
            try:
                method = getattr(self.instance, spec.function_id.decode())
                args, kwargs = self.decode_args(spec, resolved)
                value = method(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
                results, retryable = self.encode_results(spec, value), False
            except BaseException as exc:  # noqa: BLE001
                results, retryable = self.encode_error(spec, exc)
            self.end(spec, results, retryable, link)
        finally:
            self.async_slots.release()


def main(conf: dict, wid: int) -> None:
    """Entry point of a worker process (called in the child forked by the zygote)."""
    logdir = cfg.runtime_dir() / conf["cluster_id"] / "logs"
    fd = os.open(logdir / f"worker-{wid}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    # Forked from the node: drop its logging setup, so tasks log as in a fresh
    # process (to stderr, which reaches their owner).
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    client = Client(
        cluster_id=conf["cluster_id"],
        key=bytes.fromhex(conf["key"]),
        node_address=conf["node_address"],
        head_address=None,
        node_id=conf["node_id"],
        role="worker",
        worker_id=wid,
        listen=cfg.worker_socket(conf["cluster_id"], conf["node_id"], wid),
        listen_direct=cfg.direct_host(conf),
        seal_direct=bool(conf.get("curve")),
    )
    session.attach_worker(client, conf, current_task)
    loop = WorkerLoop(client, conf)
    sys.stdout = output.ForwardStream(client, 1, sys.stdout)
    sys.stderr = output.ForwardStream(client, 2, sys.stderr)
    try:
        loop.run()
    finally:
        try:
            client.close(say_bye=False)
        except Exception:
            pass
        sys.exit(0)
