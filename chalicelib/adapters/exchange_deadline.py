"""The deadline of one outbound exchange, kept however slowly the far side answers.

urllib3's read timeout bounds each read from the socket, not the exchange: a server
that sends one byte just inside it, again and again, holds a call for as many
timeouts as it sends bytes (headers, then up to the 64 KiB of body we read).  The
attempt's own timeout cannot stop it either: the runner can only abandon the thread,
whose socket stays open for as long as the server likes.  So each exchange gets a
``Deadline``: a timer that, when it fires, shuts down the socket of the hop in flight,
and whatever read was waiting on it ends at once.

The socket becomes known when a request is written on it (``connection_classes``,
the pool's connection types, name it to the deadline of the exchange on this
thread).  The deadline shuts a connection down only while that connection still
serves its exchange: one released to the pool and taken by another exchange is left
alone.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_current = threading.local()  # .deadline: the Deadline of the exchange this thread runs


class Deadline:
    """Shuts down the socket of its exchange's current hop at ``at`` (``time.monotonic``)."""

    def __init__(self, at: float) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ended = False
        self.expired = False
        self._timer = threading.Timer(max(at - time.monotonic(), 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Within the block, requests written on this thread are this exchange's hops."""
        _current.deadline = self
        try:
            yield
        finally:
            _current.deadline = None

    def watch(self, conn: Any) -> None:
        """``conn`` carries this exchange's hop now."""
        with self._lock:
            conn._tasklane_deadline = self
            self._conn = conn
            if self.expired and not self._ended:
                _shut(conn)

    def end(self) -> None:
        """The exchange is over (its body read or dropped): nothing to shut down."""
        with self._lock:
            self._ended = True
            self._conn = None
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            conn = self._conn
            if self._ended or conn is None or getattr(conn, "_tasklane_deadline", None) is not self:
                return
            _shut(conn)


def _shut(conn: Any) -> None:
    sock = getattr(conn, "_tasklane_socket", None)
    if sock is None:
        return
    try:
        # The plain socket's shutdown (under TLS too, where it is the socket the TLS one
        # wraps): SSLSocket.shutdown drops its SSL object, which the reading thread may
        # be using this very moment.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # closed already


def connection_classes() -> tuple[type[Any], type[Any]]:
    """urllib3's HTTP and HTTPS pool classes whose connections report their socket to
    the deadline of the exchange on the calling thread: when it is made (before a TLS
    handshake, which a slow server can drip too) and at each request on it."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(base: type[Any]) -> type[Any]:
        def _new_conn(self: Any) -> Any:
            sock = base._new_conn(self)
            self._tasklane_socket = sock
            _watch(self)
            return sock

        def request(self: Any, *args: Any, **kwargs: Any) -> Any:
            _watch(self)  # a connection the pool kept from an earlier exchange
            return base.request(self, *args, **kwargs)

        return type(f"Deadline{base.__name__}", (base,), {"_new_conn": _new_conn, "request": request})

    http_pool = type("DeadlineHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": watched(HTTPConnection)})
    https_pool = type(
        "DeadlineHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": watched(HTTPSConnection)}
    )
    return http_pool, https_pool


def _watch(conn: Any) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(conn)
