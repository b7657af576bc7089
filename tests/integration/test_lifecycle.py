"""Submit → drain → outcome against real PostgreSQL and Redis."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.errors import ConflictError, NotFoundError, ValidationError
from chalicelib.core.model import Outcome, Priority, QueueEntry, Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit, submit_batch, submit_many
from chalicelib.services.sweep import sweep
from chalicelib.tasktypes import TaskContext
from tests.helpers import drain_and_sweep_until, drain_once, query, request, status_counts, wait_for

TENANT = "acme"


def _get(rt: Container, task_id: str) -> Any:
    task = rt.store.get_task(TENANT, task_id)
    assert task is not None
    return task


def test_noop_task_completes_with_payload_as_result(rt: Container, database_url: str) -> None:
    task = submit(rt, TENANT, request(payload={"to": "a@example.com"})).task
    assert task.status is Status.QUEUED
    drain_once(rt)
    done = _get(rt, task.id)
    assert done.status is Status.COMPLETED
    assert done.result == {"to": "a@example.com"}
    assert done.attempts == 1 and done.finished_at is not None and done.started_at is not None
    events = [(e.from_status, e.to_status) for e in rt.store.task_events(task.id)]
    assert events == [(None, "QUEUED"), ("QUEUED", "PROCESSING"), ("PROCESSING", "COMPLETED")]


def test_one_default_batch_starts_in_priority_order_and_fifo_within_one(make_rt: Callable[..., Container]) -> None:
    # A first claim large enough for all of them (a drainer's first claim is its
    # smallest batch); one executor lane, so the start order is exactly the order the
    # batch is handed to the runner.
    rt = make_rt(executor_concurrency=1, drain_batch_min=40)
    assert rt.settings.drain_batch_size >= 40
    started: list[str] = []

    def record(payload: Any, ctx: TaskContext) -> None:
        started.append(ctx.task_id)

    rt.registry.task("start-order-test")(record)
    try:
        rnd = random.Random(7)
        submitted: list[tuple[int, int, str]] = []  # (rank, submit order, id)
        for i in range(40):
            prio = rnd.choice(list(Priority))
            task = submit(rt, TENANT, request("start-order-test", priority=prio.value)).task
            submitted.append((prio.rank, i, task.id))
        stats = drain_once(rt)
        assert stats["batches"] == 1 and stats["claimed"] == 40
        assert started == [tid for _, _, tid in sorted(submitted)]
    finally:
        rt.registry._by_name.pop("start-order-test")


def test_retryable_failures_retry_with_backoff_then_complete(rt: Container) -> None:
    task = submit(rt, TENANT, request("fail", {"times": 2})).task
    drain_and_sweep_until(rt, lambda: _get(rt, task.id).status is Status.COMPLETED)
    done = _get(rt, task.id)
    assert done.attempts == 3
    assert done.result == {"succeeded_on_attempt": 3}
    events = rt.store.task_events(task.id)
    errors = [e for e in events if e.error]
    assert [e.attempt for e in errors] == [1, 2]
    assert all(e.error_type == "RetryableError" for e in errors)
    # Each retry waited at least its backoff after the failure: the fast settings'
    # nominal delay (base * 2^(attempt-1), capped) less at most the jitter's share.
    s = rt.settings
    failed_at = [e.at for e in events if e.to_status is Status.PENDING]
    started_at = [e.at for e in events if e.to_status is Status.PROCESSING][1:]
    assert len(failed_at) == len(started_at) == 2
    for attempt, (failed, started) in enumerate(zip(failed_at, started_at, strict=True), start=1):
        nominal = min(s.retry_max_seconds, s.retry_base_seconds * 2 ** (attempt - 1))
        floor = nominal * (1 - s.retry_jitter)
        assert rt.retry.backoff(attempt) >= floor  # the policy in use is the settings' one
        assert (started - failed).total_seconds() >= floor - 0.005  # 5 ms: timestamp rounding


def test_retries_exhausted_dead_letters_with_every_error(rt: Container) -> None:
    task = submit(rt, TENANT, request("fail", {"times": 99}, max_retries=2)).task
    drain_and_sweep_until(rt, lambda: _get(rt, task.id).status is Status.FAILED)
    failed = _get(rt, task.id)
    assert failed.attempts == 3
    assert failed.last_error_type == "RetryableError"
    assert len([e for e in rt.store.task_events(task.id) if e.error]) == 3
    letters = rt.store.list_dead_letters(TENANT, name=None, limit=10, after=None)
    assert [t.id for t in letters] == [task.id]


def test_permanent_error_fails_at_once(rt: Container) -> None:
    task = submit(rt, TENANT, request("fail", {"permanent": True})).task
    drain_once(rt)
    failed = _get(rt, task.id)
    assert failed.status is Status.FAILED and failed.attempts == 1
    assert failed.last_error_type == "PermanentError"


def test_unknown_task_name_at_execution_is_permanent(rt: Container) -> None:
    task = submit(rt, TENANT, request()).task
    query(rt.settings.database_url, "UPDATE tasks SET name = 'gone-away' WHERE id = %s RETURNING id", task.id)
    drain_once(rt)
    failed = _get(rt, task.id)
    assert failed.status is Status.FAILED and failed.last_error_type == "UnknownTaskName"


def test_attempt_past_timeout_counts_as_failed(make_rt: Callable[..., Container]) -> None:
    rt = make_rt()
    sleep = 30
    task = submit(rt, TENANT, request("sleep", {"seconds": sleep}, timeout_seconds=1, max_retries=0)).task
    started = time.monotonic()
    drain_once(rt, seconds=5)
    # The drain gave up on the attempt at its timeout instead of waiting for the sleep
    # to end.  Bounded by the sleep, not by a stopwatch: a loaded machine may take
    # seconds over the 1 s timeout and the drain's idle exit, never 30.
    assert time.monotonic() - started < sleep
    failed = _get(rt, task.id)
    assert failed.status is Status.FAILED
    assert failed.last_error_type == "TimeoutError"
    assert failed.started_at is not None and failed.finished_at is not None
    assert (failed.finished_at - failed.started_at).total_seconds() < sleep


def test_delayed_task_runs_only_when_due(rt: Container) -> None:
    task = submit(rt, TENANT, request(delay_seconds=0.6)).task
    assert task.status is Status.PENDING
    drain_once(rt, seconds=0.3)
    assert _get(rt, task.id).status is Status.PENDING
    drain_and_sweep_until(rt, lambda: _get(rt, task.id).status is Status.COMPLETED, timeout=10)
    done = _get(rt, task.id)
    assert done.started_at is not None and done.started_at >= done.run_at


def test_run_at_in_the_past_is_queued_at_once(rt: Container) -> None:
    task = submit(rt, TENANT, request(run_at=datetime.now(UTC) - timedelta(hours=1))).task
    assert task.status is Status.QUEUED


def test_duplicate_ids_in_redis_run_each_task_once(rt: Container) -> None:
    tasks = [submit(rt, TENANT, request("fail", {"times": 0})).task for _ in range(20)]
    # Push every id again: as if the sweeper's reconciliation raced the submit.
    rt.queue.push([QueueEntry.ready(t.id, TENANT, Priority.LOW, 1.0, None) for t in tasks])
    rt.queue.push([QueueEntry.due_at(t.id, TENANT, Priority.NORMAL, 1.0, None) for t in tasks])
    drain_once(rt)
    drain_once(rt)
    for t in tasks:
        got = _get(rt, t.id)
        assert got.status is Status.COMPLETED and got.attempts == 1
    processing_events = query(
        rt.settings.database_url, "SELECT count(*) FROM task_events WHERE to_status = 'PROCESSING'"
    )[0][0]
    assert processing_events == 20


def test_stale_lease_token_cannot_overwrite_newer_attempt(rt: Container) -> None:
    """Fencing: the row is PROCESSING again, under a newer attempt's token, when the
    first worker reports, so only the token tells the two apart (the status guard
    alone would let the stale outcome through)."""
    task = submit(rt, TENANT, request()).task
    rt.queue.claim(10, 30)
    old_token, new_token = str(uuid.uuid4()), str(uuid.uuid4())
    [old] = rt.store.claim([task.id], old_token, 0.1, actor="old")
    assert old.attempts == 1
    # The 0.1 s lease lapses by the database's clock; the sweeper then counts the attempt as failed.
    wait_for(lambda: sweep(rt).rescued == 1, timeout=10, message="the expired lease to be rescued")
    # The retry falls due after its backoff and a second worker claims it.
    [new] = wait_for(lambda: rt.store.claim([task.id], new_token, 30, actor="new"), timeout=10)
    assert new.attempts == 2
    held = _get(rt, task.id)
    assert held.status is Status.PROCESSING

    # The first worker, back from a stall, presents its own old token: rejected.
    stale = rt.store.finish([Outcome(task.id, old_token, Status.COMPLETED, result_json='{"late": true}')], actor="old")
    assert stale == []
    after = _get(rt, task.id)
    assert (after.status, after.attempts, after.result, after.finished_at) == (Status.PROCESSING, 2, None, None)

    done = rt.store.finish([Outcome(task.id, new_token, Status.COMPLETED, result_json='{"on": "time"}')], actor="new")
    assert [r.id for r in done] == [task.id]
    final = _get(rt, task.id)
    assert final.status is Status.COMPLETED and final.result == {"on": "time"} and final.attempts == 2


def test_cancel_queued_task_never_runs(rt: Container) -> None:
    task = submit(rt, TENANT, request()).task
    done = rt.store.cancel(TENANT, task.id)
    assert done is not None and done.before is Status.QUEUED and done.task.status is Status.CANCELLED
    drain_once(rt)
    assert _get(rt, task.id).status is Status.CANCELLED
    assert _get(rt, task.id).attempts == 0


def test_cancel_running_task_is_honoured_at_next_checkpoint(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(lease_seconds=0.6)
    task = submit(rt, TENANT, request("sleep", {"seconds": 20})).task
    thread = threading.Thread(target=drain_once, args=(rt, 10.0))
    thread.start()
    wait_for(lambda: _get(rt, task.id).status is Status.PROCESSING)
    done = rt.store.cancel(TENANT, task.id)
    assert done is not None and done.before is Status.PROCESSING and done.task.cancel_requested
    thread.join(timeout=15)
    assert _get(rt, task.id).status is Status.CANCELLED


def test_cancel_final_task_changes_nothing(rt: Container) -> None:
    from chalicelib.services import lifecycle

    task = submit(rt, TENANT, request()).task
    drain_once(rt)
    result = lifecycle.cancel(rt, TENANT, task.id)
    assert result.outcome is lifecycle.CancelOutcome.ALREADY_FINAL and result.before is Status.COMPLETED
    assert _get(rt, task.id).status is Status.COMPLETED


def test_cancel_waiting_task_cancels_it_and_other_tenants_get_not_found(rt: Container) -> None:
    from chalicelib.services import lifecycle

    waiting = submit(rt, TENANT, request(delay_seconds=3600)).task
    result = lifecycle.cancel(rt, TENANT, waiting.id)
    assert result.outcome is lifecycle.CancelOutcome.CANCELLED and result.before is Status.PENDING
    assert result.task.status is Status.CANCELLED
    with pytest.raises(NotFoundError):
        lifecycle.cancel(rt, "another-tenant", waiting.id)


def test_redrive_puts_dead_letter_back_with_fresh_budget(rt: Container) -> None:
    task = submit(rt, TENANT, request("fail", {"times": 1}, max_retries=0)).task
    drain_once(rt)
    assert _get(rt, task.id).status is Status.FAILED
    redriven = rt.store.redrive(TENANT, ids=[task.id])
    assert [t.status for t in redriven] == [Status.QUEUED]
    from chalicelib.services.lifecycle import enqueue_redriven

    enqueue_redriven(rt, redriven)
    drain_once(rt)
    again = _get(rt, task.id)
    # It ran again from a fresh budget (attempt 1 of max_retries + 1), and failed again.
    assert again.status is Status.FAILED and again.attempts == 1
    transitions = [(e.from_status, e.to_status) for e in rt.store.task_events(task.id)]
    assert transitions.count(("QUEUED", "PROCESSING")) == 2
    assert ("FAILED", "QUEUED") in transitions


def test_idempotency_key_replays_and_conflicts(rt: Container) -> None:
    first = submit(rt, TENANT, request(payload={"a": 1}, idempotency_key="k1"))
    again = submit(rt, TENANT, request(payload={"a": 1}, idempotency_key="k1"))
    assert again.replayed and again.task.id == first.task.id
    with pytest.raises(ConflictError):
        submit(rt, TENANT, request(payload={"a": 2}, idempotency_key="k1"))
    other_tenant = submit(rt, "other", request(payload={"a": 1}, idempotency_key="k1"))
    assert not other_tenant.replayed and other_tenant.task.id != first.task.id


def test_concurrent_identical_submissions_create_one_task(rt: Container, database_url: str) -> None:
    barrier = threading.Barrier(20)
    results: list[str] = []

    def go() -> None:
        barrier.wait()
        results.append(submit(rt, TENANT, request(payload={"x": 1}, idempotency_key="same")).task.id)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 20
    assert status_counts(database_url) == {"QUEUED": 1}


def test_bulk_submit_inserts_all_in_one_call(rt: Container, database_url: str) -> None:
    results = submit_many(rt, TENANT, [request(payload={"i": i}) for i in range(500)])
    assert all(not isinstance(r, ConflictError) for r in results)
    assert rt.queue.depths()["ready"] == 500
    drain_once(rt, seconds=5)
    assert status_counts(database_url) == {"COMPLETED": 500}


def test_every_task_has_its_events(rt: Container, database_url: str) -> None:
    submit_many(rt, TENANT, [request("fail", {"times": i % 2}) for i in range(30)])
    drain_and_sweep_until(rt, lambda: status_counts(database_url) == {"COMPLETED": 30})
    orphans = query(
        database_url,
        "SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM task_trail e WHERE e.task_id = t.id)",
    )[0][0]
    assert orphans == 0
    # The last event of every task matches its status.
    mismatched = query(
        database_url,
        "SELECT count(*) FROM tasks t JOIN LATERAL (SELECT to_status FROM task_events e WHERE e.task_id = t.id "
        "ORDER BY e.id DESC LIMIT 1) last ON true WHERE last.to_status <> t.status",
    )[0][0]
    assert mismatched == 0


def test_executor_sees_task_id_and_attempt(rt: Container) -> None:
    seen: list[tuple[str, int]] = []

    def spy(payload: Any, ctx: TaskContext) -> None:
        seen.append((ctx.task_id, ctx.attempt))

    rt.registry.task("spy-test")(spy)
    try:
        task = submit(rt, TENANT, request("spy-test")).task
        drain_once(rt, drainer=Drainer(rt))
        assert seen == [(task.id, 1)]
    finally:
        rt.registry._by_name.pop("spy-test")


def test_batch_keeps_each_item_in_its_slot(rt: Container) -> None:
    first = submit(rt, TENANT, request(idempotency_key="k-batch")).task
    invalid = ValidationError("tasks[1]: name is required")
    items = [
        request(),
        invalid,
        request(idempotency_key="k-batch"),  # the same request again: replayed
        request("sleep", {"seconds": 1}, idempotency_key="k-batch"),  # same key, other request
    ]
    result = submit_batch(rt, TENANT, items)
    assert [i.index for i in result.items] == [0, 1, 2, 3]
    assert result.items[0].submitted is not None and not result.items[0].submitted.replayed
    assert result.items[1].error is invalid
    assert result.items[2].submitted is not None and result.items[2].submitted.task.id == first.id
    assert isinstance(result.items[3].error, ConflictError)
    assert (result.created, result.failed, result.all_created) == (1, 2, False)
    assert status_counts(rt.settings.database_url)["QUEUED"] == 2
