"""HTTP routes (a Chalice blueprint).  Each handler parses, calls one use case and
maps the result; the use cases know nothing of HTTP."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib import operations as ops
from chalicelib.auth import ApiKey, Authenticator
from chalicelib.errors import UnauthorizedError
from chalicelib.http import handle_errors, int_query, json_response, task_id_param
from chalicelib.runtime import Runtime, get_runtime
from chalicelib.validation import parse_json

bp = Blueprint(__name__)

_auth: Authenticator | None = None


def _rt() -> Runtime:
    return get_runtime()


def _key() -> ApiKey:
    """The caller's API key (401 unless valid)."""
    global _auth
    if _auth is None:
        _auth = Authenticator(_rt().store)
    headers = bp.current_request.headers
    presented = headers.get("x-api-key")
    if presented is None:
        raise UnauthorizedError("missing API key: send it in the X-API-Key header")
    return _auth.authenticate(presented)


def _body() -> Any:
    return parse_json(bp.current_request.raw_body)


def _query() -> dict[str, str]:
    return dict(bp.current_request.query_params or {})


@bp.route("/health", methods=["GET"])
@handle_errors
def health() -> Response:
    report = ops.health(_rt())
    return json_response(report, 200 if report["status"] == "UP" else 503)


@bp.route("/api/v1/tasks", methods=["POST"])
@handle_errors
def submit_task() -> Response:
    key = _key()
    body = _body()
    header_key = bp.current_request.headers.get("idempotency-key")
    submitted = ops.submit_one(_rt(), key.tenant, body, header_key)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return json_response(submitted.task.to_dict(), 200 if submitted.replayed else 201, headers)


@bp.route("/api/v1/tasks/batch", methods=["POST"])
@handle_errors
def submit_batch() -> Response:
    key = _key()
    status, body = ops.submit_batch(_rt(), key.tenant, _body())
    return json_response(body, status)


@bp.route("/api/v1/tasks/{task_id}", methods=["GET"])
@handle_errors
def get_task(task_id: str) -> Response:
    key = _key()
    return json_response(ops.get(_rt(), key.tenant, task_id_param(task_id)))


@bp.route("/api/v1/tasks/{task_id}/events", methods=["GET"])
@handle_errors
def task_events(task_id: str) -> Response:
    key = _key()
    return json_response(ops.events(_rt(), key.tenant, task_id_param(task_id)))


@bp.route("/api/v1/tasks/{task_id}/cancel", methods=["POST"])
@handle_errors
def cancel_task(task_id: str) -> Response:
    key = _key()
    status, body = ops.cancel(_rt(), key.tenant, task_id_param(task_id))
    return json_response(body, status)


@bp.route("/api/v1/dead-letters", methods=["GET"])
@handle_errors
def dead_letters() -> Response:
    key = _key()
    q = _query()
    limit = int_query(q, "limit", 50, 1, 500)
    return json_response(ops.dead_letters(_rt(), key.tenant, q.get("name"), limit, q.get("cursor")))


@bp.route("/api/v1/dead-letters/{task_id}/redrive", methods=["POST"])
@handle_errors
def redrive_one(task_id: str) -> Response:
    key = _key()
    return json_response(ops.redrive_one(_rt(), key.tenant, task_id_param(task_id)))


@bp.route("/api/v1/dead-letters/redrive", methods=["POST"])
@handle_errors
def redrive_many() -> Response:
    key = _key()
    return json_response(ops.redrive_many(_rt(), key.tenant, _body()))
