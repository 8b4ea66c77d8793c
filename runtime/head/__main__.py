"""``python -m runtime.head``: settings as one JSON line on stdin."""

from .control import main

main()
