"""``python -m facefuse.cli``: the ``facefuse`` command."""

import sys

from facefuse.cli.main import main

sys.exit(main())
