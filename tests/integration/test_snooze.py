"""Snoozes (migration 0010): a task type says "not now" without spending an attempt."""

from __future__ import annotations

import time
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


def test_a_drain_invocation_hands_back_what_it_has_no_time_left_for(rt: Container) -> None:
    """A Lambda invocation ends with its time: a task whose timeout reaches past that end
    goes back unstarted (no attempt spent), due at once, and the invocation claims no
    more; one that fits runs, and so does one no invocation could fit (it would be
    handed back forever)."""
    from tests.helpers import query

    ids = {
        label: submit(rt, TENANT, request("noop", {"k": label}, timeout_seconds=timeout)).task.id
        for label, timeout in (("short", 1), ("long", 4), ("huge", 100))
    }
    margin = rt.settings.drain_margin_seconds
    # A fresh invocation has 30 s beyond its margin; this one is 3 s from its end: the
    # 4 s task fits the first and not the second.
    end = time.monotonic() + margin + 3
    calls = iter([margin + 30.0])
    drainer = Drainer(rt, name="lambda")
    try:
        stats = drainer.run(lambda: next(calls, end - time.monotonic()), idle_exit_seconds=0.3, hard_deadline=True)
    finally:
        drainer.close()
    assert (stats.claimed, stats.completed, stats.handed_back) == (3, 2, 1)
    assert time.monotonic() < end - margin  # it stopped claiming at once, not at the end of its time
    rows = query(
        rt.settings.database_url,
        "SELECT id::text, status, attempts, snoozes, run_at - updated_at,"
        " (SELECT error FROM task_events e WHERE e.task_id = t.id AND e.error_type = 'Snoozed')"
        " FROM tasks t WHERE id = ANY(%s::uuid[])",
        list(ids.values()),
    )
    by_id = {r[0]: r[1:] for r in rows}
    assert by_id[ids["short"]][:3] == by_id[ids["huge"]][:3] == ("COMPLETED", 1, 0)
    status, attempts, snoozes, delay, error = by_id[ids["long"]]
    assert (status, attempts, snoozes) == ("PENDING", 0, 1)
    assert abs(delay.total_seconds()) < 1 and "handed back unstarted" in error  # due at once
    drain_and_sweep_until(rt, lambda: rt.store.get_task(TENANT, ids["long"]).status is Status.COMPLETED)  # type: ignore[union-attr]
    assert story_problems(task_stories(rt.settings.database_url, list(ids.values()))) == []
