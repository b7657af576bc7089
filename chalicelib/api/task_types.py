"""``GET /api/v1/task-types``: every task type a client may submit, as the dashboard
and clients see it (built-ins, team modules and declared Lambda/HTTP targets)."""

from __future__ import annotations

from typing import Any

from chalicelib.config import Settings, TypeLimit
from chalicelib.tasktypes.catalog import Registry
from chalicelib.tasktypes.loading import task_limits

# The JSON Schema of the answer, for /openapi.json.
TASK_TYPE_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["task_types"],
    "properties": {
        "task_types": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "description", "target", "payload_schema", "defaults", "limits"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "target": {"type": "string", "enum": ["python", "lambda", "http"]},
                    "payload_schema": {"type": "object"},
                    "defaults": {
                        "type": "object",
                        "description": "what a submission gets when it does not say",
                        "properties": {
                            "max_retries": {"type": "integer"},
                            "timeout_seconds": {"type": "integer"},
                            "priority": {"type": "string"},
                        },
                    },
                    "limits": {
                        "type": ["object", "null"],
                        "description": "the limits in force (TASKLANE_TASK_LIMITS overrides the type's own)",
                        "properties": {
                            "concurrency": {"type": "integer", "minimum": 0},
                            "rate_per_second": {"type": "number", "minimum": 0},
                            "burst": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
        }
    },
}


def present_task_types(registry: Registry, settings: Settings) -> dict[str, Any]:
    """The submittable task types, by name; defaults filled in from the settings."""
    limits = task_limits(registry, settings)
    types = []
    for name in registry.names():
        entry = registry.get(name)
        if entry is None:
            continue
        defaults = {
            "max_retries": settings.default_max_retries,
            "timeout_seconds": settings.default_timeout_seconds,
            "priority": "normal",
            **entry.defaults.as_dict(),
        }
        types.append(
            {
                "name": name,
                "description": entry.description,
                "target": entry.target,
                "payload_schema": entry.payload_schema,
                "defaults": defaults,
                "limits": _limit(limits.get(name)),
            }
        )
    return {"task_types": types}


def _limit(limit: TypeLimit | None) -> dict[str, Any] | None:
    if limit is None:
        return None
    return {"concurrency": limit.concurrency, "rate_per_second": limit.rate_per_second, "burst": limit.burst}
