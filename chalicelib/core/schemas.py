"""Request bodies as JSON Schema: the one definition both the validator
(``chalicelib.core.requests``, compiled with fastjsonschema) and the OpenAPI
document (``chalicelib.api.openapi``) are made from.

What JSON Schema cannot say is checked in code after the schema passed, and the
document says it in words: a registered task name and its payload (the registry's
``validate``; each type's ``payload_schema`` is in the document), ``run_at`` as an
instant, a callback URL whose host is not private, a cron that fires, an IANA zone.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.defaults import MAX_RETRIES_LIMIT, MAX_TIMEOUT_SECONDS
from chalicelib.core.dependencies import MAX_PARENTS, MAX_STEPS, STEP_NAME_RULE
from chalicelib.core.urls import CALLBACK_URL_PATTERN, MAX_CALLBACK_URL

MAX_DELAY_SECONDS = 365 * 24 * 3600
MAX_IDEMPOTENCY_KEY = 200
MAX_NAME = 200
MAX_BATCH = 500
MAX_UNIQUE_KEY = 200
MAX_UNIQUE_FOR_SECONDS = 30 * 24 * 3600

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

PRIORITY: dict[str, Any] = {"type": "string", "enum": ["critical", "high", "normal", "low"]}
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"\S"}

TASK_PROPERTIES: dict[str, Any] = {
    "name": {**_NAME, "description": "a registered task name"},
    "payload": {"type": "object", "default": {}, "description": "the task type's input (its schema: see name)"},
    "priority": {**PRIORITY, "default": "normal"},
    "run_at": {
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "description": "when to run (ISO-8601); no offset means UTC; not with delay_seconds",
    },
    "delay_seconds": {"type": "number", "minimum": 0, "maximum": MAX_DELAY_SECONDS, "description": "not with run_at"},
    "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES_LIMIT, "default": 3},
    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS, "default": 300},
    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    "unique_key": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_UNIQUE_KEY,
        "description": "at most one task of the tenant holds this key: while that task is not final, or for"
        " unique_for_seconds after its submission; a submit whose key is held answers 200 with the holder"
        " (Unique-Duplicate: true) and creates nothing. An idempotency key, when also given, is looked at first",
    },
    "unique_for_seconds": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": MAX_UNIQUE_FOR_SECONDS,
        "description": "hold unique_key for this long after submission, whatever the task's state"
        " (needs unique_key; without it the key is held while the task is active)",
    },
    "expires_at": {
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "description": "deadline (ISO-8601; no offset means UTC): no attempt starts after it; a task still"
        " waiting then becomes CANCELLED with last_error_type Expired. Must be in the future and after run_at",
    },
    "callback_url": {
        "type": "string",
        "maxLength": MAX_CALLBACK_URL,
        # fastjsonschema turns every unescaped "$" into "\\Z", also the one inside the
        # character class, which Python then refuses; "\\$" means "$" in Python and ECMA alike.
        "pattern": CALLBACK_URL_PATTERN.replace("!$&", "!\\$&"),
        "title": f"an http(s) URL of at most {MAX_CALLBACK_URL} RFC 3986 characters, without user:password@",
        "description": "POSTed a signed event when the task reaches a final state (http or https, not private)",
    },
}
DEPENDENCY_PROPERTIES: dict[str, Any] = {
    "on_dependency_failure": {
        "type": "string",
        "enum": ["cancel", "run"],
        "default": "cancel",
        "description": "when a parent ends FAILED or CANCELLED: cancel this task (default) or run it anyway",
    },
}
TASK_PROPERTIES.update(
    {
        "depends_on": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PARENTS,
            "items": {"type": "string", "minLength": 36, "maxLength": 36, "pattern": UUID_PATTERN},
            "title": f"a list of 1 to {MAX_PARENTS} task ids",
            "description": (
                "ids of the tenant's tasks this one waits for (WAITING); it becomes ready when all of them"
                " COMPLETED (their results in its context's parent_results, by id)"
            ),
        },
        **DEPENDENCY_PROPERTIES,
    }
)
SCHEDULE_TASK_FIELDS = ("name", "payload", "priority", "max_retries", "timeout_seconds")
FOLLOW_UP_FIELDS = (*SCHEDULE_TASK_FIELDS, "callback_url")
# A workflow step: a task without idempotency or unique key or ids of its own to wait for; it
# names the steps it waits for in "after".
WORKFLOW_STEP_PROPERTIES: dict[str, Any] = {
    **{
        k: v
        for k, v in TASK_PROPERTIES.items()
        if k not in ("idempotency_key", "depends_on", "unique_key", "unique_for_seconds")
    },
    "after": {
        "type": "array",
        "maxItems": MAX_PARENTS,
        "items": {"type": "string", "minLength": 1, "maxLength": 64},
        "title": f"a list of at most {MAX_PARENTS} step names",
        "description": "the steps this one waits for (their results in its context's parent_results, by step name)",
    },
}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return {**schema, **extra}


TASK_SUBMISSION = _object(TASK_PROPERTIES, ["name"])
SCHEDULE_TASK = _object({k: TASK_PROPERTIES[k] for k in SCHEDULE_TASK_FIELDS}, ["name"])
# The follow-up's payload gets a "batch" key with the counts, so a request may not set one.
NO_BATCH_KEY: dict[str, Any] = {"not": {"required": ["batch"]}}
BATCH_FOLLOW_UP = _object(
    {
        **{k: TASK_PROPERTIES[k] for k in FOLLOW_UP_FIELDS},
        "payload": {
            **TASK_PROPERTIES["payload"],
            **NO_BATCH_KEY,
            "title": 'a JSON object without a "batch" key (the follow-up gets the batch\'s counts there)',
        },
    },
    ["name"],
    description='the task submitted once every task of the batch is final; its payload gets a "batch" key'
    " with the batch's id and counts",
)
BATCH_OPTIONS = _object(
    {
        "callback_url": {
            **TASK_PROPERTIES["callback_url"],
            "description": "POSTed a signed batch.completed event once, when every task of the batch is final",
        },
        "on_complete": BATCH_FOLLOW_UP,
    },
    description="opens a batch of the tasks created (GET /api/v1/batches/{id}); {} opens one with no callback",
)
_SCHEDULE_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
    "cron": {"type": "string", "maxLength": 200, "description": "5 fields, or 6 with seconds last (croniter)"},
    "timezone": {"type": "string", "maxLength": 64, "default": "UTC", "description": "IANA time zone"},
    "task": SCHEDULE_TASK,
    "enabled": {"type": "boolean", "default": True},
    "catch_up": {"type": "string", "enum": ["once", "skip"], "default": "once"},
}

# Name -> schema of every request body; the document publishes each under its name.
REQUESTS: dict[str, dict[str, Any]] = {
    "TaskSubmission": TASK_SUBMISSION,
    "BatchRequest": _object(
        {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                # Not a TaskSubmission here: unless atomic, an invalid item is reported in
                # its result and the others are accepted, so the request stays valid.
                "items": {"type": "object", "description": "a TaskSubmission"},
            },
            "atomic": {
                "type": "boolean",
                "default": False,
                "description": "true: every item must be a valid TaskSubmission, or nothing is accepted (400)",
            },
            "batch": BATCH_OPTIONS,
        },
        ["tasks"],
        description='send {"tasks": [task, ...], "atomic": false, "batch": {...}}',
    ),
    "BatchFollowUp": BATCH_FOLLOW_UP,
    "WorkflowSubmission": _object(
        {
            "steps": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_STEPS,
                "additionalProperties": {"type": "object", "description": "a WorkflowStep"},
                "title": f"an object of 1 to {MAX_STEPS} steps by name ({STEP_NAME_RULE})",
            },
        },
        ["steps"],
        description='send {"steps": {"a": {"name": "noop"}, "b": {"name": "noop", "after": ["a"]}}}',
    ),
    "WorkflowStep": _object(WORKFLOW_STEP_PROPERTIES, ["name"]),
    "ScheduleTask": SCHEDULE_TASK,
    "ScheduleSubmission": _object(_SCHEDULE_PROPERTIES, ["name", "cron", "task"]),
    "ScheduleUpdate": _object(
        {k: {key: v for key, v in s.items() if key != "default"} for k, s in _SCHEDULE_PROPERTIES.items()}
    ),
    "Redrive": _object(
        {
            "ids": {"type": "array", "maxItems": MAX_BATCH, "items": {"type": "string", "maxLength": 100}},
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": MAX_BATCH},
        },
        description='send {"ids": [...]} and/or {"name": "..."}: which dead letters to redrive',
        anyOf=[{"required": ["ids"]}, {"required": ["name"]}],
    ),
    "Purge": _object(
        {
            "ids": {"type": "array", "maxItems": MAX_BATCH, "items": {"type": "string", "maxLength": 100}},
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
            "failed_before": {
                "type": "string",
                "format": "date-time",
                "maxLength": 64,
                "description": "only dead letters that failed before this time (ISO-8601; no offset means UTC)",
            },
            "error_type": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_NAME,
                "description": "only dead letters whose last error is of this type (last_error_type)",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": MAX_BATCH},
        },
        description=(
            'send {"ids": [...]}, {"name": "..."}, {"failed_before": "<ISO time>"} and/or {"error_type": "..."}:'
            " which dead letters to delete for good (every filter given must match)"
        ),
        anyOf=[{"required": [f]} for f in ("ids", "name", "failed_before", "error_type")],
    ),
    "BulkCancel": _object(
        {
            "status": {"type": "string", "enum": ["WAITING", "PENDING", "QUEUED", "PROCESSING"]},
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
            "priority": PRIORITY,
            "created_before": {
                "type": "string",
                "format": "date-time",
                "maxLength": 64,
                "description": "only tasks created before this time (ISO-8601; no offset means UTC)",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": MAX_BATCH},
        },
        description=(
            'send any of {"status", "name", "priority", "created_before"} (at least one; every filter given'
            " must match): which live tasks to cancel, oldest first"
        ),
        anyOf=[{"required": [f]} for f in ("status", "name", "priority", "created_before")],
    ),
}
