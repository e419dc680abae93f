"""`python -m nmc.cli ARGS`: the `nmc` command."""

import sys

from nmc.cli import main

sys.exit(main())
