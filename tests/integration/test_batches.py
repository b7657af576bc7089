"""Batches: counts kept by the database as tasks become final, and one completion
(a signed webhook and/or a follow-up task) when the last one does, from every path."""

from __future__ import annotations

import json
import random
import threading
import uuid
from typing import Any

import pytest

from chalicelib.adapters.webhooks import verify
from chalicelib.api import params
from chalicelib.container import Container
from chalicelib.core.batches import BatchSpec, parse_batch_spec
from chalicelib.core.errors import NotFoundError, ValidationError
from chalicelib.core.model import WEBHOOK_TASK, Outcome, Status
from chalicelib.core.records import ExpiredLease
from chalicelib.observability import metrics
from chalicelib.services import batches, control, lifecycle
from chalicelib.services.submit import BatchResult, submit, submit_batch
from chalicelib.services.sweep import sweep
from tests.helpers import Receiver, drain_and_sweep_until, drain_once, metric_count, query, request
from tests.integration import test_webhooks

TENANT = "batches"


receiver = test_webhooks.receiver  # the fixture


def _spec(rt: Container, body: dict[str, Any]) -> BatchSpec:
    return parse_batch_spec(body, rt.settings, rt.registry)


def _made_by(rt: Container, batch_id: str) -> list[tuple[Any, ...]]:
    """The tasks a batch's completion created: its webhook and its follow-up."""
    return query(
        rt.settings.database_url,
        "SELECT name, status, payload FROM tasks WHERE payload->'batch'->>'id' = %s ORDER BY name",
        batch_id,
    )


def test_batch_fires_one_signed_webhook_and_one_follow_up_with_the_counts(rt: Container, receiver: Receiver) -> None:
    spec = _spec(rt, {"callback_url": receiver.url, "on_complete": {"name": "noop", "payload": {"report": 1}}})
    # The counters outlive the tables a test truncates: batches of tests that ran
    # earlier in this database are in them.
    db = rt.settings.database_url
    opened_before, completed_before = metric_count(db, "batches_opened"), metric_count(db, "batches_completed")
    items = [request(), request("fail", {"permanent": True}, max_retries=0), request(payload={"n": 2})]
    result = submit_batch(rt, TENANT, items, spec=spec)
    assert result.batch is not None and result.batch.total == 3 and result.batch.queued == 3
    batch_id = result.batch.id
    assert all(i.submitted is not None and i.submitted.task.batch_id == batch_id for i in result.items)
    opened = batches.get_batch(rt, TENANT, batch_id)
    assert "tasklane_open_batches 1.0" in metrics.render(rt.store, rt.queue)
    assert (opened.status, opened.remaining, opened.progress, opened.queued) == ("OPEN", 3, 0, 3)

    drain_and_sweep_until(rt, lambda: len(receiver.calls) == 1 and _made_by(rt, batch_id)[0][1] == "COMPLETED")
    done = batches.get_batch(rt, TENANT, batch_id)
    assert (done.status, done.remaining, done.progress) == ("COMPLETED", 0, 100)
    assert (done.completed, done.failed, done.cancelled, done.queued) == (2, 1, 0, 0)
    call = receiver.calls[0]
    headers = call["headers"]
    secret = rt.store.webhook_secret(TENANT)
    assert verify(secret, headers["Tasklane-Timestamp"], call["body"], headers["Tasklane-Signature"])
    assert headers["Tasklane-Delivery"] == done.callback_task_id
    event = json.loads(call["body"])
    assert event["event"] == "batch.completed" and "task" not in event and event["delivery"] == done.callback_task_id
    assert event["batch"]["id"] == batch_id
    assert (event["batch"]["total"], event["batch"]["completed"], event["batch"]["failed"]) == (3, 2, 1)
    assert event["batch"]["follow_up_task_id"] == done.follow_up_task_id
    follow_up = rt.store.get_task(TENANT, done.follow_up_task_id or "")
    assert follow_up is not None and follow_up.name == "noop" and follow_up.batch_id is None
    assert follow_up.payload["report"] == 1 and follow_up.payload["batch"]["failed"] == 1
    assert follow_up.result == follow_up.payload  # noop returns what it got
    [(hook_name, _, _), (follow_name, _, _)] = _made_by(rt, batch_id)
    assert sorted([hook_name, follow_name]) == sorted([WEBHOOK_TASK, "noop"])
    text = metrics.render(rt.store, rt.queue)
    assert f"tasklane_batches_opened_total {opened_before + 1:.1f}" in text
    assert f"tasklane_batches_completed_total {completed_before + 1:.1f}" in text
    assert "tasklane_open_batches 0.0" in text


