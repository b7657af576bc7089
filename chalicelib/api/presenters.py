"""Domain results → the API's JSON (and the status codes that depend on the result).

Shapes here are the API's contract (README, OpenAPI document, e2e tests): change them
only on purpose.  Timestamps are ISO-8601 in UTC.  Cursors are opaque to clients: a
page's last (timestamp, id) in URL-safe base64; a forged or damaged one is a 400.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import SNOOZED, ConflictError, TasklaneError, ValidationError
from chalicelib.core.model import Priority, Status, Task

if TYPE_CHECKING:
    # Annotations only: a request imports this module, and must not load every use
    # case (the schedules' croniter, the stats) to present one task.  The few names
    # used at run time are imported by the function that uses them.
    from chalicelib.core.audit import AuditEntry, Purged
    from chalicelib.core.batches import BatchRecord
    from chalicelib.core.control import Pause
    from chalicelib.core.records import Schedule
    from chalicelib.services.audit import AuditPage, AuditPosition
    from chalicelib.services.batches import BatchPage
    from chalicelib.services.dependencies import WorkflowView
    from chalicelib.services.health import HealthReport, Probe, SweeperHealth
    from chalicelib.services.lifecycle import CancelResult
    from chalicelib.services.reads import Page, Position, TaskDetail
    from chalicelib.services.schedules import ScheduleDetail
    from chalicelib.services.stats import GroupStats, StatsNumbers, TenantStats
    from chalicelib.services.submit import BatchItem, BatchResult

MAX_CURSOR_CHARS = 256  # a real cursor is under 100


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- tasks ------------------------------------------------------------------------------


def _iso_as(value: datetime | None, known: datetime, text: str) -> str | None:
    """``_iso(value)``, reusing ``text`` (``known``'s) when ``value`` is the same wall
    time in the same zone: a new task's run_at, updated_at and enqueued_at are its
    created_at, and ``isoformat`` is ~11k instructions a call (callgrind, round 9)."""
    if value is known or (value == known and value.tzinfo is known.tzinfo and value.fold == known.fold):
        return text
    return _iso(value)


# A member's ``.value`` goes through enum's property descriptor (~3k instructions); a
# dict lookup by the member is a tenth of that, for the two every task response shows.
_STATUS_TEXT = {s: s.value for s in Status}
_PRIORITY_TEXT = {p: p.value for p in Priority}


def task(t: Task) -> dict[str, Any]:
    created = t.created_at
    created_text = created.isoformat()
    return {
        "id": t.id,
        "name": t.name,
        "status": _STATUS_TEXT[t.status],
        "priority": _PRIORITY_TEXT[t.priority],
        "payload": t.payload,
        "result": t.result,
        "attempts": t.attempts,
        "max_retries": t.max_retries,
        "timeout_seconds": t.timeout_seconds,
        "run_at": _iso_as(t.run_at, created, created_text),
        "last_error": t.last_error,
        "last_error_type": t.last_error_type,
        "cancel_requested": t.cancel_requested,
        "idempotency_key": t.idempotency_key,
        "created_at": created_text,
        "updated_at": _iso_as(t.updated_at, created, created_text),
        "enqueued_at": _iso_as(t.enqueued_at, created, created_text),
        "started_at": _iso(t.started_at),
        "finished_at": _iso(t.finished_at),
        "callback_url": t.callback_url,
        "schedule_id": t.schedule_id,
        "progress": t.progress,
        "progress_message": t.progress_message,
        "trace_id": t.trace_id,
        "batch_id": t.batch_id,
        "unique_key": t.unique_key,
        "unique_until": _iso(t.unique_until),
        "expires_at": _iso(t.expires_at),
        "snoozes": t.snoozes,
        "waiting_on": t.waiting_on,
    }


def task_with_errors(detail: TaskDetail) -> dict[str, Any]:
    """The task plus the error of every failed attempt (a snooze is no failure: its
    event is in the history, not here)."""
    body = task(detail.task)
    if detail.links:
        body["depends_on"] = [link.id for link in detail.links if link.role == "parent"]
        body["dependents"] = [link.id for link in detail.links if link.role == "child"]
    body["errors"] = [
        {"attempt": e.attempt, "error": e.error, "error_type": e.error_type, "at": e.at.isoformat()}
        for e in detail.events
        if e.error is not None and e.error_type != SNOOZED
    ]
    return body


def workflow(view: WorkflowView) -> dict[str, Any]:
    """Every step's task (null once pruned) and the steps it waits for."""
    statuses = [t.status for t in view.steps.values() if t is not None]
    if all(s is Status.COMPLETED for s in statuses):
        status = "COMPLETED"
    elif all(s.is_final for s in statuses):
        status = "FAILED"
    else:
        status = "RUNNING"
    return {
        "id": view.workflow.id,
        "status": status,
        "created_at": _iso(view.workflow.created_at),
        "steps": {
            name: {"after": view.after.get(name, []), "task": task(t) if t is not None else None}
            for name, t in view.steps.items()
        },
    }


def task_events(detail: TaskDetail) -> dict[str, Any]:
    return {
        "task_id": detail.task.id,
        "events": [
            {
                "at": e.at.isoformat(),
                "from_status": e.from_status.value if e.from_status else None,
                "to_status": e.to_status.value,
                "attempt": e.attempt,
                "actor": e.actor,
                "error": e.error,
                "error_type": e.error_type,
            }
            for e in detail.events
        ],
    }


def page(p: Page) -> dict[str, Any]:
    return {
        "items": [task(t) for t in p.items],
        "next_cursor": encode_cursor(p.next_after) if p.next_after else None,
    }


def cancelled(result: CancelResult) -> tuple[int, dict[str, Any]]:
    from chalicelib.services.lifecycle import CancelOutcome

    """200 when cancelled, 202 when a running task was asked to stop; a final task
    cannot be cancelled (409)."""
    if result.outcome is CancelOutcome.ALREADY_FINAL:
        raise ConflictError(
            f"task {result.task.id} is already {result.before.value}; "
            "only WAITING, PENDING, QUEUED or PROCESSING tasks can be cancelled",
            details={"status": result.before.value},
        )
    return (200 if result.outcome is CancelOutcome.CANCELLED else 202), task(result.task)


def redriven(tasks: list[Task]) -> dict[str, Any]:
    return {"redriven": len(tasks), "ids": [t.id for t in tasks]}


def purged(result: Purged) -> dict[str, Any]:
    return {"purged": len(result.ids), "ids": result.ids, "more": result.more}


# --- the audit log ----------------------------------------------------------------------


def audit_entry(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "action": e.action,
        "subject_type": e.subject_type,
        "subject_id": e.subject_id,
        "details": e.details,
    }


def audit_page(p: AuditPage) -> dict[str, Any]:
    return {
        "items": [audit_entry(e) for e in p.items],
        "next_cursor": encode_audit_cursor(p.next_after) if p.next_after else None,
    }


# --- batches ----------------------------------------------------------------------------


def batch(result: BatchResult) -> tuple[int, dict[str, Any]]:
    """201 when every item became a new task, else 200 with a status per item (201 new,
    200 replayed or duplicate, the error's own status when refused)."""
    status = 201 if result.all_created else 200
    return status, {
        "created": result.created,
        "failed": result.failed,
        "batch_id": result.batch.id if result.batch is not None else None,
        "results": [_batch_item(i) for i in result.items],
    }


def batch_page(p: BatchPage) -> dict[str, Any]:
    return {
        "items": [batch_detail(b) for b in p.items],
        "next_cursor": encode_cursor(p.next_after) if p.next_after else None,
    }


def batch_detail(b: BatchRecord) -> dict[str, Any]:
    """A batch: its counts by state (``remaining`` = not final yet) and its completion."""
    return {
        "id": b.id,
        "status": b.status,
        "total": b.total,
        "remaining": b.remaining,
        "progress": b.progress,
        "counts": {
            "PENDING": b.pending,
            "QUEUED": b.queued,
            "PROCESSING": b.processing,
            "COMPLETED": b.completed,
            "FAILED": b.failed,
            "CANCELLED": b.cancelled,
        },
        "callback_url": b.callback_url,
        "on_complete": b.on_complete,
        "created_at": _iso(b.created_at),
        "completed_at": _iso(b.completed_at),
        "callback_task_id": b.callback_task_id,
        "follow_up_task_id": b.follow_up_task_id,
    }


def _batch_item(item: BatchItem) -> dict[str, Any]:
    if item.error is not None:
        return _item_error(item.index, item.error)
    assert item.submitted is not None
    s = item.submitted
    status = 201 if s.created else 200
    return {
        "index": item.index,
        "status": status,
        "replayed": s.replayed,
        "duplicate": s.duplicate,
        "task": task(s.task),
    }


def _item_error(index: int, exc: TasklaneError) -> dict[str, Any]:
    return {"index": index, "status": exc.status, "error": {"code": exc.code, "message": exc.message}}


# --- cursors ----------------------------------------------------------------------------


def encode_cursor(position: Position) -> str:
    raw = f"{position.at.isoformat()}|{position.task_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; anything this API did not write is a 400."""
    from chalicelib.services.reads import Position

    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, task_id = raw.split("|", 1)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("no offset")
        # In UTC: PostgreSQL refuses some offsets Python accepts.
        return Position(at.astimezone(UTC), str(uuid.UUID(task_id)))
    except (ValueError, UnicodeError, binascii.Error, OverflowError):
        raise ValidationError(
            "cursor is invalid; pass next_cursor from the previous page", details={"field": "cursor"}
        ) from None


def encode_audit_cursor(position: AuditPosition) -> str:
    raw = f"{position.at.isoformat()}|{position.entry_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_audit_cursor(cursor: str) -> AuditPosition:
    """The position an audit cursor names; anything this API did not write is a 400."""
    from chalicelib.services.audit import AuditPosition

    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, entry_id = raw.split("|", 1)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or not entry_id.isdigit() or not 0 < int(entry_id) < 2**63:
            raise ValueError("not an audit position")
        return AuditPosition(at.astimezone(UTC), int(entry_id))
    except (ValueError, UnicodeError, binascii.Error, OverflowError):
        raise ValidationError(
            "cursor is invalid; pass next_cursor from the previous page", details={"field": "cursor"}
        ) from None


# --- schedules --------------------------------------------------------------------------


def schedule(s: Schedule) -> dict[str, Any]:
    spec = s.spec
    return {
        "id": s.id,
        "name": spec.name,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "task": {
            "name": spec.task_name,
            "payload": spec.payload,
            "priority": spec.priority,
            "max_retries": spec.max_retries,
            "timeout_seconds": spec.timeout_seconds,
        },
        "enabled": spec.enabled,
        "catch_up": spec.catch_up,
        "next_fire_at": s.next_fire_at.isoformat(),
        "last_fired_at": _iso(s.last_fired_at),
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
    }


def schedule_detail(d: ScheduleDetail) -> dict[str, Any]:
    out = schedule(d.schedule)
    out["next_fire_times"] = [t.isoformat() for t in d.upcoming]
    if d.runs is not None:
        out["recent_runs"] = [
            {"fire_at": r.fire_at.isoformat(), "task_id": r.task_id, "status": r.status.value if r.status else None}
            for r in d.runs
        ]
    return out


def schedules(items: list[Schedule]) -> dict[str, Any]:
    return {"items": [schedule(s) for s in items]}


# --- health, stats, webhooks ----------------------------------------------------------------


def health(report: HealthReport) -> tuple[int, dict[str, Any]]:
    """200 when UP, 503 when any component is DOWN (what a load balancer acts on)."""
    db = _probe(report.db)
    if report.db.condition == "UP":
        db["migration_version"] = report.migration_version
    body = {
        "status": report.condition.value,
        "components": {"db": db, "redis": _probe(report.redis), "sweeper": sweeper(report.sweeper)},
        "migration_version": report.migration_version,
    }
    return (200 if report.condition == "UP" else 503), body


def _probe(p: Probe) -> dict[str, Any]:
    if p.error is not None:
        return {"status": p.condition.value, "error": p.error}
    return {"status": p.condition.value, "latency_ms": p.latency_ms}


def sweeper(s: SweeperHealth) -> dict[str, Any]:
    if s.stale_after_seconds is None:  # Redis could not be asked
        return {"status": s.condition.value, "message": s.message}
    if s.last_sweep_at is None:
        return {
            "status": s.condition.value,
            "last_sweep_at": None,
            "stale_after_seconds": s.stale_after_seconds,
            "message": s.message,
        }
    out: dict[str, Any] = {
        "status": s.condition.value,
        "last_sweep_at": s.last_sweep_at.isoformat(),
        "age_seconds": s.age_seconds,
        "stale_after_seconds": s.stale_after_seconds,
    }
    if s.message is not None:
        out["message"] = s.message
    return out


def stats(s: TenantStats) -> dict[str, Any]:
    paused = [pause_entry(p) for p in s.paused]
    return {
        **stats_numbers(s.numbers),
        "tenant": s.tenant,
        "sweeper": sweeper(s.sweeper),
        "paused": paused,
        "fair_share": s.fair_share,
    }


def pause_entry(p: Pause) -> dict[str, Any]:
    """A pause in force (the ``PauseEntry`` schema)."""
    return {"name": p.name, "scope": p.scope, "paused_at": _iso(p.paused_at), "paused_by": p.paused_by}


def stats_numbers(n: StatsNumbers) -> dict[str, Any]:
    return {
        "generated_at": n.generated_at.isoformat(),
        "today_since": n.today_since.isoformat(),
        "totals": _group(n.totals),
        "by_priority": [{"priority": p, **_group(g)} for p, g in n.by_priority],
        "by_name": [{"name": name, **_group(g)} for name, g in n.by_name],
        "per_minute": [{"minute": m.minute.isoformat(), **m.counts} for m in n.per_minute],
    }


def _group(g: GroupStats) -> dict[str, Any]:
    from chalicelib.services.stats import COUNT_FIELDS

    return {
        **{field: g.counts[field] for field in COUNT_FIELDS},
        "queue_size": g.queue_size,
        "avg_run_seconds": g.avg_run_seconds,
        "avg_wait_seconds": g.avg_wait_seconds,
        "oldest_queued_age_seconds": g.oldest_queued_age_seconds,
    }


def webhook_secret(secret: str) -> dict[str, Any]:
    return {
        "secret": secret,
        "algorithm": "HMAC-SHA256 over f'{timestamp}.{raw body}', hex, prefixed v1=",
        "header": "Tasklane-Signature (timestamp in Tasklane-Timestamp)",
    }
