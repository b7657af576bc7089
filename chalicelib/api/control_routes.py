"""Queue-control routes (a Chalice blueprint): pause and resume a task type for the
caller's tenant, and cancel tasks by filter.  Use cases in ``services.control``; the
global (every tenant) pause is the operator CLI's (``tools.cli pause``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Request, Response

from chalicelib.api.access import get_access, requires_key
from chalicelib.api.responses import json_response

if TYPE_CHECKING:
    from chalicelib.services import control
    from chalicelib.services.apikeys import ApiKey

# Handlers import what they use (see chalicelib.api.routes): not paid at cold start.

control_bp = Blueprint(__name__)


def _request() -> Request:
    request = control_bp.current_request
    assert request is not None  # set by Chalice for the request being handled
    return request


authed = requires_key(get_access, _request)


@control_bp.route("/api/v1/tasks/cancel", methods=["POST"])
@authed
def cancel_tasks(key: ApiKey) -> Response:
    from chalicelib.api import params
    from chalicelib.container import get_container
    from chalicelib.services import control

    rt = get_container()
    selection = params.cancel_selection(params.json_body(_request(), rt.settings.max_payload_bytes))
    return json_response(bulk_cancelled(control.cancel_many(rt, key.tenant, selection, actor=key.actor)))


@control_bp.route("/api/v1/task-types/{name}/pause", methods=["POST"])
@authed
def pause_task_type(key: ApiKey, name: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.container import get_container
    from chalicelib.services import control

    params.no_params(_request().query_params or {})
    done = control.pause(get_container(), key.tenant, name, actor=key.actor)
    body = {**presenters.pause_entry(done.pause), "paused": True, "changed": done.pause.changed, "moved": done.moved}
    return json_response(body)


@control_bp.route("/api/v1/task-types/{name}/resume", methods=["POST"])
@authed
def resume_task_type(key: ApiKey, name: str) -> Response:
    from chalicelib.api import params
    from chalicelib.container import get_container
    from chalicelib.services import control

    params.no_params(_request().query_params or {})
    done = control.resume(get_container(), key.tenant, name, actor=key.actor)
    body = {
        "name": done.name,
        "scope": "tenant",
        "paused": done.still_paused,
        "changed": done.lifted is not None,
        "requeued": done.requeued,
    }
    return json_response(body)


def bulk_cancelled(result: control.BulkCancelResult) -> dict[str, Any]:
    return {
        "cancelled": len(result.cancelled),
        "cancel_requested": len(result.requested),
        "ids": [t.id for t in result.cancelled],
        "requested_ids": [t.id for t in result.requested],
        "more": result.more,
    }
