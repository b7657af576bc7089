"""The claim waits for a submit still in flight (migration 0042), and stamps what it
claims after the wait (0043), or in its second look (0044), with the time it claims it,
and leaves a row whose deadline passed before that time unclaimed (0044).

A single submit pushes its id to Redis while its INSERT and commit are still on their
way, its transaction holding the id's key, ``pg_advisory_xact_lock(7301955,
uuid_hash(id))`` (``submit_lock``), until it ends.  A claim
of an id with no row at all waits for that key (shared), then claims the row its commit
made visible, in the same call; a rollback, an id nobody submits, a row that exists but
is not claimable and a caller outside READ COMMITTED do not wait, and a submit that
stays open longer than the bound leaves the id unclaimed, without an error, with the
caller's lock_timeout back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.rows import dict_row

from chalicelib.adapters.postgres.rows import one_task_params
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.container import Container
from chalicelib.core.model import Claimed, NewTask, Status
from tests.helpers import claim_waiting_on_a_submit, query, wait_for

TENANT = "claim-wait"
BOUND = 2.0  # the wait's bound in the migration


def _new() -> NewTask:
    return NewTask(str(uuid.uuid4()), TENANT, "noop", "normal", "{}", 3, 30)


@contextmanager
def _in_flight(database_url: str, task: NewTask) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A submit's transaction (``submit_lock``, the INSERT) before its commit: the row is
    there for it alone and its id's key is held.  The caller commits or rolls back."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        conn.execute(queries()["submit_lock"], {"id": task.id})
        conn.execute(queries()["insert_task_now"], one_task_params(task, "t"))
        try:
            yield conn
        finally:
            conn.rollback()  # a no-op after the caller's commit


def _claiming(rt: Container, ids: list[str]) -> tuple[ThreadPoolExecutor, Future[list[Claimed]]]:
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(rt.store.claim, ids, str(uuid.uuid4()), 30, actor="t")


def _claims_of(database_url: str, ids: list[str]) -> dict[str, object]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id::text, status FROM tasks WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
        statuses = dict(rows)
        events = conn.execute(
            "SELECT count(*) FROM task_events WHERE task_id = ANY(%s::uuid[]) AND to_status = 'PROCESSING'", (ids,)
        ).fetchone()
        started = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM task_metric_deltas WHERE name = 'noop' AND metric = 'started'"
        ).fetchone()
        waits = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM task_metric_deltas WHERE name = 'noop' AND metric = 'queue_wait'"
        ).fetchone()
    assert events and started and waits
    return {"statuses": statuses, "events": events[0], "started": started[0], "queue_waits": waits[0]}


def test_a_claim_of_a_submit_in_flight_waits_for_its_commit_and_claims_it(database_url: str, rt: Container) -> None:
    task = _new()
    with _in_flight(database_url, task) as submit:
        pool, claim = _claiming(rt, [task.id])
        claim_waiting_on_a_submit(database_url)
        time.sleep(0.3)
        assert not claim.done()
        submit.commit()
        [claimed] = claim.result(timeout=5)
    pool.shutdown()
    assert claimed.id == task.id and claimed.attempts == 1
    seen = _claims_of(database_url, [task.id])
    assert seen == {"statuses": {task.id: "PROCESSING"}, "events": 1, "started": 1, "queue_waits": 1}


def test_a_claim_of_a_submit_that_rolls_back_returns_nothing_at_its_rollback(database_url: str, rt: Container) -> None:
    task = _new()
    with _in_flight(database_url, task) as submit:
        pool, claim = _claiming(rt, [task.id])
        claim_waiting_on_a_submit(database_url)
        submit.rollback()
        ended = time.monotonic()
        assert claim.result(timeout=5) == []
        assert time.monotonic() - ended < 0.5
    pool.shutdown()
    assert _claims_of(database_url, [task.id])["statuses"] == {}


def test_an_id_nobody_submits_is_not_waited_for(rt: Container) -> None:
    started = time.monotonic()
    assert rt.store.claim([str(uuid.uuid4())], str(uuid.uuid4()), 30, actor="t") == []
    assert time.monotonic() - started < BOUND / 4


def test_a_claim_of_several_with_one_in_flight_claims_them_all(database_url: str, rt: Container) -> None:
    visible = [t.id for t in rt.store.insert_tasks([_new() for _ in range(3)], actor="t")]
    task = _new()
    with _in_flight(database_url, task) as submit:
        pool, claim = _claiming(rt, [*visible, task.id])
        claim_waiting_on_a_submit(database_url)
        assert not claim.done()
        submit.commit()
        claimed = claim.result(timeout=5)
    pool.shutdown()
    assert [c.id for c in claimed] == [*visible, task.id]
    seen = _claims_of(database_url, [*visible, task.id])
    assert seen == {
        "statuses": dict.fromkeys([*visible, task.id], "PROCESSING"),
        "events": 4,
        "started": 4,
        "queue_waits": 4,
    }


@pytest.mark.parametrize("state", ["processing", "cancelled"])
def test_a_row_that_is_not_claimable_is_not_waited_for(database_url: str, rt: Container, state: str) -> None:
    [task] = rt.store.insert_tasks([_new()], actor="t")
    if state == "processing":
        assert rt.store.claim([task.id], str(uuid.uuid4()), 30, actor="other")
    else:
        rt.store.cancel(TENANT, task.id, actor="t")
        got = rt.store.get_task(TENANT, task.id)
        assert got is not None and got.status is Status.CANCELLED
    with psycopg.connect(database_url) as holder:
        holder.execute(queries()["submit_lock"], {"id": task.id})
        started = time.monotonic()
        assert rt.store.claim([task.id], str(uuid.uuid4()), 30, actor="t") == []
        assert time.monotonic() - started < BOUND / 4
        holder.rollback()


def test_a_duplicate_id_is_claimed_once_without_waiting(rt: Container) -> None:
    [task] = rt.store.insert_tasks([_new()], actor="t")
    started = time.monotonic()
    assert [c.id for c in rt.store.claim([task.id, task.id], str(uuid.uuid4()), 30, actor="t")] == [task.id]
    assert time.monotonic() - started < BOUND / 4


@pytest.mark.parametrize("scope", ["transaction", "session"])
def test_a_submit_open_past_the_bound_leaves_its_id_and_the_callers_lock_timeout(
    database_url: str, rt: Container, scope: str
) -> None:
    task = _new()
    with (
        _in_flight(database_url, task) as submit,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as caller,
    ):
        params = {"ids": [task.id], "token": str(uuid.uuid4()), "lease_seconds": 30, "actor": "t"}
        if scope == "session":
            caller.execute("SET lock_timeout = '5s'")
            started = time.monotonic()
            assert caller.execute(queries()["claim"], params).fetchall() == []
        else:
            with caller.transaction():
                caller.execute("SET LOCAL lock_timeout = '7s'")
                started = time.monotonic()
                assert caller.execute(queries()["claim"], params).fetchall() == []
                row = caller.execute("SHOW lock_timeout").fetchone()
                assert row == {"lock_timeout": "7s"}
        elapsed = time.monotonic() - started
        row = caller.execute("SHOW lock_timeout").fetchone()
        assert row == {"lock_timeout": "5s" if scope == "session" else "0"}
        assert BOUND * 0.9 < elapsed < BOUND + 1.5
        submit.commit()
    assert _claims_of(database_url, [task.id])["statuses"] == {task.id: "QUEUED"}


def test_a_repeatable_read_claim_does_not_wait(database_url: str, rt: Container) -> None:
    """Its snapshot is the transaction's: the row could never become visible to it."""
    task = _new()
    with (
        _in_flight(database_url, task) as submit,
        psycopg.connect(database_url, row_factory=dict_row) as caller,
    ):
        caller.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        params = {"ids": [task.id], "token": str(uuid.uuid4()), "lease_seconds": 30, "actor": "t"}
        started = time.monotonic()
        assert caller.execute(queries()["claim"], params).fetchall() == []
        assert time.monotonic() - started < BOUND / 4
        caller.rollback()
        submit.rollback()


