"""Response schemas of the OpenAPI document (``chalicelib.api.openapi`` assembles
them).  Request bodies are not here: they come from ``chalicelib.core.schemas``,
the definitions the validator is compiled from."""

from __future__ import annotations

from typing import Any

from chalicelib.core.audit import AuditAction

_TS = {"type": "string", "format": "date-time"}
_TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": "string", "format": "uuid"}
_STATUS = {"type": "string", "enum": ["WAITING", "PENDING", "QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]}
_PRIORITY = {"type": "string", "enum": ["critical", "high", "normal", "low"]}
AUDIT_ACTIONS = [a.value for a in AuditAction]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "WebhookSecret": {
        "type": "object",
        "required": ["secret", "algorithm", "header"],
        "properties": {
            "secret": {"type": "string"},
            "algorithm": {"type": "string"},
            "header": {"type": "string"},
        },
    },
    "Task": {
        "type": "object",
        "required": ["id", "name", "status", "priority", "payload", "attempts", "max_retries", "created_at"],
        "properties": {
            "id": _ID,
            "name": {"type": "string"},
            "status": _STATUS,
            "priority": _PRIORITY,
            "payload": {},
            "result": {},
            "attempts": {"type": "integer", "minimum": 0},
            "max_retries": {"type": "integer", "minimum": 0},
            "timeout_seconds": {"type": "integer"},
            "run_at": _TS,
            "last_error": {"type": ["string", "null"]},
            "last_error_type": {"type": ["string", "null"]},
            "cancel_requested": {"type": "boolean"},
            "idempotency_key": {"type": ["string", "null"]},
            "created_at": _TS,
            "updated_at": _TS,
            "enqueued_at": _TS_OR_NULL,
            "started_at": _TS_OR_NULL,
            "finished_at": _TS_OR_NULL,
            "callback_url": {"type": ["string", "null"]},
            "schedule_id": {"type": ["string", "null"]},
            "batch_id": {"type": ["string", "null"], "description": "the batch the task was submitted in"},
            "progress": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            "progress_message": {"type": ["string", "null"]},
            "trace_id": {
                "type": ["string", "null"],
                "pattern": "^1-[0-9a-f]{8}-[0-9a-f]{24}$",
                "description": "The task's X-Ray trace id: its submit, every attempt and its webhook "
                "are one trace, and every log line of an attempt carries it. Taken from the submit "
                "request's X-Amzn-Trace-Id or W3C traceparent header when valid, else generated.",
            },
            "unique_key": {"type": ["string", "null"]},
            "unique_until": {
                **_TS_OR_NULL,
                "description": "end of the unique key's window; null with a unique_key: held until the task is final",
            },
            "expires_at": {**_TS_OR_NULL, "description": "no attempt starts after this"},
            "snoozes": {
                "type": "integer",
                "minimum": 0,
                "description": "how often the task type snoozed it (a snooze does not spend an attempt)",
            },
            "waiting_on": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "parents not ended yet (WAITING while above 0); null for a task without parents",
            },
            "depends_on": {
                "type": "array",
                "items": _ID,
                "description": "(GET of one task) the ids of the tasks it waits or waited for",
            },
            "dependents": {
                "type": "array",
                "items": _ID,
                "description": "(GET of one task) the ids of the tasks that wait or waited for it",
            },
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "attempt": {"type": "integer"},
                        "error": {"type": "string"},
                        "error_type": {"type": ["string", "null"]},
                        "at": _TS,
                    },
                },
            },
        },
    },
    "Workflow": {
        "type": "object",
        "required": ["id", "status", "created_at", "steps"],
        "properties": {
            "id": _ID,
            "status": {
                "type": "string",
                "enum": ["RUNNING", "COMPLETED", "FAILED"],
                "description": "COMPLETED when every step completed, FAILED when every step ended and one did"
                " not complete, else RUNNING",
            },
            "created_at": _TS,
            "steps": {
                "type": "object",
                "description": "by step name",
                "additionalProperties": {
                    "type": "object",
                    "required": ["after", "task"],
                    "properties": {
                        "after": {"type": "array", "items": {"type": "string"}},
                        "task": {"anyOf": [_ref("Task"), {"type": "null"}], "description": "null once pruned"},
                    },
                },
            },
        },
    },
    "TaskPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": _ref("Task")}, "next_cursor": {"type": ["string", "null"]}},
    },
    "BatchResult": {
        "type": "object",
        "required": ["created", "failed", "results"],
        "properties": {
            "created": {"type": "integer"},
            "failed": {"type": "integer"},
            "batch_id": {
                "type": ["string", "null"],
                "description": 'the batch opened (with "batch" in the request and at least one task created)',
            },
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "status"],
                    "properties": {
                        "index": {"type": "integer"},
                        "status": {"type": "integer"},
                        "replayed": {"type": "boolean"},
                        "duplicate": {"type": "boolean", "description": "the task holding the item's unique_key"},
                        "task": _ref("Task"),
                        "error": {"type": "object"},
                    },
                },
            },
        },
    },
    "Batch": {
        "type": "object",
        "required": ["id", "status", "total", "remaining", "progress", "counts", "created_at"],
        "properties": {
            "id": _ID,
            "status": {
                "type": "string",
                "enum": ["OPEN", "COMPLETED"],
                "description": "COMPLETED once every task was final: the completion fired then, once",
            },
            "total": {"type": "integer", "minimum": 1, "description": "tasks the batch request created"},
            "remaining": {"type": "integer", "minimum": 0, "description": "tasks not final yet"},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100, "description": "percent final"},
            "counts": {
                "type": "object",
                "description": "tasks by state; the final ones are kept even after old tasks are pruned",
                "properties": {s: {"type": "integer", "minimum": 0} for s in _STATUS["enum"]},
            },
            "callback_url": {"type": ["string", "null"]},
            "on_complete": {"type": ["object", "null"], "description": "the follow-up task, defaults resolved"},
            "created_at": _TS,
            "completed_at": _TS_OR_NULL,
            "callback_task_id": {"type": ["string", "null"], "description": "the tasklane.webhook task"},
            "follow_up_task_id": {"type": ["string", "null"]},
        },
    },
    "BatchPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": _ref("Batch")}, "next_cursor": {"type": ["string", "null"]}},
    },
    "Events": {
        "type": "object",
        "required": ["task_id", "events"],
        "properties": {
            "task_id": _ID,
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "to_status", "attempt", "actor"],
                    "properties": {
                        "at": _TS,
                        "from_status": {"type": ["string", "null"]},
                        "to_status": _STATUS,
                        "attempt": {"type": "integer"},
                        "actor": {"type": "string"},
                        "error": {"type": ["string", "null"]},
                        "error_type": {"type": ["string", "null"]},
                    },
                },
            },
        },
    },
    "RedriveResult": {
        "type": "object",
        "required": ["redriven", "ids"],
        "properties": {"redriven": {"type": "integer"}, "ids": {"type": "array", "items": _ID}},
    },
    "PurgeResult": {
        "type": "object",
        "required": ["purged", "ids", "more"],
        "properties": {
            "purged": {"type": "integer", "minimum": 0},
            "ids": {"type": "array", "items": _ID},
            "more": {"type": "boolean", "description": "more dead letters match: call again to purge them"},
        },
    },
    "PauseEntry": {
        "type": "object",
        "required": ["name", "scope", "paused_at", "paused_by"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["tenant", "global"]},
            "paused_at": _TS,
            "paused_by": {"type": "string", "description": "key:<API key id>, or cli:<user> for the operator CLI"},
        },
    },
    "PauseResult": {
        "type": "object",
        "required": ["name", "scope", "paused_at", "paused_by", "paused", "changed", "moved"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["tenant"]},
            "paused_at": _TS,
            "paused_by": {"type": "string"},
            "paused": {"type": "boolean", "enum": [True]},
            "changed": {"type": "boolean", "description": "false: it was paused already (nothing recorded)"},
            "moved": {"type": "integer", "minimum": 0, "description": "queued tasks taken out of the ready queue"},
        },
    },
    "ResumeResult": {
        "type": "object",
        "required": ["name", "scope", "paused", "changed", "requeued"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["tenant"]},
            "paused": {"type": "boolean", "description": "still held by an operator's global pause"},
            "changed": {"type": "boolean", "description": "false: the tenant had not paused it"},
            "requeued": {"type": "integer", "minimum": 0, "description": "queued tasks pushed back to the queue"},
        },
    },
    "BulkCancelResult": {
        "type": "object",
        "required": ["cancelled", "cancel_requested", "ids", "requested_ids", "more"],
        "properties": {
            "cancelled": {"type": "integer", "minimum": 0, "description": "PENDING/QUEUED tasks now CANCELLED"},
            "cancel_requested": {"type": "integer", "minimum": 0, "description": "PROCESSING tasks asked to stop"},
            "ids": {"type": "array", "items": _ID},
            "requested_ids": {"type": "array", "items": _ID},
            "more": {"type": "boolean", "description": "more live tasks match: call again to cancel them"},
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "at", "actor", "action", "subject_type", "subject_id", "details"],
                    "properties": {
                        "id": {"type": "integer"},
                        "at": _TS,
                        "actor": {"type": "string", "description": "key:<API key id>, or cli:<OS user>"},
                        "action": {"type": "string", "enum": AUDIT_ACTIONS},
                        "subject_type": {"type": "string"},
                        "subject_id": {"type": ["string", "null"]},
                        "details": {"type": "object"},
                    },
                },
            },
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Schedule": {
        "type": "object",
        "required": ["id", "name", "cron", "timezone", "task", "enabled", "catch_up", "next_fire_at"],
        "properties": {
            "id": _ID,
            "name": {"type": "string"},
            "cron": {"type": "string"},
            "timezone": {"type": "string"},
            "task": {"type": "object"},
            "enabled": {"type": "boolean"},
            "catch_up": {"type": "string", "enum": ["once", "skip"]},
            "next_fire_at": _TS,
            "last_fired_at": _TS_OR_NULL,
            "created_at": _TS,
            "updated_at": _TS,
            "next_fire_times": {"type": "array", "items": _TS},
            "recent_runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"fire_at": _TS, "task_id": _ID, "status": {"type": ["string", "null"]}},
                },
            },
        },
    },
    "ScheduleList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("Schedule")}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "components"],
        "properties": {
            "status": {"type": "string", "enum": ["UP", "DOWN"]},
            "components": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["UP", "DOWN", "UNKNOWN"]}},
                },
            },
            "migration_version": {"type": ["integer", "null"], "description": "newest applied SQL migration"},
        },
    },
}

# --- operator routes (chalicelib/api_ops.py): metrics, stats, dashboard ------------------
