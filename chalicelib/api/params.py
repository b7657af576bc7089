"""Reading a request: the JSON body rule, path ids, query parameters, and the bodies
that are not a single task (a batch, a redrive selection).  Every mistake is a
``ValidationError`` (400) naming the field, a 404 for a malformed path id, a 413 or
a 415 for the body itself; never a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalice.app import Request

from chalicelib.config import Settings
from chalicelib.core.batches import BatchSpec, parse_batch_spec
from chalicelib.core.errors import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chalicelib.core.instants import parse_instant
from chalicelib.core.jsonbody import parse_json
from chalicelib.core.model import Status
from chalicelib.core.requests import TaskRequest, parse_task, validate

if TYPE_CHECKING:
    # The selections' use cases are imported by the functions that build them: a
    # submit does not load cancel, redrive and purge (and their metrics, outbox).
    from chalicelib.services.control import CancelSelection
    from chalicelib.services.lifecycle import PurgeSelection, RedriveSelection
    from chalicelib.tasktypes import Registry

JSON_MEDIA_TYPE = "application/json"


# --- the body ---------------------------------------------------------------------------


def json_body(request: Request, max_bytes: int) -> Any:
    """The decoded JSON body of a route that takes one.

    One rule for every such route: the request says ``Content-Type: application/json``
    (parameters allowed; a ``charset`` only if it is UTF-8), else 415.  Chalice checks
    only that a *given* type is in the route's list, and takes a missing one for JSON;
    ``*/*`` or a list of types passes it too."""
    declared = request.headers.get("content-type")
    media_type, _, parameters = (declared or "").partition(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        shown = f"Content-Type {declared!r}" if declared else "no Content-Type"
        raise UnsupportedMediaTypeError(
            f"the request has {shown}; send the body as JSON with Content-Type: application/json"
        )
    if parameters:
        _utf8_only(parameters)
    raw = request.raw_body
    if raw is not None and len(raw) > max_bytes:
        raise PayloadTooLargeError(f"the request body is {len(raw)} bytes; the limit is {max_bytes}")
    return parse_json(raw)


def _utf8_only(parameters: str) -> None:
    """JSON between systems is UTF-8 (RFC 8259, section 8.1), and the body is read as
    such: a body declared in another charset (UTF-16, Latin-1) would be read wrongly,
    or refused as invalid JSON with a misleading message, so it is a 415."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):  # ASCII is UTF-8 byte for byte
                raise UnsupportedMediaTypeError(
                    f"the request's charset is {value.strip()[:40]!r}; send the JSON body as UTF-8"
                    " (Content-Type: application/json; charset=utf-8, or no charset)"
                )


# --- path ids ---------------------------------------------------------------------------


def uuid_param(raw: str, what: str) -> str:
    """A path id; a malformed one is simply not found (404), like an unknown one."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        raise NotFoundError(f"no {what} {raw!r}") from None


def task_id_param(raw: str) -> str:
    return uuid_param(raw, "task")


# --- query strings ----------------------------------------------------------------------


def check_params(query: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown query parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            details={"fields": unknown},
        )


def no_params(query: Mapping[str, str]) -> None:
    """For a route that takes no query parameters."""
    if query:
        unknown = ", ".join(sorted(query))
        raise ValidationError(
            f"unknown query parameter(s) {unknown}; this route takes none", details={"fields": unknown}
        )


def int_param(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() also takes "5_0", "+5", " 5 " and other scripts' digits.
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise ValidationError(f"{name} must be an integer", details={"field": name})
    value = int(raw)
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be from {lo} to {hi}", details={"field": name})
    return value


def choice_param(query: Mapping[str, str], name: str, values: list[str]) -> str | None:
    value = query.get(name)
    if value is not None and value not in values:
        raise ValidationError(f"{name} must be one of {', '.join(values)}; got {value!r}", details={"field": name})
    return value


def timestamp_param(query: Mapping[str, str], name: str) -> datetime | None:
    """An RFC 3339 / ISO-8601 instant (``core.instants``); without an offset it is UTC."""
    raw = query.get(name)
    return None if raw is None else parse_instant(raw, name)


# --- bodies other than one task -------------------------------------------------------------


def submission(body: Any, header_key: str | None, settings: Settings, registry: Registry) -> TaskRequest:
    """One task; an ``Idempotency-Key`` header stands for the body's ``idempotency_key``."""
    if header_key is not None:
        if not isinstance(body, dict):
            raise ValidationError("the task must be a JSON object")
        if "idempotency_key" not in body:
            body = {**body, "idempotency_key": header_key}
        elif isinstance(body["idempotency_key"], str) and body["idempotency_key"] != header_key:
            # (a field that is no string at all is the schema's 400 below, not a conflict)
            raise ConflictError("the Idempotency-Key header and the idempotency_key field differ; send one")
    return parse_task(body, settings, registry)


@dataclass(frozen=True)
class Batch:
    """A parsed batch: each item validated on its own, in request order."""

    items: list[TaskRequest | ValidationError]
    atomic: bool
    spec: BatchSpec | None = None  # the "batch" object: open a batch of the tasks created


def batch(body: Any, settings: Settings, registry: Registry) -> Batch:
    """``{"tasks": [...], "atomic": false, "batch": {...}}``.  Invalid items are reported
    and the valid ones accepted, unless ``atomic`` is true: then any invalid item rejects
    the whole batch with a 400.  A mistake in ``batch`` is a 400 for the whole request."""
    validate("BatchRequest", body)  # the schema of /openapi.json (chalicelib.core.schemas)
    items = body["tasks"]
    atomic = body.get("atomic", False)
    spec = parse_batch_spec(body["batch"], settings, registry) if "batch" in body else None
    if len(items) > settings.max_batch_items:
        raise ValidationError(
            f"a batch holds at most {settings.max_batch_items} tasks, got {len(items)}; split it",
            details={"field": "tasks"},
        )
    parsed: list[TaskRequest | ValidationError] = []
    for i, item in enumerate(items):
        try:
            parsed.append(parse_task(item, settings, registry, where=f"tasks[{i}]: "))
        except ValidationError as exc:
            parsed.append(exc)
    invalid = [(i, p) for i, p in enumerate(parsed) if isinstance(p, ValidationError)]
    if atomic and invalid:
        raise ValidationError(
            f"{len(invalid)} invalid task(s); nothing was accepted (atomic batch)",
            details={"errors": [{"index": i, "message": e.message} for i, e in invalid]},
        )
    return Batch(parsed, atomic, spec)


def redrive_selection(body: Any) -> RedriveSelection:
    """``{"ids": [...]}`` or ``{"name": "..."}`` (or both); at most ``limit`` (500) a call.
    Ids that are not UUIDs cannot name a task and are left out."""
    from chalicelib.services.lifecycle import REDRIVE_MAX, RedriveSelection

    validate("Redrive", body)
    ids = body.get("ids")
    name = body.get("name")
    if ids is not None:
        ids = [i for i in ids if _is_uuid(i)]
    limit = int(body.get("limit", REDRIVE_MAX))
    return RedriveSelection(ids=ids, name=name, limit=limit)


def purge_selection(body: Any) -> PurgeSelection:
    """``{"ids": [...], "name": "...", "failed_before": "<ISO time>", "error_type": "...", "limit": n}``: at
    least one filter (the schema's anyOf), every one given must match; at most
    ``limit`` (500) a call.  Ids that are not UUIDs cannot name a task and are left out."""
    from chalicelib.services.lifecycle import PURGE_MAX, PurgeSelection

    validate("Purge", body)
    ids = body.get("ids")
    if ids is not None:
        ids = [i for i in ids if _is_uuid(i)]
    failed_before = timestamp_param(body, "failed_before")
    return PurgeSelection(
        ids=ids,
        name=body.get("name"),
        failed_before=failed_before,
        error_type=body.get("error_type"),
        limit=int(body.get("limit", PURGE_MAX)),
    )


def cancel_selection(body: Any) -> CancelSelection:
    """``{"status", "name", "priority", "created_before", "limit"}``: at least one filter
    (the schema's anyOf), every one given must match; at most ``limit`` (500) a call."""
    from chalicelib.services.control import CANCEL_MAX, CancelSelection

    validate("BulkCancel", body)
    status = body.get("status")
    return CancelSelection(
        status=Status(status) if status else None,
        name=body.get("name"),
        priority=body.get("priority"),
        created_before=timestamp_param(body, "created_before"),
        limit=int(body.get("limit", CANCEL_MAX)),
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
