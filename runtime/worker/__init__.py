"""The worker process: runs the tasks of whoever leased it, or hosts one actor.

`loop.WorkerLoop` is the worker's main loop; `output` sends its prints to
the cell that caused them.
"""

from .loop import Current, current_task, main

__all__ = ["Current", "current_task", "main"]
