"""A test run's Redis servers die with the run, even when it is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tools.devstack import services as devservices


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (nobody reaped it yet).
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_a_killed_runner_leaves_no_redis_behind(tmp_path: Path) -> None:
    # A stand-in for an interrupted test run: it starts a server the way the suite
    # does (the variable set, as tests/conftest.py sets it), reports its pid, and
    # then is killed with SIGKILL, so no finalizer of its own can run.
    script = textwrap.dedent(
        f"""
        import os, sys, time
        os.environ[{devservices.ENV_DIE_WITH_PARENT!r}] = "1"
        from tools.devstack import services as ds
        handle = ds.start_private_redis({str(tmp_path / "redis")!r})
        print(handle.recorded_pid or handle.process.pid, flush=True)
        time.sleep(60)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert runner.stdout is not None
        pid = int(runner.stdout.readline())
        assert _alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"redis-server" in f.read()
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()
    try:
        wait_for(lambda: not _alive(pid), timeout=10, message="the runner's Redis to die with it")
    finally:
        if _alive(pid):  # the check failed: do not leave the server behind either
            os.kill(pid, signal.SIGKILL)
