"""``python -m tools.devstack run|drain|sweep|api``: the local stack (see :mod:`.supervisor`)."""

import sys

from tools.devstack.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
