"""RemoteFunction: what ``@remote`` makes of a function, and task submission."""

from __future__ import annotations

import hashlib
import inspect
import sys
from typing import Any, NamedTuple

from . import options as opt
from . import session
from .client import NODE, Client
from .client.records import Call
from .object_ref import ObjectRef
from .wire import serialization
from .wire.protocol import ACTOR_CALL, TASK, Kind, TaskSpec, ids, object_id_for
from .wire.serialization import Dep


def encode_args(client: Client, args: tuple, kwargs: dict, task_id: bytes) -> tuple[Any, tuple, tuple, tuple]:
    """(wire args, deps, contained, keep).

    Top-level refs become placeholders, resolved to values before the task
    runs; refs nested deeper stay refs (`contained`). `keep` holds the refs
    and handles involved, alive until the task is done.
    """
    plain = serialization.dumps_args(args, kwargs)
    if plain is not None:  # builtin scalars: no refs inside, inline
        return plain, (), (), ()
    deps: list[bytes] = []
    keep: list = []
    if any(type(a) is ObjectRef for a in args):
        new = []
        for a in args:
            if type(a) is ObjectRef:
                new.append(Dep(len(deps)))
                deps.append(a._id)
                keep.append(a)
            else:
                new.append(a)
        args = tuple(new)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kw = {}
        for k, v in kwargs.items():
            if type(v) is ObjectRef:
                kw[k] = Dep(len(deps))
                deps.append(v._id)
                keep.append(v)
            else:
                kw[k] = v
        kwargs = kw
    wire, _, contained = serialization.serialize_full((args, kwargs), client.segment(task_id + b"args"), keep)
    return wire, tuple(deps), contained, tuple(keep)


def register(client: Client, obj: Any, cache_owner: Any) -> bytes:
    """Ship a function or class to the node once per process; its id."""
    fid = cache_owner.__dict__.get("_fid")
    if fid is None:
        try:
            blob = serialization.cloudpickle_dumps(obj)
        except Exception as e:
            raise serialization.SerializationError(
                f"could not serialize {getattr(obj, '__qualname__', obj)!r} to send it to the cluster: "
                f"{type(e).__name__}: {e}. Globals it uses must be picklable; create locks, "
                "sockets and clients inside the function instead."
            ) from e
        fid = hashlib.blake2b(blob, digest_size=16).digest()
        cache_owner.__dict__["_fid"] = fid
        cache_owner.__dict__["_blob"] = blob
    if fid not in client.registered_functions:
        client.registered_functions.add(fid)
        blob = cache_owner.__dict__["_blob"]
        client.function_blobs[fid] = (blob, sys.path[:])
        client.send(NODE, (Kind.REGISTER_FUNC, fid, blob, sys.path[:]))
    return fid


def call_template(
    client: Client,
    fid: bytes,
    name: str,
    shape: tuple,
    max_retries: int,
    retry_exc: bool,
    ctx: Any,
    actor_id: bytes = b"",
) -> TaskSpec:
    """The TaskSpec the calls of one function (or one actor's method: `actor_id`, `fid` its
    name) with these options share, without a call's own id, arguments and result ids;
    kept by the client, made again when the context changes."""
    key = (fid, name, shape, max_retries, retry_exc, actor_id)
    templates = client.task_templates
    template = templates.get(key)
    if template is None or (template.ctx is not ctx and not (type(ctx) is str and template.ctx == ctx)):
        if len(templates) > 1000:  # options made up per call: do not grow without bound
            templates.clear()
        template = templates[key] = TaskSpec(
            b"",
            ACTOR_CALL if actor_id else TASK,
            name,
            fid,
            b"",
            (),
            (),
            (),
            client.identity,
            shape,
            max_retries,
            retry_exc,
            actor_id,
            ctx,
            None,
        )
    return template


def result_ids(task_id: bytes, num_returns: int) -> tuple:
    """The ids of a call's results."""
    if num_returns == 1:
        return (task_id + b"\x00",)  # object_id_for(task_id, 0)
    return tuple(object_id_for(task_id, i) for i in range(num_returns))


