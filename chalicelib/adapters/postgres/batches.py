"""The store's batch statements (``Store`` inherits them): open a batch with its
tasks, read one.  The counting and the completion are the trigger's (migration 0009).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

import psycopg

from chalicelib.core.batches import BatchRecord, NewBatch
from chalicelib.core.model import NewTask, Status, Task

Row = dict[str, Any]
T = TypeVar("T")


class _Store(Protocol):
    _q: dict[str, str]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Row]]: ...
    def _transaction(self, work: Callable[[psycopg.Connection[Row]], T]) -> T: ...
    def _one(self, name: str, params: dict[str, Any]) -> Row | None: ...
    def _insert_params(self, tasks: Sequence[NewTask], actor: str) -> dict[str, Any]: ...
    def insert_in(self, conn: psycopg.Connection[Row], tasks: Sequence[NewTask], actor: str) -> list[Task]: ...


class BatchQueries:
    """A mixin of ``Store``."""

    def insert_batch_tasks(
        self: _Store, tasks: Sequence[NewTask], batch: NewBatch, *, actor: str
    ) -> tuple[list[Task], BatchRecord | None]:
        """Insert ``tasks`` (each carrying ``batch.id``) and open the batch of those
        inserted, in one transaction.  No batch when none was (every one replayed)."""

        def work(conn: psycopg.Connection[Row]) -> tuple[list[Task], BatchRecord | None]:
            inserted = self.insert_in(conn, tasks, actor)  # many by COPY, as insert_tasks does
            if not inserted:
                return inserted, None
            params = {
                "id": batch.id,
                "tenant": batch.tenant,
                "total": len(inserted),
                "pending": sum(1 for t in inserted if t.status is Status.PENDING),
                "callback_url": batch.callback_url,
                "on_complete": batch.on_complete_json,
                "callback_max_retries": batch.callback_max_retries,
                "callback_timeout_seconds": batch.callback_timeout_seconds,
                "trace_context": batch.trace_context,
            }
            row = conn.execute(self._q["insert_batch"], params).fetchone()
            assert row is not None
            return inserted, BatchRecord.from_row(row)

        return self._transaction(work)

    def prune_batches(self: _Store, retention_seconds: float, *, limit: int = 5000) -> int:
        """Delete batches completed before the retention period whose tasks are all
        gone, among the next ``limit`` past retention after where the previous
        call stopped (from the oldest again once it read the newest); returns how many."""
        row = self._one("prune_batches", {"retention_seconds": retention_seconds, "limit": limit})
        return int(row["pruned"]) if row else 0

    def list_batches(
        self: _Store, tenant: str, *, completed: bool | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[BatchRecord]:
        """A tenant's batches, newest first (only completed or only open ones when
        ``completed`` is given); ``after`` is the (created_at, id) of the previous page's
        last batch."""
        params = {
            "tenant": tenant,
            "completed": completed,
            "after_created": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        }
        with self.connection() as conn:
            return [BatchRecord.from_row(r) for r in conn.execute(self._q["list_batches"], params)]

    def get_batch(self: _Store, tenant: str, batch_id: str) -> BatchRecord | None:
        row = self._one("get_batch", {"id": batch_id, "tenant": tenant})
        return BatchRecord.from_row(row) if row else None
