"""Dependencies and workflows against real PostgreSQL and Redis: tasks wait for their
parents, run in order with their parents' results, and are cancelled (or run anyway)
when a parent fails; the settling trigger (migration 0008) does it on every path."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.errors import ValidationError
from chalicelib.core.model import Status
from chalicelib.core.requests import parse_workflow
from chalicelib.services import dependencies, lifecycle
from chalicelib.services.submit import submit, submit_workflow
from chalicelib.tasktypes import TaskContext
from tests.helpers import drain_and_sweep_until, drain_once, query, receiving, request

TENANT = "deps"
SEEN: list[tuple[str, Any]] = []


@pytest.fixture
def recording(rt: Container) -> Iterator[Container]:
    """A task type that records what it was handed and returns its payload's value."""

    def record(payload: Any, ctx: TaskContext) -> Any:
        SEEN.append((payload.get("step", ctx.task_id), dict(ctx.parent_results or {})))
        if payload.get("fail"):
            from chalicelib.core.errors import PermanentError

            raise PermanentError("told to fail")
        return {"value": payload.get("value")}

    SEEN.clear()
    rt.registry.task("deps-record")(record)
    try:
        yield rt
    finally:
        rt.registry._by_name.pop("deps-record")


def _status(rt: Container, task_id: str) -> Status:
    task = rt.store.get_task(TENANT, task_id)
    assert task is not None
    return task.status


def _workflow(rt: Container, steps: dict[str, Any]) -> Any:
    return submit_workflow(rt, TENANT, parse_workflow({"steps": steps}, rt.settings, rt.registry))


def _step(value: Any, *after: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "deps-record", "payload": {"value": value, **extra}}
    if after:
        body["after"] = list(after)
    return body


def test_diamond_workflow_runs_in_order_with_parent_results(recording: Container) -> None:
    rt = recording
    wf = _workflow(
        rt,
        {
            "a": _step(1, step="a"),
            "b": _step(2, "a", step="b"),
            "c": _step(3, "a", step="c"),
            "d": _step(4, "b", "c", step="d"),
        },
    )
    assert wf.steps["a"].status is Status.QUEUED
    assert {wf.steps[s].status for s in "bcd"} == {Status.WAITING}
    drain_once(rt)  # no sweep: released steps reach Redis through the drainer's outbox release
    assert {s: _status(rt, wf.steps[s].id) for s in "abcd"} == dict.fromkeys("abcd", Status.COMPLETED)
    order = [s for s, _ in SEEN]
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    handed = dict(SEEN)
    assert handed["a"] == {}
    assert handed["b"] == {"a": {"value": 1}}
    assert handed["d"] == {"b": {"value": 2}, "c": {"value": 3}}
    view = dependencies.get_workflow(rt, TENANT, wf.id)
    assert view.after["d"] == ["b", "c"] or sorted(view.after["d"]) == ["b", "c"]
    assert all(t is not None and t.status is Status.COMPLETED for t in view.steps.values())


def test_failed_parent_cancels_its_dependents_transitively(recording: Container) -> None:
    rt = recording
    wf = _workflow(
        rt,
        {
            "a": _step(1, fail=True),
            "b": _step(2, "a"),
            "c": _step(3, "b"),
            "d": _step(4, "a"),
        },
    )
    drain_once(rt)
    assert _status(rt, wf.steps["a"].id) is Status.FAILED
    for s in "bcd":
        task = rt.store.get_task(TENANT, wf.steps[s].id)
        assert task is not None and task.status is Status.CANCELLED
        assert task.last_error_type == "DependencyFailed"
    events = [(e.from_status, e.to_status, e.actor) for e in rt.store.task_events(wf.steps["c"].id)]
    assert events == [(None, Status.WAITING, "api"), (Status.WAITING, Status.CANCELLED, "dependencies")]


def test_run_anyway_step_runs_after_a_failed_parent(recording: Container) -> None:
    rt = recording
    steps = {"a": _step(1, fail=True), "b": {**_step(2, "a", step="b"), "on_dependency_failure": "run"}}
    wf = _workflow(rt, steps)
    drain_once(rt)
    assert _status(rt, wf.steps["b"].id) is Status.COMPLETED
    assert dict(SEEN)["b"] == {"a": None}


