"""Children of the local stack stop when their supervisor is gone.

Children run in sessions of their own (so Ctrl-C reaches only the supervisor, which
stops them in order).  If the supervisor is killed outright (``kill -9``) they would
be orphans still holding the API's port, so that an immediate ``make run`` would
find it in use.  Two mechanisms, the first one instant:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` makes the kernel send SIGTERM the
  moment the parent dies, and the child's own SIGTERM handler stops it in order.
  The kernel tracks the parent *thread* that forked the child, so children must be
  started from a thread that lives as long as the parent (the supervisor's and the
  test runner's main thread do).
- Everywhere (and as a safety net): a thread polls ``getppid()``.

The supervisor exports its pid as ``TASKLANE_SUPERVISOR_PID``: a child that starts
after its parent already died (the death signal is only armed once ``prctl`` runs)
sees that its parent is not the supervisor and stops at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import sys
import threading
from typing import Any

SUPERVISOR_PID_ENV = "TASKLANE_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def arm_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    True when armed (Linux with a C library that has ``prctl``); False elsewhere,
    where the polling watcher alone applies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def expected_parent() -> int:
    """The supervisor's pid when it started us (from the environment), else our parent's."""
    value = os.environ.get(SUPERVISOR_PID_ENV, "")
    return int(value) if value.isdigit() else os.getppid()


def stop_with_parent(stop: threading.Event, interval: float = 1.0) -> None:
    """Set ``stop`` when the parent process goes away: at once through the parent
    death signal (which the caller's SIGTERM handler turns into ``stop``), else
    within ``interval`` seconds through the watcher thread."""
    parent = expected_parent()
    arm_parent_death_signal()
    if os.getppid() != parent:  # it died before the signal was armed
        stop.set()
        return

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def parent_death_argv(sig: str) -> list[str]:
    """``setpriv --pdeathsig SIG``, to go before a command line: the kernel sends the
    program it starts ``sig`` the moment the thread that started it is gone (the flag
    survives the exec).  util-linux's setpriv, not ``preexec_fn``, because a
    ``preexec_fn`` in a process with threads can deadlock.  Empty without setpriv."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig] if setpriv else []


def sigterm_as_interrupt() -> None:
    """From now on the first SIGTERM raises ``KeyboardInterrupt`` in the main thread, as
    Ctrl-C does, so ``finally`` blocks and fixtures' teardowns run (Python's default ends
    the process on the spot and leaves what it started running).  A second SIGTERM is
    ignored: it must not break off the unwinding the first one started."""

    def interrupted(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
