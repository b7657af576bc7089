"""Retention: the sweeper prunes COMPLETED and CANCELLED tasks past
``TASKLANE_RETENTION_DAYS``, counting and logging what it deleted, and forgets
idempotency keys past ``TASKLANE_IDEMPOTENCY_WINDOW_HOURS``; live tasks and dead
letters (FAILED) are never pruned.  Events leave with their day's partition of
task_events, not with their task (tests/integration/test_event_partitions.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chalicelib.container import Container
from chalicelib.core.batches import BatchSpec
from chalicelib.core.model import Status
from chalicelib.core.requests import parse_workflow
from chalicelib.observability import metrics
from chalicelib.services.submit import submit, submit_batch, submit_workflow
from chalicelib.services.sweep import sweep
from tests.helpers import drain_and_sweep_until, drain_once, query, request

TENANT = "retention"


_AGE = {
    "finished_at": "UPDATE tasks SET finished_at = finished_at - %s::interval WHERE id = %s RETURNING id",
    "created_at": "UPDATE tasks SET created_at = created_at - %s::interval WHERE id = %s RETURNING id",
}


def _age(rt: Container, task_id: str, column: str, interval: str) -> None:
    """Move one of a task's timestamps into the past (the database's clock decides)."""
    assert query(rt.settings.database_url, _AGE[column], interval, task_id), f"no task {task_id}"


def _exists(rt: Container, task_id: str) -> tuple[bool, int]:
    """Whether the task's row is there, and how many audit events it has."""
    db = rt.settings.database_url
    rows = query(db, "SELECT count(*) FROM tasks WHERE id = %s", task_id)[0][0]
    events = query(db, "SELECT count(*) FROM task_trail WHERE task_id = %s", task_id)[0][0]
    return rows == 1, events


def _finished(rt: Container) -> dict[str, str]:
    """One task in each final state, finished just now."""
    completed = submit(rt, TENANT, request(payload={"k": "done"})).task.id
    failed = submit(rt, TENANT, request("fail", {"permanent": True})).task.id
    cancelled = submit(rt, TENANT, request(delay_seconds=3600)).task.id
    rt.store.cancel(TENANT, cancelled)
    drain_once(rt)
    statuses = {t: rt.store.get_task(TENANT, t).status for t in (completed, failed, cancelled)}  # type: ignore[union-attr]
    assert statuses == {completed: Status.COMPLETED, failed: Status.FAILED, cancelled: Status.CANCELLED}
    return {"COMPLETED": completed, "FAILED": failed, "CANCELLED": cancelled}


