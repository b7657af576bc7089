"""Powertools in Lambda: Logger context, Metrics (EMF) and Tracer around the
scheduled and ``lambda_function`` handlers, plus per-task log keys.

Everything heavy is built on the first invocation, not at import: ``Tracer()``
alone imports the X-Ray SDK (about 0.3 s), which would blow the cold-start budget
of the API function that never traces a handler of this kind.

- Logger: the process's ``chalicelib.observability.log.logger``; each invocation gets
  the Lambda context keys (request id, function name, cold start).  While a task
  runs, its thread's log lines carry ``task_id``, ``task_name``, ``tenant`` and
  ``attempt`` and ``trace_id`` (``task_log_context``; thread-safe keys, since executors
  share a pool).
- Metrics: namespace from ``POWERTOOLS_METRICS_NAMESPACE`` (``Tasklane``), flushed as
  EMF at the end of every drain, sweep and executor invocation.
- Tracer: off when ``POWERTOOLS_TRACE_DISABLED=true`` (the local stage).

Chalice hands scheduled handlers a ``CloudWatchEvent`` and ``lambda_function``
handlers ``(event, context)``; ``observed`` adapts both to Powertools' decorators,
which expect ``(event, context)``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from aws_lambda_powertools.logging.formatter import THREAD_LOCAL_KEYS

from chalicelib.observability.log import logger

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_tracer: Any = None
_metrics: Any = None


def tracer() -> Any:
    global _tracer
    with _lock:
        if _tracer is None:
            from aws_lambda_powertools import Tracer

            _tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "tasklane"))
        return _tracer


def metrics() -> Any:
    global _metrics
    with _lock:
        if _metrics is None:
            from aws_lambda_powertools import Metrics

            _metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Tasklane"))
        return _metrics


def add_counts(prefix: str, counts: Mapping[str, Any]) -> None:
    """One Count metric per integer in ``counts`` (``DrainCompleted``, ``SweepRescued``...)."""
    from aws_lambda_powertools.metrics import MetricUnit

    m = metrics()
    for name, value in counts.items():
        if isinstance(value, int) and not isinstance(value, bool):
            m.add_metric(
                name=prefix + "".join(p.capitalize() for p in name.split("_")), unit=MetricUnit.Count, value=value
            )


@contextlib.contextmanager
def task_log_context(
    task_id: str, task_name: str, tenant: str, attempt: int, trace_id: str | None = None
) -> Iterator[None]:
    """Every log line of this thread carries the task's keys (and its trace id, when
    it has one) until the block ends; then the thread's keys are what they were before
    (keys a task type added are dropped with the task's).

    The same context variable as ``logger.thread_safe_append_keys``, set and reset
    directly: that call and ``thread_safe_remove_keys`` look up the logger's handler
    and formatter and copy the keys twice, which was half of a lane's CPU per noop
    task."""
    token = THREAD_LOCAL_KEYS.set(
        {
            **THREAD_LOCAL_KEYS.get(),
            "task_id": task_id,
            "task_name": task_name,
            "tenant": tenant,
            "attempt": attempt,
            "trace_id": trace_id,
        }
    )
    try:
        yield
    finally:
        THREAD_LOCAL_KEYS.reset(token)


def observed(kind: str, *, counts: Callable[[Any], Mapping[str, Any]] | None = None) -> Callable[[F], F]:
    """Wrap a Chalice handler with Powertools' Logger, Metrics and Tracer decorators.

    ``kind`` names the metric prefix (``Drain``, ``Sweep``, ``Executor``); ``counts``
    turns the handler's result into the counts published as metrics."""

    def decorate(fn: F) -> F:
        built: dict[str, Callable[..., Any]] = {}

        def build() -> Callable[..., Any]:
            def handler(raw_event: Any, context: Any, original: Any = None) -> Any:
                try:
                    result = fn(original) if original is not None else fn(raw_event, context)
                except Exception:
                    add_counts(kind, {"errors": 1})  # never an empty metric set: Powertools would warn
                    raise
                add_counts(kind, counts(result) if counts is not None else {"invocations": 1})
                return result

            # Powertools names the trace subsegment after the function it wraps: "## drain",
            # "## sweep", "## executor" rather than three alike "## handler".
            handler.__name__ = handler.__qualname__ = fn.__name__
            wrapped = tracer().capture_lambda_handler(handler, capture_response=False)
            wrapped = metrics().log_metrics(wrapped, capture_cold_start_metric=True)
            return logger.inject_lambda_context(wrapped, clear_state=True)  # type: ignore[no-any-return]

        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            with _lock:
                handler = built.get("h")
            if handler is None:
                handler = build()
                built["h"] = handler
            if len(args) == 1:  # a Chalice event object (scheduled): it carries the context
                event = args[0]
                raw = event.to_dict() if hasattr(event, "to_dict") else {}
                return handler(raw, getattr(event, "context", None), original=event)
            return handler(args[0], args[1])

        return wrapper  # type: ignore[return-value]

    return decorate
