"""`python -m recovery` is the `recovery` command."""

import sys

from recovery.cli.main import main

sys.exit(main())
