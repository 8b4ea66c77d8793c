"""The head: the cluster's address and control store (nodes, names, drivers).

`control.Head` holds the state and answers requests; `control.main` runs
the head process, which forks the head machine's node daemon first.
`membership` decides, without I/O, which nodes are dead and who hears of it.
"""

from .control import main

__all__ = ["main"]
