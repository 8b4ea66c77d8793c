"""``python -m runtime.cli``: the ``nbcluster`` command."""

import sys

from .commands import main

sys.exit(main())