def test_refused_and_replayed_items_are_not_in_the_batch(rt: Container) -> None:
    first = submit(rt, TENANT, request(idempotency_key="k1")).task
    items: list[Any] = [
        request(idempotency_key="k1"),  # replayed: the original task, not in the batch
        ValidationError("tasks[1]: unknown task name"),
        request(delay_seconds=3600),
    ]
    result = submit_batch(rt, TENANT, items, spec=BatchSpec())
    assert result.batch is not None and result.batch.total == 1 and result.batch.pending == 1
    assert result.items[0].submitted is not None and result.items[0].submitted.task.id == first.id
    assert result.items[0].submitted.task.batch_id is None
    # Every item replayed: nothing was created, so no batch is opened (a retried request
    # does not open a second, empty batch that completes at once).
    again = submit_batch(rt, TENANT, [request(idempotency_key="k1")], spec=BatchSpec())
    assert again.batch is None and again.created == 0
    assert submit_batch(rt, TENANT, [request()]).batch is None  # no "batch": none opened


def test_cancelling_the_last_waiting_task_fires_the_completion(rt: Container) -> None:
    spec = _spec(rt, {"on_complete": {"name": "noop"}})
    waiting = [request(delay_seconds=3600), request(delay_seconds=3600)]
    result: BatchResult = submit_batch(rt, TENANT, waiting, spec=spec)
    assert result.batch is not None
    ids = [i.submitted.task.id for i in result.items if i.submitted is not None]
    lifecycle.cancel(rt, TENANT, ids[0])
    assert batches.get_batch(rt, TENANT, result.batch.id).completed_at is None
    lifecycle.cancel(rt, TENANT, ids[1])
    done = batches.get_batch(rt, TENANT, result.batch.id)
    assert (done.status, done.cancelled, done.pending) == ("COMPLETED", 2, 0)
    [(name, status, payload)] = _made_by(rt, result.batch.id)
    assert (name, status, payload["batch"]["cancelled"]) == ("noop", "QUEUED", 2)


def test_a_redriven_dead_letter_counts_again_but_the_completion_does_not_fire_twice(rt: Container) -> None:
    spec = _spec(rt, {"on_complete": {"name": "noop"}})
    result = submit_batch(rt, TENANT, [request("fail", {"times": 1}, max_retries=0), request()], spec=spec)
    assert result.batch is not None
    batch_id = result.batch.id
    drain_and_sweep_until(rt, lambda: batches.get_batch(rt, TENANT, batch_id).status == "COMPLETED")
    failed = batches.get_batch(rt, TENANT, batch_id)
    assert (failed.completed, failed.failed) == (1, 1)
    dead = next(i.submitted.task.id for i in result.items if i.submitted is not None)
    lifecycle.redrive_one(rt, TENANT, dead)
    reopened = batches.get_batch(rt, TENANT, batch_id)
    assert (reopened.status, reopened.remaining, reopened.failed, reopened.queued) == ("COMPLETED", 1, 0, 1)
    drain_and_sweep_until(rt, lambda: batches.get_batch(rt, TENANT, batch_id).remaining == 0)
    after = batches.get_batch(rt, TENANT, batch_id)
    # "fail" fails its first attempt again (a redrive resets the attempts): failed once more.
    assert (after.completed, after.failed, after.completed_at) == (1, 1, failed.completed_at)
    assert len(_made_by(rt, batch_id)) == 1  # one follow-up, from the first completion


