"""``python -m facefuse``: the ``facefuse`` command."""

import sys

from facefuse.cli import main

sys.exit(main())
