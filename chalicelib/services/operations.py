"""What the API's routes do, free of Chalice: parse a body, call a use case, shape
the answer.  Returns plain dicts (and a status where it varies)."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from chalicelib.adapters.webhooks import WEBHOOK_TASK
from chalicelib.api.responses import int_query
from chalicelib.container import Container
from chalicelib.core.errors import (
    ConflictError,
    NotFoundError,
    TasklaneError,
    UnavailableError,
    ValidationError,
)
from chalicelib.core.model import Priority, Status, Task
from chalicelib.core.records import WebhookHook
from chalicelib.core.requests import TaskRequest, check_fields, parse_task
from chalicelib.observability import metrics
from chalicelib.services import stats
from chalicelib.services.submit import Submitted, submit, submit_many
from chalicelib.tasktypes import as_int

# --- submit ---------------------------------------------------------------------------


def submit_one(rt: Container, tenant: str, body: Any, header_key: str | None) -> Submitted:
    if header_key is not None:
        if not isinstance(body, dict):
            raise ValidationError("the task must be a JSON object")
        if "idempotency_key" not in body:
            body = {**body, "idempotency_key": header_key}
        elif body["idempotency_key"] != header_key:
            raise ConflictError("the Idempotency-Key header and the idempotency_key field differ; send one")
    request = parse_task(body, rt.settings, rt.registry)
    return submit(rt, tenant, request)


def submit_batch(rt: Container, tenant: str, body: Any) -> tuple[int, dict[str, Any]]:
    """``{"tasks": [...], "atomic": false}`` → per-item results in request order.

    Invalid items are reported and the valid ones are accepted, unless ``atomic``
    is true: then any invalid item rejects the whole batch with a 400."""
    if not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
        raise ValidationError('send {"tasks": [task, ...]}', details={"field": "tasks"})
    check_fields(body, {"tasks", "atomic"})
    items = body["tasks"]
    atomic = body.get("atomic", False)
    if not isinstance(atomic, bool):
        raise ValidationError("atomic must be a boolean", details={"field": "atomic"})
    if not items:
        raise ValidationError("tasks is empty", details={"field": "tasks"})
    if len(items) > rt.settings.max_batch_items:
        raise ValidationError(
            f"a batch holds at most {rt.settings.max_batch_items} tasks, got {len(items)}; split it",
            details={"field": "tasks"},
        )

    not_objects = [i for i, item in enumerate(items) if not isinstance(item, dict)]
    if not_objects:
        raise ValidationError(
            f"every item of tasks must be a JSON object; tasks[{not_objects[0]}] is not",
            details={"indexes": not_objects[:50]},
        )
    parsed: list[TaskRequest | ValidationError] = []
    for i, item in enumerate(items):
        try:
            parsed.append(parse_task(item, rt.settings, rt.registry, where=f"tasks[{i}]: "))
        except ValidationError as exc:
            parsed.append(exc)
    invalid = [(i, p) for i, p in enumerate(parsed) if isinstance(p, ValidationError)]
    if atomic and invalid:
        raise ValidationError(
            f"{len(invalid)} invalid task(s); nothing was accepted (atomic batch)",
            details={"errors": [{"index": i, "message": e.message} for i, e in invalid]},
        )
    valid = [(i, p) for i, p in enumerate(parsed) if isinstance(p, TaskRequest)]
    outcomes = submit_many(rt, tenant, [p for _, p in valid]) if valid else []
    results: list[dict[str, Any]] = [{} for _ in items]
    for i, err in invalid:
        results[i] = _item_error(i, err)
    created = 0
    for (i, _), out in zip(valid, outcomes, strict=False):
        if isinstance(out, ConflictError):
            results[i] = _item_error(i, out)
        else:
            created += 0 if out.replayed else 1
            results[i] = {
                "index": i,
                "status": 200 if out.replayed else 201,
                "replayed": out.replayed,
                "task": out.task.to_dict(),
            }
    failed = sum(1 for r in results if "error" in r)
    status = 201 if failed == 0 and created == len(items) else 200
    return status, {"created": created, "failed": failed, "results": results}


def _item_error(index: int, exc: TasklaneError) -> dict[str, Any]:
    return {"index": index, "status": exc.status, "error": {"code": exc.code, "message": exc.message}}


# --- read -----------------------------------------------------------------------------


def _task(rt: Container, tenant: str, task_id: str) -> Task:
    task = rt.store.get_task(tenant, task_id)
    if task is None:
        raise NotFoundError(f"no task {task_id}")
    return task


def get(rt: Container, tenant: str, task_id: str) -> dict[str, Any]:
    """The task with the error of every failed attempt."""
    task = _task(rt, tenant, task_id)
    body = task.to_dict()
    body["errors"] = [
        {"attempt": e.attempt, "error": e.error, "error_type": e.error_type, "at": e.at.isoformat()}
        for e in rt.store.task_events(task_id)
        if e.error is not None
    ]
    return body


def events(rt: Container, tenant: str, task_id: str) -> dict[str, Any]:
    _task(rt, tenant, task_id)
    rows = rt.store.task_events(task_id)
    return {
        "task_id": task_id,
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
            for e in rows
        ],
    }


# --- cancel and dead letters -----------------------------------------------------------


def cancel(rt: Container, tenant: str, task_id: str) -> tuple[int, dict[str, Any]]:
    """PENDING/QUEUED → CANCELLED (200); PROCESSING → cancel requested (202);
    a final state → 409."""
    hooks: list[WebhookHook] = []
    task, before = rt.store.cancel(tenant, task_id, hooks=hooks)
    if task is None or before is None:
        raise NotFoundError(f"no task {task_id}")
    if before.is_final:
        raise ConflictError(
            f"task {task_id} is already {before.value}; only PENDING, QUEUED or PROCESSING tasks can be cancelled",
            details={"status": before.value},
        )
    metrics.log_cancelled(tenant, task, before)
    if task.status is Status.CANCELLED:
        try:
            rt.queue.remove([(task.id, task.priority, task.name)])
            rt.queue.push([(hook.id, Priority.HIGH, hook.enqueued_ms, WEBHOOK_TASK) for hook in hooks])
        except UnavailableError:
            pass  # the claim's guard turns the stale id away; the sweeper pushes the webhook
        return 200, task.to_dict()
    return 202, task.to_dict()


def _encode_cursor(at: datetime | None, task_id: str) -> str:
    assert at is not None
    raw = f"{at.isoformat()}|{task_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, task_id = raw.split("|", 1)
        return datetime.fromisoformat(at), str(uuid.UUID(task_id))
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(
            "cursor is invalid; pass next_cursor from the previous page", details={"field": "cursor"}
        ) from None


def _check_params(query: dict[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown query parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            details={"fields": unknown},
        )


def _choice(query: dict[str, str], name: str, values: list[str]) -> str | None:
    value = query.get(name)
    if value is not None and value not in values:
        raise ValidationError(f"{name} must be one of {', '.join(values)}; got {value!r}", details={"field": name})
    return value


def _timestamp(query: dict[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{name} must be an ISO-8601 timestamp", details={"field": name}) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def list_tasks(rt: Container, tenant: str, query: dict[str, str]) -> dict[str, Any]:
    """Newest first, keyset-paginated: ``next_cursor`` is stable under inserts."""
    _check_params(query, {"status", "name", "priority", "created_after", "created_before", "limit", "cursor"})
    limit = int_query(query, "limit", 50, 1, 500)
    cursor = query.get("cursor")
    found = rt.store.list_tasks(
        tenant,
        status=_choice(query, "status", [s.value for s in Status]),
        name=query.get("name") or None,
        priority=_choice(query, "priority", [p.value for p in Priority]),
        created_after=_timestamp(query, "created_after"),
        created_before=_timestamp(query, "created_before"),
        after=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    page = found[:limit]
    more = len(found) > limit
    return {
        "items": [t.to_dict() for t in page],
        "next_cursor": _encode_cursor(page[-1].created_at, page[-1].id) if more else None,
    }


def dead_letters(rt: Container, tenant: str, query: dict[str, str]) -> dict[str, Any]:
    _check_params(query, {"name", "limit", "cursor"})
    limit = int_query(query, "limit", 50, 1, 500)
    cursor = query.get("cursor")
    after = _decode_cursor(cursor) if cursor else None
    found = rt.store.list_dead_letters(tenant, name=query.get("name") or None, limit=limit + 1, after=after)
    page = found[:limit]
    return {
        "items": [t.to_dict() for t in page],
        "next_cursor": _encode_cursor(page[-1].finished_at, page[-1].id) if len(found) > limit else None,
    }


def _enqueue_redriven(rt: Container, redriven: list[Task]) -> None:
    now_ms = time.time() * 1000
    try:
        rt.queue.push(
            [
                (t.id, t.priority, t.enqueued_at.timestamp() * 1000 if t.enqueued_at else now_ms, t.name)
                for t in redriven
            ]
        )
    except UnavailableError:
        pass  # QUEUED in PostgreSQL: the sweeper's reconciliation enqueues them


def redrive_one(rt: Container, tenant: str, task_id: str) -> dict[str, Any]:
    redriven = rt.store.redrive(tenant, ids=[task_id], limit=1)
    if not redriven:
        task = _task(rt, tenant, task_id)
        raise ConflictError(
            f"task {task_id} is {task.status.value}; only FAILED tasks can be redriven",
            details={"status": task.status.value},
        )
    _enqueue_redriven(rt, redriven)
    metrics.log_redriven(tenant, redriven)
    return redriven[0].to_dict()


def redrive_many(rt: Container, tenant: str, body: Any) -> dict[str, Any]:
    """``{"ids": [...]}`` or ``{"name": "..."}`` (or both); at most ``limit`` (500) a call."""
    if not isinstance(body, dict):
        raise ValidationError('send {"ids": [...]} or {"name": "..."}')
    check_fields(body, {"ids", "name", "limit"})
    ids = body.get("ids")
    name = body.get("name")
    if ids is None and name is None:
        raise ValidationError('give "ids" or "name" to choose which dead letters to redrive')
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 500:
            raise ValidationError("ids must be a list of at most 500 task ids", details={"field": "ids"})
        ids = [i for i in ids if _is_uuid(i)]
    if name is not None and not isinstance(name, str):
        raise ValidationError("name must be a string", details={"field": "name"})
    limit = as_int(body.get("limit", 500))
    if limit is None or not 1 <= limit <= 500:
        raise ValidationError("limit must be an integer from 1 to 500", details={"field": "limit"})
    redriven = rt.store.redrive(tenant, ids=ids, name=name, limit=limit)
    _enqueue_redriven(rt, redriven)
    metrics.log_redriven(tenant, redriven)
    return {"redriven": len(redriven), "ids": [t.id for t in redriven]}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- health ---------------------------------------------------------------------------


def health(rt: Container) -> dict[str, Any]:
    """UP when PostgreSQL and Redis answer and the sweeper ran recently; DOWN (a 503)
    otherwise.  Two round trips (one each to PostgreSQL and Redis), cheap enough for a
    load balancer every second.  The db probe reads the applied migration version."""
    components: dict[str, dict[str, Any]] = {}
    version: int | None = None
    start = time.perf_counter()
    try:
        version = rt.store.schema_version()
        components["db"] = {
            "status": "UP",
            "latency_ms": round((time.perf_counter() - start) * 1000, 2),
            "migration_version": version,
        }
    except UnavailableError as exc:
        components["db"] = {"status": "DOWN", "error": exc.message}
    start = time.perf_counter()
    try:
        last_sweep = rt.queue.last_sweep()
        components["redis"] = {"status": "UP", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
        components["sweeper"] = stats.sweeper_component(
            last_sweep, stats.observability_settings(rt).sweep_stale_seconds
        )
    except UnavailableError as exc:
        components["redis"] = {"status": "DOWN", "error": exc.message}
        components["sweeper"] = {"status": "UNKNOWN", "message": "Redis is unreachable"}
    status = "DOWN" if any(c["status"] == "DOWN" for c in components.values()) else "UP"
    return {"status": status, "components": components, "migration_version": version}


# --- webhooks -------------------------------------------------------------------------


def webhook_secret(rt: Container, tenant: str, *, rotate: bool) -> dict[str, Any]:
    secret = rt.store.rotate_webhook_secret(tenant) if rotate else rt.store.webhook_secret(tenant)
    return {
        "secret": secret,
        "algorithm": "HMAC-SHA256 over f'{timestamp}.{raw body}', hex, prefixed v1=",
        "header": "Tasklane-Signature (timestamp in Tasklane-Timestamp)",
    }
