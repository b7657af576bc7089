"""Final states against the real store: every guarded UPDATE that moves a task is
tried on COMPLETED, FAILED and CANCELLED tasks, and only redrive (FAILED -> QUEUED)
may change anything.  The proof is PostgreSQL's rows and audit trail, not
``core.model.TRANSITIONS``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.model import FINAL_STATUSES, TRANSITIONS, NewTask, Outcome, Status
from chalicelib.core.records import ExpiredLease
from tests.helpers import query

TENANT = "final"
OUTCOMES = (Status.COMPLETED, Status.PENDING, Status.FAILED, Status.CANCELLED)


def _new(rt: Container) -> str:
    task = NewTask(
        id=str(uuid.uuid4()),
        tenant=TENANT,
        name="noop",
        priority="normal",
        payload_json="{}",
        max_retries=3,
        timeout_seconds=30,
    )
    [row] = rt.store.insert_tasks([task])
    return row.id


def _finished(rt: Container, status: Status) -> tuple[str, str]:
    """A task driven into ``status`` by the store's own transitions; ``(id, last token)``."""
    task_id = _new(rt)
    token = str(uuid.uuid4())
    if status is Status.CANCELLED:
        done = rt.store.cancel(TENANT, task_id)
        assert done is not None and done.task.status is Status.CANCELLED
        return task_id, token
    assert len(rt.store.claim([task_id], token, 30, actor="t")) == 1
    done = rt.store.finish([Outcome(task_id, token, status, result_json="{}", error="x")], actor="t")
    assert len(done) == 1
    return task_id, token


def _row(rt: Container, task_id: str) -> tuple[Any, ...]:
    [row] = query(
        rt.settings.database_url,
        "SELECT status, attempts, result, finished_at, lease_token, run_at, progress FROM tasks WHERE id = %s",
        task_id,
    )
    return row


def _events(rt: Container, task_id: str) -> list[tuple[str | None, str]]:
    rows = query(
        rt.settings.database_url,
        "SELECT from_status, to_status FROM task_trail WHERE task_id = %s ORDER BY id",
        task_id,
    )
    return [(r[0], r[1]) for r in rows]


def _try_every_move_but_redrive(rt: Container, task_id: str, token: str) -> None:
    """Each store operation that moves a task, aimed at ``task_id`` with its last
    token and with a fresh one; the return values must say nothing happened."""
    assert rt.store.claim([task_id], str(uuid.uuid4()), 30, actor="t") == []
    for tok in (token, str(uuid.uuid4())):
        for outcome in OUTCOMES:
            o = Outcome(task_id, tok, outcome, result_json='{"late": true}', error="late", delay_seconds=0.0)
            assert rt.store.finish([o], actor="t") == []
        assert rt.store.extend_leases([task_id], tok, 30) == []
        assert rt.store.set_progress(task_id, tok, 50, "late") is False
    done = rt.store.cancel(TENANT, task_id)
    assert done is not None and done.before.is_final and done.hook is None
    assert done.task.status is done.before and not done.task.cancel_requested
    # The sweeper's moves: due promotion (its run_at is long past) and lease rescue
    # (nothing holds a lease, so ``decide`` must never be asked).  Their effect is
    # judged by the caller from the row and the audit trail.
    rt.store.promote_due(limit=100)

    def decide(lease: ExpiredLease) -> Outcome:
        raise AssertionError(f"rescue offered a task without a live lease: {lease}")

    rt.store.rescue_expired(decide, limit=100)


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_no_store_operation_but_redrive_moves_a_final_task(rt: Container, status: Status) -> None:
    task_id, token = _finished(rt, status)
    row, events = _row(rt, task_id), _events(rt, task_id)
    assert row[0] == status.value and row[3] is not None and row[4] is None

    _try_every_move_but_redrive(rt, task_id, token)

    assert _row(rt, task_id) == row, "a final task's row changed"
    assert _events(rt, task_id) == events, "a final task got an audit event"


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_redrive_moves_only_a_failed_task_and_only_to_queued(rt: Container, status: Status) -> None:
    task_id, _ = _finished(rt, status)
    events = _events(rt, task_id)
    redriven = rt.store.redrive(TENANT, ids=[task_id])
    if status is Status.FAILED:
        assert [(t.id, t.status, t.attempts) for t in redriven] == [(task_id, Status.QUEUED, 0)]
        assert _events(rt, task_id) == [*events, ("FAILED", "QUEUED")]
        assert _row(rt, task_id)[3] is None  # no longer finished
    else:
        assert redriven == []
        assert _events(rt, task_id) == events


def test_the_only_exit_recorded_from_a_final_state_is_redrive(rt: Container) -> None:
    """Across all of the above on one table: the audit trail's exits from final
    states, which the transition table claims are exactly FAILED -> QUEUED."""
    tokens = {status: _finished(rt, status) for status in FINAL_STATUSES}
    for task_id, token in tokens.values():
        _try_every_move_but_redrive(rt, task_id, token)
        rt.store.redrive(TENANT, ids=[task_id])
    rows = query(
        rt.settings.database_url,
        "SELECT DISTINCT from_status, to_status FROM task_events WHERE from_status = ANY(%s)",
        [s.value for s in FINAL_STATUSES],
    )
    exits = {(Status(a), Status(b)) for a, b in rows}
    assert exits == {(Status.FAILED, Status.QUEUED)}
    assert exits == {t for t in TRANSITIONS if t[0] in FINAL_STATUSES}


def test_each_dead_letter_names_its_redrive_and_a_stale_outcome_logs_none(rt: Container) -> None:
    """A redriven task that fails again is dead-lettered again: ``finish`` returns that
    transition with the redrive count (the dead-letter log line's ``redrives``), and an
    outcome under an earlier run's token returns nothing."""
    task_id, first_token = _finished(rt, Status.FAILED)
    seen = []
    for _ in range(2):
        [redriven] = rt.store.redrive(TENANT, ids=[task_id])
        assert redriven.attempts == 0
        token = str(uuid.uuid4())
        assert len(rt.store.claim([task_id], token, 30, actor="t")) == 1
        late = Outcome(task_id, first_token, Status.FAILED, error="late")
        assert rt.store.finish([late], actor="t") == []
        [dead] = rt.store.finish([Outcome(task_id, token, Status.FAILED, error="again")], actor="t")
        seen.append((dead.status, dead.attempts, dead.redrives))
        assert rt.store.finish([Outcome(task_id, token, Status.FAILED, error="twice")], actor="t") == []
    assert seen == [(Status.FAILED, 1, 1), (Status.FAILED, 1, 2)]
    assert [e for e in _events(rt, task_id) if e[1] == "FAILED"] == [("PROCESSING", "FAILED")] * 3