def submit(
    client: Client, template: TaskSpec, task_id: bytes, return_ids: tuple, args: tuple, kwargs: dict
) -> Any:
    """Submit one call of `template` with these arguments: its ref (a list of them for
    num_returns != 1, None for 0)."""
    wire, deps, contained, keep = encode_args(client, args, kwargs, task_id)
    refs = [ObjectRef(rid, client, announce=False) for rid in return_ids]
    if deps or contained or keep:  # refs in the arguments: the whole spec, kept with them
        spec = template._replace(
            task_id=task_id, args=wire, deps=deps, contained=contained, return_ids=return_ids
        )
        client.submit(spec, keep)
    else:  # the common case: what every call of this function shares is kept once
        client.submit_call(Call.of(template, task_id, wire, return_ids))
    if len(refs) == 1:
        return refs[0]
    return refs or None


def check_arity(sig: inspect.Signature | None, name: str, args: tuple, kwargs: dict) -> None:
    """Raise the TypeError a local call would (wrong number or names of arguments)."""
    if sig is None:
        return
    bounds = _simple_bounds.get(id(sig))
    if bounds is None:
        bounds = _simple_bounds[id(sig)] = (_positional_bounds(sig), sig)  # sig kept: ids stay unique
    bounds = bounds[0]
    if bounds and not kwargs and bounds[0] <= len(args) <= bounds[1]:
        return  # the common case, without inspect's full binding
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}() {e}") from None


_simple_bounds: dict[int, tuple] = {}


def _positional_bounds(sig: inspect.Signature) -> tuple[int, int] | tuple[()]:
    """(min, max) positional arguments when the signature has only plain parameters."""
    params = list(sig.parameters.values())
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        return ()
    required = sum(1 for p in params if p.default is p.empty)
    return (required, len(params))


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


class RemoteFunction:
    """A function that runs as a task: ``f.remote(*args)`` returns an ObjectRef.

    Example::

        >>> @ray.remote(num_cpus=1, max_retries=2)
        ... def square(x):
        ...     return x * x
        >>> ray.get([square.remote(i) for i in range(4)])
        [0, 1, 4, 9]
    """

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        self._function = fn
        self._options = opt.validate(dict(options), actor=False)
        self._sig = _signature(fn)
        self._shape = opt.shape(self._options, 1)
        self._plan = CallOptions.of(self._options)
        self.__name__ = getattr(fn, "__name__", "function")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__module__ = getattr(fn, "__module__", None)
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"remote function {self.__name__}() cannot be called directly; call "
            f"{self.__name__}.remote(...) to run it as a task, or decorate a plain function"
        )

    def __getstate__(self) -> dict:
        return {"fn": self._function, "options": self._options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["fn"], state["options"])

    def remote(self, *args, **kwargs) -> Any:
        return self._remote(args, kwargs, self._plan, self._shape)

    def options(self, **options) -> _BoundOptions:
        """The same function with some options changed for the next calls."""
        merged = dict(self._options)
        merged.update(opt.validate(options, actor=False))
        return _BoundOptions(self, merged)

    def _remote(self, args: tuple, kwargs: dict, plan: CallOptions, shape: tuple) -> Any:
        client = session.client()
        check_arity(self._sig, self.__name__, args, kwargs)
        fid = register(client, self._function, self)
        task_id = ids.next()
        num_returns, retry_exc, name, max_retries, strategy = plan
        return_ids = result_ids(task_id, num_returns)
        if strategy is not None:
            shape = opt.place(shape, strategy)
        template = call_template(
            client, fid, name or self.__name__, shape, max_retries, retry_exc, session.current_ctx()
        )
        return submit(client, template, task_id, return_ids, args, kwargs)


class CallOptions(NamedTuple):
    """What the options say of every call (read once, not per `.remote()`)."""

    num_returns: int
    retry_exceptions: bool
    name: str | None  # None: the function's own
    max_retries: int
    strategy: Any  # scheduling_strategy (applied per call: a placement group's may change)

    @classmethod
    def of(cls, options: dict) -> CallOptions:
        return cls(
            options.get("num_returns", 1),
            bool(options.get("retry_exceptions", False)),
            options.get("name") or None,
            options.get("max_retries", 3),
            options.get("scheduling_strategy"),
        )


class _BoundOptions:
    """`f.options(...)`: call `.remote()` on it."""

    def __init__(self, fn: RemoteFunction, options: dict) -> None:
        self._fn = fn
        self._options = options
        self._shape = opt.shape(options, 1)
        self._plan = CallOptions.of(options)

    def remote(self, *args, **kwargs) -> Any:
        return self._fn._remote(args, kwargs, self._plan, self._shape)
