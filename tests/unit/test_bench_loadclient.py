"""``bench.loadclient.KeepAlive``, the bench's lean HTTP load client, against a real
socket server on 127.0.0.1 that answers with scripted bytes: one write a request,
answers split across reads or arriving together, and what it refuses to guess at."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from bench.common import BenchError
from bench.loadclient import KeepAlive

Script = Callable[[socket.socket, list[bytes]], None]
Serve = Callable[[Script], tuple[int, list[bytes]]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a one-connection server running ``script(conn, reads)``; returns its port
    and the list the script records what it read in."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(script: Script) -> tuple[int, list[bytes]]:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        reads: list[bytes] = []

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                script(conn, reads)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return listener.getsockname()[1], reads

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=5)


def _read_request(conn: socket.socket) -> bytes:
    """One whole request (head and Content-Length body), however it arrives."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += conn.recv(65536)
    return data


def _answer(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_the_server_reads_the_prepared_request_and_answers_come_back_in_order(serve: Serve) -> None:
    def script(conn: socket.socket, reads: list[bytes]) -> None:
        for n in range(3):
            reads.append(_read_request(conn))
            conn.sendall(_answer(201, b'{"n": %d}' % n))

    port, reads = serve(script)
    headers = {"X-API-Key": "k", "Content-Type": "application/json"}
    client = KeepAlive(port, "/api/v1/tasks", headers, b'{"name": "noop"}')
    try:
        got = [client.post() for _ in range(3)]
    finally:
        client.close()
    assert got == [(201, b'{"n": 0}'), (201, b'{"n": 1}'), (201, b'{"n": 2}')]
    assert reads[0] == (
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-API-Key: k\r\n"
        b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n"
        b'{"name": "noop"}' % port
    )


def test_an_answer_split_byte_by_byte_is_read_whole(serve: Serve) -> None:
    def script(conn: socket.socket, reads: list[bytes]) -> None:
        _read_request(conn)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in _answer(400, b'{"error": "bad"}'):
            conn.sendall(bytes([byte]))
        _read_request(conn)
        conn.sendall(_answer(201, b""))

    port, _ = serve(script)
    client = KeepAlive(port, "/x", {}, b"{}")
    try:
        assert client.post() == (400, b'{"error": "bad"}')
        assert client.post() == (201, b"")  # nothing of the first answer left over
    finally:
        client.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "without Content-Length"),
        (b"SMTP ready\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nshort", "closed the connection"),
    ],
)
def test_what_it_does_not_read_is_an_error_not_a_guess(serve: Serve, answer: bytes, message: str) -> None:
    def script(conn: socket.socket, reads: list[bytes]) -> None:
        _read_request(conn)
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)

    port, _ = serve(script)
    client = KeepAlive(port, "/x", {}, b"{}")
    try:
        with pytest.raises(BenchError, match=message):
            client.post()
    finally:
        client.close()
