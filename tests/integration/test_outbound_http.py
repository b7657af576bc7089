"""``http-request`` and webhooks against real servers: redirects, Retry-After, and
the address guard in a network namespace of its own.

The metadata tests never send a packet to a non-loopback address, even with the
guard broken: they run ``outbound_netns_probe.py`` under ``unshare -n``, where the
metadata addresses live on the namespace's own loopback with stand-in servers
that count requests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.adapters.outbound_http import AddressGuard, RefusedTarget
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.tasktypes.context import TaskContext
from chalicelib.tasktypes.http_request import MAX_RETRY_AFTER, call, retry_after_seconds

PROBE = Path(__file__).with_name("outbound_netns_probe.py")
LOCAL = AddressGuard(allow_private=True)  # these servers live on loopback


class Server:
    """Answers by path: /hops/N redirects N times, /loop forever, /status/C with C."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                outer.requests.append((self.command, self.path, dict(self.headers.items())))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                parts = self.path.strip("/").split("/")
                headers: dict[str, str] = {}
                if parts[0] == "hops" and int(parts[1]) > 0:
                    code, headers = 302, {"Location": f"/hops/{int(parts[1]) - 1}"}
                elif parts[0] == "loop":
                    code, headers = 301, {"Location": "/loop"}
                elif parts[0] == "status":
                    code = int(parts[1])
                    if len(parts) > 2:
                        headers = {"Retry-After": parts[2].replace("_", " ")}
                else:
                    code = 200
                body = json.dumps({"path": self.path}).encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def ctx() -> TaskContext:
    c = TaskContext(task_id="t", name="http-request", tenant="t", attempt=1, max_retries=3, timeout_seconds=10)
    c.started_monotonic = time.monotonic()
    return c


def test_get_follows_redirects_and_records_where_it_ended(server: Server) -> None:
    result = call({"url": server.url + "/hops/3"}, ctx(), LOCAL)
    assert result["status"] == 200 and result["json"] == {"path": "/hops/0"}
    assert result["url"] == server.url + "/hops/0"
    assert [p for _, p, _ in server.requests] == ["/hops/3", "/hops/2", "/hops/1", "/hops/0"]


def test_a_redirect_loop_fails_permanently_after_five_hops(server: Server) -> None:
    with pytest.raises(PermanentError, match="more than 5"):
        call({"url": server.url + "/loop"}, ctx(), LOCAL)
    assert len(server.requests) == 6


def test_other_methods_never_follow_a_redirect(server: Server) -> None:
    result = call({"url": server.url + "/hops/1", "method": "POST", "json": {"a": 1}}, ctx(), LOCAL)
    assert result["status"] == 302 and result["headers"]["location"] == "/hops/0"
    assert len(server.requests) == 1


def test_private_addresses_are_refused_without_the_setting(server: Server) -> None:
    with pytest.raises(RefusedTarget, match="not a public address"):
        call({"url": server.url + "/"}, ctx(), AddressGuard(allow_private=False))
    assert server.requests == []


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_steers_the_retry(server: Server, status: int) -> None:
    with pytest.raises(RetryableError) as raised:
        call({"url": f"{server.url}/status/{status}/120"}, ctx(), LOCAL)
    assert raised.value.retry_after == 120


def test_retry_after_as_an_http_date(server: Server) -> None:
    date = formatdate(time.time() + 90, usegmt=True).replace(" ", "_")
    with pytest.raises(RetryableError) as raised:
        call({"url": f"{server.url}/status/503/{date}"}, ctx(), LOCAL)
    assert raised.value.retry_after is not None and 80 <= raised.value.retry_after <= 91


def test_retry_after_is_ignored_on_other_statuses_and_capped() -> None:
    assert retry_after_seconds("86400000") == MAX_RETRY_AFTER
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: now
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_500_with_retry_after_uses_the_backoff(server: Server) -> None:
    with pytest.raises(RetryableError) as raised:
        call({"url": f"{server.url}/status/500/120"}, ctx(), LOCAL)
    assert raised.value.retry_after is None


