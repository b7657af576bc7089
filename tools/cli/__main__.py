"""``python -m tools.cli``: the operator CLI (see :mod:`.main`)."""

import sys

from tools.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
