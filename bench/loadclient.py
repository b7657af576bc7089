"""A lean keep-alive HTTP/1.1 client for the bench's load: each request is one prepared
write, each answer is read into one buffer and checked for its status and length.

Why not ``http.client``: on the bench's 2-core machine the load shares the cores with
the stack it measures.  ``http.client`` costs 0.20-0.26 ms of CPU a request (the
request built header by header, the answer's headers parsed by the ``email``
package), 11-13 % of all the CPU that load takes, and it writes the head and the body
of a POST in two sends, so the server reads each request in two parts.  A load tool (wrk, k6)
spends a fraction of that and sends a small request in one write; this client does
the same, at 0.05-0.07 ms a request (bench/RESULTS.md, round 17).

Only what the bench's servers answer is understood: a status line, headers, and a body
of ``Content-Length`` bytes.  Anything else (chunked bodies, a closed connection, a
malformed head) raises ``BenchError`` rather than being guessed at.
"""

from __future__ import annotations

import socket

from bench.common import BenchError

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


class KeepAlive:
    """One connection to ``127.0.0.1:port`` that POSTs the same request again and again:
    ``body`` to ``path`` with ``headers``, prepared once."""

    def __init__(self, port: int, path: str, headers: dict[str, str], body: bytes, *, timeout: float = 10.0) -> None:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
        self._request = head.encode() + body
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def post(self) -> tuple[int, bytes]:
        """Send the request in one write; the answer's status and body."""
        self._sock.sendall(self._request)
        return self._answer()

    def _answer(self) -> tuple[int, bytes]:
        while (end := self._buf.find(_HEAD_END)) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise BenchError("HTTP answer: no end of headers in 64 KiB")
            self._fill()
        head = self._buf[:end].decode("latin-1")
        status_line, _, fields = head.partition("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BenchError(f"HTTP answer: bad status line {status_line[:80]!r}")
        length: int | None = None
        for field in fields.split("\r\n"):
            name, _, value = field.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding":
                raise BenchError(f"HTTP answer: Transfer-Encoding {value.strip()} is not read here")
        if length is None:
            raise BenchError("HTTP answer without Content-Length")
        start = end + len(_HEAD_END)
        while len(self._buf) < start + length:
            self._fill()
        body, self._buf = self._buf[start : start + length], self._buf[start + length :]
        return int(parts[1]), body

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise BenchError("HTTP answer: the server closed the connection")
        self._buf += chunk

    def close(self) -> None:
        self._sock.close()
