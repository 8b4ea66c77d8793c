"""Linux process controls the runtime's processes set on themselves (``prctl``), and
which of a worker's threads takes its SIGINT.

No-ops elsewhere: the runtime then relies on its pipes alone to notice a parent's death.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies."""
    _prctl(PR_SET_PDEATHSIG, sig)


def set_process_name(name: str) -> None:
    """Name this process as `ps`, `top` and psutil show it (``nbc-worker``...), as Ray's ``ray::IDLE``.

    Only the short name (15 bytes) changes; the command line stays the Python one."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def _prctl(option: int, arg: int | bytes) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def block_sigint() -> set:
    """This thread no longer takes SIGINT (a thread pool's initializer: see `sigint_blocked`);
    the signal mask it had."""
    if not hasattr(signal, "pthread_sigmask"):
        return set()
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Threads started in this block never take SIGINT: the kernel gives a process's SIGINT
    to any thread that does not block it, and one taken by a helper thread does not interrupt
    the main thread's blocking call (a task's ``sleep``), so its KeyboardInterrupt waited for
    the call to end (a cancel then took as long as the task). A SIGINT that comes meanwhile
    waits, and reaches the main thread at the end of the block."""
    old = block_sigint()
    try:
        yield
    finally:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
