"""Executors: plain functions registered by task name (the strategy pattern).

An executor receives the task's payload and a ``TaskContext`` and returns a
JSON-serialisable result.  It never sees Chalice or Lambda types.  Adding a task
type is one decorated function::

    from chalicelib.executors import registry

    @registry.task("resize-image")
    def resize_image(payload: dict, ctx: TaskContext) -> dict: ...

Delivery is at least once: use ``ctx.task_id`` and ``ctx.attempt`` to make side
effects idempotent.  Raise ``RetryableError`` or any other exception to retry with
backoff, ``PermanentError`` (or ``PayloadError``) to dead-letter at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import PayloadError

Validator = Callable[[Any], None]


@dataclass
class TaskContext:
    """What an executor may know about the attempt it runs."""

    task_id: str
    name: str
    tenant: str
    attempt: int
    max_retries: int
    timeout_seconds: float
    started_monotonic: float = 0.0  # set when the attempt starts running
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancel_requested(self) -> bool:
        """True once a client asked to cancel this task; stop early by raising
        ``TaskCancelled``.  The drainer refreshes it with every lease heartbeat."""
        return self._cancel.is_set()

    def remaining_seconds(self) -> float:
        """Time left before this attempt is timed out and counted as failed."""
        if not self.started_monotonic:
            return self.timeout_seconds
        return self.timeout_seconds - (time.monotonic() - self.started_monotonic)

    def request_cancel(self) -> None:
        """Called by the drainer when the task's cancellation was requested."""
        self._cancel.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancellation; True if cancelled."""
        return self._cancel.wait(max(seconds, 0.0))


Executor = Callable[[Any, TaskContext], Any]


@dataclass(frozen=True)
class Registered:
    name: str
    run: Executor
    validate: Validator | None
    description: str
    payload_schema: dict[str, Any]


class Registry:
    """Task name → executor."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}

    def task(
        self, name: str, *, validate: Validator | None = None, payload_schema: dict[str, Any] | None = None
    ) -> Callable[[Executor], Executor]:
        """Register the decorated function as the executor of ``name``.

        ``payload_schema`` (JSON Schema) documents the payload in ``/openapi.json``;
        the API's fuzz test holds it and ``validate`` to the same rules.

        ``validate(payload)`` raises ``PayloadError``; it runs at submit (a 400 for
        the client) and again before each attempt (a permanent failure)."""

        def decorator(fn: Executor) -> Executor:
            if name in self._by_name:
                raise ValueError(f"task {name!r} is registered twice")
            doc = (fn.__doc__ or "").strip().splitlines()
            schema = payload_schema or {"type": "object"}
            self._by_name[name] = Registered(name, fn, validate, doc[0] if doc else "", schema)
            return fn

        return decorator

    def get(self, name: str) -> Registered | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def validate(self, name: str, payload: Any) -> None:
        """Raise ``PayloadError`` when ``payload`` is not valid for ``name``."""
        entry = self._by_name.get(name)
        if entry is not None and entry.validate is not None:
            entry.validate(payload)


registry = Registry()


def require(condition: bool, message: str) -> None:
    """Validator helper: raise ``PayloadError(message)`` unless ``condition``."""
    if not condition:
        raise PayloadError(message)


def as_int(value: Any) -> int | None:
    """JSON Schema's notion of an integer: any number without a fractional part
    (``3`` and ``3.0`` alike); ``None`` for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def load_builtin_executors() -> Registry:
    """Import the modules whose decorators fill ``registry``; returns it."""
    from chalicelib.executors import builtin  # noqa: F401  (registers on import)

    return registry
