"""The OpenAPI 3 description of the HTTP API, served at ``GET /openapi.json``.

Kept true by tests: every Chalice route must appear here and nothing else may, and
a fuzzer (schemathesis) checks live responses against these schemas.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from chalicelib.api.openapi_schemas import (
    _PRIORITY,
    _STATUS,
    _TS,
    AUDIT_ACTIONS,
    _error,
    _json,
    _ref,
)
from chalicelib.api.openapi_schemas import (
    SCHEMAS as _SCHEMAS,
)
from chalicelib.api.task_types import TASK_TYPE_LIST_SCHEMA
from chalicelib.core.schemas import NO_BATCH_KEY, REQUESTS
from chalicelib.services.stats import COUNT_FIELDS
from chalicelib.tasktypes import Registry

_RATE_HEADERS = {
    "RateLimit-Limit": {"schema": {"type": "string"}, "description": "requests allowed per window"},
    "RateLimit-Remaining": {"schema": {"type": "string"}, "description": "requests left now"},
    "RateLimit-Reset": {"schema": {"type": "string"}, "description": "seconds until the allowance is full"},
}
_COMMON_ERRORS = {
    "400": _error("invalid request: the message names the field"),
    "401": _error("missing, unknown, disabled or expired API key"),
    "429": _error("rate limit exceeded; see Retry-After"),
    "503": _error("PostgreSQL unreachable; nothing was accepted"),
}
_TASK_ID_PARAM = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "task id (a UUID; anything else is simply not found)",
}


# The submit request's trace context (README "One task, one trace"): the task's trace_id.
# A malformed value is ignored (the task gets a fresh trace), never refused.
_TRACE_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": False,
        # No pattern or length in the schema: any value is accepted (and ignored unless valid).
        "description": f"{what}; the task joins this trace. A malformed value (or one over "
        "256 characters) is ignored: the task gets a fresh trace.",
        "schema": {"type": "string"},
    }
    for name, what in (
        ("X-Amzn-Trace-Id", "X-Ray trace header (Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1)"),
        ("traceparent", "W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)"),
    )
]


def _op(
    summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None, params: list[Any] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"ApiKey": []}],
        "responses": {**responses, **_COMMON_ERRORS},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"].setdefault("413", _error("body larger than the configured limit"))
        op["responses"].setdefault(
            "415", _error("Content-Type missing or not application/json (parameters allowed; a charset only if UTF-8)")
        )
    if params:
        op["parameters"] = params
    return op


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_COUNTS = list(COUNT_FIELDS)
_NUM_OR_NULL = {"type": ["number", "null"], "minimum": 0}
_STATS_GROUP = {
    "type": "object",
    "required": [*_COUNTS, "queue_size", "avg_run_seconds", "avg_wait_seconds", "oldest_queued_age_seconds"],
    "properties": {
        **{c: {"type": "integer", "minimum": 0} for c in _COUNTS},
        "queue_size": {"type": "integer", "minimum": 0, "description": "queued + pending"},
        "avg_run_seconds": {**_NUM_OR_NULL, "description": "completed today: started → finished"},
        "avg_wait_seconds": {**_NUM_OR_NULL, "description": "completed today: enqueued → started"},
        "oldest_queued_age_seconds": _NUM_OR_NULL,
    },
}
_OPS_SCHEMAS: dict[str, Any] = {
    "TaskTypeList": TASK_TYPE_LIST_SCHEMA,
    "StatsGroup": _STATS_GROUP,
    "Stats": {
        "type": "object",
        "required": [
            "tenant",
            "generated_at",
            "today_since",
            "totals",
            "by_priority",
            "by_name",
            "per_minute",
            "fair_share",
        ],
        "properties": {
            "tenant": {"type": "string"},
            "paused": {
                "type": "array",
                "description": "the pauses in force for this tenant (its own and operators' global ones)",
                "items": _ref("PauseEntry"),
            },
            "fair_share": {
                "type": "object",
                "description": "the tenant's weight and quotas (tools.cli tenants) and what it uses of them now",
                "required": ["weight", "max_queued", "max_running", "queued", "running"],
                "properties": {
                    "weight": {"type": "number", "description": "share of the drainers against other tenants"},
                    "max_queued": {"type": ["integer", "null"], "description": "a submit past it is a 429"},
                    "max_running": {"type": ["integer", "null"]},
                    "queued": {
                        "type": ["integer", "null"],
                        "description": "ready tasks in the tenant's queue (null: Redis unavailable)",
                    },
                    "running": {"type": ["integer", "null"], "description": "only with max_running"},
                },
            },
            "generated_at": _TS,
            "today_since": {**_TS, "description": "00:00 UTC today: submitted/completed/failed count from here"},
            "totals": _ref("StatsGroup"),
            "by_priority": {
                "type": "array",
                "items": {
                    "allOf": [_ref("StatsGroup"), {"required": ["priority"], "properties": {"priority": _PRIORITY}}]
                },
            },
            "by_name": {
                "type": "array",
                "items": {
                    "allOf": [_ref("StatsGroup"), {"required": ["name"], "properties": {"name": {"type": "string"}}}]
                },
            },
            "per_minute": {
                "type": "array",
                "description": "the last 60 minutes, oldest first",
                "items": {
                    "type": "object",
                    "required": ["minute", "submitted", "completed", "failed", "cancelled"],
                    "properties": {
                        "minute": _TS,
                        **{
                            k: {"type": "integer", "minimum": 0}
                            for k in ("submitted", "completed", "failed", "cancelled")
                        },
                    },
                },
            },
            "sweeper": {"type": "object", "required": ["status"]},
        },
    },
}


def _text(content_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}


def _public_page(summary: str, content_type: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [], "responses": {"200": _text(content_type, "the file")}}}


_OPS_PATHS: dict[str, Any] = {
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics for the whole queue (text exposition format)",
            "security": [{"MetricsToken": []}],
            "responses": {
                "200": _text("text/plain", "counters, gauges and histograms (Prometheus text format 0.0.4)"),
                "401": _error("missing or wrong bearer token"),
                "403": _error("a token was sent but metrics are disabled: TASKLANE_METRICS_TOKEN is not set"),
                "503": _error("PostgreSQL unreachable"),
            },
        }
    },
    "/api/v1/stats": {
        "get": _op(
            "The caller's tenant in numbers: today's totals, queue by priority and name, the last hour per minute",
            {"200": _json(_ref("Stats"), "the numbers")},
        )
    },
    "/api/v1/task-types": {
        "get": _op(
            "The task types this deployment runs: built-ins, team modules, declared Lambda and HTTP targets",
            {"200": _json(_ref("TaskTypeList"), "every task type a client may submit, by name")},
        )
    },
    "/dashboard": _public_page("The operator dashboard (asks for an API key)", "text/html"),
    "/dashboard/app.js": _public_page("The dashboard's script", "text/javascript"),
    "/dashboard/app.css": _public_page("The dashboard's stylesheet", "text/css"),
    "/dashboard/favicon.svg": _public_page("The dashboard's icon", "image/svg+xml"),
}

_TASK_TYPE_PARAM = {**_TASK_ID_PARAM, "name": "name", "description": "a task type's name"}
_SCHEDULE_ID_PARAM = {**_TASK_ID_PARAM, "name": "schedule_id", "description": "schedule id (a UUID)"}
_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (default 50)")
_CURSOR = _query("cursor", {"type": "string"}, "next_cursor of the previous page")


def _component(kind: str, task_name: str) -> str:
    return f"{kind}_{re.sub('[^A-Za-z0-9]+', '_', task_name)}"


def _by_task_name(kind: str, base: dict[str, Any], registry: Registry, *, exclusive: bool) -> dict[str, Any]:
    """``kind`` (a request schema with ``name`` and ``payload``) as one complete object
    schema per task type (its name a const, its payload that type's schema), joined by
    a discriminated ``oneOf``: generators such as openapi-python-client then make one
    model per type with every field, where ``properties`` beside a ``oneOf`` made them
    drop the fields."""
    variants: dict[str, Any] = {}
    for name in registry.names():
        payload_schema = registry.get(name).payload_schema  # type: ignore[union-attr]
        variant = copy.deepcopy(base)
        variant["properties"]["name"] = {"type": "string", "const": name, "description": "the task type"}
        variant["properties"]["payload"] = {**payload_schema, "description": f"the payload of {name}"}
        implied = registry.defaults(name)  # a type's own defaults, where it sets them
        for field, value in (
            ("priority", implied.priority.value if implied.priority else None),
            ("max_retries", implied.max_retries),
            ("timeout_seconds", implied.timeout_seconds),
        ):
            if value is not None:
                variant["properties"][field] = {**variant["properties"][field], "default": value}
        if payload_schema.get("required"):
            variant["required"] = [*variant["required"], "payload"]  # payload defaults to {}
        if exclusive:
            variant["not"] = {"required": ["run_at", "delay_seconds"]}  # one or the other
        variants[_component(kind, name)] = variant
    joined = {
        "oneOf": [_ref(c) for c in variants],
        "discriminator": {
            "propertyName": "name",
            "mapping": {n: _ref(_component(kind, n))["$ref"] for n in registry.names()},
        },
        "description": f"{kind}: one schema per task type, chosen by name",
    }
    return {kind: joined, **variants}


def _follow_ups(registry: Registry) -> dict[str, Any]:
    """BatchFollowUp by task name, for the task types that can be one: their payload
    gets a "batch" key (the counts), so a type that refuses unknown payload fields
    cannot (submit says so with a 400), and no request may set that key itself."""
    schemas = _by_task_name("BatchFollowUp", REQUESTS["BatchFollowUp"], registry, exclusive=False)
    joined = schemas["BatchFollowUp"]
    for name in registry.names():
        component = _component("BatchFollowUp", name)
        payload = schemas[component]["properties"]["payload"]
        if payload.get("additionalProperties") is False and "batch" not in payload.get("properties", {}):
            del schemas[component]
            del joined["discriminator"]["mapping"][name]
            joined["oneOf"] = [r for r in joined["oneOf"] if r["$ref"] != _ref(component)["$ref"]]
            continue
        guarded = {**payload, **NO_BATCH_KEY} if "not" not in payload else {"allOf": [payload, NO_BATCH_KEY]}
        schemas[component]["properties"]["payload"] = guarded
    return schemas


def request_schemas(registry: Registry) -> dict[str, Any]:
    """The request bodies of ``chalicelib.core.schemas``, as the document publishes them."""
    schemas = {
        **_by_task_name("TaskSubmission", REQUESTS["TaskSubmission"], registry, exclusive=True),
        **_by_task_name("ScheduleTask", REQUESTS["ScheduleTask"], registry, exclusive=False),
    }
    for name in ("ScheduleSubmission", "ScheduleUpdate"):
        schemas[name] = {**REQUESTS[name], "properties": {**REQUESTS[name]["properties"], "task": _ref("ScheduleTask")}}
    # Atomic: every item must be a valid TaskSubmission (else the whole batch is a 400).
    # Said with if/then, which generators skip, rather than a oneOf on a boolean const,
    # which openapi-python-client turns into invalid Python.
    atomic_items = {"properties": {"tasks": {"items": _ref("TaskSubmission")}}}
    schemas["BatchRequest"] = {
        **REQUESTS["BatchRequest"],
        "if": {"required": ["atomic"], "properties": {"atomic": {"enum": [True]}}},
        "then": atomic_items,
    }
    schemas.update(_follow_ups(registry))
    schemas["BatchRequest"]["properties"] = {
        **REQUESTS["BatchRequest"]["properties"],
        "batch": {
            **REQUESTS["BatchRequest"]["properties"]["batch"],
            "properties": {
                **REQUESTS["BatchRequest"]["properties"]["batch"]["properties"],
                "on_complete": _ref("BatchFollowUp"),
            },
        },
    }
    schemas["WorkflowStep"] = REQUESTS["WorkflowStep"]
    schemas["WorkflowSubmission"] = {
        **REQUESTS["WorkflowSubmission"],
        "properties": {
            "steps": {
                **REQUESTS["WorkflowSubmission"]["properties"]["steps"],
                "additionalProperties": _ref("WorkflowStep"),
            }
        },
    }
    schemas["Redrive"] = REQUESTS["Redrive"]
    schemas["Purge"] = REQUESTS["Purge"]
    schemas["BulkCancel"] = REQUESTS["BulkCancel"]
    return copy.deepcopy(schemas)


def spec(registry: Registry) -> dict[str, Any]:
    """The OpenAPI document for the task types in ``registry``."""
    task = _ref("Task")
    schemas = {**_SCHEMAS, **request_schemas(registry)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tasklane",
            "version": "1.0.0",
            "description": "A serverless task queue: PostgreSQL is the source of truth, Redis the fast queue.",
        },
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "MetricsToken": {"type": "http", "scheme": "bearer", "description": "TASKLANE_METRICS_TOKEN"},
            },
            "schemas": {**schemas, **_OPS_SCHEMAS},
        },
        "paths": {
            **_OPS_PATHS,
            "/health": {
                "get": {
                    "summary": "Health of PostgreSQL, Redis and the sweeper, and the schema version",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Health"), "all components UP"),
                        "503": _json(_ref("Health"), "a component is DOWN"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {}}}},
                }
            },
            "/api/v1/tasks": {
                "post": _op(
                    "Submit a task",
                    {
                        "201": _json(task, "accepted: the row is committed", _RATE_HEADERS),
                        "200": _json(
                            task,
                            "an existing task, nothing created: a replay of an earlier submission with the same"
                            " idempotency key (Idempotent-Replayed: true), or the task holding the request's"
                            " unique_key (Unique-Duplicate: true)",
                            {
                                "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}},
                                "Unique-Duplicate": {"schema": {"type": "string", "enum": ["true"]}},
                            },
                        ),
                        "409": _error("idempotency key reused with a different request"),
                    },
                    body=_ref("TaskSubmission"),
                    params=[
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        *_TRACE_HEADERS,
                    ],
                ),
                "get": _op(
                    "List tasks, newest first",
                    {"200": _json(_ref("TaskPage"), "a page of tasks", _RATE_HEADERS)},
                    params=[
                        _query("status", _STATUS, "only this status"),
                        _query("name", {"type": "string"}, "only this task name"),
                        _query("priority", _PRIORITY, "only this priority"),
                        _query("created_after", {"type": "string", "format": "date-time"}, "created after"),
                        _query("created_before", {"type": "string", "format": "date-time"}, "created before"),
                        _LIMIT,
                        _CURSOR,
                    ],
                ),
            },
            "/api/v1/tasks/batch": {
                "post": _op(
                    "Submit up to 500 tasks in one request",
                    {
                        "201": _json(_ref("BatchResult"), "every task accepted"),
                        "200": _json(_ref("BatchResult"), "per-item results; some failed or were replayed"),
                    },
                    body=_ref("BatchRequest"),
                )
            },
            "/api/v1/batches": {
                "get": _op(
                    "The tenant's batches, newest first",
                    {"200": _json(_ref("BatchPage"), "a page of batches")},
                    params=[
                        _query("status", {"type": "string", "enum": ["OPEN", "COMPLETED"]}, "only OPEN or COMPLETED"),
                        _LIMIT,
                        _CURSOR,
                    ],
                )
            },
            "/api/v1/batches/{batch_id}": {
                "get": _op(
                    "A batch: its tasks' counts by state, its progress and its completion",
                    {"200": _json(_ref("Batch"), "the batch"), "404": _error("no such batch for this tenant")},
                    params=[{**_TASK_ID_PARAM, "name": "batch_id", "description": "batch id (a UUID)"}],
                )
            },
            "/api/v1/tasks/{task_id}": {
                "get": _op(
                    "A task with the errors of its failed attempts",
                    {"200": _json(task, "the task"), "404": _error("no such task for this tenant")},
                    params=[_TASK_ID_PARAM],
                )
            },
            "/api/v1/tasks/{task_id}/events": {
                "get": _op(
                    "A task's audit trail",
                    {"200": _json(_ref("Events"), "every transition"), "404": _error("no such task")},
                    params=[_TASK_ID_PARAM],
                )
            },
            "/api/v1/tasks/{task_id}/cancel": {
                "post": _op(
                    "Cancel a task",
                    {
                        "200": _json(task, "PENDING or QUEUED task cancelled; it will never run"),
                        "202": _json(task, "PROCESSING task: cancellation requested"),
                        "404": _error("no such task"),
                        "409": _error("the task is already final"),
                    },
                    params=[_TASK_ID_PARAM],
                )
            },
            "/api/v1/tasks/cancel": {
                "post": _op(
                    "Cancel live tasks by status, name, priority and/or age (at most 500 a call; audited)",
                    {"200": _json(_ref("BulkCancelResult"), "what was cancelled, and whether more match")},
                    body=_ref("BulkCancel"),
                )
            },
            "/api/v1/task-types/{name}/pause": {
                "post": _op(
                    "Pause a task type for the caller's tenant: none of its tasks starts until resumed",
                    {
                        "200": _json(_ref("PauseResult"), "paused (changed false: it was already)"),
                        "404": _error("no such task type"),
                    },
                    params=[_TASK_TYPE_PARAM],
                )
            },
            "/api/v1/task-types/{name}/resume": {
                "post": _op(
                    "Resume a task type the caller's tenant paused; its waiting tasks run again",
                    {
                        "200": _json(_ref("ResumeResult"), "resumed (changed false: it was not paused)"),
                        "404": _error("no such task type"),
                    },
                    params=[_TASK_TYPE_PARAM],
                )
            },
            "/api/v1/workflows": {
                "post": _op(
                    "Submit a workflow: steps that wait for each other (a DAG), in one request",
                    {
                        "201": _json(_ref("Workflow"), "every step accepted: those without parents are QUEUED"),
                        "400": _error("a step is invalid, names an unknown step, or the steps form a cycle"),
                    },
                    body=_ref("WorkflowSubmission"),
                    params=_TRACE_HEADERS,
                )
            },
            "/api/v1/workflows/{workflow_id}": {
                "get": _op(
                    "A workflow: every step's state",
                    {"200": _json(_ref("Workflow"), "the workflow"), "404": _error("no such workflow")},
                    params=[{**_TASK_ID_PARAM, "name": "workflow_id", "description": "workflow id (a UUID)"}],
                )
            },
            "/api/v1/dead-letters": {
                "get": _op(
                    "FAILED tasks, newest first",
                    {"200": _json(_ref("TaskPage"), "a page of dead letters")},
                    params=[_query("name", {"type": "string"}, "only this task name"), _LIMIT, _CURSOR],
                )
            },
            "/api/v1/dead-letters/{task_id}/redrive": {
                "post": _op(
                    "Send one dead letter back to QUEUED with a fresh attempt budget",
                    {
                        "200": _json(task, "redriven"),
                        "404": _error("no such task"),
                        "409": _error("the task is not FAILED"),
                    },
                    params=[_TASK_ID_PARAM],
                )
            },
            "/api/v1/schedules": {
                "post": _op(
                    "Create a cron schedule",
                    {
                        "201": _json(_ref("Schedule"), "created, with its next fire times"),
                        "409": _error("a schedule of that name exists"),
                    },
                    body=_ref("ScheduleSubmission"),
                ),
                "get": _op("The tenant's schedules", {"200": _json(_ref("ScheduleList"), "all schedules")}),
            },
            "/api/v1/schedules/{schedule_id}": {
                "get": _op(
                    "A schedule with its next fire times and recent runs",
                    {"200": _json(_ref("Schedule"), "the schedule"), "404": _error("no such schedule")},
                    params=[_SCHEDULE_ID_PARAM],
                ),
                "patch": _op(
                    "Change a schedule (absent fields keep their value)",
                    {
                        "200": _json(_ref("Schedule"), "the updated schedule"),
                        "404": _error("no such schedule"),
                        "409": _error("a schedule of that name exists"),
                    },
                    body=_ref("ScheduleUpdate"),
                    params=[_SCHEDULE_ID_PARAM],
                ),
                "delete": _op(
                    "Delete a schedule (tasks it already created stay)",
                    {"204": {"description": "deleted"}, "404": _error("no such schedule")},
                    params=[_SCHEDULE_ID_PARAM],
                ),
            },
            "/api/v1/webhook-secret": {
                "get": _op(
                    "The tenant's webhook signing secret (created on first use)",
                    {"200": _json(_ref("WebhookSecret"), "the secret and how signatures are made")},
                )
            },
            "/api/v1/webhook-secret/rotate": {
                "post": _op(
                    "Replace the tenant's webhook signing secret",
                    {"200": _json(_ref("WebhookSecret"), "the new secret")},
                )
            },
            "/api/v1/dead-letters/redrive": {
                "post": _op(
                    "Redrive dead letters by ids and/or name",
                    {"200": _json(_ref("RedriveResult"), "how many were redriven")},
                    body=_ref("Redrive"),
                )
            },
            "/api/v1/dead-letters/purge": {
                "post": _op(
                    "Delete dead letters for good, by ids, name and/or age (at most 500 a call; audited)",
                    {"200": _json(_ref("PurgeResult"), "how many were purged, and whether more match")},
                    body=_ref("Purge"),
                )
            },
            "/api/v1/audit": {
                "get": _op(
                    "The tenant's audit log, newest first: keys, schedules, webhook secret, purges, bulk redrives",
                    {"200": _json(_ref("AuditPage"), "a page of audit entries")},
                    params=[
                        _query("action", {"type": "string", "enum": AUDIT_ACTIONS}, "only this action"),
                        _LIMIT,
                        _CURSOR,
                    ],
                )
            },
        },
    }
