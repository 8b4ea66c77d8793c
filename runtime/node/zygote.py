"""The zygote: a fork server that makes worker processes in a few milliseconds.

::

    node daemon ──"spawn <worker id>"──▶ zygote ──fork──▶ worker
        ▲                                  │  waitpid
        └──"exit <worker id> <pid> <status>"┘

The node forks the zygote before it creates any ZeroMQ context or thread,
so the zygote is a single-threaded copy of a process that has already
imported the runtime: forking a worker from it costs a few milliseconds
instead of a Python start-up. The zygote is the parent of every worker and
reports each exit (with its status) to the node, which is how worker
crashes are detected. Workers get ``PR_SET_PDEATHSIG``: if the zygote
dies, they die. When the node's end of the command pipe closes (the node
exited, or was killed), the zygote kills every worker, removes the node's
shared-memory segments, and exits — nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import select
import signal
from collections.abc import Callable

from ..prctl import set_parent_death_signal, set_process_name


class Zygote:
    """The node's handle on its zygote."""

    def __init__(self, pid: int, cmd_fd: int, event_fd: int) -> None:
        self.pid = pid
        self.cmd_fd = cmd_fd
        self.event_fd = event_fd
        self._buf = b""

    def spawn(self, worker_id: int) -> None:
        os.write(self.cmd_fd, f"spawn {worker_id}\n".encode())

    def events(self) -> list[tuple[str, int, int, int]]:
        """Pending events: ("started"|"exit", worker_id, pid, status)."""
        try:
            chunk = os.read(self.event_fd, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            return [("zygote-exit", -1, self.pid, -1)]
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            kind, wid, pid, status = line.decode().split()
            out.append((kind, int(wid), int(pid), int(status)))
        return out

    def close(self) -> None:
        for fd in (self.cmd_fd, self.event_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def start(worker_main: Callable[[int], None], cleanup: Callable[[], None]) -> Zygote:
    """Fork the zygote. Call before creating any thread or ZeroMQ context."""
    cmd_r, cmd_w = os.pipe()
    evt_r, evt_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(cmd_w)
            os.close(evt_r)
            _serve(cmd_r, evt_w, worker_main, cleanup)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(cmd_r)
    os.close(evt_w)
    os.set_blocking(evt_r, False)
    return Zygote(pid, cmd_w, evt_r)


def _serve(cmd_fd: int, evt_fd: int, worker_main, cleanup) -> None:
    set_parent_death_signal(signal.SIGTERM)
    set_process_name("nbc-zygote")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: None)  # turned into EOF handling below
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, int] = {}  # pid -> worker id
    me = os.getpid()
    buf = b""
    running = True
    while running:
        try:
            ready, _, _ = select.select([cmd_fd, wake_r], [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if cmd_fd in ready:
            chunk = os.read(cmd_fd, 65536)
            if not chunk:
                running = False
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                parts = line.decode().split()
                if parts and parts[0] == "spawn":
                    wid = int(parts[1])
                    child = os.fork()
                    if child == 0:
                        code = 0
                        try:
                            signal.set_wakeup_fd(-1)
                            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                            signal.signal(signal.SIGTERM, signal.SIG_DFL)
                            signal.signal(signal.SIGINT, signal.default_int_handler)
                            for fd in (cmd_fd, evt_fd, wake_r, wake_w):
                                os.close(fd)
                            set_parent_death_signal(signal.SIGKILL)
                            set_process_name("nbc-worker")
                            if os.getppid() != me:
                                os._exit(1)
                            worker_main(wid)
                        except SystemExit as e:
                            code = e.code if isinstance(e.code, int) else 0
                        except BaseException:
                            code = 1
                        finally:
                            os._exit(code)
                    children[child] = wid
                    _write(evt_fd, f"started {wid} {child} 0\n")
        # reap
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            wid = children.pop(pid, -1)
            code = os.waitstatus_to_exitcode(status)
            _write(evt_fd, f"exit {wid} {pid} {code}\n")
    # The node is gone: take everything with us.
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    try:
        cleanup()
    except Exception:
        pass


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError as e:
        if e.errno not in (errno.EPIPE, errno.EBADF):
            raise