def test_another_tenants_batch_is_not_found(rt: Container) -> None:
    result = submit_batch(rt, TENANT, [request()], spec=BatchSpec())
    assert result.batch is not None
    with pytest.raises(NotFoundError):
        batches.get_batch(rt, "someone-else", result.batch.id)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"on_complete": {"name": "nope"}}, "batch.on_complete: unknown task name"),
        ({"on_complete": {"name": "noop", "payload": {"batch": 1}}}, 'without a "batch" key'),
        ({"on_complete": {"name": "http-request", "payload": {"url": "http://x"}}}, "unknown payload field(s): batch"),
        ({"on_complete": {"name": "noop", "run_at": "2030-01-01T00:00:00Z"}}, "unknown field(s) run_at"),
        ({"on_complete": {"name": "sleep", "payload": {"seconds": -1}}}, "payload is invalid for sleep"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"unknown": 1}, "unknown field(s) unknown"),
    ],
)
def test_a_bad_batch_object_is_a_400_naming_it(rt: Container, batch: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        params.batch({"tasks": [{"name": "noop"}], "batch": batch}, rt.settings, rt.registry)
    assert message in raised.value.message, raised.value.message


def test_the_follow_up_runs_in_the_same_drain_without_waiting_for_a_sweep(rt: Container) -> None:
    spec = _spec(rt, {"on_complete": {"name": "noop"}})
    result = submit_batch(rt, TENANT, [request(), request()], spec=spec)
    assert result.batch is not None
    drain_once(rt)  # no sweep: the drainer releases the outbox after the last finish
    done = batches.get_batch(rt, TENANT, result.batch.id)
    follow_up = rt.store.get_task(TENANT, done.follow_up_task_id or "")
    assert follow_up is not None and follow_up.status.value == "COMPLETED"


def test_concurrent_finishers_and_rescuers_complete_each_batch_exactly_once(rt: Container) -> None:
    """Many statements at once, several batches each, in every order: finishers record
    outcomes in random groups while rescuers dead-letter the expired leases of the same
    batches.  Each batch fires once, with counts that add up (and nothing deadlocks)."""
    n_batches, per = 30, 4
    spec = _spec(rt, {"on_complete": {"name": "noop"}})
    tokens: dict[str, str] = {}
    expired: list[str] = []
    batch_ids = []
    for _ in range(n_batches):
        result = submit_batch(rt, TENANT, [request(max_retries=0) for _ in range(per)], spec=spec)
        assert result.batch is not None
        batch_ids.append(result.batch.id)
        for k, item in enumerate(result.items):
            assert item.submitted is not None
            tid = item.submitted.task.id
            tokens[tid] = str(uuid.uuid4())
            assert rt.store.claim([tid], tokens[tid], 30, actor="test-claim")
            if k % 2:
                expired.append(tid)
    query(rt.settings.database_url, _EXPIRE, expired)
    finishing = [tid for tid in tokens if tid not in set(expired)]
    random.Random(3).shuffle(finishing)
    groups = [finishing[i : i + 3] for i in range(0, len(finishing), 3)]
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def finisher(mine: list[list[str]]) -> None:
        start.wait()
        try:
            for group in mine:
                outcomes = [Outcome(tid, tokens[tid], Status.COMPLETED, result_json="{}") for tid in group]
                rt.store.finish(outcomes, actor="test-drain")
        except BaseException as exc:
            errors.append(exc)

    def rescuer() -> None:
        def dead(lease: ExpiredLease) -> Outcome:
            token = lease.lease_token
            return Outcome(lease.id, token, Status.FAILED, error="lease expired", error_type="LeaseLostError")

        start.wait()
        try:
            while rt.store.rescue_expired(dead, limit=5, actor="sweep"):
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finisher, args=(groups[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=rescuer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    rows = query(rt.settings.database_url, "SELECT remaining, completed, failed, completed_at IS NOT NULL FROM batches")
    assert sorted(rows) == [(0, per // 2, per // 2, True)] * n_batches
    made = query(
        rt.settings.database_url,
        "SELECT payload->'batch'->>'id', count(*) FROM tasks WHERE payload ? 'batch' GROUP BY 1",
    )
    assert sorted(made) == sorted((b, 1) for b in batch_ids)


# The leases of a dead drainer: already past their deadline.
_EXPIRE = "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(%s::uuid[]) RETURNING id"


def test_the_sweep_prunes_a_completed_batch_once_its_tasks_are_gone(rt: Container) -> None:
    kept = submit_batch(rt, TENANT, [request("fail", {"permanent": True}, max_retries=0)], spec=BatchSpec())
    gone = submit_batch(rt, TENANT, [request()], spec=BatchSpec())
    assert kept.batch is not None and gone.batch is not None
    ids = (kept.batch.id, gone.batch.id)
    drain_and_sweep_until(rt, lambda: all(batches.get_batch(rt, TENANT, b).status == "COMPLETED" for b in ids))
    # Both finished long ago: the completed task is pruned, the dead letter stays.
    query(
        rt.settings.database_url,
        "WITH a AS (UPDATE tasks SET finished_at = now() - interval '400 days' WHERE batch_id IS NOT NULL RETURNING 1),"
        " b AS (UPDATE batches SET completed_at = now() - interval '400 days' RETURNING 1) SELECT 1",
    )
    sweep(rt)
    with pytest.raises(NotFoundError):
        batches.get_batch(rt, TENANT, gone.batch.id)
    assert batches.get_batch(rt, TENANT, kept.batch.id).failed == 1  # its dead letter keeps it


def test_a_bulk_cancel_of_a_batch_pushes_its_follow_up_at_once(rt: Container) -> None:
    spec = _spec(rt, {"on_complete": {"name": "noop"}})
    result = submit_batch(rt, TENANT, [request("sleep", delay_seconds=3600) for _ in range(3)], spec=spec)
    assert result.batch is not None
    done = control.cancel_many(rt, TENANT, control.CancelSelection(name="sleep"), actor="test")
    assert len(done.cancelled) == 3
    follow_up = batches.get_batch(rt, TENANT, result.batch.id).follow_up_task_id
    assert follow_up is not None
    drain_once(rt)  # no sweep: the cancel released the outbox
    task = rt.store.get_task(TENANT, follow_up)
    assert task is not None and task.status.value == "COMPLETED"


def test_batches_are_listed_newest_first_by_status_and_page(rt: Container) -> None:
    opened = []
    for _ in range(3):
        result = submit_batch(rt, TENANT, [request(delay_seconds=3600)], spec=BatchSpec())
        assert result.batch is not None
        opened.append(result.batch.id)
    done = submit_batch(rt, TENANT, [request()], spec=BatchSpec())
    assert done.batch is not None
    drain_and_sweep_until(rt, lambda: batches.get_batch(rt, TENANT, done.batch.id).status == "COMPLETED")  # type: ignore[union-attr]
    first = batches.list_batches(rt, TENANT, completed=None, limit=2, after=None)
    assert [b.id for b in first.items] == [done.batch.id, opened[2]] and first.next_after is not None
    rest = batches.list_batches(rt, TENANT, completed=None, limit=2, after=first.next_after)
    assert [b.id for b in rest.items] == [opened[1], opened[0]] and rest.next_after is None
    open_ones = batches.list_batches(rt, TENANT, completed=False, limit=50, after=None)
    assert [b.id for b in open_ones.items] == opened[::-1] and all(b.pending == 1 for b in open_ones.items)
    assert [b.id for b in batches.list_batches(rt, TENANT, completed=True, limit=50, after=None).items] == [
        done.batch.id
    ]
    assert batches.list_batches(rt, "someone-else", completed=None, limit=50, after=None).items == []
