"""A database host that vanishes without a TCP reset (an instance that dies, a
failover that moves its address) fails the queries waiting on it, and those sent to
it afterwards, within ``TASKLANE_DB_TCP_TIMEOUT_SECONDS`` (``sessions.dead_host_options``),
instead of waiting for Linux's TCP defaults: two hours of idle before the first
keepalive probe, about 15 minutes of retransmissions.  A host that is there but slow to
answer is still waited for.

The host is a namespace of the probe's own (``vanished_host_probe.py``, run under
``unshare -n``), cut off by taking its end of a veth pair down: no packet leaves the
machine, and the machine's own PostgreSQL is not involved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("vanished_host_probe.py")
NO_VETH = 3  # the probe's exit code when the kernel gives no veth pair


def test_queries_to_a_vanished_database_host_fail_within_the_tcp_timeout() -> None:
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip", "setpriv")):
        pytest.skip("needs root, unshare, nsenter, ip and setpriv for network namespaces of its own")
    # The probe dies with this process (pdeathsig), and its namespaces with it.
    argv = ["setpriv", "--pdeathsig", "KILL", "unshare", "-n", sys.executable, str(PROBE)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
    if done.returncode == NO_VETH:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The probe's timeout is 2 s; with libpq's defaults each case was still waiting
    # when the probe gave up on it, after 30 s.
    for case in ("in_flight", "sent_after", "store"):
        seconds = result[case]["seconds"]
        assert seconds is not None and seconds < 10, (case, result)
        assert result[case]["error"] != "returned", (case, result)
    # A host that is there but slow to answer is waited for: the timeout is not a
    # statement timeout.
    assert result["alive_after_3_timeouts"] is True, result
    # The store says the database is unreachable (a 503 at the API), as for a refusal.
    assert result["store"]["error"].startswith("StoreError"), result
