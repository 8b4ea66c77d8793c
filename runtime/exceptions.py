"""Every error the runtime raises, in one place.

The tree::

    ClusterError                          base of everything raised by the runtime
    ├── TaskError                         a task or actor method raised; `get` re-raises it as
    │                                     an instance of both TaskError and the user's class
    ├── GetTimeoutError (TimeoutError)    `get(..., timeout=)` ran out of time
    ├── TaskCancelledError                the task was cancelled with `cancel()`
    ├── WorkerCrashedError                the worker process died and retries ran out
    ├── OutOfMemoryError (MemoryError)    the node's memory monitor killed the task's worker
    │                                     and retries ran out; says the figures and what to do
    ├── ActorError
    │   ├── ActorDiedError                the actor's process died (and restarts ran out) or
    │   │                                 it was killed; every pending and later call fails
    │   └── ActorUnavailableError         the actor is restarting; the call was not run
    ├── ObjectLostError                   the object's value is gone and cannot be rebuilt
    ├── ObjectStoreFullError              a value does not fit in the object store or on disk
    ├── NotInitializedError               an API call before `init()`
    ├── ConnectionFailedError             the cluster cannot be reached / refused the key
    │   ├── AuthenticationError           the cluster key is wrong or missing
    │   └── ClusterGoneError              the cluster this process used stopped (or crashed);
    │                                     every later call says so until `init()` again
    └── SerializationError (TypeError)    an argument or result could not be pickled

Ray's names are aliases, so ``except ray.exceptions.RayTaskError`` keeps
working after ``import runtime as ray``: ``RayError``, ``RayTaskError``,
``RayActorError``, ``GetTimeoutError``, ``TaskCancelledError``,
``WorkerCrashedError``, ``ObjectLostError``, ``OutOfMemoryError``.
"""

from __future__ import annotations

import sys

from .remote_traceback import RemoteTraceback

__all__ = [
    "ActorDiedError",
    "ActorError",
    "ActorUnavailableError",
    "AuthenticationError",
    "ClusterError",
    "ClusterGoneError",
    "ConnectionFailedError",
    "GetTimeoutError",
    "NotInitializedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "RayActorError",
    "RayError",
    "RayTaskError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
]


class ClusterError(Exception):
    """Base class of every error raised by the runtime."""


class TaskError(ClusterError):
    """A task or actor method raised an exception.

    `get` raises it as an instance of both this class and the user's
    exception class, so ``except ValueError`` still catches a remote
    ``ValueError``. ``cause`` is the original exception (when it could be
    unpickled) and ``remote_traceback`` the formatted traceback from the
    worker; IPython shows the remote traceback through
    ``_render_traceback_``.

    Example::

        >>> @ray.remote
        ... def boom(): raise ValueError("no")
        >>> try:
        ...     ray.get(boom.remote())
        ... except ValueError as e:
        ...     assert isinstance(e, ray.exceptions.TaskError)
    """

    def __init__(
        self,
        function_name: str = "",
        remote_traceback: str | RemoteTraceback = "",
        cause: BaseException | None = None,
        where: str = "",
    ) -> None:
        if isinstance(remote_traceback, str):
            remote_traceback = RemoteTraceback.from_text(remote_traceback)
        super().__init__(function_name, remote_traceback, cause, where)
        self.function_name = function_name
        self.traceback = remote_traceback
        self.cause = cause
        self.where = where

    @property
    def remote_traceback(self) -> str:
        """The remote traceback as text: the user's frames, source lines filled in here."""
        return self.traceback.render()

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback, self.cause, self.where))

    def _header(self) -> str:
        head = f"{self.function_name}() failed"
        return f"{head} on {self.where}" if self.where else head

    def __str__(self) -> str:
        return f"{self._header()}:\n{self.remote_traceback.rstrip()}"

    def _render_traceback_(self) -> list[str]:
        """What IPython shows: where it ran, then the remote traceback of the user's code.

        A frame in a notebook cell is named as IPython names it (``Cell In[3], line 2``)
        and shows its source line from this kernel's cache of cell sources.
        """
        text = self.traceback.render(cell_name=_ipython_cell_name())
        return [f"TaskError: {self._header()}", *text.rstrip().splitlines()]

    def as_instanceof_cause(self) -> TaskError:
        """This error as an instance of both `TaskError` and the cause's class."""
        cause = self.cause
        if cause is None or isinstance(cause, TaskError):
            return self
        cause_cls = type(cause)
        try:
            cls = _dual_classes.get(cause_cls)
            if cls is None:
                cls = type(
                    f"TaskError({cause_cls.__name__})",
                    (TaskError, cause_cls),
                    {"__module__": cause_cls.__module__, "__init__": TaskError.__init__},
                )
                _dual_classes[cause_cls] = cls
            err = cls.__new__(cls)
            TaskError.__init__(err, self.function_name, self.traceback, cause, self.where)
            err.args = (str(err),)
            try:
                err.__dict__.update({k: v for k, v in vars(cause).items() if k not in err.__dict__})
            except TypeError:
                pass
            return err
        except TypeError:
            # Builtin layouts that cannot be combined (e.g. two C bases): keep the plain error.
            return self


