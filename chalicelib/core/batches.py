"""Batches: what a batch submit asks for (``BatchSpec``), what the store keeps
(``NewBatch``) and reads back (``BatchRecord``).  No I/O here.

A batch holds the tasks one batch request created: items refused by validation and
items replayed by their idempotency key are not in it.  Its counts are kept by a
trigger (migration 0009) as its tasks become final, and when the last one does, in
that same transaction, it fires once: a ``tasklane.webhook`` task (``batch.completed``)
and/or the follow-up task, whose payload gets a ``batch`` key with the counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import PayloadError, ValidationError
from chalicelib.core.urls import check_callback_url

if TYPE_CHECKING:
    # The store imports this module for the batch records: the drain and sweep
    # functions must not load the request parsing and its schemas with it.
    from chalicelib.config import Settings
    from chalicelib.core.requests import TaskRequest, TaskTypes

# What the follow-up's payload is checked with at submit, in place of the counts it
# will get: a task type that refuses unknown payload fields cannot be a follow-up, and
# is refused then (400) rather than dead-lettered when the batch completes.  (The
# schema refuses a request's own "batch" key: BatchFollowUp in core.schemas.)
_SAMPLE_SUMMARY = {
    "id": "00000000-0000-0000-0000-000000000000",
    "total": 1,
    "completed": 1,
    "failed": 0,
    "cancelled": 0,
    "created_at": "2026-01-01T00:00:00+00:00",
    "completed_at": "2026-01-01T00:00:00+00:00",
    "follow_up_task_id": "00000000-0000-0000-0000-000000000000",
}


@dataclass(frozen=True)
class BatchSpec:
    """The ``batch`` object of a batch request, validated."""

    callback_url: str | None = None
    on_complete: TaskRequest | None = None

    def on_complete_json(self) -> str | None:
        """The follow-up as the batch row keeps it (every default resolved)."""
        f = self.on_complete
        if f is None:
            return None
        return json.dumps(
            {
                "name": f.name,
                "payload": f.payload,
                "priority": f.priority.value,
                "max_retries": f.max_retries,
                "timeout_seconds": f.timeout_seconds,
                "callback_url": f.callback_url,
            },
            separators=(",", ":"),
        )


def parse_batch_spec(body: Any, settings: Settings, registry: TaskTypes) -> BatchSpec:
    """The request's ``batch`` object (the BatchRequest schema has checked its shape)."""
    from chalicelib.core.requests import parse_task

    callback_url = body.get("callback_url")
    if callback_url is not None:
        try:
            check_callback_url(callback_url, allow_private=settings.webhook_allow_private)
        except PayloadError as exc:
            raise ValidationError(f"batch.callback_url: {exc}", details={"field": "batch.callback_url"}) from None
    follow_up = body.get("on_complete")
    if follow_up is None:
        return BatchSpec(callback_url)
    where = "batch.on_complete: "
    parsed = parse_task(follow_up, settings, registry, where=where, schema="BatchFollowUp")
    try:
        registry.validate(parsed.name, {**parsed.payload, "batch": _SAMPLE_SUMMARY})
    except PayloadError as exc:
        raise ValidationError(
            f'{where}{parsed.name} cannot be a follow-up: its payload gets a "batch" key with the counts, and {exc}',
            details={"field": "batch.on_complete.name"},
        ) from None
    return BatchSpec(callback_url, parsed)


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch to open with its tasks (``Store.insert_batch_tasks``)."""

    id: str
    tenant: str
    callback_url: str | None
    on_complete_json: str | None
    callback_max_retries: int
    callback_timeout_seconds: int
    trace_context: str | None


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch with its counts (query ``get_batch``): ``total`` tasks, of which
    ``remaining`` are not final; the final ones by status (kept by the trigger, so
    they survive the pruning of old tasks) and the live ones by status (counted from
    the tasks)."""

    id: str
    tenant: str
    total: int
    remaining: int
    completed: int
    failed: int
    cancelled: int
    pending: int
    queued: int
    processing: int
    callback_url: str | None
    on_complete: dict[str, Any] | None
    created_at: datetime
    completed_at: datetime | None
    callback_task_id: str | None
    follow_up_task_id: str | None

    @property
    def status(self) -> str:
        """COMPLETED once every task was final (the completion fired); else OPEN.  A
        redriven dead letter counts as remaining again, but the batch stays COMPLETED."""
        return "OPEN" if self.completed_at is None else "COMPLETED"

    @property
    def progress(self) -> int:
        """Percent of the tasks that are final (rounded down)."""
        return (self.total - self.remaining) * 100 // self.total if self.total else 100

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BatchRecord:
        return cls(
            id=str(row["id"]),
            tenant=row["tenant"],
            total=row["total"],
            remaining=row["remaining"],
            completed=row["completed"],
            failed=row["failed"],
            cancelled=row["cancelled"],
            pending=row["pending"],
            queued=row["queued"],
            processing=row["processing"],
            callback_url=row["callback_url"],
            on_complete=row["on_complete"],
            created_at=row["created_at"],
            completed_at=row["completed_at"],
            callback_task_id=_opt(row["callback_task_id"]),
            follow_up_task_id=_opt(row["follow_up_task_id"]),
        )


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)
