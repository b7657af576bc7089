"""Validation of request bodies: one schema per body, messages that name the field.

Unknown fields are rejected (a typo such as ``delay`` for ``delay_seconds`` would
otherwise silently run a task at the wrong time).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from chalicelib.config import Settings
from chalicelib.core.defaults import MAX_RETRIES_LIMIT, MAX_TIMEOUT_SECONDS, TaskDefaults
from chalicelib.core.errors import PayloadError, ValidationError
from chalicelib.core.jsonbody import parse_json
from chalicelib.core.model import Priority
from chalicelib.core.numbers import as_int
from chalicelib.core.urls import check_callback_url

__all__ = ["TaskRequest", "check_fields", "parse_json", "parse_task"]

TASK_FIELDS = frozenset(
    {
        "name",
        "payload",
        "priority",
        "run_at",
        "delay_seconds",
        "max_retries",
        "timeout_seconds",
        "idempotency_key",
        "callback_url",
    }
)
MAX_DELAY_SECONDS = 365 * 24 * 3600
MAX_IDEMPOTENCY_KEY = 200


class TaskTypes(Protocol):
    """What request validation needs of the task-type registry (``tasktypes.Registry``)."""

    def submittable(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...

    def validate(self, name: str, payload: Any) -> None: ...

    def defaults(self, name: str) -> TaskDefaults: ...


@dataclass(frozen=True)
class TaskRequest:
    """A validated submission."""

    name: str
    payload: dict[str, Any]
    priority: Priority
    run_at: datetime | None
    delay_seconds: float | None
    max_retries: int
    timeout_seconds: int
    idempotency_key: str | None
    callback_url: str | None = None

    def fingerprint(self) -> str:
        """Hash of what the client asked for, minus the idempotency key: the same key
        with a different fingerprint is a conflict."""
        body = {
            "name": self.name,
            "payload": self.payload,
            "priority": self.priority.value,
            "run_at": self.run_at.isoformat() if self.run_at else None,
            "delay_seconds": self.delay_seconds,
            "max_retries": self.max_retries,
            "timeout_seconds": self.timeout_seconds,
            "callback_url": self.callback_url,
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_fields(body: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    """Refuse unknown fields (a typo must not silently change what runs) and explicit
    nulls (leave a field out to get its default), naming them."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            details={"fields": unknown},
        )
    nulls = sorted(k for k, v in body.items() if v is None)
    if nulls:
        raise ValidationError(
            f"field(s) {', '.join(nulls)} may not be null; leave a field out to get its default",
            details={"fields": nulls},
        )


def _int_field(body: dict[str, Any], field: str, default: int, lo: int, hi: int) -> int:
    if field not in body:
        return default
    value = as_int(body[field])
    if value is None:
        raise ValidationError(f"{field} must be an integer from {lo} to {hi}", details={"field": field})
    if not lo <= value <= hi:
        raise ValidationError(f"{field} must be from {lo} to {hi}, got {value}", details={"field": field})
    return value


def _parse_run_at(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValidationError("run_at must be an ISO-8601 string", details={"field": "run_at"})
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"run_at must be ISO-8601 such as 2030-01-01T09:00:00Z, got {value!r}",
            details={"field": "run_at"},
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)  # documented: no offset means UTC
    try:
        # In UTC: PostgreSQL refuses offsets beyond ±15:59 that ISO-8601 allows.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError("run_at is out of range", details={"field": "run_at"}) from None


def parse_task(body: Any, settings: Settings, registry: TaskTypes, *, where: str = "") -> TaskRequest:
    """Validate one task body; ``where`` prefixes messages (e.g. ``tasks[3].``)."""
    try:
        return _parse_task(body, settings, registry)
    except ValidationError as exc:
        if where:
            exc.message = f"{where}{exc.message}"
            exc.args = (exc.message,)
        raise


def _parse_task(body: Any, settings: Settings, registry: TaskTypes) -> TaskRequest:
    if not isinstance(body, dict):
        raise ValidationError("the task must be a JSON object")
    check_fields(body, TASK_FIELDS)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name is required: a non-empty string", details={"field": "name"})
    if not registry.submittable(name):
        raise ValidationError(
            f"unknown task name {name!r}; known task names: {', '.join(registry.names())}",
            details={"field": "name", "known": registry.names()},
        )
    payload = body.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object", details={"field": "payload"})
    try:
        registry.validate(name, payload)
    except PayloadError as exc:
        raise ValidationError(f"payload is invalid for {name}: {exc}", details={"field": "payload"}) from None

    implied = registry.defaults(name)  # the type's own, where it sets them
    raw_priority = body.get("priority", (implied.priority or Priority.NORMAL).value)
    try:
        priority = Priority(raw_priority)
    except ValueError:
        raise ValidationError(
            f"priority must be one of critical, high, normal, low; got {raw_priority!r}",
            details={"field": "priority"},
        ) from None

    run_at = None
    delay: float | None = None
    if body.get("run_at") is not None and body.get("delay_seconds") is not None:
        raise ValidationError("give run_at or delay_seconds, not both", details={"field": "run_at"})
    if body.get("run_at") is not None:
        run_at = _parse_run_at(body["run_at"])
    if body.get("delay_seconds") is not None:
        raw_delay = body["delay_seconds"]
        if isinstance(raw_delay, bool) or not isinstance(raw_delay, (int, float)) or not math.isfinite(raw_delay):
            raise ValidationError("delay_seconds must be a number", details={"field": "delay_seconds"})
        if not 0 <= raw_delay <= MAX_DELAY_SECONDS:
            raise ValidationError(
                f"delay_seconds must be from 0 to {MAX_DELAY_SECONDS}", details={"field": "delay_seconds"}
            )
        delay = float(raw_delay)

    retries_default = settings.default_max_retries if implied.max_retries is None else implied.max_retries
    timeout_default = settings.default_timeout_seconds if implied.timeout_seconds is None else implied.timeout_seconds
    max_retries = _int_field(body, "max_retries", retries_default, 0, MAX_RETRIES_LIMIT)
    timeout = _int_field(body, "timeout_seconds", timeout_default, 1, MAX_TIMEOUT_SECONDS)

    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY):
        raise ValidationError(
            f"idempotency_key must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters",
            details={"field": "idempotency_key"},
        )
    callback_url = body.get("callback_url")
    if callback_url is not None:
        if not isinstance(callback_url, str):
            raise ValidationError("callback_url must be a string", details={"field": "callback_url"})
        try:
            check_callback_url(callback_url, allow_private=settings.webhook_allow_private)
        except PayloadError as exc:
            raise ValidationError(f"callback_url: {exc}", details={"field": "callback_url"}) from None
    return TaskRequest(
        callback_url=callback_url,
        name=name,
        payload=payload,
        priority=priority,
        run_at=run_at,
        delay_seconds=delay,
        max_retries=max_retries,
        timeout_seconds=timeout,
        idempotency_key=key,
    )
