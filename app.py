"""Tasklane's Chalice app: wiring only.  Routes live in ``chalicelib.api``; the
scheduled functions call into ``chalicelib.functions``; the executor function into
``chalicelib.lambda_executor``.

Cold start: the handlers import their use cases on first call, and Powertools'
Tracer/Metrics are built on first invocation (``chalicelib.powertools``), so
importing this module stays cheap (tests/unit/test_cold_start.py)."""

from __future__ import annotations

from typing import Any, cast

from chalice.app import Chalice, CloudWatchEvent, Rate

from chalicelib.api import bp
from chalicelib.api_ops import ops_bp
from chalicelib.http import error_normalizer
from chalicelib.powertools import observed

app = Chalice(app_name="tasklane")
app.register_blueprint(bp)
app.register_blueprint(ops_bp)
app.register_middleware(error_normalizer(app.routes), "http")


@app.middleware("http")
def wake_drainers(event: Any, get_response: Any) -> Any:
    """After accepted work, invoke the drain function if no drainer is alive (AWS only)."""
    response = get_response(event)
    from chalicelib import wake

    wake.after_request(event.method, event.path, response.status_code)
    return response


@app.schedule(Rate(1, unit=Rate.MINUTES), name="drain")
@observed("Drain", counts=lambda stats: stats)
def drain(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import functions

    return functions.drain(cast(Any, event.context))


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweep")
@observed("Sweep", counts=lambda report: report)
def sweep(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import functions

    return functions.sweep()


@app.lambda_function(name="executor")
@observed("Executor")
def executor(event: dict[str, Any], context: Any) -> Any:
    """Runs one task attempt (TASKLANE_EXECUTOR_MODE=lambda); see chalicelib.lambda_executor."""
    from chalicelib import lambda_executor

    return lambda_executor.handle(event, context)
