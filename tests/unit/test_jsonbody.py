"""The body-parsing boundary: one depth limit, one number rule, one text rule."""

from __future__ import annotations

import json

import pytest

from chalicelib.core.errors import ValidationError
from chalicelib.core.jsonbody import MAX_DEPTH, MAX_NUMBER, parse_json


def refused(raw: bytes | str) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        parse_json(raw)
    return err.value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 990, 10_000, 200_000])
@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ('{"a":', "}")])
def test_nesting_beyond_the_limit_is_a_400_however_deep(depth: int, opener: str, closer: str) -> None:
    err = refused(opener * depth + "1" + closer * depth)
    assert f"{MAX_DEPTH} levels" in err.message and err.details == {"max_depth": MAX_DEPTH}


def test_nesting_up_to_the_limit_is_accepted_and_survives_json_dumps() -> None:
    value = parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert json.loads(json.dumps(value)) == value


@pytest.mark.parametrize(
    "number",
    [
        *("1" + "0" * 310, "-" + "9" * 400, "1" + "0" * 5000, str(MAX_NUMBER + 1), str(-MAX_NUMBER - 1)),
        *("1e400", "-1e400", "NaN", "Infinity", "-Infinity"),
    ],
)
def test_numbers_no_later_step_can_hold_are_a_400_naming_the_field(number: str) -> None:
    err = refused(f'{{"name": "noop", "payload": {{"n": [0, {number}]}}}}')
    assert err.details == {"field": "payload.n[1]"} and "finite" in err.message
    assert len(err.message) < 300  # a 5,000-digit number is not echoed back


@pytest.mark.parametrize(
    ("number", "value"),
    [("-0", 0), ("-0.0", -0.0), ("1e-400", 0.0), (str(MAX_NUMBER), MAX_NUMBER), ("1" + "0" * 308, 10**308)],
)
def test_numbers_at_the_edges_are_kept(number: str, value: float) -> None:
    assert parse_json(f'{{"n": {number}}}') == {"n": value}


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        ('{"idempotency_key": "\\ud800"}', "idempotency_key", "surrogate U+D800"),
        ('{"tasks": [{}, {"name": "a\\udfffb"}]}', "tasks[1].name", "surrogate U+DFFF"),
        ('{"name": "x\\u0000"}', "name", "NUL"),
        ('{"payload": {"\\u0000": 1}}', "payload.\x00", "NUL"),
    ],
)
def test_text_that_cannot_be_stored_is_a_400_naming_the_field(raw: str, field: str, needle: str) -> None:
    err = refused(raw)
    assert err.details == {"field": field} and needle in err.message


def test_a_valid_surrogate_pair_is_ordinary_text() -> None:
    assert parse_json('{"k": "\\ud83d\\ude00"}') == {"k": "\U0001f600"}


@pytest.mark.parametrize(
    "raw", [b'{"k": "\xff"}', b'{"k": "\xed\xa0\x80"}', b'{"k": "\xc0\xaf"}', '{"k": 1}'.encode("utf-16")]
)
def test_bodies_that_are_not_utf8_are_a_400(raw: bytes) -> None:
    assert "UTF-8" in refused(raw).message


def test_a_utf8_byte_order_mark_is_tolerated() -> None:
    assert parse_json(b'\xef\xbb\xbf{"k": 1}') == {"k": 1}


@pytest.mark.parametrize("raw", ["\ufeff{}", b"\xef\xbb\xbf\xef\xbb\xbf{}", "[1,", '{"a": 1} x'])
def test_bodies_json_refuses_are_a_400_with_jsons_own_reason(raw: bytes | str) -> None:
    # One decoder serves every request; its refusals read as json.loads's did.
    text = raw.decode("utf-8")[1:] if isinstance(raw, bytes) else raw
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(ValidationError) as refused:
        parse_json(raw)
    assert str(refused.value) == f"the request body is not valid JSON: {expected.value}"


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "noop", "name": "other"}',
        '{"name": "noop", "payload": {"to": "a", "b": 1, "to": "evil"}}',
        '{"tasks": [{"name": "a"}, {"name": "b", "payload": {"k": [{"x": 1, "x": 1}]}}]}',
    ],
)
def test_a_key_twice_in_one_object_is_a_400_naming_it(body: str) -> None:
    """Which of the two wins differs between parsers (a proxy in front may read the
    first, Python the last), so neither is taken."""
    err = refused(body)
    assert "twice in one object" in err.message
    assert err.details["duplicate_key"] in ("name", "to", "x")


def test_the_same_key_in_different_objects_is_fine() -> None:
    assert parse_json('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}') == {"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}


def test_a_long_duplicate_key_is_shown_cut() -> None:
    key = "k" * 5000
    err = refused(f'{{"{key}": 1, "{key}": 2}}')
    assert len(err.message) < 200 and len(err.details["duplicate_key"]) == 200
