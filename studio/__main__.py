"""`python -m studio ...`: the `studio` command (studio.cli), as `python -m studio.cli` is."""

import sys

from .cli import main

sys.exit(main())