def test_depends_on_ids_wait_release_and_resolve_final_parents(recording: Container, database_url: str) -> None:
    rt = recording
    done = submit(rt, TENANT, request("deps-record", {"value": "done"})).task
    drain_once(rt)
    running = submit(rt, TENANT, request("deps-record", {"value": "later"}, delay_seconds=3600)).task
    child = submit(rt, TENANT, request("deps-record", {"step": "child"}, depends_on=(done.id, running.id))).task
    assert child.status is Status.WAITING and child.waiting_on == 1
    query(database_url, "SELECT 1")  # nothing else: the child must not be in Redis
    drain_once(rt)
    assert _status(rt, child.id) is Status.WAITING
    lifecycle.cancel(rt, TENANT, running.id)
    task = rt.store.get_task(TENANT, child.id)
    assert task is not None and task.status is Status.CANCELLED
    # A parent already failed or cancelled at submit: cancelled at once, or run anyway.
    late = submit(rt, TENANT, request("deps-record", depends_on=(running.id,))).task
    assert late.status is Status.CANCELLED and late.last_error_type == "DependencyFailed"
    anyway = submit(
        rt, TENANT, request("deps-record", {"step": "anyway"}, depends_on=(running.id,), run_anyway=True)
    ).task
    assert anyway.status is Status.QUEUED
    drain_once(rt)
    assert _status(rt, anyway.id) is Status.COMPLETED
    assert dict(SEEN)["anyway"] == {running.id: None}


def test_unknown_or_foreign_parents_are_a_400_naming_them(rt: Container) -> None:
    foreign = submit(rt, "someone-else", request()).task
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ValidationError) as err:
        submit(rt, TENANT, request(depends_on=(foreign.id, missing)))
    assert foreign.id in err.value.message and missing in err.value.message
    assert "someone-else" not in err.value.message


def test_workflow_cycles_and_unknown_steps_are_refused(rt: Container) -> None:
    for steps, words in (
        ({"a": {"name": "noop", "after": ["b"]}, "b": {"name": "noop", "after": ["a"]}}, "cycle"),
        ({"a": {"name": "noop", "after": ["zz"]}}, "unknown step"),
        ({"a": {"name": "noop", "after": ["a"]}}, "itself"),
    ):
        with pytest.raises(ValidationError) as err:
            parse_workflow({"steps": steps}, rt.settings, rt.registry)
        assert words in err.value.message


def test_a_batch_naming_an_unknown_parent_is_refused_whole(rt: Container, database_url: str) -> None:
    from chalicelib.services.submit import submit_batch

    parent = submit(rt, TENANT, request()).task
    items = [request(), request(depends_on=(parent.id,)), request(depends_on=("00000000-0000-4000-8000-000000000001",))]
    with pytest.raises(ValidationError) as err:
        submit_batch(rt, TENANT, items)
    assert err.value.message.startswith("tasks[2].depends_on names task(s) not found: 00000000-")
    assert err.value.details == {"field": "tasks[2].depends_on", "not_found": ["00000000-0000-4000-8000-000000000001"]}
    assert query(database_url, "SELECT count(*) FROM tasks")[0][0] == 1
    invalid = ValidationError("refused by validation")  # its slot keeps its place
    with pytest.raises(ValidationError, match=r"^tasks\[2\]\.unique_key: depends_on and unique_key"):
        submit_batch(rt, TENANT, [request(), invalid, request(depends_on=(parent.id,), unique_key="k")])


def test_redriving_a_failed_parent_leaves_cancelled_dependents_cancelled(recording: Container) -> None:
    rt = recording
    wf = _workflow(
        rt, {"a": _step(1, fail=True), "b": _step(2, "a"), "c": {**_step(3, "a"), "on_dependency_failure": "run"}}
    )
    drain_once(rt)
    assert _status(rt, wf.steps["b"].id) is Status.CANCELLED
    assert _status(rt, wf.steps["c"].id) is Status.COMPLETED
    redriven = lifecycle.redrive_one(rt, TENANT, wf.steps["a"].id)
    assert redriven.status is Status.QUEUED
    drain_once(rt)  # it fails again (the payload says so); nothing is counted twice
    assert _status(rt, wf.steps["b"].id) is Status.CANCELLED
    assert [e.to_status for e in rt.store.task_events(wf.steps["c"].id)].count(Status.PROCESSING) == 1


