"""The core every driver and worker runs (Ray's "core worker").

`Client` owns a process's connections, its objects and reference counts, and
the tasks and actor calls it submits; the public API (``runtime.api``) and
the worker loop (``runtime.worker``) are built on it.
"""

from .console import print_log
from .core import Client, head_client
from .outbox import HEAD, NODE

__all__ = ["HEAD", "NODE", "Client", "head_client", "print_log"]
