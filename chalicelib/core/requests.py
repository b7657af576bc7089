"""Validated requests: each body checked against its JSON Schema (``core.schemas``,
the same definitions the OpenAPI document publishes), then for what a schema cannot
say: a registered task name and its payload, ``run_at`` as an instant, a callback
URL that is not private.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from chalicelib.config import Settings
from chalicelib.core.defaults import TaskDefaults
from chalicelib.core.dependencies import step_order
from chalicelib.core.errors import PayloadError, ValidationError
from chalicelib.core.instants import parse_instant
from chalicelib.core.jsonbody import parse_json
from chalicelib.core.model import Priority
from chalicelib.core.urls import check_callback_url
from chalicelib.core.validator import validate

__all__ = ["TaskRequest", "TaskTypes", "WorkflowRequest", "parse_json", "parse_task", "parse_workflow", "validate"]


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
    unique_key: str | None = None
    unique_for_seconds: float | None = None
    expires_at: datetime | None = None
    depends_on: tuple[str, ...] = ()  # parent task ids (lower case, no duplicates)
    run_anyway: bool = False  # on_dependency_failure "run"

    def fingerprint(self) -> str:
        """Hash of what the client asked for, minus the idempotency key: the same key
        with a different fingerprint is a conflict."""
        body: dict[str, Any] = {
            "name": self.name,
            "payload": self.payload,
            "priority": self.priority.value,
            "run_at": self.run_at.isoformat() if self.run_at else None,
            "delay_seconds": self.delay_seconds,
            "max_retries": self.max_retries,
            "timeout_seconds": self.timeout_seconds,
            "callback_url": self.callback_url,
        }
        # Only when given: a request without them keeps the fingerprint it always had.
        if self.unique_key is not None:
            body.update(unique_key=self.unique_key, unique_for_seconds=self.unique_for_seconds)
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at.isoformat()
        if self.depends_on:  # only then: a plain task's fingerprint stays what it was
            body.update(depends_on=sorted(self.depends_on), run_anyway=self.run_anyway)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _first(value: int | None, fallback: int) -> int:
    return fallback if value is None else value


def _parse_expires_at(body: dict[str, Any], run_at: datetime | None, delay: float | None) -> datetime | None:
    """The deadline, refused when no attempt could ever start before it."""
    if "expires_at" not in body:
        return None
    expires_at = parse_instant(body["expires_at"], "expires_at")
    now = datetime.now(UTC)
    if expires_at <= now:
        raise ValidationError("expires_at is in the past; the task could never run", details={"field": "expires_at"})
    start = run_at if run_at is not None else now + timedelta(seconds=delay or 0)
    if expires_at <= start:
        raise ValidationError(
            "expires_at is not after run_at (or now + delay_seconds); the task could never run",
            details={"field": "expires_at"},
        )
    return expires_at


_PRIORITIES = {p.value: p for p in Priority}


def _priority(given: Any, implied: Priority | None) -> Priority:
    """The body's priority (the schema has checked it is one), else the type's, else
    normal; a dict lookup where ``Priority(value)`` goes through enum's call (~5k
    instructions)."""
    if given is None:
        return implied or Priority.NORMAL
    found = _PRIORITIES.get(given) if isinstance(given, str) else None
    return found if found is not None else Priority(given)


def _parse_unique(body: dict[str, Any]) -> tuple[str | None, float | None]:
    if "unique_for_seconds" in body and "unique_key" not in body:
        raise ValidationError("unique_for_seconds needs unique_key", details={"field": "unique_for_seconds"})
    window = body.get("unique_for_seconds")
    return body.get("unique_key"), float(window) if window is not None else None


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
    run_at = parse_instant(body["run_at"], "run_at") if "run_at" in body else None
    delay = float(body["delay_seconds"]) if "delay_seconds" in body else None
    unique_key, unique_for = _parse_unique(body)
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
        priority=_priority(body.get("priority"), implied.priority),
        run_at=run_at,
        delay_seconds=delay,
        # JSON Schema's integers include 3.0; the schema has checked the range.
        max_retries=int(body.get("max_retries", _first(implied.max_retries, settings.default_max_retries))),
        timeout_seconds=int(
            body.get("timeout_seconds", _first(implied.timeout_seconds, settings.default_timeout_seconds))
        ),
        idempotency_key=body.get("idempotency_key"),
        unique_key=unique_key,
        unique_for_seconds=unique_for,
        expires_at=_parse_expires_at(body, run_at, delay),
        depends_on=tuple(dict.fromkeys(p.lower() for p in body.get("depends_on", ()))),
        run_anyway=body.get("on_dependency_failure") == "run",
    )


@dataclass(frozen=True)
class WorkflowRequest:
    """A validated workflow: its steps by name, in an order where parents come first,
    and the steps each one waits for."""

    steps: dict[str, TaskRequest]
    after: dict[str, tuple[str, ...]]


def parse_workflow(body: Any, settings: Settings, registry: TaskTypes) -> WorkflowRequest:
    """Validate a workflow body: every step a task (``WorkflowStep``), every ``after``
    a known step, no cycle (``core.dependencies.step_order``)."""
    raw = validate("WorkflowSubmission", body, what="the workflow")["steps"]
    after = {}
    for name, step in raw.items():
        if isinstance(step, dict) and isinstance(step.get("after"), list):
            after[name] = tuple(dict.fromkeys(str(a) for a in step["after"]))
        else:
            after[name] = ()
    order = step_order(after)
    steps = {}
    for name in order:
        step = raw[name]
        validate("WorkflowStep", step, what=f"steps.{name}", where=f"steps.{name}: ")
        fields = {k: v for k, v in step.items() if k != "after"}
        steps[name] = parse_task(fields, settings, registry, where=f"steps.{name}: ", schema="WorkflowStep")
    return WorkflowRequest(steps, after)
