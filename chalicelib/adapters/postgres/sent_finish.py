"""A batch's finish statement written by the drain loop, its answer read by the
drain's recorder thread (``SentFinish``).

Why: the drain loop hands a batch's outcomes to its recorder thread, so that the
finish and its commit overlap the loop's next claim.  Waking that thread cost the
finish 0.17-0.24 ms before its statement even left, at 200 tasks/s on our 2-core VM:
the woken thread then waited for the GIL while the loop went on to its next wait
(issue 14, round 19).  That delay was the largest step between a task's executor
ending and its ``finished_at``, the statement's ``now()``.

So the loop writes the statement itself, through libpq directly (``direct.Prepared``,
as the claim: a few tens of µs), and hands over only the reading of its answer.  The
statement is one implicit transaction (its Sync), which commits on the server whether
or not its answer has been read yet.  The connection is the pool's, checked out by
the loop and put back by the reader; nothing else uses it in between.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from chalicelib.adapters.postgres.direct import Prepared, Unsuitable, session_lost
from chalicelib.core.records import Recorded
from chalicelib.observability.log import logger

# How long the loop waits for a free connection of the pool before it leaves the whole
# finish to the recorder thread instead (which waits for one as long as it takes).
CHECKOUT_SECONDS = 0.05


class FinishSender:
    """``send`` writes the finish statement on a connection of ``pool``."""

    def __init__(self, pool: ConnectionPool[Any], ensure_open: Callable[[], None], sql: str, *, prepare: bool) -> None:
        self._pool = pool
        self._ensure_open = ensure_open
        self._statement = Prepared("tasklane_finish", sql, prepare=prepare)

    def send(self, params: Mapping[str, Any]) -> SentFinish | None:
        """The statement written with its Sync; None when it cannot go this way (a value
        libpq's text form cannot carry, no free connection, or the write failed): the
        caller then records the ordinary way, which reports what went wrong."""
        try:
            self._ensure_open()
            conn = self._pool.getconn(timeout=CHECKOUT_SECONDS)
        except (PoolTimeout, psycopg.Error):
            return None
        try:
            preparing = self._statement.send_apart(conn, self._statement.values(conn, params))
        except (Unsuitable, psycopg.Error, OSError):
            self._pool.putconn(conn)
            return None
        return SentFinish(self._pool, self._statement, conn, preparing)


class SentFinish:
    """A finish statement on its way; ``recorded`` reads its answer (once, on any
    thread; later calls get the same answer) and gives the connection back to the pool.

    The lane that sent it reads it too, as soon as its batch counts as finished (the
    drainer's ``send_last`` returns ``recorded``): the recorder thread reaches it only
    after the jobs queued before it, and those may need a connection of the pool
    themselves (an ordinary finish, an outbox release).  With this one held until the
    recorder came to it, a small pool had none left for them: the drain loop waited for
    those jobs and they for the pool's timeout, longer than a lease (issue 14, round 20;
    tests/fault/test_dependency_race.py saw tasks run twice)."""

    def __init__(
        self, pool: ConnectionPool[Any], statement: Prepared, conn: psycopg.Connection[Any], preparing: bool
    ) -> None:
        self._pool = pool
        self._statement = statement
        self._conn = conn
        self._preparing = preparing
        self._lock = threading.Lock()
        self._read = False
        self._answer: list[Recorded] | None = None

    def recorded(self) -> list[Recorded] | None:
        """The tasks the statement changed (``Store.finish``'s answer); None when it
        failed, for the caller to record the ordinary way (whether an answer lost with
        its connection had committed is unknown: a second finish then matches none of
        those tasks, which the caller reports as lost leases, as after any such
        failure).  The connection goes back to the pool either way (closed when its
        state is unknown: ``leave_pipeline``)."""
        with self._lock:
            if not self._read:
                self._read = True
                self._answer = self._read_answer()
            return self._answer

    def _read_answer(self) -> list[Recorded] | None:
        conn = self._conn
        try:
            rows = self._statement.rows_apart(conn, self._preparing)
        except psycopg.Error as exc:
            session_lost(conn, [self._statement], exc)  # a DISCARD ALL: prepared again next time
            logger.info("sent finish failed; recording again", extra={"error": str(exc).strip()[:200]})
            return None
        finally:
            self._pool.putconn(conn)
        return [Recorded.from_row(r) for r in rows]
