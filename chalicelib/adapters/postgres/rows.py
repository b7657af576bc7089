"""Parameters the store sends as JSON (one ``jsonb_to_recordset`` parameter instead of
a dozen arrays): shared by ``store.py`` and its mixins."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chalicelib.adapters.postgres.claim_order import id_array
from chalicelib.core.model import Accepted, NewTask, Outcome, Task

encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def new_task_row(t: NewTask) -> dict[str, Any]:
    """One task of ``insert_tasks`` / ``insert_linked_tasks``."""
    return {
        "id": t.id,
        "tenant": t.tenant,
        "name": t.name,
        "priority": t.priority,
        "payload": t.payload_json,
        "max_retries": t.max_retries,
        "timeout_seconds": t.timeout_seconds,
        "run_at": t.run_at.isoformat() if t.run_at is not None else None,
        "delay": t.delay_seconds,
        "idempotency_key": t.idempotency_key,
        "request_hash": t.request_hash,
        "callback_url": t.callback_url,
        "trace_context": t.trace_context,
        "batch_id": t.batch_id,
        "unique_key": t.unique_key,
        "unique_for": t.unique_for_seconds,
        "expires_at": t.expires_at.isoformat() if t.expires_at is not None else None,
    }


def one_task_params(t: NewTask, actor: str) -> dict[str, Any]:
    """The parameters of ``insert_task`` (one task without a unique key or batch)."""
    return {
        "id": t.id,
        "tenant": t.tenant,
        "name": t.name,
        "priority": t.priority,
        "payload": t.payload_json,
        "max_retries": t.max_retries,
        "timeout_seconds": t.timeout_seconds,
        "run_at": t.run_at,
        "delay": t.delay_seconds,
        "idempotency_key": t.idempotency_key,
        "request_hash": t.request_hash,
        "callback_url": t.callback_url,
        "trace_context": t.trace_context,
        "expires_at": t.expires_at,
        "actor": actor,
    }


def due_now_without_key(t: NewTask) -> bool:
    """Whether one task may take ``insert_task_now`` (no ON CONFLICT, nothing decided in
    SQL): no idempotency key to conflict on, no run_at or delay, so QUEUED at once."""
    return t.idempotency_key is None and t.run_at is None and t.delay_seconds is None


def finish_params(
    outcomes: Sequence[Outcome], actor: str, *, webhook_max_retries: int, webhook_timeout: int
) -> dict[str, Any]:
    """The parameters of ``finish`` (the outcomes as one JSON array, their ids apart).

    One JSON document (``jsonb_to_recordset``), not a dozen arrays that psycopg adapts
    element by element in Python: one C encoder call, 2 instead of 7 us a task; results
    stay JSON text."""
    return {
        "outcomes": encode(
            [
                {
                    "id": o.id,
                    "token": o.token,
                    "status": o.status.value,
                    "result": o.result_json,
                    "error": o.error,
                    "error_type": o.error_type,
                    "delay": o.delay_seconds,
                    "snooze": o.snooze,
                }
                for o in outcomes
            ]
        ),
        "ids": id_array([o.id for o in outcomes]),  # text: the sent finish's libpq parameter
        "actor": actor,
        "webhook_max_retries": webhook_max_retries,
        "webhook_timeout": webhook_timeout,
    }


def accepted(tasks: Sequence[NewTask], rows: Iterable[Mapping[str, Any]]) -> list[Task]:
    """The tasks ``insert_tasks`` inserted (its rows), built from what was sent."""
    sent = {t.id: t for t in tasks}
    return [(a := Accepted.from_row(r)).task(sent[a.id]) for r in rows]
