"""``python -m runtime.node``: a node that joins a head; settings as JSON on stdin."""

from .process import standalone

standalone()
