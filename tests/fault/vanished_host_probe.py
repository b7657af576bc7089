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
``in_flight``, the host vanishes while a query waits for its answer; ``sent_after``, it
vanishes while the connection is idle and a query is sent afterwards; ``store``, the
same through ``Store`` (its pool, its error translation).  Prints one JSON line: the
seconds each case took to fail and what it raised, or None where it was still waiting
after ``PATIENCE`` seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from chalicelib.adapters.postgres.sessions import connection_options
from chalicelib.adapters.postgres.store import Store

HERE, THERE = "10.123.0.1", "10.123.0.2"
PORT = 5432
TIMEOUT = 2.0
PATIENCE = 30.0
DIE_WITH_ME = ("setpriv", "--pdeathsig", "KILL")
NO_VETH = 3  # exit code: the kernel gives no veth pair (the test skips)
URL = f"postgresql://probe@{THERE}:{PORT}/probe?sslmode=disable"

# PostgreSQL's side of the start-up (protocol 3.0): refuse SSL and GSS encryption,
# then AuthenticationOk, BackendKeyData and ReadyForQuery; afterwards read and say nothing.
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
        pass
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


def timed(call: Callable[[], Any]) -> dict[str, Any]:
    """``call`` on a thread; how long it took to raise (None if still waiting after
    PATIENCE: the thread is a daemon and dies with this process)."""
    out: dict[str, Any] = {"seconds": None, "error": None}

    def run() -> None:
        started = time.monotonic()
        try:
            call()
            out["error"] = "returned"
        except Exception as exc:  # what it raised is the finding
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["seconds"] = round(time.monotonic() - started, 2)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(PATIENCE)
    return out


def main() -> None:
    sh("ip", "link", "set", "lo", "up")
    # Killed by the kernel when this process dies, however it dies (no leftover sleep
    # or server): exec'd in place by setpriv, unshare and nsenter, this is their parent.
    peer = subprocess.Popen([*DIE_WITH_ME, "unshare", "-n", "sleep", "600"])
    try:
        time.sleep(0.2)  # unshare has made the namespace and exec'd sleep
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
        server = subprocess.Popen([*there, *DIE_WITH_ME, sys.executable, "-c", _SERVER, THERE, str(PORT)])
        try:
            print(json.dumps(cases(lambda up: sh(*there, "ip", "link", "set", "vb", "up" if up else "down"))))
        finally:
            server.kill()
    finally:
        peer.kill()


def cases(link: Callable[[bool], None]) -> dict[str, Any]:
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

    # A query waits for its answer; then the host vanishes.
    threading.Timer(0.5, link, (False,)).start()
    result["in_flight"] = timed(lambda: conn.execute("SELECT 1"))
    link(True)

    # The host vanishes while the connection is idle; then a query is sent.
    conn = psycopg.connect(URL, **options)
    link(False)
    result["sent_after"] = timed(lambda: conn.execute("SELECT 1"))
    link(True)

    # Through the store: its pool's connection, opened before the host vanishes.
    store = Store(URL, tcp_timeout_seconds=TIMEOUT, max_size=1)
    with store.connection() as held:
        held.pgconn.socket  # a connection exists  # noqa: B018
    link(False)
    result["store"] = timed(lambda: store.get_task("probe", "00000000-0000-7000-8000-000000000000"))
    link(True)
    return result


if __name__ == "__main__":
    main()
