"""``python -m tools.cli``: the operator CLI (see :mod:`.main`)."""

import signal
import sys

from tools.cli.main import main

if __name__ == "__main__":
    # `python -m tools.cli stats | head`: end quietly when the reader has gone, as
    # other command-line tools do, not with a BrokenPipeError traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