def test_completed_and_cancelled_tasks_past_retention_are_pruned(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(retention_days=1)
    old, fresh = _finished(rt), _finished(rt)
    for status in ("COMPLETED", "CANCELLED"):
        _age(rt, old[status], "finished_at", "25 hours")
        _age(rt, fresh[status], "finished_at", "23 hours")  # inside the window
    report = sweep(rt)
    assert report.errors == []
    for status in ("COMPLETED", "CANCELLED"):
        assert not _exists(rt, old[status])[0], f"an old {status} task survived"
        present, events = _exists(rt, fresh[status])
        assert present and events >= 2, f"a {status} task inside retention was pruned"
    assert report.pruned == 2


def test_live_tasks_are_never_pruned_however_old(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(retention_days=1)
    queued = submit(rt, TENANT, request()).task.id
    pending = submit(rt, TENANT, request(delay_seconds=3600)).task.id
    for task_id in (queued, pending):
        _age(rt, task_id, "created_at", "30 days")
    assert sweep(rt).pruned == 0
    assert _exists(rt, queued)[0] and _exists(rt, pending)[0]


def test_dead_letters_are_never_pruned_however_old(make_rt: Callable[..., Container]) -> None:
    """README ("Dead letters", and TASKLANE_RETENTION_DAYS in the configuration
    table): the sweeper prunes COMPLETED and CANCELLED tasks only; a FAILED task stays
    in the dead-letter queue, with its history, until it is redriven or purged."""
    rt = make_rt(retention_days=1)
    old = _finished(rt)
    for status in ("COMPLETED", "FAILED", "CANCELLED"):
        _age(rt, old[status], "finished_at", "400 days")
    report = sweep(rt)
    assert report.errors == [] and report.pruned == 2
    present, events = _exists(rt, old["FAILED"])
    assert present and events >= 3, "a dead letter was pruned"
    assert [t.id for t in rt.store.list_dead_letters(TENANT, name=None, limit=10, after=None)] == [old["FAILED"]]
    assert not _exists(rt, old["COMPLETED"])[0] and not _exists(rt, old["CANCELLED"])[0]


def test_pruning_is_counted_by_task_name_and_logged(
    make_rt: Callable[..., Container], caplog: pytest.LogCaptureFixture
) -> None:
    rt = make_rt(retention_days=1)
    old = _finished(rt)
    for status in ("COMPLETED", "FAILED", "CANCELLED"):
        _age(rt, old[status], "finished_at", "25 hours")
    before = _pruned_counter(rt)
    with caplog.at_level(logging.INFO, logger="tasklane"):
        assert sweep(rt).pruned == 2
        assert sweep(rt).pruned == 0  # nothing left: no second line
    after = _pruned_counter(rt)
    # The completed task was a noop and the cancelled one too (see _finished).
    assert after.get("noop", 0.0) - before.get("noop", 0.0) == 2.0
    assert after.get("fail", 0.0) == before.get("fail", 0.0)
    lines = [r for r in caplog.records if r.getMessage() == "pruned finished tasks"]
    assert len(lines) == 1 and lines[0].__dict__.get("count") == 2


def _pruned_counter(rt: Container) -> dict[str, float]:
    """tasklane_tasks_pruned_total by task name, as /metrics renders it."""
    text = metrics.render(rt.store, rt.queue)
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tasklane_tasks_pruned":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["task_name"]] = sample.value
    return found


def test_idempotency_key_is_forgotten_after_its_window(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(idempotency_window_hours=1)
    first = submit(rt, TENANT, request(payload={"a": 1}, idempotency_key="k-old")).task
    recent = submit(rt, TENANT, request(payload={"a": 1}, idempotency_key="k-recent")).task
    _age(rt, first.id, "created_at", "61 minutes")
    _age(rt, recent.id, "created_at", "59 minutes")
    sweep(rt)

    # Inside the window the key still replays the original task.
    again = submit(rt, TENANT, request(payload={"a": 1}, idempotency_key="k-recent"))
    assert again.replayed and again.task.id == recent.id
    # Past it, the key is free: the same key makes a new task, even with another
    # body (no 409), and the original task is kept, only without its key.
    reused = submit(rt, TENANT, request(payload={"a": 2}, idempotency_key="k-old"))
    assert not reused.replayed and reused.task.id != first.id
    kept = rt.store.get_task(TENANT, first.id)
    assert kept is not None and kept.idempotency_key is None
    assert query(rt.settings.database_url, "SELECT count(*) FROM tasks WHERE idempotency_key = 'k-old'") == [(1,)]


def _workflow(rt: Container, steps: dict[str, Any]) -> Any:
    wf = submit_workflow(rt, TENANT, parse_workflow({"steps": steps}, rt.settings, rt.registry))
    ids = [s.id for s in wf.steps.values()]
    db = rt.settings.database_url
    drain_and_sweep_until(rt, lambda: {r[0] for r in query(db, _FINAL, ids)} == {True})
    return wf


_FINAL = "SELECT finished_at IS NOT NULL FROM tasks WHERE id = ANY(%s::uuid[])"


def test_workflows_none_of_whose_tasks_is_left_are_pruned(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(retention_days=1)
    db = rt.settings.database_url
    chain = {"a": {"name": "noop"}, "b": {"name": "noop", "after": ["a"]}}
    gone, young = _workflow(rt, chain), _workflow(rt, chain)
    # A failed first step: a dead letter, which retention keeps, and its cancelled dependent.
    dead = _workflow(rt, {"a": {"name": "fail", "payload": {"permanent": True}}, "b": {"name": "noop", "after": ["a"]}})
    for wf in (gone, young, dead):
        for step in wf.steps.values():
            _age(rt, step.id, "finished_at", "25 hours")
    older = "UPDATE workflows SET created_at = created_at - interval '25 hours' WHERE id = %s RETURNING id"
    for wf in (gone, dead):
        query(db, older, wf.id)
    report = sweep(rt)
    assert report.errors == [] and report.pruned == 5  # all but the dead letter
    assert rt.store.get_workflow(TENANT, gone.id) is None
    kept = rt.store.get_workflow(TENANT, young.id)  # its tasks are gone, but it is inside retention
    assert kept is not None and kept[1] == []
    still = rt.store.get_workflow(TENANT, dead.id)  # its dead letter is left
    assert still is not None and [t.id for t in still[1]] == [dead.steps["a"].id]


# Batches and workflows past retention are read a page a sweep (migration 0022): the
# ones a dead letter keeps alive are read once a round, not by every sweep.
_DAY = 86400.0
_PAGE = 2


def _batch(rt: Container, name: str, payload: dict[str, Any], completed_ago: str) -> str:
    """A batch of one task, run, its task finished 25 h ago and the batch completed
    ``completed_ago``."""
    made = submit_batch(rt, TENANT, [request(name, payload, max_retries=0)], spec=BatchSpec())
    assert made.batch is not None
    db = rt.settings.database_url
    drain_and_sweep_until(
        rt, lambda: query(db, "SELECT completed_at IS NOT NULL FROM batches WHERE id = %s", made.batch.id) == [(True,)]
    )  # type: ignore[union-attr]
    query(
        db,
        "WITH t AS (UPDATE tasks SET finished_at = now() - interval '25 hours' WHERE batch_id = %s RETURNING 1)"
        " UPDATE batches SET completed_at = now() - %s::interval WHERE id = %s RETURNING id",
        made.batch.id,
        completed_ago,
        made.batch.id,
    )
    return made.batch.id


def _batches_left(rt: Container, ids: list[str]) -> list[str]:
    found = {
        r[0] for r in query(rt.settings.database_url, "SELECT id::text FROM batches WHERE id = ANY(%s::uuid[])", ids)
    }
    return [b for b in ids if b in found]


def test_batch_pruning_reads_a_page_a_sweep_and_comes_round_again(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(retention_days=1)
    failing = ("fail", {"permanent": True})
    # Four batches each kept by its dead letter, oldest first, then one whose task goes.
    kept = [_batch(rt, *failing, completed_ago=f"{30 - i} hours") for i in range(4)]
    free = _batch(rt, "noop", {}, completed_ago="26 hours")
    assert rt.store.prune_finished(_DAY) == 1
    # Each call reads the next two past retention: the free batch is read, and
    # deleted, by the third only (a scan from the oldest would delete it at once).
    assert [rt.store.prune_batches(_DAY, limit=_PAGE) for _ in range(2)] == [0, 0]
    assert _batches_left(rt, [*kept, free]) == [*kept, free]
    assert rt.store.prune_batches(_DAY, limit=_PAGE) == 1
    assert _batches_left(rt, [*kept, free]) == kept
    # That page was short, the end of the round: the next call starts from the oldest
    # again and finds the batch whose dead letter was purged meanwhile.
    purged = rt.store.purge_dead_letters(
        TENANT, ids=[_dead_letter(rt, kept[0])], name=None, failed_before=None, limit=10, actor="test"
    )
    assert len(purged.ids) == 1
    assert rt.store.prune_batches(_DAY, limit=_PAGE) == 1
    assert _batches_left(rt, kept) == kept[1:]


def _dead_letter(rt: Container, batch_id: str) -> str:
    [(task_id,)] = query(rt.settings.database_url, "SELECT id::text FROM tasks WHERE batch_id = %s", batch_id)
    return str(task_id)


def test_workflow_pruning_reads_a_page_a_sweep(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(retention_days=1)
    db = rt.settings.database_url
    dead = {"a": {"name": "fail", "payload": {"permanent": True}}}
    kept = [_workflow(rt, dead) for _ in range(3)]
    free = _workflow(rt, {"a": {"name": "noop"}})
    for i, wf in enumerate([*kept, free]):
        for step in wf.steps.values():
            _age(rt, step.id, "finished_at", "25 hours")
        query(
            db,
            "UPDATE workflows SET created_at = now() - %s::interval WHERE id = %s RETURNING id",
            f"{30 - i} hours",
            wf.id,
        )
    assert rt.store.prune_finished(_DAY) == 1
    ids = [wf.id for wf in [*kept, free]]
    left = lambda: [w for w in ids if query(db, "SELECT 1 FROM workflows WHERE id = %s", w)]  # noqa: E731
    assert rt.store.prune_workflows(_DAY, limit=_PAGE) == 0  # the two oldest, kept
    assert left() == ids
    assert rt.store.prune_workflows(_DAY, limit=_PAGE) == 1
    assert left() == ids[:3]


def test_a_parent_stays_while_a_task_that_depends_on_it_may_still_run(make_rt: Callable[..., Container]) -> None:
    """A child reads its parents' results from their rows when it runs, and deleting a
    parent deletes its edge: pruned, the child ran with that result missing."""
    rt = make_rt(retention_days=1)
    parent = submit(rt, TENANT, request(payload={"v": "parent"})).task.id
    drain_once(rt)
    child = submit(rt, TENANT, request(payload={"v": "child"}, delay_seconds=3600, depends_on=[parent])).task.id
    _age(rt, parent, "finished_at", "30 days")
    assert sweep(rt).pruned == 0 and _exists(rt, parent)[0]
    query(rt.settings.database_url, "UPDATE tasks SET run_at = now() WHERE id = %s RETURNING id", child)
    sweep(rt)  # promotes the child
    drain_once(rt)
    [(status, result)] = query(rt.settings.database_url, "SELECT status, result FROM tasks WHERE id = %s", child)
    assert status == "COMPLETED" and result["parents"] == {parent: {"v": "parent"}}
    assert sweep(rt).pruned == 1  # the child has ended: now the parent may go
    assert not _exists(rt, parent)[0]
