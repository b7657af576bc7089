"""Batch reads.  A batch is opened by ``submit.submit_batch``; its counts and its
completion are kept by the database (migration 0009), so there is no batch use case
besides reading one."""

from __future__ import annotations

from chalicelib.container import Container
from chalicelib.core.batches import BatchRecord
from chalicelib.core.errors import NotFoundError


def get_batch(rt: Container, tenant: str, batch_id: str) -> BatchRecord:
    """The tenant's batch with its counts by state; another tenant's is not found."""
    found = rt.store.get_batch(tenant, batch_id)
    if found is None:
        raise NotFoundError(f"no batch {batch_id}")
    return found
