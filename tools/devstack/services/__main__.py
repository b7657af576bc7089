"""``python -m tools.devstack.services ensure|stop --state-dir DIR`` (see :func:`.cli.main`)."""

import sys

from tools.devstack.services.cli import main

if __name__ == "__main__":
    sys.exit(main())
