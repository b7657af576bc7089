"""``python -m chalicelib.devservices ensure|stop --state-dir DIR`` (see :func:`.cli.main`)."""

import sys

from chalicelib.devservices.cli import main

if __name__ == "__main__":
    sys.exit(main())
