"""Dependencies and workflows: submitting tasks that wait for others, reading a
workflow, and handing a claimed task its parents' results.

The waiting and releasing happen in PostgreSQL (the settling trigger of migration
0008, whatever path ends a parent); a task it releases reaches Redis through the
outbox (``services.outbox``).  What happens here is the submit side: a task's
parents are locked while it is inserted, so none can end unseen in between, and a
parent that had already ended counts at once (COMPLETED: done; FAILED or CANCELLED:
the task is CANCELLED at once, or runs, as it chose).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chalicelib.core.dependencies import Edge, ParentState, TaskLink, Workflow
from chalicelib.core.errors import NotFoundError, ValidationError
from chalicelib.core.model import Claimed, NewTask, Status, Task

if TYPE_CHECKING:
    # Annotations only: the drainer imports this module (parents' results), and must
    # not load the API's request parsing with it.
    from chalicelib.container import Container
    from chalicelib.core.requests import TaskRequest, WorkflowRequest


def _not_found(missing: Sequence[str], where: str = "") -> ValidationError:
    return ValidationError(
        f"{where}depends_on names task(s) not found: {', '.join(missing)}",
        details={"field": f"{where}depends_on", "not_found": list(missing)},
    )


def check_dependent(
    rt: Container, tenant: str, requests: Mapping[int, TaskRequest], *, in_batch: bool, many: bool
) -> None:
    """A 400 before anything is written: what ``depends_on`` cannot be combined with, and
    every ``depends_on`` id the tenant has no task for (another tenant's is simply not
    found).  ``requests``: by their place in the request; ``many``: a list of tasks,
    whose first offending item the error names (``tasks[2].depends_on``)."""
    if in_batch:
        raise ValidationError('a task with depends_on cannot be in a batch ("batch"); use a workflow')
    where = {i: f"tasks[{i}]." if many else "" for i in requests}
    for i, r in requests.items():
        if r.unique_key is not None:
            field = f"{where[i]}unique_key"
            raise ValidationError(f"{field}: depends_on and unique_key cannot be combined", details={"field": field})
    wanted = list(dict.fromkeys(p for r in requests.values() for p in r.depends_on))
    found = set(rt.store.existing_ids(tenant, wanted))
    for i, r in requests.items():
        missing = [p for p in r.depends_on if p not in found]
        if missing:
            raise _not_found(missing, where[i])


def _decide(new: NewTask, request: TaskRequest, found: list[ParentState]) -> tuple[NewTask, list[Edge]]:
    """The new task's state from its parents' (locked) states; unknown ids are a 400."""
    states = {p.id: p.status for p in found}
    missing = [p for p in request.depends_on if p not in states]
    if missing:
        raise _not_found(missing)
    failed = [p for p in request.depends_on if states[p] in (Status.FAILED, Status.CANCELLED)]
    open_ = [p for p in request.depends_on if not states[p].is_final]
    cancelled_by = None
    if failed and not request.run_anyway:
        cancelled_by = f"{failed[0]} ended {states[failed[0]].value}"
    task = replace(
        new,
        waiting_on=0 if cancelled_by else len(open_),
        run_anyway=request.run_anyway,
        cancelled_by=cancelled_by,
    )
    edges = [Edge(p, new.id, p, resolved=states[p].is_final) for p in request.depends_on]
    return task, edges


def insert_dependent(rt: Container, tenant: str, request: TaskRequest, new: NewTask, *, actor: str) -> Task | None:
    """Insert ``new`` (built from ``request``, which names ``depends_on``) with its edges,
    its parents locked meanwhile; None when its idempotency key exists already (the
    caller looks the original up).  The caller pushes it to Redis when it is ready."""
    return rt.store.insert_dependent(
        tenant, request.depends_on, lambda found: _decide(new, request, found), actor=actor
    )


def workflow_rows(workflow: WorkflowRequest, rows: Sequence[NewTask]) -> tuple[list[NewTask], list[Edge]]:
    """The workflow's tasks (``rows``, one per step in step order) made WAITING for their
    parents, and its edges (the parent's step name is its key)."""
    names = list(workflow.steps)
    ids = {name: row.id for name, row in zip(names, rows, strict=True)}
    parents = {p for ps in workflow.after.values() for p in ps}
    tasks = [
        replace(
            row,
            # None for a step without parents: nothing to load for it at claim time.
            waiting_on=len(workflow.after[name]) or None,
            run_anyway=workflow.steps[name].run_anyway if workflow.after[name] else None,
            has_followers=name in parents,
        )
        for name, row in zip(names, rows, strict=True)
    ]
    return tasks, [Edge(ids[p], ids[name], p) for name in names for p in workflow.after[name]]


@dataclass(frozen=True)
class WorkflowView:
    workflow: Workflow
    steps: dict[str, Task | None]  # None: the step's task was pruned after retention
    after: dict[str, list[str]]  # the steps each one waits for


def submitted_view(tenant: str, workflow_id: str, request: WorkflowRequest, steps: dict[str, Task]) -> WorkflowView:
    """The view of a workflow just inserted, as its steps were at the commit (a re-read
    could already show a drainer's progress)."""
    created = min(t.created_at for t in steps.values())
    workflow = Workflow(workflow_id, tenant, {name: t.id for name, t in steps.items()}, created)
    return WorkflowView(workflow, dict(steps), {name: list(request.after[name]) for name in steps})


def get_workflow(rt: Container, tenant: str, workflow_id: str) -> WorkflowView:
    found = rt.store.get_workflow(tenant, workflow_id)
    if found is None:
        raise NotFoundError(f"no workflow {workflow_id}")
    workflow, tasks = found
    by_id = {t.id: t for t in tasks}
    step_of = {task_id: name for name, task_id in workflow.steps.items()}
    after: dict[str, list[str]] = {name: [] for name in workflow.steps}
    for edge in rt.store.edges_of(list(workflow.steps.values())):
        if edge.child in step_of and edge.parent in step_of:
            after[step_of[edge.child]].append(edge.key)
    return WorkflowView(workflow, {name: by_id.get(tid) for name, tid in workflow.steps.items()}, after)


def links(rt: Container, task: Task) -> list[TaskLink]:
    """A task's parents and children; [] without a query for a task that has neither."""
    if task.waiting_on is None and not task.has_followers:
        return []
    return rt.store.task_links(task.id)


def with_parent_results(rt: Container, batch: Sequence[Claimed]) -> list[Claimed]:
    """``batch`` with each task that has parents handed their results (parent key ->
    result; None for a parent that did not complete, when the task runs anyway).  One
    query for the whole batch, and none when no task in it has parents."""
    wanted = [t.id for t in batch if t.has_parents]
    if not wanted:
        return list(batch)
    results: dict[str, dict[str, object]] = {tid: {} for tid in wanted}
    for r in rt.store.parent_results(wanted):
        results[r.child_id][r.parent_key] = r.result if r.status is Status.COMPLETED else None
    return [replace(t, parent_results=results[t.id]) if t.has_parents else t for t in batch]
