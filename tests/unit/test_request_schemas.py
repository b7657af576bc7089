"""Messages of the schema validator: they name the field and say what is allowed."""

from __future__ import annotations

import pytest

from chalicelib.config import Settings
from chalicelib.core.defaults import TaskDefaults
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Priority
from chalicelib.core.requests import parse_task
from chalicelib.core.schemas import REQUESTS
from chalicelib.core.validator import describe, validate


def message(name: str, body: object) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        validate(name, body)
    return err.value


@pytest.mark.parametrize(
    ("name", "body", "field", "needle"),
    [
        ("TaskSubmission", {"name": "noop", "max_retries": 101}, "max_retries", "an integer from 0 to 100; got 101"),
        ("TaskSubmission", {"name": "noop", "max_retries": "3"}, "max_retries", "an integer from 0 to 100; got '3'"),
        ("TaskSubmission", {"name": "noop", "delay_seconds": True}, "delay_seconds", "a number from 0 to 31536000"),
        ("TaskSubmission", {"name": "noop", "priority": "urgent"}, "priority", "one of critical, high, normal, low"),
        ("TaskSubmission", {"name": " "}, "name", "a non-empty string"),
        ("TaskSubmission", {"name": "noop", "payload": [1]}, "payload", "payload must be a JSON object"),
        ("TaskSubmission", {"name": "noop", "idempotency_key": "k" * 201}, "idempotency_key", "1 to 200 characters"),
        ("BatchRequest", {"tasks": []}, "tasks", "a list of 1 to 500 items"),
        ("BatchRequest", {"tasks": [1]}, "tasks[0]", "tasks[0] must be a JSON object"),
        ("BatchRequest", {"tasks": [{}], "atomic": "yes"}, "atomic", "a boolean"),
        ("Redrive", {"ids": ["a", 1]}, "ids[1]", "ids[1] must be a string"),
        ("Redrive", {"name": "x", "limit": 0}, "limit", "an integer from 1 to 500"),
        (
            "ScheduleSubmission",
            {"name": "a", "cron": "* * * * *", "task": {"name": "noop", "priority": 1}},
            "task.priority",
            "one of",
        ),
        ("ScheduleUpdate", {"catch_up": "all"}, "catch_up", "one of once, skip"),
    ],
)
def test_a_bad_field_is_named_with_what_is_allowed(name: str, body: object, field: str, needle: str) -> None:
    err = message(name, body)
    assert err.details.get("field") == field and needle in err.message, err.message


def test_unknown_null_and_missing_fields_are_listed_together() -> None:
    assert message("TaskSubmission", {"name": "noop", "delay": 1, "prio": 2}).details == {"fields": ["delay", "prio"]}
    err = message("TaskSubmission", {"name": "noop", "priority": None, "payload": None})
    assert err.details == {"fields": ["payload", "priority"]} and "may not be null" in err.message
    assert "missing field(s) name, cron" in message("ScheduleSubmission", {"task": {"name": "noop"}}).message
    nested = message("ScheduleSubmission", {"name": "a", "cron": "* * * * *", "task": {"name": "noop", "run_at": "x"}})
    assert nested.message.startswith("task: unknown field(s) run_at; allowed: ")
    nested_null = message(
        "ScheduleSubmission", {"name": "a", "cron": "* * * * *", "task": {"name": "noop", "priority": None}}
    )
    assert nested_null.details == {"field": "task.priority"} and "may not be null" in nested_null.message


def test_redrive_needs_ids_or_name() -> None:
    assert 'give "ids" or "name"' in message("Redrive", {"limit": 5}).message


def test_a_valid_body_is_returned_untouched() -> None:
    body = {"name": "noop", "max_retries": 4.0}
    assert validate("TaskSubmission", body) is body and body == {
        "name": "noop",
        "max_retries": 4.0,
    }  # no defaults added


def test_every_request_field_can_be_described() -> None:
    for schema in REQUESTS.values():
        for definition in schema["properties"].values():
            assert describe(definition) != "valid", definition


class _OneType:
    """The registry's part that validation needs, for one task type ``t``."""

    def __init__(self, defaults: TaskDefaults) -> None:
        self._defaults = defaults

    def names(self) -> list[str]:
        return ["t"]

    def submittable(self, name: str) -> bool:
        return name == "t"

    def validate(self, name: str, payload: object) -> None:
        return None

    def defaults(self, name: str) -> TaskDefaults:
        return self._defaults


@pytest.mark.parametrize(
    ("body", "defaults", "expected"),
    [
        ({"name": "t"}, TaskDefaults(), Priority.NORMAL),
        ({"name": "t"}, TaskDefaults(priority=Priority.LOW), Priority.LOW),
        ({"name": "t", "priority": "critical"}, TaskDefaults(priority=Priority.LOW), Priority.CRITICAL),
        ({"name": "t", "priority": "high"}, TaskDefaults(), Priority.HIGH),
    ],
)
def test_a_task_takes_its_priority_from_the_body_then_its_type_then_normal(
    body: dict[str, object], defaults: TaskDefaults, expected: Priority
) -> None:
    parsed = parse_task(body, Settings(), _OneType(defaults))
    assert parsed.priority is expected


def test_an_unknown_priority_is_a_400_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_task({"name": "t", "priority": "urgent"}, Settings(), _OneType(TaskDefaults()))
    assert "priority" in caught.value.message
