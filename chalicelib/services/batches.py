"""Batch reads.  A batch is opened by ``submit.submit_batch``; its counts and its
completion are kept by the database (migration 0009), so there is no batch use case
besides reading them: one, or a page of them."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.container import Container
from chalicelib.core.batches import BatchRecord
from chalicelib.core.errors import NotFoundError
from chalicelib.services.reads import Position


@dataclass(frozen=True)
class BatchPage:
    items: list[BatchRecord]
    next_after: Position | None  # None on the last page


def get_batch(rt: Container, tenant: str, batch_id: str) -> BatchRecord:
    """The tenant's batch with its counts by state; another tenant's is not found."""
    found = rt.store.get_batch(tenant, batch_id)
    if found is None:
        raise NotFoundError(f"no batch {batch_id}")
    return found


def list_batches(
    rt: Container, tenant: str, *, completed: bool | None, limit: int, after: Position | None
) -> BatchPage:
    """The tenant's batches, newest first; ``completed`` keeps only COMPLETED (True) or
    OPEN (False) ones."""
    found = rt.store.list_batches(
        tenant, completed=completed, after=(after.at, after.task_id) if after else None, limit=limit + 1
    )
    more = len(found) > limit
    items = found[:limit]
    return BatchPage(items, Position(items[-1].created_at, items[-1].id) if more else None)
