"""The AWS executors' validators and their published JSON Schemas say the same thing:
a payload the schema accepts is accepted at submit, and one it rejects is a 400."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.core.errors import PayloadError
from chalicelib.tasktypes import load_builtin_task_types

AWS_TASKS = ("send-email", "send-sms", "generate-pdf", "http-request")
registry = load_builtin_task_types()


def _agree(name: str, payload: Any) -> None:
    entry = registry.get(name)
    assert entry is not None
    schema_ok = jsonschema.Draft202012Validator(entry.payload_schema).is_valid(payload)
    try:
        registry.validate(name, payload)
        validator_ok = True
    except PayloadError:
        validator_ok = False
    assert schema_ok == validator_ok, (name, payload, "schema" if schema_ok else "validator", "accepts it")


def _values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 500),
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=400),
        st.sampled_from(
            [
                "a@example.com",
                "not-an-address",
                "a@b.c\n",
                "+15555550100",
                "555",
                "Promotional",
                "Transactional",
                "GET",
                "POST",
                "get",
                "http://127.0.0.1:9/x",
                "https://example.com",
                "ftp://example.com",
                "file:///etc/passwd",
                "http:// bad",
                "",
                "x" * 401,
                "ABCDEFGHIJK",
                "ABCDEFGHIJKL",
            ]
        ),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
        max_leaves=6,
    )


KEYS = [
    "to", "cc", "bcc", "reply_to", "from", "subject", "text", "html",
    "phone_number", "message", "sender_id", "sms_type",
    "title", "body", "author",
    "url", "method", "headers", "json", "timeout_seconds",
    "_fault", "_trace", "extra",
]  # fmt: skip


@pytest.mark.parametrize("name", AWS_TASKS)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.dictionaries(st.sampled_from(KEYS), _values(), max_size=6))
def test_validator_and_schema_agree_on_random_payloads(name: str, payload: dict[str, Any]) -> None:
    _agree(name, payload)


VALID = {
    "send-email": [
        {"to": "a@example.com", "subject": "s", "text": "t"},
        {"to": ["a@example.com", "b@example.com"], "cc": "c@example.com", "subject": "s", "html": "<p>h</p>"},
        {"to": "a@example.com", "subject": "s", "text": "t", "from": "me@example.com", "_fault": "x"},
    ],
    "send-sms": [{"phone_number": "+15555550100", "message": "hi", "sms_type": "Promotional", "sender_id": "Tasklane"}],
    "generate-pdf": [{"title": "T"}, {"title": "T", "body": "b", "author": "a"}],
    "http-request": [
        {"url": "https://example.com/x?y=1"},
        {"url": "http://127.0.0.1:8000/", "method": "POST", "json": [1, 2], "headers": {"X-A": "1"}},
        {"url": "http://h", "body": "raw", "timeout_seconds": 0.5},
    ],
}
INVALID = {
    "send-email": [
        {"to": "a@example.com", "subject": "s"},  # no text or html
        {"to": [], "subject": "s", "text": "t"},
        {"to": "a@example.com", "subject": "", "text": "t"},
        {"to": "a@example.com", "subject": "s", "text": "t", "typo": 1},
        [],
    ],
    "send-sms": [{"phone_number": "5555550100", "message": "hi"}, {"phone_number": "+15555550100", "message": ""}],
    "generate-pdf": [{}, {"title": "x" * 201}, {"title": "t", "body": 3}],
    "http-request": [
        {"url": "file:///etc/passwd"},
        {"url": "gopher://x"},
        {"url": "http://h", "json": {}, "body": "b"},
        {"url": "http://h", "timeout_seconds": 0},
        {"url": "http://h", "method": "TRACE"},
        {"url": "http://h", "headers": {"A": 1}},
    ],
}


@pytest.mark.parametrize(("name", "payload"), [(n, p) for n, ps in VALID.items() for p in ps])
def test_valid_examples(name: str, payload: Any) -> None:
    registry.validate(name, payload)
    _agree(name, payload)


@pytest.mark.parametrize(("name", "payload"), [(n, p) for n, ps in INVALID.items() for p in ps])
def test_invalid_examples(name: str, payload: Any) -> None:
    with pytest.raises(PayloadError):
        registry.validate(name, payload)
    _agree(name, payload)


def test_the_aws_task_types_are_registered_with_schemas() -> None:
    for name in AWS_TASKS:
        entry = registry.get(name)
        assert entry is not None and entry.payload_schema["type"] == "object" and entry.description
        jsonschema.Draft202012Validator.check_schema(entry.payload_schema)
