"""HTTP routes (a Chalice blueprint).  Each handler parses the request
(``api.params``), calls one use case (``chalicelib.services``) and presents the
result (``api.presenters``); errors leave through the one boundary
(``api.responses.guarded``, which ``authed`` and ``handle_errors`` apply)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Request, Response

from chalicelib.api.access import get_access, requires_key, single_header
from chalicelib.api.responses import handle_errors, json_response
from chalicelib.observability import tracing

if TYPE_CHECKING:
    from chalicelib.container import Container
    from chalicelib.core.records import ScheduleSpec
    from chalicelib.services.apikeys import ApiKey

# Each handler imports its parser, use case and presenter itself: ``app.py`` imports
# this module on every cold start of every function (drain and sweep included), and a
# request needs only its own route's modules (tests/unit/test_cold_start.py).

bp = Blueprint(__name__)


def _rt() -> Container:
    if _container is None:
        return _first_container()
    return _container()


_container: Callable[[], Container] | None = None


def _first_container() -> Container:
    # ``from chalicelib.container import ...`` in a function costs a failed attribute
    # lookup on every call (Python 3.11 looks for ``__path__`` on the module and
    # builds its AttributeError: ~8k instructions); the first call keeps the function.
    global _container
    from chalicelib.container import get_container

    _container = get_container
    return get_container()


def _request() -> Request:
    request = bp.current_request
    assert request is not None  # set by Chalice for the request being handled
    return request


authed = requires_key(get_access, _request)


def _body() -> Any:
    from chalicelib.api import params

    return params.json_body(_request(), _rt().settings.max_payload_bytes)


def _query() -> dict[str, str]:
    return dict(_request().query_params or {})


@bp.route("/health", methods=["GET"])
@handle_errors
def health() -> Response:
    from chalicelib.api import presenters
    from chalicelib.services import health as health_service

    status, body = presenters.health(health_service.health(_rt()))
    return json_response(body, status)


@bp.route("/openapi.json", methods=["GET"])
@handle_errors
def openapi() -> Response:
    from chalicelib.api.openapi import spec as openapi_spec

    return json_response(openapi_spec(_rt().registry))


# --- tasks ------------------------------------------------------------------------------


@bp.route("/api/v1/tasks", methods=["POST"])
@authed
def submit_task(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import submit as submitting

    rt = _rt()
    request = _request()
    parsed = params.submission(
        params.json_body(request, rt.settings.max_payload_bytes),
        single_header(request, "idempotency-key"),
        rt.settings,
        rt.registry,
    )
    trace = tracing.current_trace(request.headers)
    submitted = submitting.submit(rt, key.tenant, parsed, actor=key.actor, trace=trace)
    tracing.annotate(task_id=submitted.task.id)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    if submitted.duplicate:
        headers["Unique-Duplicate"] = "true"
    return json_response(presenters.task(submitted.task), 201 if submitted.created else 200, headers)


@bp.route("/api/v1/tasks", methods=["GET"])
@authed
def list_tasks(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.core.model import Priority, Status
    from chalicelib.services import reads

    query = _query()
    params.check_params(query, {"status", "name", "priority", "created_after", "created_before", "limit", "cursor"})
    limit = params.int_param(query, "limit", 50, 1, 500)
    cursor = query.get("cursor")
    status = params.choice_param(query, "status", [s.value for s in Status])
    priority = params.choice_param(query, "priority", [p.value for p in Priority])
    where = reads.TaskFilter(
        status=Status(status) if status else None,
        name=query.get("name") or None,
        priority=Priority(priority) if priority else None,
        created_after=params.timestamp_param(query, "created_after"),
        created_before=params.timestamp_param(query, "created_before"),
    )
    after = presenters.decode_cursor(cursor) if cursor else None
    return json_response(presenters.page(reads.list_tasks(_rt(), key.tenant, where, limit=limit, after=after)))


@bp.route("/api/v1/tasks/batch", methods=["POST"])
@authed
def submit_batch(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import submit as submitting

    rt = _rt()
    parsed = params.batch(_body(), rt.settings, rt.registry)
    result = submitting.submit_batch(rt, key.tenant, parsed.items, actor=key.actor, spec=parsed.spec)
    status, body = presenters.batch(result)
    return json_response(body, status)


@bp.route("/api/v1/batches", methods=["GET"])
@authed
def list_batches(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import batches

    query = _query()
    params.check_params(query, {"status", "limit", "cursor"})
    limit = params.int_param(query, "limit", 50, 1, 500)
    status = params.choice_param(query, "status", ["OPEN", "COMPLETED"])
    cursor = query.get("cursor")
    after = presenters.decode_cursor(cursor) if cursor else None
    completed = None if status is None else status == "COMPLETED"
    found = batches.list_batches(_rt(), key.tenant, completed=completed, limit=limit, after=after)
    return json_response(presenters.batch_page(found))


@bp.route("/api/v1/batches/{batch_id}", methods=["GET"])
@authed
def get_batch(key: ApiKey, batch_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import batches

    params.no_params(_query())
    found = batches.get_batch(_rt(), key.tenant, params.uuid_param(batch_id, "batch"))
    return json_response(presenters.batch_detail(found))


@bp.route("/api/v1/tasks/{task_id}", methods=["GET"])
@authed
def get_task(key: ApiKey, task_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import reads

    params.no_params(_query())
    detail = reads.task_detail(_rt(), key.tenant, params.task_id_param(task_id))
    return json_response(presenters.task_with_errors(detail))


@bp.route("/api/v1/tasks/{task_id}/events", methods=["GET"])
@authed
def task_events(key: ApiKey, task_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import reads

    params.no_params(_query())
    detail = reads.task_detail(_rt(), key.tenant, params.task_id_param(task_id))
    return json_response(presenters.task_events(detail))


@bp.route("/api/v1/tasks/{task_id}/cancel", methods=["POST"])
@authed
def cancel_task(key: ApiKey, task_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import lifecycle

    result = lifecycle.cancel(_rt(), key.tenant, params.task_id_param(task_id), actor=key.actor)
    status, body = presenters.cancelled(result)
    return json_response(body, status)


# --- workflows ------------------------------------------------------------------------------


@bp.route("/api/v1/workflows", methods=["POST"])
@authed
def submit_workflow(key: ApiKey) -> Response:
    from chalicelib.api import presenters
    from chalicelib.core.requests import parse_workflow
    from chalicelib.services import dependencies
    from chalicelib.services import submit as submitting

    rt = _rt()
    parsed = parse_workflow(_body(), rt.settings, rt.registry)
    trace = tracing.current_trace(_request().headers)
    submitted = submitting.submit_workflow(rt, key.tenant, parsed, actor=key.actor, trace=trace)
    view = dependencies.submitted_view(key.tenant, submitted.id, parsed, dict(submitted.steps))
    return json_response(presenters.workflow(view), 201)


@bp.route("/api/v1/workflows/{workflow_id}", methods=["GET"])
@authed
def get_workflow(key: ApiKey, workflow_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import dependencies

    params.no_params(_query())
    view = dependencies.get_workflow(_rt(), key.tenant, params.uuid_param(workflow_id, "workflow"))
    return json_response(presenters.workflow(view))


# --- dead letters ---------------------------------------------------------------------------


@bp.route("/api/v1/dead-letters", methods=["GET"])
@authed
def dead_letters(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import reads

    query = _query()
    params.check_params(query, {"name", "limit", "cursor"})
    limit = params.int_param(query, "limit", 50, 1, 500)
    cursor = query.get("cursor")
    after = presenters.decode_cursor(cursor) if cursor else None
    found = reads.dead_letters(_rt(), key.tenant, name=query.get("name") or None, limit=limit, after=after)
    return json_response(presenters.page(found))


@bp.route("/api/v1/dead-letters/{task_id}/redrive", methods=["POST"])
@authed
def redrive_one(key: ApiKey, task_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import lifecycle

    redriven = lifecycle.redrive_one(_rt(), key.tenant, params.task_id_param(task_id), actor=key.actor)
    return json_response(presenters.task(redriven))


@bp.route("/api/v1/dead-letters/redrive", methods=["POST"])
@authed
def redrive_many(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import lifecycle

    selection = params.redrive_selection(_body())
    return json_response(presenters.redriven(lifecycle.redrive_many(_rt(), key.tenant, selection, actor=key.actor)))


@bp.route("/api/v1/dead-letters/purge", methods=["POST"])
@authed
def purge_dead_letters(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import lifecycle

    selection = params.purge_selection(_body())
    purged = lifecycle.purge_dead_letters(_rt(), key.tenant, selection, actor=key.actor)
    return json_response(presenters.purged(purged))


# --- schedules ------------------------------------------------------------------------------


@bp.route("/api/v1/schedules", methods=["POST"])
@authed
def create_schedule(key: ApiKey) -> Response:
    from chalicelib.api import presenters
    from chalicelib.core.schedules import parse_schedule
    from chalicelib.services import schedules

    rt = _rt()
    spec = parse_schedule(_body(), rt.settings, rt.registry)
    return json_response(presenters.schedule_detail(schedules.create(rt, key.tenant, spec, actor=key.actor)), 201)


@bp.route("/api/v1/schedules", methods=["GET"])
@authed
def list_schedules(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import schedules

    params.no_params(_query())
    return json_response(presenters.schedules(schedules.list_all(_rt(), key.tenant)))


@bp.route("/api/v1/schedules/{schedule_id}", methods=["GET"])
@authed
def get_schedule(key: ApiKey, schedule_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services import schedules

    params.no_params(_query())
    detail = schedules.get(_rt(), key.tenant, params.uuid_param(schedule_id, "schedule"))
    return json_response(presenters.schedule_detail(detail))


@bp.route("/api/v1/schedules/{schedule_id}", methods=["PATCH"])
@authed
def update_schedule(key: ApiKey, schedule_id: str) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.core.schedules import parse_schedule
    from chalicelib.services import schedules

    rt = _rt()
    schedule_id = params.uuid_param(schedule_id, "schedule")
    body = _body()

    def revise(current: ScheduleSpec) -> ScheduleSpec:
        return parse_schedule(body, rt.settings, rt.registry, current=current)

    updated = schedules.update(rt, key.tenant, schedule_id, revise, actor=key.actor)
    return json_response(presenters.schedule_detail(updated))


@bp.route("/api/v1/schedules/{schedule_id}", methods=["DELETE"])
@authed
def delete_schedule(key: ApiKey, schedule_id: str) -> Response:
    from chalicelib.api import params
    from chalicelib.services import schedules

    schedules.delete(_rt(), key.tenant, params.uuid_param(schedule_id, "schedule"), actor=key.actor)
    return Response(body="", status_code=204)


# --- webhooks -------------------------------------------------------------------------------


@bp.route("/api/v1/webhook-secret", methods=["GET"])
@authed
def webhook_secret(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.services.webhook_secret import webhook_secret as tenant_webhook_secret

    params.no_params(_query())
    return json_response(presenters.webhook_secret(tenant_webhook_secret(_rt(), key.tenant)))


@bp.route("/api/v1/webhook-secret/rotate", methods=["POST"])
@authed
def rotate_webhook_secret(key: ApiKey) -> Response:
    from chalicelib.api import presenters
    from chalicelib.services.webhook_secret import rotate_webhook_secret as rotate_tenant_webhook_secret

    return json_response(presenters.webhook_secret(rotate_tenant_webhook_secret(_rt(), key.tenant, actor=key.actor)))


# --- the audit log --------------------------------------------------------------------------


@bp.route("/api/v1/audit", methods=["GET"])
@authed
def audit_log(key: ApiKey) -> Response:
    from chalicelib.api import params, presenters
    from chalicelib.core.audit import AuditAction
    from chalicelib.services import audit

    query = _query()
    params.check_params(query, {"limit", "cursor", "action"})
    limit = params.int_param(query, "limit", 50, 1, 500)
    action = params.choice_param(query, "action", [a.value for a in AuditAction])
    cursor = query.get("cursor")
    after = presenters.decode_audit_cursor(cursor) if cursor else None
    page = audit.entries(_rt(), key.tenant, action=AuditAction(action) if action else None, limit=limit, after=after)
    return json_response(presenters.audit_page(page))


# --- task types -----------------------------------------------------------------------------


@bp.route("/api/v1/task-types", methods=["GET"])
@authed
def task_types(key: ApiKey) -> Response:
    from chalicelib.api import params
    from chalicelib.api.task_types import present_task_types
    from chalicelib.services import control

    params.no_params(_query())
    rt = _rt()
    return json_response(present_task_types(rt.registry, rt.settings, control.pauses(rt, key.tenant)))
