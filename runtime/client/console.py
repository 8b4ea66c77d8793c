"""How a driver shows its workers' output by default: prefixed like Ray's ``(pid=…)``.

The notebook layer replaces it (`Client.log_handler`) to put each line in
the cell whose code printed it.
"""

from __future__ import annotations

import sys
from typing import Any


def print_log(owner: bytes, ctx: Any, stream: int, text: str, label: str) -> None:
    """Default output of worker prints in a driver: prefixed like Ray's ``(pid=…)``."""
    out = sys.stderr if stream == 2 else sys.stdout
    prefix = f"({label}) "
    if getattr(out, "isatty", lambda: False)():
        prefix = f"\x1b[36m{prefix}\x1b[0m"
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        out.write("".join(prefix + line + "\n" for line in lines))
        out.flush()
    except (ValueError, OSError):
        pass
