"""Cell tags on Ray submissions, in the notebook's driver and in every worker.

::

    cell 7:  f.remote()        ─▶ RemoteFunction._remote(name="f|cell=7")
             a.m.remote()      ─▶ ActorMethod._remote(name="A.m|cell=7")
    worker running "f|cell=7": g.remote() ─▶ name "g|cell=7"         (nested tasks, actor calls)
    actor worker, before a method runs: ":task_name:A.m|cell=7" on its stdout and stderr
        ─▶ Ray's log monitor files the method's lines under that name (it marks
           normal tasks itself, never actor methods)
        ─▶ the notebook's log handler reads the tag back: the lines land in cell 7

This module imports nothing of nbcluster, and Ray only inside functions:
the driver ships `setup_worker` to every worker by value (Ray's
``worker_process_setup_hook``), so a cluster without nbcluster installed
still tags its output.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

SEP = "|cell="
ORIGINAL = "_nbcluster_original_remote"  # where a patched class keeps Ray's own `_remote`
_marker = {"last": None}


def split(name: str | None) -> tuple[str, str | None]:
    """("f", "7") for "f|cell=7"; (name, None) for an untagged name."""
    if not name:
        return "", None
    base, sep, tag = name.partition(SEP)
    return base, (tag or None) if sep else None


def tagged(name: str, tag: str | None) -> str:
    base, _ = split(name)
    return f"{base}{SEP}{tag}" if tag else name


def install(current_tag: Callable[[], str | None], created: Callable[[str], None] | None = None) -> None:
    """Tag every task and actor-method submission of this process with `current_tag()`.

    `created(class name)` is told of each actor this process creates.
    """
    from ray.actor import ActorClass, ActorMethod
    from ray.remote_function import RemoteFunction

    def remote_function(orig):
        def _remote(self, args=None, kwargs=None, **options):
            tag = current_tag()
            if tag:
                default = getattr(self._function, "__name__", "task")
                options["name"] = tagged(options.get("name") or default, tag)
            return orig(self, args, kwargs, **options)

        return _remote

    def actor_method(orig):
        def _remote(self, args=None, kwargs=None, name="", **options):
            tag = current_tag()
            if tag:
                name = tagged(name or _method_name(self), tag)
            return orig(self, args, kwargs, name=name, **options)

        return _remote

    def actor_class(orig):
        def _remote(self, args=None, kwargs=None, **options):
            try:
                created(self.__ray_metadata__.class_name)
            except Exception:
                pass
            return orig(self, args, kwargs, **options)

        return _remote

    _patch(RemoteFunction, remote_function)
    _patch(ActorMethod, actor_method)
    if created is not None:
        _patch(ActorClass, actor_class)


def uninstall() -> None:
    """Undo `install` (submissions keep Ray's own names)."""
    from ray.actor import ActorClass, ActorMethod
    from ray.remote_function import RemoteFunction

    for cls in (RemoteFunction, ActorMethod, ActorClass):
        orig = cls.__dict__.get(ORIGINAL)
        if orig is not None:
            cls._remote = orig
            delattr(cls, ORIGINAL)


def _patch(cls, wrap) -> None:
    orig = cls.__dict__.get(ORIGINAL)
    if orig is None:
        orig = cls._remote
        setattr(cls, ORIGINAL, orig)
    cls._remote = wrap(orig)


def _method_name(method) -> str:
    try:
        actor = method._actor
        actor = actor() if callable(actor) and not hasattr(actor, "_ray_actor_id") else actor
        cls = actor._ray_actor_creation_function_descriptor.class_name
        return f"{cls}.{method._method_name}"
    except Exception:
        return getattr(method, "_method_name", "method")


def running_tag() -> str | None:
    """The cell tag of the task or actor method running in this worker (best effort in threads)."""
    import ray

    try:
        return split(ray.get_runtime_context().get_task_name())[1]
    except Exception:
        return None


def mark(name: str | None) -> None:
    """Tell Ray's log monitor that the lines after this belong to `name` (skipped if unchanged)."""
    if not name or _marker["last"] == name:
        return
    _marker["last"] = name
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.write(f":task_name:{name}\n")
            stream.flush()
        except Exception:
            pass


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: tag nested submissions; mark actor methods' output."""
    import ray
    from ray._private.function_manager import FunctionActorManager

    install(running_tag)
    orig = FunctionActorManager._make_actor_method_executor

    def make(self, method_name, method):
        inner = orig(self, method_name, method)
        if method_name.startswith("__ray"):
            return inner

        def executor(__ray_actor, *args, **kwargs):
            try:
                mark(ray.get_runtime_context().get_task_name())
            except Exception:
                pass
            return inner(__ray_actor, *args, **kwargs)

        executor.name = inner.name
        executor.method = inner.method
        return executor

    FunctionActorManager._make_actor_method_executor = make
