"""nbcluster in IPython and Jupyter: ``%load_ext kernel_ext``.

Registers ``%cluster`` (start | connect host:port | status | stop |
disconnect) and ``%%remote``, and makes the output of remote code land
in the cell that submitted it.

Example::

    %load_ext kernel_ext
    %cluster start -n 2
    import runtime as ray, kernel_ext
    bar = kernel_ext.ProgressBar(total=10, description="work")
"""

from __future__ import annotations

from typing import Any

from runtime import session

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
    kernel = getattr(ipython, "kernel", None)
    if kernel is not None and _router is None:
        _router = CellOutput(kernel)
        session.state.ctx_provider = _router.current_ctx
        session.state.client_hooks.append(_router.install)
        if session.state.client is not None:
            _router.install(session.state.client)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext kernel_ext``: views stop; the cluster stays."""
    global _router
    if StatusView.current is not None:
        StatusView.current.stop()
    ProgressView.stop_all()
    if _router is not None:
        if _router.install in session.state.client_hooks:
            session.state.client_hooks.remove(_router.install)
        session.state.ctx_provider = None
        if session.state.client is not None:
            from runtime.client import print_log

            session.state.client.log_handler = print_log
        _router = None
