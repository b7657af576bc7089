"""Workflows as the API shows them (kept apart from ``models`` so each stays short)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasklane_client.models import Task, parse_datetime


@dataclass(frozen=True)
class WorkflowStep:
    """One step of a workflow: the steps it waits for and its task (None once pruned)."""

    after: list[str]
    task: Task | None


@dataclass(frozen=True)
class Workflow:
    """A workflow as the API shows it: ``status`` is RUNNING, COMPLETED (every step
    completed) or FAILED (every step ended and one did not complete)."""

    id: str
    status: str
    created_at: datetime | None
    steps: dict[str, WorkflowStep]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        steps = {
            str(name): WorkflowStep(
                [str(a) for a in step.get("after") or []],
                Task.from_dict(step["task"]) if step.get("task") else None,
            )
            for name, step in (data.get("steps") or {}).items()
        }
        return cls(str(data["id"]), str(data["status"]), parse_datetime(data.get("created_at")), steps, dict(data))
