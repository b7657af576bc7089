"""``GET /api/v1/task-types``: every task type a client may submit, as the dashboard
and clients see it (built-ins, team modules and declared Lambda/HTTP targets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.api.presenters import pause_entry
from chalicelib.config import Settings, TypeLimit
from chalicelib.core.control import Pause
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
                "required": ["name", "description", "target", "payload_schema", "defaults", "limits", "pauses"],
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
                    "pauses": {
                        "type": "array",
                        "description": "the pauses holding this type for the caller (empty: it runs); "
                        "scope tenant is the caller's own, global an operator's",
                        "items": {"$ref": "#/components/schemas/PauseEntry"},
                    },
                },
            },
        }
    },
}


def present_task_types(registry: Registry, settings: Settings, pauses: Sequence[Pause] = ()) -> dict[str, Any]:
    """The submittable task types, by name; defaults filled in from the settings, with
    the ``pauses`` in force for the caller."""
    limits = task_limits(registry, settings)
    paused: dict[str, list[dict[str, Any]]] = {}
    for p in pauses:
        paused.setdefault(p.name, []).append(pause_entry(p))
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
                "pauses": paused.get(name, []),
            }
        )
    return {"task_types": types}


def _limit(limit: TypeLimit | None) -> dict[str, Any] | None:
    if limit is None:
        return None
    return {"concurrency": limit.concurrency, "rate_per_second": limit.rate_per_second, "burst": limit.burst}
