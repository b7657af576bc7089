"""The store's side of tasks that react to other tasks' ends (``Store`` inherits it):
the outbox that triggers fill with tasks they made ready (migration 0007).

Kept apart so ``store.py`` stays readable; the SQL is in ``queries.sql`` like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg

from chalicelib.core.records import LiveTask

Row = dict[str, Any]


class _Store(Protocol):
    _q: dict[str, str]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...


class FollowerQueries:
    """A mixin of ``Store``."""

    def take_outbox(self: _Store, publish: Callable[[list[LiveTask]], None], *, limit: int) -> int:
        """Take up to ``limit`` outbox rows and hand their tasks to ``publish`` (the Redis
        push) before the delete commits: if ``publish`` raises, the rows stay for the next
        taker.  Returns how many rows were taken."""
        with self.connection() as conn, conn.transaction():
            rows = [LiveTask.from_row(r) for r in conn.execute(self._q["take_outbox"], {"limit": limit})]
            if rows:
                publish(rows)
            return len(rows)
