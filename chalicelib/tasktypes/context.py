"""What a task type sees of the attempt it runs: ``TaskContext`` and its ports.

A task type never gets the drainer's wiring.  It gets the attempt's identity and
clock, cancellation, and a few narrow ports (``TaskPorts``), each a Protocol or a
plain value, each ``None`` where the process has none (the executor Lambda
function has no database connection, so progress is not reported there).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from chalicelib.adapters.aws.secrets import with_secrets
from chalicelib.config import Settings, get_settings
from chalicelib.core.errors import Snooze
from chalicelib.core.tracecontext import TraceContext, root_of, stored


class ProgressReporter(Protocol):
    """Writes an attempt's progress; False when the lease (``lease_token``) is no longer held."""

    def set_progress(self, task_id: str, token: str, progress: int, message: str | None) -> bool: ...


class WebhookSecrets(Protocol):
    """The tenant's webhook signing secret (for Tasklane's internal webhook task type)."""

    def webhook_secret(self, tenant: str) -> str: ...


@dataclass(frozen=True)
class TaskPorts:
    """What the drainer lends task types, built once per drainer (not per task)."""

    settings: Settings | None = None
    progress: ProgressReporter | None = None
    # A redis-py client for the once-per-task records (Powertools' cache persistence
    # layer takes the client itself); None: the task type opens its own.
    idempotency_redis: Any = None
    webhook_secrets: WebhookSecrets | None = None

    def settings_or_env(self) -> Settings:
        """The drainer's settings, else the process's with its secrets resolved (the
        executor Lambda function)."""
        return self.settings if self.settings is not None else with_secrets(get_settings())


NO_PORTS = TaskPorts()
_MAKING_EVENTS = threading.Lock()


@dataclass
class TaskContext:
    """What a task type may know about the attempt it runs."""

    task_id: str
    name: str
    tenant: str
    attempt: int
    max_retries: int
    timeout_seconds: float
    ports: TaskPorts = NO_PORTS
    lease_token: str | None = None
    trace_context: str | None = None  # the task's trace (X-Amzn-Trace-Id form), as stored at submit
    # Its parents' results (depends_on, a workflow's "after"): by step name in a
    # workflow, else by parent id; None for a parent that did not complete (a task that
    # runs anyway).  None for a task without parents.
    parent_results: Mapping[str, Any] | None = None
    _last_progress: float = 0.0
    started_monotonic: float = 0.0  # set when the attempt starts running
    # Cancellation is a flag; the event that ``wait`` sleeps on is made only when a task
    # type waits (a threading.Event builds a Condition and locks: most tasks never wait).
    _cancelled: bool = field(default=False, repr=False)
    _cancel: threading.Event | None = field(default=None, repr=False)

    @functools.cached_property
    def trace(self) -> TraceContext | None:
        """The task's trace context (None for a task stored without one)."""
        return stored(self.trace_context)

    @property
    def trace_id(self) -> str | None:
        """The X-Ray trace id (``1-...``) of the task: in every log line of the attempt."""
        return root_of(self.trace_context)

    @property
    def trace_header(self) -> str | None:
        """The ``X-Amzn-Trace-Id`` value for a call this attempt makes (an HTTP request,
        a Lambda invocation), so the callee joins the task's trace."""
        trace = self.trace
        return trace.header() if trace is not None else None

    def trace_headers(self) -> dict[str, str]:
        """``X-Amzn-Trace-Id`` and W3C ``traceparent`` for an outbound HTTP call ({} when
        the task has no trace)."""
        trace = self.trace
        return trace.outbound_headers() if trace is not None else {}

    @property
    def cancel_requested(self) -> bool:
        """True once a client asked to cancel this task; stop early by raising
        ``TaskCancelled``.  The drainer refreshes it with every lease heartbeat."""
        return self._cancelled

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
        reporter = self.ports.progress
        if reporter is None or self.lease_token is None or (now - self._last_progress < 0.5 and percent < 100):
            return False
        self._last_progress = now
        text = None if message is None else str(message)[:500]
        return bool(reporter.set_progress(self.task_id, self.lease_token, int(percent), text))

    def request_cancel(self) -> None:
        """Called by the drainer when the task's cancellation was requested."""
        self._cancelled = True
        event = self._cancel
        if event is not None:
            event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on cancellation; True if cancelled."""
        event = self._cancel
        if event is None:
            with _MAKING_EVENTS:  # two threads of one task waiting share one event
                event = self._cancel
                if event is None:
                    event = self._cancel = threading.Event()
            # A cancel that came while the event was being made did not see it: the
            # flag, set before that cancel looked, is read after the event is in place.
            if self._cancelled:
                event.set()
        return event.wait(max(seconds, 0.0))

    def snooze(self, seconds: float, reason: str = "") -> NoReturn:
        """Stop this attempt and run the task again in ``seconds`` without spending an
        attempt (raises ``Snooze``; see there for the bound)."""
        raise Snooze(seconds, reason)
