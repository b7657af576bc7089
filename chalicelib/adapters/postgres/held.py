"""A pooled PostgreSQL connection kept by the one thread that uses it: the drain loop's
claims.

A check-out and return per claim (psycopg_pool's lock and deque, the connection's
state check on the way back) is what the drain loop paid on top of the statement; it
claims one statement at a time, so it keeps one connection of the store's pool
instead, as it keeps its Redis connection (``adapters.redis.client.HeldConnection``).
Taken from the pool, not opened beside it: a process still holds at most
``TASKLANE_POOL_MAX_SIZE`` connections, the budget infra/deploy.md sizes RDS by.

A connection that broke, or was left inside a transaction, goes back to the pool at
once (``putconn`` rolls it back or replaces it, as for any caller) and the next use
checks out another.  A statement is not retried on another connection: whether a
claim that failed mid-way committed is unknown, and its ids stay in Redis's lease set
for the sweeper, as before.  The store translates errors (``Store.connection``).  Not
thread-safe: one thread at a time (the loop, and between a claim it sends and the end
of that claim's read, the lane that reads it: ``sent_claim.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

Connection = psycopg.Connection[Any]
# The smallest pool a connection is held from: below it the drainer's other threads
# (its recorder's finishes, heartbeats, progress writes) would wait for the rest.
HOLD_MIN_POOL = 3


def hold(pool: ConnectionPool[Connection], open_pool: Callable[[], None]) -> HeldConnection | None:
    """A holder of one of ``pool``'s connections (``open_pool`` opens it if need be), for
    one thread; the caller closes it (back to the pool).  None for a small pool."""
    if pool.max_size < HOLD_MIN_POOL:
        return None

    def checkout() -> Connection:
        open_pool()
        return pool.getconn()

    return HeldConnection(checkout, pool.putconn)


class HeldConnection:
    def __init__(self, checkout: Callable[[], Connection], checkin: Callable[[Connection], None]) -> None:
        self._checkout = checkout
        self._checkin = checkin
        self._conn: Connection | None = None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The held connection (checked out first if need be); returned to the pool
        afterwards unless it is idle and whole."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._checkout()
        try:
            yield conn
        finally:
            if conn.broken or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                self._conn = None
                self._checkin(conn)

    def close(self) -> None:
        """Return the connection to the pool (it stays open there)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._checkin(conn)