def _due_in_a_moment(database_url: str, task_id: str) -> None:
    """``task_id`` made a retry that falls due 0.3 s from now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'PENDING', enqueued_at = NULL, run_at = now() + interval '0.3 seconds'"
            " WHERE id = %s",
            (task_id,),
        )


def _assert_stamped_after_run_at(database_url: str, task_id: str) -> None:
    """The task's start, its PROCESSING event and its lease: from its claim, after its run_at."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT t.run_at, t.started_at, t.lease_expires_at - t.started_at AS lease, e.at"
            " FROM tasks t JOIN task_events e ON e.task_id = t.id AND e.to_status = 'PROCESSING'"
            " WHERE t.id = %s",
            (task_id,),
        ).fetchone()
    assert row is not None
    run_at, started_at, lease, at = row
    assert started_at >= run_at and at >= run_at, row
    assert lease.total_seconds() == 30


@contextmanager
def _claim_blocked_on(rt: Container, database_url: str, ids: list[str], held: str) -> Iterator[Future[list[Claimed]]]:
    """A claim of ``ids`` whose first statement waits for the row lock another transaction
    holds on ``held``; the lock is let go when the block ends."""
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (held,))
        pool, claim = _claiming(rt, ids)
        try:
            wait_for(
                lambda: query(
                    database_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
                )[0][0],
                timeout=5,
                interval=0.01,
                message="the claim never waited for the row lock",
            )
            yield claim
        finally:
            holder.rollback()
            claim.result(timeout=5)  # answered once the lock is gone
            pool.shutdown()


