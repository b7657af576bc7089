"""A PostgreSQL connection held by the one thread that uses it: the drain loop's claims.

The pool's check-out and return (psycopg_pool's lock, its deque, the connection's
state check on the way back) were ~8 % of a one-task claim's wall time on the e2e
path (issue 14, round 10: bench/RESULTS.md).  A drain loop claims one statement at a
time, so it can keep one connection instead, as it keeps its Redis connection
(``adapters.redis.client.HeldConnection``).

It keeps what the pool gives a caller: the same connection options (autocommit,
dict rows, prepared statements or not, the connect timeout), and a connection that
broke, or was left inside a transaction, is closed and not used again, as
``putconn`` discards it; the next use connects anew.  It does not retry a statement
on a new connection: whether a claim that failed mid-way committed is unknown, and
its ids stay in Redis's lease set for the sweeper, as with the pool.  The store
translates errors (``Store.connection``).  Not thread-safe: one thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus


class HeldConnection:
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._conn: psycopg.Connection[Any] | None = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The held connection (connected first if need be); dropped afterwards unless
        it is idle and whole."""
        conn = self._conn
        if conn is None:
            conn = self._conn = psycopg.connect(self._url, **self._options)
        try:
            yield conn
        finally:
            if conn.broken or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                self._conn = None
                conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