def _probe(*args: str) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a network namespace of its own")
    setup = (
        "ip link set lo up && ip addr add 169.254.169.254/32 dev lo"
        ' && ip addr add fd00:ec2::254/128 dev lo nodad && exec "$0" "$@"'
    )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", setup, sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_metadata_and_the_runtime_api_are_never_reached_directly_or_by_redirect() -> None:
    report = _probe()
    assert set(report["results"]) >= {"direct", "direct_v6", "mapped", "redirect", "redirect_v6", "runtime_api"}
    for name, result in report["results"].items():
        if name == "webhook_redirect":
            assert "302" in result and "redirects are not followed" in result
        else:
            assert result == "refused", (name, result)
    touched = report["hits_before_control"]
    assert not {"metadata-v4", "metadata-v6", "runtime-api"} & set(touched), touched
    # The control: the stand-ins answer when called directly, so zero above means refused.
    assert report["hits"]["metadata-v4"] == report["hits"]["metadata-v6"] == report["hits"]["runtime-api"] == 1


def test_the_namespace_probe_catches_a_broken_guard() -> None:
    report = _probe("--broken")
    assert report["hits_before_control"].get("metadata-v4", 0) >= 1
    assert report["hits_before_control"].get("runtime-api", 0) == 1


class _Drip:
    """A TCP server on loopback that answers one byte at a time, each just inside a
    1 s read timeout: the headers (phase "headers") or, after whole headers, the body."""

    def __init__(self, phase: str, gap: float = 0.3, total: int = 200) -> None:
        import socket

        self.phase, self.gap, self.total = phase, gap, total
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {self.total}\r\nX-Pad: ".encode()
            if self.phase == "body":
                conn.sendall(head + b"x\r\n\r\n")
                drip = b"y" * self.total
            else:
                drip = head + b"z" * self.total
            for i in range(len(drip)):
                if self.stop.wait(self.gap):
                    return
                try:
                    conn.sendall(drip[i : i + 1])
                except OSError:
                    return  # the caller gave up and shut its end: what the test wants

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_server_that_drips_its_answer_cannot_hold_the_call_past_its_timeout(phase: str) -> None:
    """urllib3's read timeout bounds each read, not the call: one byte every 0.3 s held
    a 1 s call for as many reads as the server sent bytes (here 60 s and more)."""
    from chalicelib.adapters.outbound_http import client

    drip = _Drip(phase)
    try:
        started = time.monotonic()
        with pytest.raises(RetryableError, match="time"):
            exchange = client().request("GET", drip.url, guard=LOCAL, timeout=1.0)
            exchange.read_body(65536, "GET drip")
        # The bound is the 1 s deadline; the margin is for a loaded machine, far below
        # the 60 s the drip lasts.
        assert time.monotonic() - started < 15
    finally:
        drip.close()


def test_a_deadline_leaves_a_connection_another_exchange_took_alone() -> None:
    """The deadline of an exchange whose connection went back to the pool must not shut
    the socket down under the next exchange using it.  A keep-alive server answers the
    second request's headers, then its body only once the first deadline has fired."""
    from chalicelib.adapters.outbound_http import client

    fired = threading.Event()
    answered = 0

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the connection goes back to the pool for reuse

        def do_GET(self) -> None:
            nonlocal answered
            answered += 1
            body = json.dumps({"n": answered}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            if answered == 2:
                fired.wait(10)
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        first = client().request("GET", url, guard=LOCAL, timeout=30)
        first.response.read()  # read to its end: urllib3 puts the connection back in the pool
        second = client().request("GET", url, guard=LOCAL, timeout=30)
        assert first.deadline._conn is second.deadline._conn  # the same connection
        first.deadline._expire()  # as if the first exchange's timer fired now
        fired.set()
        assert second.status == 200 and json.loads(second.read_body(65536, "second")) == {"n": 2}
        first.release()
    finally:
        fired.set()
        httpd.shutdown()
        httpd.server_close()
