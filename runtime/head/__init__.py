"""The head: the cluster's address and control store (nodes, names, drivers).

`control.Head` holds the state and answers requests; `control.main` runs
the head process, which forks the head machine's node daemon first.
"""

from .control import main

__all__ = ["main"]
