"""The claim's ids go as the text of a uuid[] when that text cannot be read as other
elements than the ids themselves (``claim_order.id_array``), else as a list."""

from __future__ import annotations

import uuid

import pytest

from chalicelib.adapters.postgres.claim_order import id_array

A, B = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.mark.parametrize("ids", [[A], [A, B], [A.upper(), B], (A, B), [A, A]])
def test_plain_ids_go_as_an_array_literal_of_exactly_those_ids(ids: list[str]) -> None:
    text = id_array(ids)
    assert isinstance(text, str)
    assert text.startswith("{") and text.endswith("}")
    assert text[1:-1].split(",") == list(ids)


@pytest.mark.parametrize(
    "ids", [[""], [A, ""], [f"{A},{B}"], [f'"{A}"'], ["{" + A + "}"], [A + "\\"], ["x"], [f"{A} "]]
)
def test_anything_else_goes_as_a_list(ids: list[str]) -> None:
    assert id_array(ids) == list(ids)
