"""A local-stack child stops when its supervisor is killed with -9: at once through
the parent death signal, not a poll later (tools.devstack.orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tools.devstack.services import pid_alive

ROOT = Path(__file__).resolve().parents[2]

# A child in a session of its own, like the stack's children, whose polling
# watcher is an hour slow: only the death signal can stop it in time.
CHILD = """
import signal, sys, threading, time
from tools.devstack.orphans import stop_with_parent
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop_with_parent(stop, interval=3600)
print("armed", flush=True)
stop.wait()
print("stopping", flush=True)
"""

# The "supervisor": starts the child, reports its pid, then waits to be killed.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=open(sys.argv[2], "w"),
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(3600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_child_stops_at_once_when_its_parent_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "child.out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TASKLANE_SUPERVISOR_PID", None)
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        try:
            wait_for(lambda: "armed" in out.read_text(), timeout=30, message="the child to arm its death signal")
            parent.kill()
            parent.wait(timeout=10)
            # Its watcher would take an hour: any exit within the deadline is the death
            # signal's.  A generous deadline, not a 2 s stopwatch: on a loaded machine a
            # Python process's SIGTERM handling and exit can take seconds.
            wait_for(lambda: not pid_alive(child_pid), timeout=60, interval=0.01, message="the orphan to exit")
            assert out.read_text().split() == ["armed", "stopping"]  # through its SIGTERM handler, in order
        finally:
            if pid_alive(child_pid):
                os.kill(child_pid, signal.SIGKILL)
