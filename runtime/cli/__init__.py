"""The ``nbcluster`` command line (`commands`) and its demo (`demo`)."""

from .commands import json_resources, main

__all__ = ["json_resources", "main"]
