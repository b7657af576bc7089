"""``jsontext.dumps`` drives json's C encoder directly: its text, its refusals and its
circular-reference check must be ``json.JSONEncoder``'s with the store's options."""

from __future__ import annotations

import json
import math
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.adapters.postgres.jsontext import dumps

reference = json.JSONEncoder(
    separators=(",", ":"), default=lambda v: str(v) if isinstance(v, (uuid.UUID, datetime)) else None
)

VALUES: list[Any] = [
    {"n": 1},
    {},
    [],
    "plain",
    'ü \u2028 \t\n\\ "q"',
    None,
    True,
    1.5,
    10**30,
    math.inf,
    {"a": [1, 2.5, None, {"b": {"c": "ü" * 3}}], "d": -0.0, 3: "int key", "e": (1, 2)},
    {"id": uuid.UUID(int=5), "at": datetime(2030, 1, 1, tzinfo=UTC)},
]


@pytest.mark.parametrize("value", VALUES)
def test_the_text_is_json_encoders(value: Any) -> None:
    assert dumps(value) == reference.encode(value)


def test_what_json_refuses_is_refused_alike() -> None:
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        dumps({"s": {1}})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps({"c": cycle})
    # A refusal leaves nothing behind for the next call (each call has its own markers).
    assert dumps({"c": [1]}) == '{"c":[1]}'


def test_one_value_encoded_by_many_threads_at_once_is_not_taken_for_a_cycle() -> None:
    shared = {"a": [{"b": list(range(50))} for _ in range(50)]}
    errors: list[BaseException] = []

    def encode() -> None:
        try:
            for _ in range(200):
                dumps(shared)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=encode) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
