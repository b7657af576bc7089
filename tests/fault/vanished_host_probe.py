"""Run inside a network namespace of its own (``unshare -n``), never on the host.

``test_postgres_host_vanishes.py`` starts it as ``unshare -n python <this file>``.  It
makes a second namespace (a ``sleep`` started under ``unshare -n``) joined to this one
by a veth pair, 10.123.0.1 here and 10.123.0.2 there, and serves PostgreSQL's start-up
handshake there (``_SERVER``: it answers the start-up, then reads and never answers, as
a host does whose backend is busy).  Taking the far end of the veth down makes that
host vanish without a reset: packets to it are dropped, nothing answers, as when a
database instance dies or a failover moves its address.  Nothing here can reach
another machine: the two namespaces have no other interface.

Three cases, each on a connection made with the store's options
(``sessions.connection_options``) and a TCP timeout of ``TIMEOUT`` seconds:
``in_flight``, a query the host has received and never answers is still waiting after
three timeouts (``alive_after_3_timeouts``: a long statement is not cut), then the host
vanishes; ``sent_after``, the host vanishes while the connection is idle and a query is
sent afterwards; ``store``, the same through ``Store`` (its pool, its error
translation).  Prints one JSON line: the seconds each case took to fail once the host
was gone and what it raised, or None where it was still waiting after ``PATIENCE``
seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg
from psycopg.pq import TransactionStatus

from chalicelib.adapters.postgres.sessions import connection_options
from chalicelib.adapters.postgres.store import Store
from tests.helpers import wait_for

HERE, THERE = "10.123.0.1", "10.123.0.2"
PORT = 5432
TIMEOUT = 2.0
PATIENCE = 30.0
DIE_WITH_ME = ("setpriv", "--pdeathsig", "KILL")
NO_VETH = 3  # exit code: the kernel gives no veth pair (the test skips)
URL = f"postgresql://probe@{THERE}:{PORT}/probe?sslmode=disable"

# PostgreSQL's side of the start-up (protocol 3.0): refuse SSL and GSS encryption,
# then AuthenticationOk, BackendKeyData and ReadyForQuery; afterwards read, say nothing
# to the client, and print a line for each read.
_SERVER = r"""
import socket, struct, sys, threading
HOST, PORT = sys.argv[1], int(sys.argv[2])
def serve(c):
    while True:
        n, code = struct.unpack("!ii", c.recv(8, socket.MSG_WAITALL))
        if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
            c.sendall(b"N")
            continue
        c.recv(n - 8, socket.MSG_WAITALL)
        break
    ok, key = b"R" + struct.pack("!ii", 8, 0), b"K" + struct.pack("!iii", 12, 1, 2)
    c.sendall(ok + key + b"Z" + struct.pack("!i", 5) + b"I")
    while c.recv(65536):
        print("query", flush=True)  # the probe waits for this before cutting the link
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((HOST, PORT))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _net_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def timed(call: Callable[[], Any], *, then: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """``call`` on a thread; how long it took to raise, from when ``then`` (run meanwhile)
    returned (None if still waiting after PATIENCE more: the thread is a daemon and dies
    with this process)."""
    out: dict[str, Any] = {"seconds": None, "error": None}

    started = [time.monotonic()]

    def run() -> None:
        try:
            call()
            out["error"] = "returned"
        except Exception as exc:  # what it raised is the finding
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["seconds"] = round(time.monotonic() - started[0], 2)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    then()
    started[0] = time.monotonic()
    t.join(PATIENCE)
    return out


def main() -> None:
    sh("ip", "link", "set", "lo", "up")
    # Killed by the kernel when this process dies, however it dies (no leftover sleep
    # or server): exec'd in place by setpriv, unshare and nsenter, this is their parent.
    peer = subprocess.Popen([*DIE_WITH_ME, "unshare", "-n", "sleep", "600"])
    try:
        wait_for(lambda: _net_ns(peer.pid) != _net_ns(os.getpid()), timeout=10, message="the peer's network namespace")
        there = ["nsenter", "-t", str(peer.pid), "-n"]
        try:
            sh("ip", "link", "add", "va", "type", "veth", "peer", "name", "vb")
        except subprocess.CalledProcessError as exc:
            print(f"no veth pair here: {exc.stderr.decode(errors='replace').strip()}", file=sys.stderr)
            sys.exit(NO_VETH)
        sh("ip", "link", "set", "vb", "netns", str(peer.pid))
        sh("ip", "addr", "add", f"{HERE}/30", "dev", "va")
        sh("ip", "link", "set", "va", "up")
        sh(*there, "ip", "link", "set", "lo", "up")
        sh(*there, "ip", "addr", "add", f"{THERE}/30", "dev", "vb")
        sh(*there, "ip", "link", "set", "vb", "up")
        argv = [*there, *DIE_WITH_ME, sys.executable, "-c", _SERVER, THERE, str(PORT)]
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            queries = server.stdout

            def link(up: bool) -> None:
                sh(*there, "ip", "link", "set", "vb", "up" if up else "down")

            print(json.dumps(cases(link, lambda: queries.readline())))
        finally:
            server.kill()
    finally:
        peer.kill()


def cases(link: Callable[[bool], None], query_arrived: Callable[[], object]) -> dict[str, Any]:
    options = connection_options(tcp_timeout_seconds=TIMEOUT)
    deadline = time.monotonic() + 10
    while True:  # the server's first moments in its namespace
        try:
            conn = psycopg.connect(URL, **options)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    result: dict[str, Any] = {}

    def query() -> None:
        conn.execute("SELECT 1")

    # A query the host never answers, as when a statement runs long.  While the host is
    # there (its kernel acknowledges) the timeout must not cut it: it is still waiting
    # after three timeouts.  Then the host vanishes, and it must fail.
    def alive_then_cut() -> None:
        query_arrived()
        time.sleep(3 * TIMEOUT)  # the length of the check, not a wait for something
        result["alive_after_3_timeouts"] = conn.info.transaction_status == TransactionStatus.ACTIVE
        link(False)

    result["in_flight"] = timed(query, then=alive_then_cut)
    link(True)

    # The host vanishes while the connection is idle; then a query is sent.
    conn = psycopg.connect(URL, **options)
    link(False)
    result["sent_after"] = timed(query)
    link(True)

    # Through the store: its pool's connection, opened before the host vanishes.
    store = Store(URL, tcp_timeout_seconds=TIMEOUT, max_size=1)
    with store.connection():
        pass
    link(False)
    result["store"] = timed(lambda: store.get_task("probe", "00000000-0000-7000-8000-000000000000"))
    link(True)
    return result


if __name__ == "__main__":
    main()
