"""Workflow requests without I/O: step order, unknown steps, cycles, step names,
and what a step may carry."""

from __future__ import annotations

import pytest

from chalicelib.config import Settings
from chalicelib.core.dependencies import MAX_STEPS, step_order
from chalicelib.core.errors import ValidationError
from chalicelib.core.requests import parse_workflow
from chalicelib.tasktypes import load_builtin_task_types


def test_step_order_puts_every_parent_first() -> None:
    after = {"d": ("b", "c"), "b": ("a",), "c": ("a",), "a": ()}
    order = step_order(after)
    assert sorted(order) == ["a", "b", "c", "d"]
    for step, parents in after.items():
        assert all(order.index(p) < order.index(step) for p in parents)


@pytest.mark.parametrize(
    ("after", "words"),
    [
        ({"a": ("b",), "b": ("c",), "c": ("a",)}, "cycle"),
        ({"a": ("x",)}, "unknown step(s) x"),
        ({"a": ("a",)}, "itself"),
        ({"a b": ()}, "step names must be"),
    ],
)
def test_step_order_refuses_what_is_not_a_dag_of_known_steps(after: dict[str, tuple[str, ...]], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        step_order(after)
    assert words in err.value.message


def test_a_workflow_step_takes_no_idempotency_or_unique_key_nor_ids_to_wait_for() -> None:
    settings, registry = Settings(), load_builtin_task_types()
    for field, value in (("idempotency_key", "k"), ("unique_key", "u"), ("depends_on", ["x"])):
        with pytest.raises(ValidationError) as err:
            parse_workflow({"steps": {"a": {"name": "noop", field: value}}}, settings, registry)
        assert field in err.value.message and "steps.a" in err.value.message
    too_many = {f"s{i}": {"name": "noop"} for i in range(MAX_STEPS + 1)}
    with pytest.raises(ValidationError):
        parse_workflow({"steps": too_many}, settings, registry)
    parsed = parse_workflow(
        {"steps": {"a": {"name": "noop"}, "b": {"name": "noop", "after": ["a", "a"], "on_dependency_failure": "run"}}},
        settings,
        registry,
    )
    assert list(parsed.steps) == ["a", "b"] and parsed.after["b"] == ("a",) and parsed.steps["b"].run_anyway
