"""Dependencies between tasks and workflows (DAGs of steps submitted together): the
limits, the checks a request gets before anything is stored (unknown step names,
cycles), and the store's records for them.  No I/O here.

A task with parents is WAITING until every parent ended; it becomes ready when all
of them COMPLETED, and is CANCELLED when one ended FAILED or CANCELLED, unless it
asked to run anyway (``on_dependency_failure: "run"``).  The settling happens in
PostgreSQL (the trigger of migration 0008), whatever path ended the parent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Status

MAX_PARENTS = 20  # parents one task may name
MAX_STEPS = 100  # steps in one workflow
STEP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
STEP_NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-'"

Row = Mapping[str, Any]


def step_order(after: Mapping[str, Sequence[str]]) -> list[str]:
    """The steps in an order where every step comes after its parents (Kahn's
    algorithm); a ``ValidationError`` naming the problem when a step names itself, an
    unknown step, or the steps form a cycle."""
    bad = sorted(name for name in after if not STEP_NAME.fullmatch(name))  # $ passes a final \n
    if bad:
        raise ValidationError(
            f"step names must be {STEP_NAME_RULE}; got {', '.join(repr(b) for b in bad[:5])}",
            details={"steps": bad[:20]},
        )
    for name, parents in after.items():
        unknown = sorted(set(parents) - set(after))
        if unknown:
            raise ValidationError(
                f"steps.{name}.after names unknown step(s) {', '.join(unknown)}",
                details={"field": f"steps.{name}.after", "unknown": unknown},
            )
        if name in parents:
            raise ValidationError(f"steps.{name}.after names the step itself", details={"field": f"steps.{name}.after"})
    indegree = {name: len(set(parents)) for name, parents in after.items()}
    children: dict[str, list[str]] = {name: [] for name in after}
    for name, parents in after.items():
        for parent in set(parents):
            children[parent].append(name)
    ready = sorted(name for name, n in indegree.items() if n == 0)
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for child in children[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) < len(after):
        cyclic = sorted(name for name, n in indegree.items() if n > 0)
        raise ValidationError(
            f"the steps form a cycle: {', '.join(cyclic[:10])} wait for each other",
            details={"steps": cyclic[:20]},
        )
    return order


@dataclass(frozen=True, slots=True)
class Edge:
    """``child`` waits for ``parent`` (query ``edges_of``); ``key`` names the parent in
    the child's parent_results (its step name in a workflow, else its id);
    ``resolved``: the parent's end has been counted (at submit, when it had ended)."""

    parent: str
    child: str
    key: str
    resolved: bool = False

    @classmethod
    def from_row(cls, row: Row) -> Edge:
        return cls(row["parent"], row["child"], row["key"], row["resolved"])


@dataclass(frozen=True, slots=True)
class ParentState:
    """A would-be parent of a new task, locked until the task commits (query ``lock_parents``)."""

    id: str
    status: Status

    @classmethod
    def from_row(cls, row: Row) -> ParentState:
        return cls(row["id"], Status(row["status"]))


@dataclass(frozen=True, slots=True)
class ParentResult:
    """One parent of a claimed task, as the task is handed it (query ``parent_results``)."""

    child_id: str
    parent_key: str  # the parent's step name in a workflow, else its id
    status: Status
    result: Any

    @classmethod
    def from_row(cls, row: Row) -> ParentResult:
        return cls(row["child_id"], row["parent_key"], Status(row["status"]), row["result"])


@dataclass(frozen=True, slots=True)
class TaskLink:
    """A parent or a child of a task (query ``task_links``); ``resolved``: the parent's
    end has been counted."""

    role: str  # "parent" or "child"
    id: str
    key: str
    resolved: bool

    @classmethod
    def from_row(cls, row: Row) -> TaskLink:
        return cls(row["role"], row["id"], row["key"], row["resolved"])


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow's steps, by name (query ``get_workflow``)."""

    id: str
    tenant: str
    steps: dict[str, str]  # step name -> task id
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Workflow:
        return cls(row["id"], row["tenant"], dict(row["steps"]), row["created_at"])
