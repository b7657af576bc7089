from datetime import UTC, datetime

import pytest

from chalicelib.config import Settings
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Priority
from chalicelib.core.requests import parse_json, parse_task
from chalicelib.tasktypes import as_int, load_builtin_task_types

REG = load_builtin_task_types()
SET = Settings()


def parse(body: object) -> object:
    return parse_task(body, SET, REG)


def test_defaults_fill_what_the_client_left_out() -> None:
    t = parse({"name": "noop"})
    assert (t.payload, t.priority, t.max_retries, t.timeout_seconds) == ({}, Priority.NORMAL, 3, 300)
    assert t.run_at is None and t.delay_seconds is None and t.idempotency_key is None


def test_run_at_is_normalised_to_utc_and_naive_means_utc() -> None:
    assert parse({"name": "noop", "run_at": "2030-01-01T09:00:00+16:30"}).run_at == datetime(
        2029, 12, 31, 16, 30, tzinfo=UTC
    )
    assert parse({"name": "noop", "run_at": "2030-01-01T09:00:00"}).run_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert parse({"name": "noop", "run_at": "2030-01-01T09:00:00Z"}).run_at == datetime(2030, 1, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "noop", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1}, "run_at"),
        ({"name": "noop", "delay_seconds": float("inf")}, "delay_seconds"),
        ({"name": "noop", "delay_seconds": True}, "delay_seconds"),
        ({"name": "noop", "max_retries": 101}, "max_retries"),
        ({"name": "noop", "max_retries": 1.5}, "max_retries"),
        ({"name": "noop", "timeout_seconds": 0}, "timeout_seconds"),
        ({"name": "noop", "idempotency_key": ""}, "idempotency_key"),
        ({"name": "noop", "idempotency_key": "k" * 201}, "idempotency_key"),
        ({"name": "noop", "callback_url": "ftp://x/y"}, "callback_url"),
        ({"name": "noop", "callback_url": "http://user:pw@x/y"}, "callback_url"),
        ({"name": " "}, "name"),
        ({"name": "fail", "payload": {"times": -1}}, "payload"),
        ({"name": "fail", "payload": {"permanent": "yes"}}, "payload"),
    ],
)
def test_each_bad_field_is_named(body: object, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse(body)
    assert err.value.details.get("field") == field or field in err.value.message


def test_integral_floats_count_as_integers_like_json_schema() -> None:
    assert parse({"name": "noop", "max_retries": 4.0}).max_retries == 4
    assert as_int(3.0) == 3 and as_int(True) is None and as_int(2.5) is None and as_int("3") is None


def test_nul_characters_are_refused_before_the_database_sees_them() -> None:
    with pytest.raises(ValidationError, match="NUL") as err:
        parse_json(b'{"name": "noop", "payload": {"k": "a\\u0000b"}}')
    assert err.value.details == {"field": "payload.k"}


def test_fingerprint_ignores_the_key_but_not_the_content() -> None:
    a = parse({"name": "noop", "payload": {"x": 1}, "idempotency_key": "a"})
    b = parse({"name": "noop", "payload": {"x": 1}, "idempotency_key": "b"})
    c = parse({"name": "noop", "payload": {"x": 2}, "idempotency_key": "a"})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("raw", [None, b"", b"{", b"\xff\xfe"])
def test_unreadable_bodies_are_400(raw: bytes | None) -> None:
    with pytest.raises(ValidationError):
        parse_json(raw)
