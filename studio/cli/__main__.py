"""`python -m studio.cli ...`: the `studio` command."""

import sys

from . import main

sys.exit(main())
