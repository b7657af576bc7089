"""Executors: plain functions registered by task name (the strategy pattern).

An executor receives the task's payload and a ``TaskContext`` and returns a
JSON-serialisable result.  It never sees Chalice or Lambda types.  Adding a task
type is one decorated function::

    from chalicelib.tasktypes import registry

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

from chalicelib.core.errors import PayloadError

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
    services: Any = None  # the drainer's Container, for Tasklane's own internal executors
    lease_token: str | None = None
    _last_progress: float = 0.0
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

    def report_progress(self, percent: int, message: str | None = None) -> bool:
        """Record progress (0-100 and a short message), visible in ``GET /api/v1/tasks/{id}``.

        Writes at most twice a second per task (calls in between are dropped, except
        100 %); returns False when nothing was written or the lease was lost."""
        if not 0 <= int(percent) <= 100:
            raise ValueError("percent must be from 0 to 100")
        now = time.monotonic()
        if self.services is None or self.lease_token is None or (now - self._last_progress < 0.5 and percent < 100):
            return False
        self._last_progress = now
        text = None if message is None else str(message)[:500]
        return bool(self.services.store.set_progress(self.task_id, self.lease_token, int(percent), text))

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
    internal: bool = False


class Registry:
    """Task name → executor."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}

    def task(
        self,
        name: str,
        *,
        validate: Validator | None = None,
        payload_schema: dict[str, Any] | None = None,
        internal: bool = False,
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
            self._by_name[name] = Registered(name, fn, validate, doc[0] if doc else "", schema, internal)
            return fn

        return decorator

    def get(self, name: str) -> Registered | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Task names clients may submit (internal ones, such as webhooks, are left out)."""
        return sorted(n for n, r in self._by_name.items() if not r.internal)

    def submittable(self, name: str) -> bool:
        entry = self._by_name.get(name)
        return entry is not None and not entry.internal

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
    from chalicelib.tasktypes import builtin, email, http_request, pdf, sms, webhook  # noqa: F401  (registers on import)

    return registry
