"""nbcluster in IPython and Jupyter: ``%load_ext kernel_ext``.

Registers ``%cluster`` (start | connect host:port | status | stop |
disconnect) and ``%%remote``, and makes the output of remote code land
in the cell that submitted it. The cluster is our runtime's, or a Ray
cluster with ``--engine ray`` (see `kernel_ext.engines`).

Example::

    %load_ext kernel_ext
    %cluster start -n 2
    import runtime as ray, kernel_ext
    bar = kernel_ext.ProgressBar(total=10, description="work")
"""

from __future__ import annotations

from typing import Any

from . import engines, notice
from .cell_output import CellOutput
from .progress import ProgressBar, ProgressView, follow, progress
from .status_view import StatusView, status

__all__ = [
    "ProgressBar",
    "ProgressView",
    "StatusView",
    "follow",
    "load_ipython_extension",
    "progress",
    "status",
    "unload_ipython_extension",
]

_router: CellOutput | None = None


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext kernel_ext``."""
    global _router
    from .magics import ClusterMagics

    ipython.register_magics(ClusterMagics)
    notice.install(ipython)  # says once when the cluster in use goes away
    kernel = getattr(ipython, "kernel", None)
    if kernel is not None and _router is None:
        _router = CellOutput(kernel)
        engines.attach_output(_router)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext kernel_ext``: views stop; the cluster stays."""
    global _router
    if StatusView.current is not None:
        StatusView.current.stop()
    ProgressView.stop_all()
    notice.uninstall()
    if _router is not None:
        engines.detach_output()
        _router = None
