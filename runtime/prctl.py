"""Linux process controls the runtime's processes set on themselves (``prctl``).

No-ops elsewhere: the runtime then relies on its pipes alone to notice a parent's death.
"""

from __future__ import annotations

import ctypes
import signal
import sys

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
