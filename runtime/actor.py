"""Actors: ``@remote`` on a class, the handles that call it, and their methods."""

from __future__ import annotations

import inspect
from typing import Any

from . import options as opt
from . import session
from .client import Client
from .remote_function import _signature, call_template, check_arity, encode_args, register, result_ids, submit
from .wire.protocol import ACTOR_CREATE, TaskSpec, ids
from .wire.serialization import note_ref


def method(*, num_returns: int = 1, concurrency_group: str | None = None):
    """Decorate an actor method to set its number of return values (as ``ray.method``).

    Example::

        >>> @ray.remote
        ... class Pair:
        ...     @ray.method(num_returns=2)
        ...     def two(self):
        ...         return 1, 2
    """

    def wrap(fn):
        fn.__ray_num_returns__ = num_returns
        return fn

    return wrap


def _methods(cls: type) -> dict[str, int]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if callable(member) and (not name.startswith("__") or name == "__call__"):
            out[name] = getattr(member, "__ray_num_returns__", 1)
    return out


class ActorClass:
    """A class made remote: ``Cls.remote(*args)`` starts an actor and returns its handle.

    Example::

        >>> @ray.remote
        ... class Counter:
        ...     def __init__(self): self.n = 0
        ...     def incr(self): self.n += 1; return self.n
        >>> c = Counter.remote()
        >>> ray.get(c.incr.remote())
        1
    """

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = opt.validate(dict(options), actor=True)
        self._init_sig = _signature(cls.__init__) if "__init__" in _own_attrs(cls) else None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__
        self._meta = {
            "class_name": cls.__name__,
            "methods": _methods(cls),
        }
        self._sigs = {name: _signature(getattr(cls, name)) for name in self._meta["methods"]}

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"actor class {self.__name__} cannot be instantiated directly; use "
            f"{self.__name__}.remote(...) to start an actor"
        )

    def __getstate__(self) -> dict:
        return {"cls": self._cls, "options": self._options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cls"], state["options"])

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundActorOptions:
        merged = dict(self._options)
        merged.update(opt.validate(options, actor=True))
        return _BoundActorOptions(self, merged)

    def _remote(self, args: tuple, kwargs: dict, options: dict) -> ActorHandle:
        client = session.client()
        if self._init_sig is not None:
            check_arity(self._init_sig, self.__name__, (None, *args), kwargs)
        detached = options.get("lifetime") == "detached"
        meta = dict(self._meta, detached=detached)
        actor_id = ids.next() + b"A"
        name = options.get("name")
        namespace = options.get("namespace") or session.state.namespace
        if name:
            existing = client.request(
                "register_name", name, namespace, actor_id, meta, bool(options.get("get_if_exists"))
            )
            if existing is not None:
                return ActorHandle(existing[0], existing[1], client)
            if not detached:
                client.owned_names.append((namespace, name, actor_id))
        fid = register(client, self._cls, self)
        task_id = ids.next()
        wire, deps, contained, _keep = encode_args(client, args, kwargs, task_id)
        spec = TaskSpec(
            task_id,
            ACTOR_CREATE,
            f"{self.__name__}.__init__",
            fid,
            wire,
            deps,
            contained,
            (),
            client.identity,
            opt.place(opt.shape(options, 0), options.get("scheduling_strategy")),
            0,
            False,
            actor_id,
            session.current_ctx(),
            {
                "max_restarts": options.get("max_restarts", 0),
                "max_task_retries": options.get("max_task_retries", 0),
                "max_concurrency": options.get("max_concurrency"),
                "name": name,
                "namespace": namespace,
                "lifetime": options.get("lifetime"),
            },
        )
        handle = ActorHandle(
            actor_id,
            meta,
            client,
            announce=False,
            sigs=self._sigs,
            max_task_retries=options.get("max_task_retries", 0),
        )
        client.submit_to_node(spec)  # the node places it and pins its arguments until it runs
        return handle


def _own_attrs(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            break
        names.update(vars(klass))
    return names


class _BoundActorOptions:
    def __init__(self, cls: ActorClass, options: dict) -> None:
        self._cls = cls
        self._options = options

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._cls._remote(args, kwargs, self._options)


class ActorHandle:
    """A handle on a running actor; pass it to tasks and other actors freely.

    ``handle.method.remote(*args)`` returns an ObjectRef. Calls from one
    caller run in the order they were made. The actor lives while some
    handle to it exists (unless started with ``lifetime="detached"``).
    """

    def __init__(
        self,
        actor_id: bytes,
        meta: dict,
        client: Client | None = None,
        announce: bool = True,
        sigs: dict | None = None,
        max_task_retries: int = 0,
    ) -> None:
        self._actor_id = actor_id
        self._meta = meta
        self._sigs = sigs or {}
        self._max_task_retries = max_task_retries
        if client is None:
            client = session.client_or_none()
        self._client = client if not meta.get("detached") else None
        if self._client is not None:
            self._client.add_ref(actor_id, announce)

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.remove_ref(self._actor_id)
            except Exception:
                pass

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_") and name not in self.__dict__.get("_meta", {}).get("methods", {}):
            raise AttributeError(name)
        if name not in self._meta["methods"]:
            raise AttributeError(
                f"actor {self._meta['class_name']} has no method {name!r}; its methods are: "
                f"{', '.join(sorted(self._meta['methods']))}"
            )
        # Not cached: a method holds its handle, and a cycle would keep the actor
        # alive after `del handle` until the garbage collector runs.
        return ActorMethod(self, name, self._meta["methods"][name])

    def __reduce__(self):
        if not self._meta.get("detached"):
            note_ref(self._actor_id, self)
        return (_rebuild_handle, (self._actor_id, self._meta, self._max_task_retries))

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {self._actor_id.hex()[:16]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def _call(self, name: str, args: tuple, kwargs: dict, num_returns: int) -> Any:
        client = session.client()
        qualname = f"{self._meta['class_name']}.{name}"
        check_arity(self._sigs.get(name), qualname, (None, *args), kwargs)
        task_id = ids.next()
        # What every call of this method shares is kept once (as a function's tasks do).
        template = call_template(
            client,
            name.encode(),
            qualname,
            (),
            self._max_task_retries,
            False,
            session.current_ctx(),
            self._actor_id,
        )
        return submit(client, template, task_id, result_ids(task_id, num_returns), args, kwargs)


def _rebuild_handle(actor_id: bytes, meta: dict, max_task_retries: int = 0) -> ActorHandle:
    return ActorHandle(actor_id, meta, max_task_retries=max_task_retries)


class ActorMethod:
    """``handle.method``: call ``.remote(*args)``; ``.options(num_returns=...)``."""

    def __init__(self, handle: ActorHandle, name: str, num_returns: int) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def remote(self, *args, **kwargs) -> Any:
        return self._handle._call(self._name, args, kwargs, self._num_returns)

    def options(self, num_returns: int | None = None, **_ignored) -> ActorMethod:
        return ActorMethod(
            self._handle, self._name, self._num_returns if num_returns is None else num_returns
        )

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"actor method {self._name}() cannot be called directly; use handle.{self._name}.remote(...)"
        )
