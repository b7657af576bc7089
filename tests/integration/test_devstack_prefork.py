"""Several local API processes on one port (``python -m tools.devstack api --processes
N``, ``tools.devstack.prefork``): they share one listening socket and serve the API
together, and they stop together, whichever of them goes first."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import new_api_key, start_local_api, wait_for
from tools.devstack.services import pid_alive

ROOT = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"Serving on http://127\.0\.0\.1:(\d+) \(pid (\d+)\)")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; fork")


@dataclass
class Api:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    key: str

    def pids(self) -> list[int]:
        return [int(pid) for _, pid in SERVING.findall(self.log.read_text())]

    def worker(self) -> int:
        """The process the first one forked (they log "Serving on" in either order)."""
        pids = self.pids()
        assert self.proc.pid in pids, pids
        (worker,) = [pid for pid in pids if pid != self.proc.pid]
        return worker

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def api(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Api]:
    """Two API processes on a free port, both serving."""
    key = new_api_key(database_url, "prefork-")
    log = tmp_path / "api.log"
    proc, port = start_local_api(database_url, redis_url, "prefork-" + uuid.uuid4().hex[:8], log, "--processes", "2")
    server = Api(proc, log, port, key)
    try:
        wait_for(lambda: proc.poll() is not None or len(server.pids()) == 2, timeout=90, message="two API processes")
        assert proc.poll() is None, log.read_text()
        yield server
    finally:
        for pid in [proc.pid, *server.pids()]:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:``port`` (/proc/net/tcp, state 0A)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_the_processes_share_one_listening_socket_and_serve_submits(api: Api) -> None:
    parent, worker = api.proc.pid, api.worker()
    listening = _listening_inode(api.port)
    # One socket (one accept queue) in both, not one SO_REUSEPORT socket each.
    assert listening in _socket_inodes(parent) and listening in _socket_inodes(worker)

    def submit(n: int) -> int:
        with requests.Session() as s:  # a connection of its own, for either process to accept
            r = s.post(
                api.base + "/api/v1/tasks",
                data=b'{"name": "noop", "payload": {"n": %d}}' % n,
                headers={"X-API-Key": api.key, "Content-Type": "application/json"},
                timeout=30,
            )
            return r.status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(submit, range(40))) == {201}


def test_a_worker_that_dies_stops_the_api_with_an_error(api: Api) -> None:
    worker = api.worker()
    os.kill(worker, signal.SIGKILL)
    assert api.proc.wait(timeout=60) == 1  # the supervisor then stops the stack
    assert f"API process {worker} exited with code -9" in api.log.read_text()


def test_sigterm_to_the_first_process_stops_them_all(api: Api) -> None:
    worker = api.worker()
    api.proc.terminate()  # what _terminate does to a stack's children on Ctrl-C
    assert api.proc.wait(timeout=60) == 0
    wait_for(lambda: not pid_alive(worker), timeout=30, message="the worker to exit")


def test_the_workers_stop_when_the_first_process_is_killed(api: Api) -> None:
    """A killed supervisor's API stops at once (parent-death signal); its workers then
    stop with it in turn, leaving the port free."""
    worker = api.worker()
    api.proc.kill()
    api.proc.wait(timeout=30)
    wait_for(lambda: not pid_alive(worker), timeout=60, interval=0.05, message="the worker to exit")
    wait_for(lambda: _free(api.port), timeout=30, message="the port to be free")


def _free(port: int) -> bool:
    from tools.devstack.supervisor import _port_free

    return _port_free(port)


def test_an_api_process_whose_stop_hangs_exits_after_its_grace_with_the_stacks() -> None:
    """Whatever holds a stopping API process up (here a thread that never ends), it
    exits after its grace, its port then free, and its log says where each thread was."""
    code = (
        "import threading, time\n"
        "from tools.devstack.supervisor import _exit_if_stuck\n"
        "def hang_here():\n"
        "    threading.Event().wait()\n"
        "threading.Thread(target=hang_here).start()\n"  # not a daemon: blocks the exit
        "_exit_if_stuck(0.5)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "s after it was told to stop" in done.stdout, done.stdout
    assert "hang_here" in done.stdout, done.stdout