_dual_classes: dict[type, type] = {}


def _rebuild_task_error(function_name, remote_traceback, cause, where):
    return TaskError(function_name, remote_traceback, cause, where)


def _ipython_cell_name():
    """IPython's name for a cell's file ("Cell In[3]"), when running under IPython."""
    ipython = sys.modules.get("IPython")  # not imported: not running under IPython
    shell = ipython.get_ipython() if ipython is not None else None
    fmt = getattr(getattr(shell, "compile", None), "format_code_name", None)
    if fmt is None:
        return None

    def name(filename: str) -> str | None:
        found = fmt(filename)
        return " ".join(found) if found else None

    return name


def task_error_from_exception(function_name: str, exc: BaseException, where: str) -> TaskError:
    """Wrap an exception raised by user code in a worker (called in the worker)."""
    if isinstance(exc, TaskError):
        # An upstream failure re-raised by `get` inside a task: keep its origin.
        return TaskError(exc.function_name, exc.traceback, exc.cause, exc.where)
    return TaskError(function_name, RemoteTraceback.capture(exc), exc, where)


class GetTimeoutError(ClusterError, TimeoutError):
    """`get(..., timeout=)` returned before the values were ready."""


class TaskCancelledError(ClusterError):
    """The task was cancelled with `cancel()` before it produced a value."""

    def __init__(self, task_name: str = "") -> None:
        super().__init__(f"task {task_name}() was cancelled" if task_name else "task was cancelled")
        self.task_name = task_name

    def __reduce__(self):
        return (type(self), (self.task_name,))


class WorkerCrashedError(ClusterError):
    """The worker running the task died, and the task's retries ran out."""


class OutOfMemoryError(MemoryError, ClusterError):  # MemoryError first: see test_tracebacks
    """The node's memory passed its threshold and its memory monitor killed the worker running
    the task (the newest task first, actors last), and the task's retries ran out."""


class ActorError(ClusterError):
    """Base class of actor failures."""


class ActorDiedError(ActorError):
    """The actor is dead: its process died (and its restarts ran out), it was
    killed with `kill()`, or its constructor raised."""


class ActorUnavailableError(ActorError):
    """The actor is restarting; the call was not run. Retry it."""


class ObjectLostError(ClusterError):
    """The object's value is gone (its node died) and cannot be rebuilt."""


class ObjectStoreFullError(ClusterError):
    """The value does not fit in the object store, even after spilling to disk."""


class NotInitializedError(ClusterError):
    """An API call was made before `init()`."""


class ConnectionFailedError(ClusterError, ConnectionError):
    """The cluster could not be reached."""


class AuthenticationError(ConnectionFailedError):
    """The cluster refused our key: authentication failed."""


class ClusterGoneError(ConnectionFailedError):
    """The cluster this process was connected to is gone (stopped, or crashed).

    Raised by every call that needs the cluster (``.remote()``, `get`, `put`, ...) from the
    moment the connection to it closed; `init()` starts or joins a cluster again.
    """


class SerializationError(ClusterError, TypeError):
    """A value could not be pickled; the message says which one."""


# Ray's names, so code written for Ray keeps its except clauses.
RayError = ClusterError
RayTaskError = TaskError
RayActorError = ActorError