def test_bulk_cancel_takes_waiting_tasks(rt: Container) -> None:
    from chalicelib.services.control import CancelSelection, cancel_many

    wf = _workflow(rt, {"a": {"name": "noop", "delay_seconds": 3600}, "b": {"name": "sleep", "after": ["a"]}})
    child = {"name": "noop", "after": ["b"]}
    wf2 = _workflow(rt, {"x": {"name": "noop", "delay_seconds": 3600}, "y": child | {"after": ["x"]}})
    done = cancel_many(rt, TENANT, CancelSelection(name="sleep"), actor="test")
    assert [t.id for t in done.cancelled] == [wf.steps["b"].id]
    assert _status(rt, wf.steps["a"].id) is Status.PENDING
    cancel_many(rt, TENANT, CancelSelection(status=Status.WAITING), actor="test")
    assert _status(rt, wf2.steps["y"].id) is Status.CANCELLED


def test_dependents_cancelled_by_a_failed_parent_get_completion_webhooks(make_rt: Callable[..., Container]) -> None:
    # Limits other than the defaults: the trigger must use the deployment's, which the
    # statement that ended the parent hands it (migration 0020).
    rt = make_rt(webhook_max_retries=2, webhook_timeout_seconds=3)
    db = rt.settings.database_url
    with receiving() as receiver:
        parent = submit(rt, TENANT, request("fail", {"permanent": True})).task
        child = submit(rt, TENANT, request(depends_on=[parent.id], callback_url=receiver.url)).task
        grandchild = submit(rt, TENANT, request(depends_on=[child.id], callback_url=receiver.url)).task
        quiet = submit(rt, TENANT, request(depends_on=[parent.id])).task  # no callback_url: no webhook
        drain_and_sweep_until(rt, lambda: len(receiver.calls) == 2)
        events = {json.loads(c["body"])["task"]["id"]: json.loads(c["body"]) for c in receiver.calls}
    assert set(events) == {child.id, grandchild.id}
    for task_id, event in events.items():
        assert event["event"] == "task.cancelled"
        assert (event["task"]["status"], event["task"]["last_error_type"]) == ("CANCELLED", "DependencyFailed")
        assert event["task"]["last_error"] == rt.store.get_task(TENANT, task_id).last_error  # type: ignore[union-attr]
    hooks = query(
        db,
        "SELECT h.max_retries, h.timeout_seconds, h.trace_context = p.trace_context, e.actor"
        " FROM tasks h JOIN tasks p ON p.id = (h.payload->'task'->>'id')::uuid"
        " JOIN task_trail e ON e.task_id = h.id AND e.to_status = 'QUEUED' AND e.from_status IS NULL"
        " WHERE h.name = 'tasklane.webhook'",
    )
    assert hooks == [(2, 3, True, "dependencies")] * 2
    assert _status(rt, quiet.id) is Status.CANCELLED


def test_a_dependent_created_cancelled_gets_its_completion_webhook_too(make_rt: Callable[..., Container]) -> None:
    """Its parent had failed before it was submitted: it is created CANCELLED, and its
    callback_url was never called (the trigger path, above, was the only one)."""
    rt = make_rt(webhook_max_retries=2, webhook_timeout_seconds=3)
    with receiving() as receiver:
        parent = submit(rt, TENANT, request("fail", {"permanent": True})).task
        drain_once(rt)
        assert _status(rt, parent.id) is Status.FAILED
        child = submit(rt, TENANT, request(depends_on=[parent.id], callback_url=receiver.url)).task
        assert child.status is Status.CANCELLED
        drain_once(rt)  # the webhook was released to Redis at submit: no sweep needed
        assert len(receiver.calls) == 1
        event = json.loads(receiver.calls[0]["body"])
    assert (event["event"], event["task"]["id"], event["task"]["last_error_type"]) == (
        "task.cancelled",
        child.id,
        "DependencyFailed",
    )
    hooks = query(
        rt.settings.database_url, "SELECT max_retries, timeout_seconds FROM tasks WHERE name = 'tasklane.webhook'"
    )
    assert hooks == [(2, 3)]
