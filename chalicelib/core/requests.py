"""Validated requests: each body checked against its JSON Schema (``core.schemas``,
the same definitions the OpenAPI document publishes), then for what a schema cannot
say: a registered task name and its payload, ``run_at`` as an instant, a callback
URL that is not private.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from chalicelib.config import Settings
from chalicelib.core.defaults import TaskDefaults
from chalicelib.core.errors import PayloadError, ValidationError
from chalicelib.core.jsonbody import parse_json
from chalicelib.core.model import Priority
from chalicelib.core.urls import check_callback_url
from chalicelib.core.validator import validate

__all__ = ["TaskRequest", "TaskTypes", "parse_json", "parse_task", "validate"]


class TaskTypes(Protocol):
    """What validation needs of the task registry (``chalicelib.tasktypes.Registry``)."""

    def names(self) -> list[str]: ...

    def submittable(self, name: str) -> bool: ...

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


def _first(value: int | None, fallback: int) -> int:
    return fallback if value is None else value


def _parse_run_at(value: str) -> datetime:
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


def parse_task(
    body: Any, settings: Settings, registry: TaskTypes, *, where: str = "", schema: str = "TaskSubmission"
) -> TaskRequest:
    """Validate one task body; ``where`` prefixes messages (e.g. ``tasks[3]: ``)."""
    validate(schema, body, what="the task", where=where)
    try:
        return _parse_task(body, settings, registry)
    except ValidationError as exc:
        if where:
            exc.message = f"{where}{exc.message}"
            exc.args = (exc.message,)
        raise


def _parse_task(body: dict[str, Any], settings: Settings, registry: TaskTypes) -> TaskRequest:
    name: str = body["name"]
    if not registry.submittable(name):
        raise ValidationError(
            f"unknown task name {name!r}; known task names: {', '.join(registry.names())}",
            details={"field": "name", "known": registry.names()},
        )
    payload: dict[str, Any] = body.get("payload", {})
    try:
        registry.validate(name, payload)
    except PayloadError as exc:
        raise ValidationError(f"payload is invalid for {name}: {exc}", details={"field": "payload"}) from None
    implied = registry.defaults(name)  # the type's own, where it sets them
    if "run_at" in body and "delay_seconds" in body:
        raise ValidationError("give run_at or delay_seconds, not both", details={"field": "run_at"})
    run_at = _parse_run_at(body["run_at"]) if "run_at" in body else None
    delay = float(body["delay_seconds"]) if "delay_seconds" in body else None
    callback_url = body.get("callback_url")
    if callback_url is not None:
        try:
            check_callback_url(callback_url, allow_private=settings.webhook_allow_private)
        except PayloadError as exc:
            raise ValidationError(f"callback_url: {exc}", details={"field": "callback_url"}) from None
    return TaskRequest(
        callback_url=callback_url,
        name=name,
        payload=payload,
        priority=Priority(body.get("priority", (implied.priority or Priority.NORMAL).value)),
        run_at=run_at,
        delay_seconds=delay,
        # JSON Schema's integers include 3.0; the schema has checked the range.
        max_retries=int(body.get("max_retries", _first(implied.max_retries, settings.default_max_retries))),
        timeout_seconds=int(
            body.get("timeout_seconds", _first(implied.timeout_seconds, settings.default_timeout_seconds))
        ),
        idempotency_key=body.get("idempotency_key"),
    )