def test_a_row_claimed_after_the_wait_is_stamped_when_it_is_claimed(database_url: str, rt: Container) -> None:
    """A claim that waits for a submit in flight takes the rows that became claimable
    meanwhile: here a retry the sweeper promoted once it fell due.  Its start, its
    event and its lease are the time it was claimed, not the claim's transaction start
    (which was before the retry was due: tests/fault/test_load_mix.py saw a retry
    'start' 1.7 ms before its run_at)."""
    [retry] = rt.store.insert_tasks([_new()], actor="t")
    _due_in_a_moment(database_url, retry.id)
    task = _new()
    with _in_flight(database_url, task) as submit:
        pool, claim = _claiming(rt, [retry.id, task.id])
        claim_waiting_on_a_submit(database_url)
        # The retry falls due while the claim waits, and the sweeper's promotion takes it.
        promoted = wait_for(lambda: rt.store.promote_due(limit=10), timeout=5, message="the retry promoted")
        assert [r.id for r in promoted] == [retry.id]
        submit.commit()
        claimed = claim.result(timeout=5)
    pool.shutdown()
    assert sorted(c.id for c in claimed) == sorted([retry.id, task.id])
    _assert_stamped_after_run_at(database_url, retry.id)


def test_a_row_locked_by_the_claims_second_look_is_stamped_when_it_is_claimed(database_url: str, rt: Container) -> None:
    """No submit in flight, but the claim's first statement blocks on another claimer's
    row lock while a retry among its ids falls due and the sweeper promotes it: the
    claim's second look (a new snapshot, migration 0042) locks the retry.  It is stamped
    when it is claimed, not with the claim's transaction start, before it was due
    (tests/fault/test_load_mix.py saw a retry 'start' 10.5 ms before its run_at; 0044)."""
    retry, other = rt.store.insert_tasks([_new(), _new()], actor="t")
    _due_in_a_moment(database_url, retry.id)
    with _claim_blocked_on(rt, database_url, [retry.id, other.id], other.id) as claim:
        promoted = wait_for(lambda: rt.store.promote_due(limit=10), timeout=5, message="the retry promoted")
        assert [r.id for r in promoted] == [retry.id]
    assert sorted(c.id for c in claim.result()) == sorted([retry.id, other.id])
    _assert_stamped_after_run_at(database_url, retry.id)


def test_a_row_locked_before_the_second_look_is_not_claimed_past_its_deadline(database_url: str, rt: Container) -> None:
    """The claim's first statement locks a row with a deadline, then waits for another
    claimer's row lock until that deadline has passed; an id with no row sends it to a
    second look, which claims at its own time.  The row locked first is claimable
    no longer: it is left for the drainer to expire, never started past its deadline
    (tests/integration/test_deadlines.py saw one; 0044)."""
    early, late = sorted(rt.store.insert_tasks([_new(), _new()], actor="t"), key=lambda t: t.id)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET expires_at = now() + interval '0.3 seconds' WHERE id = %s", (early.id,))
    with _claim_blocked_on(rt, database_url, [early.id, late.id, str(uuid.uuid4())], late.id) as claim:
        wait_for(
            lambda: query(database_url, "SELECT expires_at < clock_timestamp() FROM tasks WHERE id = %s", early.id)[0][
                0
            ],
            timeout=5,
            message="the deadline",
        )
    assert [c.id for c in claim.result()] == [late.id]
    with psycopg.connect(database_url, autocommit=True) as conn:
        status, started = conn.execute("SELECT status, started_at FROM tasks WHERE id = %s", (early.id,)).fetchone()  # type: ignore[misc]
        late_events = conn.execute(
            "SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id"
            " WHERE e.to_status = 'PROCESSING' AND t.expires_at IS NOT NULL AND e.at >= t.expires_at"
        ).fetchone()
    assert (status, started) == ("QUEUED", None)
    assert late_events == (0,)
