"""Tasklane's Chalice app: wiring only.  Routes live in ``chalicelib.api.routes``; the
scheduled functions call into ``chalicelib.entrypoints``; the executor function into
``chalicelib.execution.remote``.

Cold start: the handlers import their use cases on first call, and Powertools'
Tracer/Metrics are built on first invocation (``chalicelib.observability.powertools``), so
importing this module stays cheap (tests/unit/test_cold_start.py)."""

from __future__ import annotations

from typing import Any, cast

from chalice.app import Chalice, CloudWatchEvent, Rate

from chalicelib.api.control_routes import control_bp
from chalicelib.api.operator_routes import ops_bp
from chalicelib.api.responses import error_normalizer
from chalicelib.api.routes import bp
from chalicelib.observability.powertools import observed
from chalicelib.observability.tracing import traced_request

app = Chalice(app_name="tasklane")
app.register_blueprint(bp)
app.register_blueprint(ops_bp)
app.register_blueprint(control_bp)
# Outermost: the request's trace context, X-Ray span and trace_id log key wrap everything.
app.register_middleware(traced_request, "http")
app.register_middleware(error_normalizer(app.routes), "http")


@app.middleware("http")
def wake_drainers(event: Any, get_response: Any) -> Any:
    """After accepted work, invoke the drain function if no drainer is alive (AWS only)."""
    response = get_response(event)
    # Modules from their packages: ``from <module> import <name>`` in a function costs a
    # failed ``__path__`` lookup per call on Python 3.11 (bench/RESULTS.md, round 9).
    from chalicelib import config
    from chalicelib.adapters.aws import wake

    if wake.worth_waking(config.get_settings(), event.method, event.path, response.status_code):
        from chalicelib.container import get_container

        rt = get_container()
        wake.maybe_wake(rt.settings, rt.queue.presence)
    return response


@app.schedule(Rate(1, unit=Rate.MINUTES), name="drain")
@observed("Drain", counts=lambda stats: stats)
def drain(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import entrypoints as functions

    return functions.drain(cast(Any, event.context))


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweep")
@observed("Sweep", counts=lambda report: report)
def sweep(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import entrypoints as functions

    return functions.sweep()


@app.lambda_function(name="executor")
@observed("Executor")
def executor(event: dict[str, Any], context: Any) -> Any:
    """Runs one task attempt (TASKLANE_EXECUTOR_MODE=lambda); see chalicelib.execution.remote."""
    from chalicelib.execution import remote as lambda_executor

    return lambda_executor.handle(event, context)
