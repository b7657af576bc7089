"""Snoozes (migration 0010): a task type says "not now" without spending an attempt."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.model import Outcome, Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit
from chalicelib.tasktypes import TaskContext
from tests.helpers import drain_and_sweep_until, metric_count, request, story_problems, task_stories

TENANT = "snoozers"
NAME = "snooze-test"


@pytest.fixture
def snoozer(make_rt: Callable[..., Container]) -> Iterator[tuple[Container, Counter[str]]]:
    """A runtime allowing two snoozes, and a task type that snoozes while its payload's
    ``snoozes`` says so (counted per task id)."""
    rt = make_rt(max_snoozes=2)
    seen: Counter[str] = Counter()

    def run(payload: Any, ctx: TaskContext) -> dict[str, int]:
        seen[ctx.task_id] += 1
        if seen[ctx.task_id] <= payload["snoozes"]:
            ctx.snooze(0.05, "the upstream is busy")
        return {"attempt": ctx.attempt}

    rt.registry.task(NAME)(run)
    try:
        yield rt, seen
    finally:
        rt.registry._by_name.pop(NAME, None)


def test_a_snooze_gives_its_attempt_back(snoozer: tuple[Container, Counter[str]]) -> None:
    rt, seen = snoozer
    db = rt.settings.database_url
    before = {m: metric_count(db, m) for m in ("snoozed", "failed", "retried")}
    task = submit(rt, TENANT, request(NAME, {"snoozes": 2}, max_retries=0)).task  # one attempt only
    drain_and_sweep_until(rt, lambda: rt.store.get_task(TENANT, task.id).status.is_final)  # type: ignore[union-attr]
    done = rt.store.get_task(TENANT, task.id)
    assert done is not None and done.status is Status.COMPLETED and done.result == {"attempt": 1}
    assert (done.attempts, done.snoozes, done.last_error) == (1, 2, None) and seen[task.id] == 3
    events = rt.store.task_events(task.id)
    # Every run was attempt 1: each snooze gave it back (and named it in its event).
    assert [e.attempt for e in events if e.to_status is Status.PROCESSING] == [1, 1, 1]
    snoozed = [(e.to_status, e.attempt) for e in events if e.error_type == "Snoozed"]
    assert snoozed == [(Status.PENDING, 1), (Status.PENDING, 1)]
    assert [e.error for e in rt.store.task_events(task.id) if e.error_type == "Snoozed"] == [
        "snoozed for 0.05 s: the upstream is busy"
    ] * 2
    after = {m: metric_count(db, m) for m in before}
    assert after == {"snoozed": before["snoozed"] + 2, "failed": before["failed"], "retried": before["retried"]}
    assert story_problems(task_stories(db, [task.id])) == []


def test_snoozing_past_the_bound_spends_attempts_until_dead_lettered(snoozer: tuple[Container, Counter[str]]) -> None:
    rt, _ = snoozer
    task = submit(rt, TENANT, request(NAME, {"snoozes": 99}, max_retries=1)).task
    drain_and_sweep_until(rt, lambda: rt.store.get_task(TENANT, task.id).status.is_final)  # type: ignore[union-attr]
    done = rt.store.get_task(TENANT, task.id)
    assert done is not None and done.status is Status.FAILED
    assert (done.attempts, done.snoozes) == (2, 2)
    assert done.last_error == "snoozed more than 2 times; counted as a failure"
    assert story_problems(task_stories(rt.settings.database_url, [task.id])) == []


def test_a_snooze_under_a_lost_lease_changes_nothing(rt: Container) -> None:
    task = submit(rt, TENANT, request()).task
    token = str(uuid.uuid4())
    assert [c.id for c in rt.store.claim([task.id], token, 30, actor="t")] == [task.id]
    stale = Outcome(task.id, str(uuid.uuid4()), Status.PENDING, error="snoozed", error_type="Snoozed", snooze=True)
    assert rt.store.finish([stale], actor="stale") == []
    held = rt.store.get_task(TENANT, task.id)
    assert held is not None and (held.status, held.attempts, held.snoozes) == (Status.PROCESSING, 1, 0)
    Drainer(rt).close()
