"""Operator routes (a second blueprint): Prometheus metrics, tenant stats and the
dashboard with its static assets.

- ``GET /metrics`` is cluster-wide (every tenant's tasks), so a tenant's API key does
  not open it: it takes ``Authorization: Bearer $TASKLANE_METRICS_TOKEN`` and answers
  403 while no token is configured.
- ``GET /api/v1/stats`` is tenant-scoped like the rest of ``/api/v1``.
- ``GET /dashboard`` and its assets are public files with no data in them; the page
  asks for an API key and calls the JSON API with it.
"""

from __future__ import annotations

import functools
import hmac
from pathlib import Path
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Request, Response

from chalicelib.api.access import get_access, requires_key
from chalicelib.api.responses import error_response, handle_errors, json_response
from chalicelib.core.errors import TasklaneError, UnauthorizedError

if TYPE_CHECKING:
    from chalicelib.services.apikeys import ApiKey

# Handlers import what they use (see chalicelib.api.routes): not paid at cold start.

ops_bp = Blueprint(__name__)


def _request() -> Request:
    request = ops_bp.current_request
    assert request is not None  # set by Chalice for the request being handled
    return request


authed = requires_key(get_access, _request)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own script and stylesheet and talks only to this API:
# no inline script, no third-party origin, no framing.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _MetricsDisabled(TasklaneError):
    status = 403
    code = "metrics_disabled"


def _check_metrics_token(header: str | None) -> None:
    from chalicelib.container import get_container

    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise UnauthorizedError(
            "send Authorization: Bearer <TASKLANE_METRICS_TOKEN>",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    expected = get_container().settings.metrics_token
    if expected is None:
        raise _MetricsDisabled("metrics are disabled: set TASKLANE_METRICS_TOKEN and scrape with that bearer token")
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise UnauthorizedError("wrong metrics token", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


@ops_bp.route("/metrics", methods=["GET"])
@handle_errors
def prometheus_metrics() -> Response:
    from chalicelib.container import get_container
    from chalicelib.observability import metrics

    _check_metrics_token(_request().headers.get("authorization"))
    rt = get_container()
    return Response(
        body=metrics.render(rt.store, rt.queue),
        status_code=200,
        headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"},
    )


@ops_bp.route("/api/v1/stats", methods=["GET"])
@authed
def tenant_stats(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.container import get_container
    from chalicelib.services import stats

    params.no_params(_request().query_params or {})
    body = presenters.stats(stats.tenant_stats(get_container(), key.tenant))
    return json_response(body, headers={"Cache-Control": "no-store"})


@functools.lru_cache(maxsize=8)
def _asset(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _static(name: str, content_type: str) -> Response:
    try:
        body = _asset(name)
    except OSError:
        return error_response(500, "internal_error", f"dashboard asset {name} is missing from the package")
    return Response(body=body, status_code=200, headers={**_PAGE_HEADERS, "Content-Type": content_type})


@ops_bp.route("/dashboard", methods=["GET"])
@handle_errors
def dashboard() -> Response:
    return _static("index.html", "text/html; charset=utf-8")


@ops_bp.route("/dashboard/app.js", methods=["GET"])
@handle_errors
def dashboard_js() -> Response:
    return _static("app.js", "text/javascript; charset=utf-8")


@ops_bp.route("/dashboard/app.css", methods=["GET"])
@handle_errors
def dashboard_css() -> Response:
    return _static("app.css", "text/css; charset=utf-8")


@ops_bp.route("/dashboard/favicon.svg", methods=["GET"])
@handle_errors
def dashboard_icon() -> Response:
    return _static("favicon.svg", "image/svg+xml")
