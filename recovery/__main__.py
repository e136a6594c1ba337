"""`python -m recovery` is the `recovery` command."""

import sys

from recovery.cli import main

sys.exit(main())
