"""HTTP routes (a Chalice blueprint).  Each handler parses, calls one operation and
maps the result; the operations know nothing of HTTP."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.access import Access
from chalicelib.api.openapi import spec as openapi_spec
from chalicelib.api.responses import (
    error_response,
    handle_errors,
    json_response,
    task_id_param,
    tasklane_error_response,
    uuid_param,
)
from chalicelib.container import Container, get_container
from chalicelib.core.errors import PayloadTooLargeError, TasklaneError
from chalicelib.core.requests import parse_json
from chalicelib.observability.log import logger
from chalicelib.services import operations as ops
from chalicelib.services import schedules
from chalicelib.services.apikeys import ApiKey

bp = Blueprint(__name__)

_access: Access | None = None
_access_lock = threading.Lock()


def _rt() -> Container:
    return get_container()


def _get_access() -> Access:
    global _access
    with _access_lock:
        if _access is None:
            _access = Access(_rt())
        return _access


def _body() -> Any:
    raw = bp.current_request.raw_body
    limit = _rt().settings.max_payload_bytes
    if raw is not None and len(raw) > limit:
        raise PayloadTooLargeError(f"the request body is {len(raw)} bytes; the limit is {limit}")
    return parse_json(raw)


def _query() -> dict[str, str]:
    return dict(bp.current_request.query_params or {})


def authed(fn: Callable[..., Response]) -> Callable[..., Response]:
    """Authenticate and rate-limit, run the handler with the caller's key, and put the
    rate-limit headers on whatever the handler answers (errors included)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        rate_headers: dict[str, str] = {}
        try:
            key, rate_headers = _get_access().check(bp.current_request.headers.get("x-api-key"))
            response = fn(key, *args, **kwargs)
        except TasklaneError as exc:
            response = tasklane_error_response(exc)
        except Exception:  # noqa: BLE001 - the last line of defence: never a raw 500
            logger.exception("unhandled error")
            response = error_response(500, "internal_error", "internal error; it has been logged")
        response.headers.update(rate_headers)
        return response

    return wrapper


@bp.route("/health", methods=["GET"])
@handle_errors
def health() -> Response:
    report = ops.health(_rt())
    return json_response(report, 200 if report["status"] == "UP" else 503)


@bp.route("/openapi.json", methods=["GET"])
@handle_errors
def openapi() -> Response:
    return json_response(openapi_spec(_rt().registry))


@bp.route("/api/v1/tasks", methods=["POST"])
@authed
def submit_task(key: ApiKey) -> Response:
    header_key = bp.current_request.headers.get("idempotency-key")
    submitted = ops.submit_one(_rt(), key.tenant, _body(), header_key)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return json_response(submitted.task.to_dict(), 200 if submitted.replayed else 201, headers)


@bp.route("/api/v1/tasks", methods=["GET"])
@authed
def list_tasks(key: ApiKey) -> Response:
    return json_response(ops.list_tasks(_rt(), key.tenant, _query()))


@bp.route("/api/v1/tasks/batch", methods=["POST"])
@authed
def submit_batch(key: ApiKey) -> Response:
    status, body = ops.submit_batch(_rt(), key.tenant, _body())
    return json_response(body, status)


@bp.route("/api/v1/tasks/{task_id}", methods=["GET"])
@authed
def get_task(key: ApiKey, task_id: str) -> Response:
    return json_response(ops.get(_rt(), key.tenant, task_id_param(task_id)))


@bp.route("/api/v1/tasks/{task_id}/events", methods=["GET"])
@authed
def task_events(key: ApiKey, task_id: str) -> Response:
    return json_response(ops.events(_rt(), key.tenant, task_id_param(task_id)))


@bp.route("/api/v1/tasks/{task_id}/cancel", methods=["POST"])
@authed
def cancel_task(key: ApiKey, task_id: str) -> Response:
    status, body = ops.cancel(_rt(), key.tenant, task_id_param(task_id))
    return json_response(body, status)


@bp.route("/api/v1/dead-letters", methods=["GET"])
@authed
def dead_letters(key: ApiKey) -> Response:
    return json_response(ops.dead_letters(_rt(), key.tenant, _query()))


@bp.route("/api/v1/dead-letters/{task_id}/redrive", methods=["POST"])
@authed
def redrive_one(key: ApiKey, task_id: str) -> Response:
    return json_response(ops.redrive_one(_rt(), key.tenant, task_id_param(task_id)))


@bp.route("/api/v1/dead-letters/redrive", methods=["POST"])
@authed
def redrive_many(key: ApiKey) -> Response:
    return json_response(ops.redrive_many(_rt(), key.tenant, _body()))


@bp.route("/api/v1/schedules", methods=["POST"])
@authed
def create_schedule(key: ApiKey) -> Response:
    return json_response(schedules.create(_rt(), key.tenant, _body()), 201)


@bp.route("/api/v1/schedules", methods=["GET"])
@authed
def list_schedules(key: ApiKey) -> Response:
    return json_response(schedules.list_all(_rt(), key.tenant))


@bp.route("/api/v1/schedules/{schedule_id}", methods=["GET"])
@authed
def get_schedule(key: ApiKey, schedule_id: str) -> Response:
    return json_response(schedules.get(_rt(), key.tenant, uuid_param(schedule_id, "schedule")))


@bp.route("/api/v1/schedules/{schedule_id}", methods=["PATCH"])
@authed
def update_schedule(key: ApiKey, schedule_id: str) -> Response:
    return json_response(schedules.update(_rt(), key.tenant, uuid_param(schedule_id, "schedule"), _body()))


@bp.route("/api/v1/schedules/{schedule_id}", methods=["DELETE"])
@authed
def delete_schedule(key: ApiKey, schedule_id: str) -> Response:
    schedules.delete(_rt(), key.tenant, uuid_param(schedule_id, "schedule"))
    return Response(body="", status_code=204)


@bp.route("/api/v1/webhook-secret", methods=["GET"])
@authed
def webhook_secret(key: ApiKey) -> Response:
    return json_response(ops.webhook_secret(_rt(), key.tenant, rotate=False))


@bp.route("/api/v1/webhook-secret/rotate", methods=["POST"])
@authed
def rotate_webhook_secret(key: ApiKey) -> Response:
    return json_response(ops.webhook_secret(_rt(), key.tenant, rotate=True))
