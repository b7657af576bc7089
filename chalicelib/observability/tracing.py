"""One task, one trace: X-Ray spans for the API request and for each task attempt.

The trace context itself (parsing, generating, rendering) is ``core.tracecontext``;
this module opens spans, and only when tracing is on (Powertools' rule: in Lambda,
not under SAM or ``chalice local``, not ``POWERTOOLS_TRACE_DISABLED``).  With
tracing off (locally, in tests) nothing here imports the X-Ray SDK: the trace id
still reaches every log line, which is all the hot path pays for.

- API: ``traced_request`` (an ``http`` middleware) picks the request's trace context
  (``tracecontext.from_headers``), opens a ``## <METHOD> <path>`` subsegment of the
  invocation's segment, tags the request's log lines with ``trace_id`` and hands the
  context to the route (``current_trace``), so the task row stores the API's span as
  its parent.  ``annotate`` adds the ``task_id`` annotation.
- Attempts: ``attempt_span`` emits one X-Ray *segment* per attempt in the task's
  trace (not a subsegment of the drain invocation: that one belongs to the drain's
  own trace, and a Lambda function may not open segments through the SDK's context,
  so the segment is built and sent to the daemon directly).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

from aws_lambda_powertools.logging.formatter import THREAD_LOCAL_KEYS

from chalicelib.core.tracecontext import TraceContext, from_headers
from chalicelib.observability.log import logger

_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("tasklane_trace", default=None)


@functools.cache
def tracing_enabled() -> bool:
    """Powertools' ``Tracer._is_tracer_disabled``, read once per process (the
    environment of a Lambda function does not change while it lives)."""
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in ("1", "true", "yes", "on", "y", "t"):
        return False
    if os.environ.get("AWS_SAM_LOCAL") or os.environ.get("AWS_CHALICE_CLI_MODE"):
        return False
    return bool(os.environ.get("LAMBDA_TASK_ROOT"))


def current_trace(headers: Any = None) -> TraceContext:
    """The trace context of the request being handled (set by ``traced_request``);
    read from ``headers`` when the middleware did not run."""
    trace = _current.get()
    if trace is None:
        trace = from_headers(headers if headers is not None else {}, os.environ.get("_X_AMZN_TRACE_ID"))
    return trace


def annotate(**values: str) -> None:
    """X-Ray annotations (indexed, searchable) on the current span, when tracing is on."""
    if not tracing_enabled():
        return
    from chalicelib.observability.powertools import tracer

    t = tracer()
    for key, value in values.items():
        t.put_annotation(key=key, value=value)


def traced_request(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice ``http`` middleware: the request's trace context, span and log key."""
    trace = from_headers(event.headers or {}, os.environ.get("_X_AMZN_TRACE_ID"))
    if not tracing_enabled():  # locally and in tests: no span, and no ExitStack to set up
        return _in_trace(trace, event, get_response)
    from chalicelib.observability.powertools import tracer

    with tracer().provider.in_subsegment(f"## {event.method} {event.path}") as span:
        # The task's spans hang under this one only when it is in the task's trace (a
        # client's header that API Gateway did not continue names another trace).
        if span is not None and getattr(span, "id", None) and getattr(span, "trace_id", None) == trace.root:
            trace = trace.child(span.id)
        return _in_trace(trace, event, get_response)


def _in_trace(trace: TraceContext, event: Any, get_response: Callable[[Any], Any]) -> Any:
    """``get_response(event)`` with ``trace`` as the request's trace and log key."""
    token = _current.set(trace)
    # Powertools' thread-safe keys, set and reset on its context variable directly
    # (``thread_safe_append_keys``/``remove_keys`` look up the handler and formatter
    # and copy the keys twice); the thread's keys are what they were afterwards.
    keys = THREAD_LOCAL_KEYS.set({**THREAD_LOCAL_KEYS.get(), "trace_id": trace.trace_id})
    try:
        return get_response(event)
    finally:
        THREAD_LOCAL_KEYS.reset(keys)
        _current.reset(token)


@contextlib.contextmanager
def attempt_span(trace: TraceContext | None, name: str, annotations: dict[str, Any]) -> Iterator[None]:
    """An X-Ray segment for one task attempt in the task's own trace (tracing on and
    the trace not explicitly unsampled); otherwise nothing at all."""
    if trace is None or trace.sampled is False or not tracing_enabled():
        yield
        return
    segment = _begin(trace, name, annotations)
    try:
        yield
    except BaseException as exc:
        _fail(segment, exc)
        raise
    finally:
        _send(segment)


def _begin(trace: TraceContext, name: str, annotations: dict[str, Any]) -> Any:
    try:
        from aws_xray_sdk.core.models.segment import Segment  # type: ignore[import-untyped]

        segment = Segment(name, traceid=trace.root, parent_id=trace.parent, sampled=True)
        for key, value in annotations.items():
            segment.put_annotation(key, value)
        return segment
    except Exception as exc:  # noqa: BLE001 - tracing must never fail an attempt
        logger.warning("cannot open the attempt's trace segment", extra={"error": str(exc)})
        return None


def _fail(segment: Any, exc: BaseException) -> None:
    if segment is None:
        return
    with contextlib.suppress(Exception):
        segment.add_exception(exc, _stack(exc))


def _stack(exc: BaseException) -> list[Any]:
    import traceback

    return traceback.extract_tb(exc.__traceback__, limit=10) if exc.__traceback__ else []


def _send(segment: Any) -> None:
    if segment is None:
        return
    try:
        from chalicelib.observability.powertools import tracer

        tracer()  # configures the SDK's recorder (daemon address, service) once per process
        from aws_xray_sdk.core import xray_recorder  # type: ignore[import-untyped]

        segment.close()
        xray_recorder.emitter.send_entity(segment)
    except Exception as exc:  # noqa: BLE001 - a lost span is not worth a failed task
        logger.warning("trace segment not sent", extra={"error": str(exc)})
