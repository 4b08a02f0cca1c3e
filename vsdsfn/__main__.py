"""``python -m vsdsfn``: the command line (see :mod:`vsdsfn.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
