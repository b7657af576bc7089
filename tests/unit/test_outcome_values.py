"""Whatever a task returns or raises becomes an outcome PostgreSQL can store, and
deciding it never raises: a value jsonb or text refuses (NaN, U+0000, a lone
surrogate) would fail the finish of the task's whole batch, and an error while
deciding one would lose the outcomes of all its siblings (bench of issue 14's review:
the drainer crashed and the batch ran again, over and over)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.core.errors import RetryableError, Snooze, TaskCancelled
from chalicelib.core.jsonbody import storable_text, unstorable_text
from chalicelib.core.model import Claimed, Outcome, Status
from chalicelib.core.retry import RetryPolicy, describe
from chalicelib.execution.outcomes import Outcomes, refused_outcome

TASK = Claimed("id-1", "t", "job", "normal", {}, 1, 3, 30)


def ended(value: Any = None, exc: BaseException | None = None) -> Outcome:
    return Outcomes(RetryPolicy(base_seconds=2, jitter=0), 10_000).ended(TASK, "tok", value, exc)


def storable(o: Outcome) -> None:
    """What ``Store.finish`` sends, held to what PostgreSQL's text and jsonb take."""
    for text in (o.error, o.error_type):
        assert text is None or ("\x00" not in text and text.encode("utf-8"))
    if o.result_json is not None:
        assert unstorable_text(json.loads(o.result_json)) is None
        json.loads(o.result_json, parse_constant=lambda c: pytest.fail(f"{c} in {o.result_json}"))


class _Deep:
    """Nested lists deeper than the encoder's recursion limit."""

    @staticmethod
    def value() -> Any:
        v: Any = []
        for _ in range(5000):
            v = [v]
        return v


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class _ExplodingDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise LookupError("boom")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (float("nan"), "Out of range float"),
        ({"score": float("inf")}, "Out of range float"),
        ([1, -float("inf")], "Out of range float"),
        ("a\x00b", "U+0000"),
        ({"k": ["ok", "x\x00"]}, "k[1] contains U+0000"),
        ({"bad\x00key": 1}, "the key bad\ufffdkey contains U+0000"),
        ("\ud800", "lone surrogate U+D800"),
        ({"k": "tail \udfff"}, "lone surrogate U+DFFF"),
        (_Deep.value(), "maximum recursion depth"),
        ({1, 2}, "not JSON"),
        (_ExplodingDict(a=1), "not JSON"),
    ],
)
def test_a_result_postgresql_cannot_store_fails_the_task_with_a_result_error(value: Any, says: str) -> None:
    o = ended(value)
    assert (o.status, o.error_type, o.result_json) == (Status.FAILED, "ResultError", None)
    assert says in (o.error or "")
    storable(o)


@pytest.mark.parametrize("value", ["emoji \U0001f600", {"k": "\\u0000 as text"}, {"\\ud800": "\\"}, 1e308, "é"])
def test_results_that_only_look_alike_complete(value: Any) -> None:
    o = ended(value)
    assert o.status is Status.COMPLETED, o.error
    assert json.loads(o.result_json or "") == value
    storable(o)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ValueError("bad record: \x00abc"), "bad record: \ufffdabc"),
        (RetryableError("half a pair \ud83d"), "half a pair \ufffd"),
        (_BadStr(), "_BadStr (its message could not be read: RuntimeError)"),
        (KeyError(), "KeyError"),
        (ValueError("x" * 5000), "x" * 2000),
    ],
)
def test_an_error_is_recorded_as_storable_text(exc: BaseException, message: str) -> None:
    o = ended(exc=exc)
    assert o.status is Status.PENDING and o.error == message
    storable(o)


@pytest.mark.parametrize("asked", ["soon", float("nan"), None, object(), 10**400])
def test_a_retry_after_that_is_no_number_of_seconds_takes_the_backoff(asked: Any) -> None:
    o = ended(exc=RetryableError("later", retry_after=asked))
    assert (o.status, o.delay_seconds) == (Status.PENDING, 2.0)


def test_a_retry_after_given_as_text_of_a_number_is_taken() -> None:
    assert ended(exc=RetryableError("later", retry_after="7")).delay_seconds == 7.0  # type: ignore[arg-type]


def test_a_snooze_with_odd_seconds_and_an_unstorable_reason() -> None:
    o = ended(exc=Snooze("x", "wait \x00"))  # type: ignore[arg-type]
    assert (o.status, o.snooze, o.delay_seconds) == (Status.PENDING, True, 0.0)
    assert o.error == "snoozed for 0 s: wait \ufffd"


def test_a_cancellation_with_an_unstorable_message() -> None:
    o = ended(exc=TaskCancelled("stop\x00"))
    assert (o.status, o.error) == (Status.CANCELLED, "stop\ufffd")


def test_deciding_an_outcome_never_raises() -> None:
    class Weird(Snooze):
        @property  # type: ignore[misc]
        def seconds(self) -> float:
            raise ArithmeticError("no seconds")

        @seconds.setter
        def seconds(self, value: float) -> None:
            pass

    o = ended(exc=Weird(1.0, "r"))
    assert (o.status, o.error_type) == (Status.FAILED, "OutcomeError")
    assert "ArithmeticError: no seconds" in (o.error or "")


def test_describe_and_storable_text() -> None:
    assert describe(ValueError("plain")) == ("plain", "ValueError")
    assert storable_text("fine é \U0001f600") == "fine é \U0001f600"
    assert storable_text("\x00\ud800ok") == "\ufffd\ufffdok"


def test_refused_outcome_says_what_was_refused() -> None:
    o = refused_outcome(Outcome("id-1", "tok", Status.COMPLETED, result_json="NaN"), ValueError("invalid \x00 json"))
    assert (o.id, o.token, o.status, o.error_type) == ("id-1", "tok", Status.FAILED, "OutcomeRefused")
    assert o.error == "the outcome (COMPLETED) could not be stored: invalid \ufffd json"
