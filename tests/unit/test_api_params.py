"""Reading requests without I/O: the one JSON body rule (415), query parameters, and
the batch and redrive bodies.  Every mistake is a 4xx naming what to fix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from chalice.app import Request

from chalicelib.api import params
from chalicelib.config import Settings
from chalicelib.core.errors import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chalicelib.core.requests import TaskRequest
from chalicelib.tasktypes import load_builtin_task_types

REG = load_builtin_task_types()
SET = Settings()


def request(body: str | None, headers: dict[str, str]) -> Request:
    return Request(
        {
            "multiValueQueryStringParameters": None,
            "headers": {k.lower(): v for k, v in headers.items()},
            "pathParameters": None,
            "requestContext": {"httpMethod": "POST", "resourcePath": "/api/v1/tasks"},
            "body": body,
            "isBase64Encoded": False,
            "stageVariables": None,
        }
    )


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON ;charset=UTF-8"]
)
def test_json_bodies_are_read(content_type: str) -> None:
    assert params.json_body(request('{"a": 1}', {"Content-Type": content_type}), 1000) == {"a": 1}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": ""},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "*/*"},  # Chalice lets these two through to the handler
        {"Content-Type": "text/plain, application/json"},
        {"Content-Type": "application/jsonp"},
        {"Content-Type": "application/problem+json"},
    ],
)
def test_anything_but_declared_json_is_415(headers: dict[str, str]) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        params.json_body(request('{"a": 1}', headers), 1000)
    assert caught.value.status == 415 and caught.value.code == "unsupported_media_type"
    assert "Content-Type: application/json" in caught.value.message


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-16",
        "application/json; charset=ISO-8859-1",
        'application/json; q=1; Charset="utf-32"',
        "application/json;charset=",
    ],
)
def test_a_charset_other_than_utf8_is_415(content_type: str) -> None:
    """Read as UTF-8, a UTF-16 body would be refused as invalid JSON, and a Latin-1 one
    stored with its accented letters wrong."""
    with pytest.raises(UnsupportedMediaTypeError, match="send the JSON body as UTF-8"):
        params.json_body(request('{"a": "\u00e9"}', {"Content-Type": content_type}), 1000)


@pytest.mark.parametrize(
    "content_type",
    ['application/json; charset="UTF-8"', "application/json; charset=utf8", "application/json; charset=US-ASCII"],
)
def test_utf8_spelled_otherwise_is_read(content_type: str) -> None:
    assert params.json_body(request('{"a": 1}', {"Content-Type": content_type}), 1000) == {"a": 1}


def test_the_body_rule_comes_before_size_and_syntax() -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        params.json_body(request("x" * 2000, {}), 1000)
    with pytest.raises(PayloadTooLargeError):
        params.json_body(request("x" * 2000, {"Content-Type": "application/json"}), 1000)
    with pytest.raises(ValidationError, match="not valid JSON"):
        params.json_body(request("{", {"Content-Type": "application/json"}), 1000)
    with pytest.raises(ValidationError, match="empty"):
        params.json_body(request(None, {"Content-Type": "application/json"}), 1000)


def test_path_ids_that_are_not_uuids_are_not_found() -> None:
    assert params.task_id_param("9F3B1C2E-0000-4000-8000-000000000000") == "9f3b1c2e-0000-4000-8000-000000000000"
    with pytest.raises(NotFoundError, match="no task 'nope'"):
        params.task_id_param("nope")


def test_query_parameters() -> None:
    q = {"limit": "20", "status": "QUEUED", "created_after": "2026-01-02T03:04:05Z"}
    params.check_params(q, {"limit", "status", "created_after"})
    assert params.int_param(q, "limit", 50, 1, 500) == 20
    assert params.int_param({}, "limit", 50, 1, 500) == 50
    assert params.choice_param(q, "status", ["QUEUED", "FAILED"]) == "QUEUED"
    assert params.timestamp_param(q, "created_after") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert params.timestamp_param({"t": "2026-01-02T03:04:05"}, "t") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # PostgreSQL refuses offsets beyond ±15:59; the instant is passed on in UTC.
    far = params.timestamp_param({"t": "2026-01-02T03:04:05+23:00"}, "t")
    assert far is not None and far.utcoffset() is not None and far.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: params.check_params({"limt": "1"}, {"limit"}), "unknown query parameter(s) limt; allowed: limit"),
        (lambda: params.int_param({"limit": "x"}, "limit", 50, 1, 500), "limit must be an integer"),
        (lambda: params.int_param({"limit": "9" * 5000}, "limit", 50, 1, 500), "limit must be an integer"),
        (lambda: params.int_param({"limit": "0"}, "limit", 50, 1, 500), "limit must be from 1 to 500"),
        (lambda: params.choice_param({"status": "DONE"}, "status", ["QUEUED"]), "status must be one of QUEUED"),
        (lambda: params.timestamp_param({"t": "yesterday"}, "t"), "t must be ISO-8601 such as 2030-01-01T09:00:00Z"),
        (lambda: params.timestamp_param({"t": "0001-01-01T00:00:00+01:00"}, "t"), "ISO-8601"),
        (lambda: params.no_params({"since": "x"}), "takes none"),
    ],
)
def test_bad_query_parameters_are_400(call: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        call()
    assert needle in caught.value.message


def test_the_idempotency_header_stands_for_the_field() -> None:
    parsed = params.submission({"name": "noop"}, "k1", SET, REG)
    assert parsed.idempotency_key == "k1"
    assert params.submission({"name": "noop", "idempotency_key": "k1"}, "k1", SET, REG).idempotency_key == "k1"
    with pytest.raises(ConflictError, match="differ"):
        params.submission({"name": "noop", "idempotency_key": "k2"}, "k1", SET, REG)
    with pytest.raises(ValidationError, match="JSON object"):
        params.submission(["noop"], "k1", SET, REG)


def test_a_batch_keeps_invalid_items_in_their_slot_unless_atomic() -> None:
    body = {"tasks": [{"name": "noop"}, {"name": "no-such-task"}, {"name": "noop", "priority": "high"}]}
    parsed = params.batch(body, SET, REG)
    assert not parsed.atomic
    assert [type(i) for i in parsed.items] == [TaskRequest, ValidationError, TaskRequest]
    assert "tasks[1]: " in str(parsed.items[1])
    with pytest.raises(ValidationError, match="atomic batch") as caught:
        params.batch({**body, "atomic": True}, SET, REG)
    assert caught.value.details["errors"][0]["index"] == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], 'send {"tasks"'),
        ({"tasks": []}, "tasks must be a list of 1 to 500 items"),
        ({"tasks": [{"name": "noop"}], "atomic": "yes"}, "atomic must be a boolean"),
        ({"tasks": [{"name": "noop"}], "extra": 1}, "unknown field(s) extra"),
        ({"tasks": [{"name": "noop"}, 3]}, "tasks[1] must be a JSON object"),
        ({"tasks": [{"name": "noop"}] * 501}, "1 to 500 items"),
    ],
)
def test_malformed_batches_are_400(body: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        params.batch(body, SET, REG)
    assert needle in caught.value.message


def test_a_redrive_selection() -> None:
    good = "9f3b1c2e-0000-4000-8000-000000000000"
    chosen = params.redrive_selection({"ids": [good, "not-an-id"], "limit": 10})
    assert chosen.ids == [good] and chosen.name is None and chosen.limit == 10
    assert params.redrive_selection({"name": "send-email"}).limit == 500
    for body, needle in [
        ([], "send"),
        ({}, 'give "ids" or "name"'),
        ({"ids": "x"}, "ids must be a list"),
        ({"ids": [good] * 501}, "ids must be a list"),
        ({"name": 3}, "name must be a string"),
        ({"name": "n", "limit": 0}, "limit must be an integer from 1 to 500"),
        ({"name": "n", "every": True}, "unknown field(s) every"),
    ]:
        with pytest.raises(ValidationError) as caught:
            params.redrive_selection(body)
        assert needle in caught.value.message, (body, caught.value.message)


def _gateway_request(multi: dict[str, list[str]]) -> Request:
    """A request as API Gateway builds it: ``headers`` the last value of each."""
    return Request(
        {
            "multiValueQueryStringParameters": None,
            "headers": {k.lower(): v[-1] for k, v in multi.items()},
            "multiValueHeaders": multi,
            "pathParameters": None,
            "requestContext": {"httpMethod": "POST", "resourcePath": "/api/v1/tasks"},
            "body": "{}",
            "isBase64Encoded": False,
            "stageVariables": None,
        }
    )


def test_a_credential_sent_twice_with_different_values_is_a_400() -> None:
    from chalicelib.api.access import single_header

    with pytest.raises(ValidationError, match="2 X-Api-Key headers with different values"):
        single_header(_gateway_request({"X-Api-Key": ["first", "second"], "Accept": ["a", "b"]}), "x-api-key")
    same = _gateway_request({"x-api-key": ["k", "k"], "Idempotency-Key": ["i"]})
    assert single_header(same, "x-api-key") == "k" and single_header(same, "idempotency-key") == "i"
    assert single_header(_gateway_request({}), "x-api-key") is None
