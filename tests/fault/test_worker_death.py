"""A drainer dies (SIGKILL) or stalls (SIGSTOP) while it holds tasks under a lease."""

from __future__ import annotations

import signal
from typing import Any

from chalicelib.container import Container
from chalicelib.services.submit import submit, submit_many
from tests.fault.conftest import TENANT, queue_is_empty
from tests.fault.workers import Workers
from tests.helpers import query, request, story_problems, task_stories


def _statuses(database_url: str, ids: list[str]) -> dict[str, int]:
    rows = query(database_url, "SELECT status, count(*) FROM tasks WHERE id = ANY(%s::uuid[]) GROUP BY 1", ids)
    return dict(rows)  # type: ignore[arg-type]


def _rescue(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The event that ended attempt 1."""
    first_run = next(i for i, e in enumerate(events) if e["to"] == "PROCESSING")
    return events[first_run + 1]


def test_drainer_killed_mid_batch_loses_nothing(runtime: Container, workers: Workers, fault_db: str) -> None:
    # One batch: 16 tasks that may retry and 4 with no retries left after one attempt.
    retrying = [request("sleep", {"seconds": 2}, timeout_seconds=60) for _ in range(16)]
    last_chance = [request("sleep", {"seconds": 2}, timeout_seconds=60, max_retries=0) for _ in range(4)]
    submitted = submit_many(runtime, TENANT, retrying + last_chance)
    ids = [s.task.id for s in submitted]  # type: ignore[union-attr]
    retry_ids, last_ids = ids[:16], ids[16:]
    workers.sweep()
    # Its first claim takes all 20 (the claim size adapts upward from its minimum).
    victim = workers.drain(TASKLANE_LEASE_SECONDS="1", TASKLANE_DRAIN_BATCH_MIN="20")

    def batch_held() -> bool:
        rows = query(
            fault_db,
            "SELECT count(*), count(DISTINCT lease_token) FROM tasks "
            "WHERE id = ANY(%s::uuid[]) AND status = 'PROCESSING'",
            ids,
        )
        return rows[0] == (20, 1)

    workers.wait_for(batch_held, timeout=20, message="the victim to hold all 20 tasks in one batch")
    victim.kill()  # kill -9 while every task of the batch is PROCESSING under its lease
    assert _statuses(fault_db, ids) == {"PROCESSING": 20}, "the victim finished work before it was killed"

    # The rescuer runs 8 executor threads: when more retries than that share a batch,
    # the first ones finish 2 s before the rest, and their leases must hold until the
    # batch's outcomes are recorded, or they would run a third time.
    rescuer = workers.drain(TASKLANE_LEASE_SECONDS="1", TASKLANE_EXECUTOR_CONCURRENCY="8")
    workers.wait_for(
        lambda: _statuses(fault_db, ids) == {"COMPLETED": 16, "FAILED": 4},
        timeout=40,
        message="the rescued batch to finish",
    )
    stories = task_stories(fault_db, ids)
    assert story_problems(stories) == []
    for task_id in ids:
        s = stories[task_id]
        events = s["events"]
        claims = [e for e in events if e["to"] == "PROCESSING"]
        assert claims[0]["actor"] == victim.actor and claims[0]["attempt"] == 1
        # Nothing the victim did after its claim reached the database.
        assert [e for e in events if e["actor"] == victim.actor] == [claims[0]]
        rescue = _rescue(events)
        assert rescue["from"] == "PROCESSING" and rescue["actor"] == "sweep", events
        assert rescue["error_type"] == "LeaseLostError" and rescue["attempt"] == 1, events
        if task_id in retry_ids:
            assert rescue["to"] == "PENDING"
            assert s["status"] == "COMPLETED" and s["attempts"] == 2, "\n".join(map(str, events))
            assert s["result"] == {"slept": 2, "attempt": 2}
            assert [e["actor"] for e in claims] == [victim.actor, rescuer.actor]
            assert events[-1]["actor"] == rescuer.actor
        else:
            # No retries left: the lost attempt dead-letters it.
            assert task_id in last_ids
            assert rescue["to"] == "FAILED"
            assert s["status"] == "FAILED" and s["attempts"] == 1
            assert s["last_error_type"] == "LeaseLostError"
    workers.wait_for(
        lambda: queue_is_empty(runtime),
        timeout=10,
        message="Redis to hold no stale ids",
    )


def test_stalled_worker_cannot_overwrite_the_attempt_that_took_over(
    runtime: Container, workers: Workers, fault_db: str
) -> None:
    task = submit(runtime, TENANT, request("sleep", {"seconds": 1.5}, timeout_seconds=60)).task
    workers.sweep()
    stalled = workers.drain(TASKLANE_LEASE_SECONDS="1")
    workers.wait_for(
        lambda: _statuses(fault_db, [task.id]) == {"PROCESSING": 1},
        timeout=20,
        message="the first drainer to start the task",
    )
    stalled.signal(signal.SIGSTOP)  # frozen mid-attempt: no heartbeats, no outcome
    try:
        taker = workers.drain(TASKLANE_LEASE_SECONDS="1")
        workers.wait_for(
            lambda: _statuses(fault_db, [task.id]) == {"COMPLETED": 1},
            timeout=30,
            message="a second drainer to complete the task after the lease expired",
        )
        taker.terminate()  # from now on only the stalled drainer can run anything
    finally:
        stalled.signal(signal.SIGCONT)
    # The stalled drainer wakes up with attempt 1's result and presents its old
    # token.  It works one batch at a time, so once it has run a probe task it
    # has certainly tried to record that late result.
    probe = submit(runtime, TENANT, request("noop", {"probe": True})).task
    workers.wait_for(
        lambda: _statuses(fault_db, [probe.id]) == {"COMPLETED": 1},
        timeout=20,
        message="the woken drainer to run a probe task",
    )
    stories = task_stories(fault_db, [task.id, probe.id])
    assert story_problems(stories) == []
    assert [e["actor"] for e in stories[probe.id]["events"] if e["to"] == "PROCESSING"] == [stalled.actor]

    s = stories[task.id]
    events = s["events"]
    assert s["status"] == "COMPLETED" and s["attempts"] == 2
    assert s["result"] == {"slept": 1.5, "attempt": 2}, "the late result of attempt 1 overwrote attempt 2's"
    completed = [e for e in events if e["to"] == "COMPLETED"]
    assert len(completed) == 1
    assert completed[0]["attempt"] == 2 and completed[0]["actor"] == taker.actor
    rescue = _rescue(events)
    assert (rescue["to"], rescue["actor"], rescue["error_type"]) == ("PENDING", "sweep", "LeaseLostError")
    assert [(e["actor"], e["attempt"]) for e in events if e["to"] == "PROCESSING"] == [
        (stalled.actor, 1),
        (taker.actor, 2),
    ]
    assert [e for e in events if e["actor"] == stalled.actor and e["to"] != "PROCESSING"] == []


def test_a_slow_batch_keeps_the_leases_of_its_finished_tasks(
    runtime: Container, workers: Workers, fault_db: str
) -> None:
    # A live worker is not a dead one: the slow task keeps its lease by heartbeats,
    # and tasks that finished early keep theirs until their outcomes are recorded
    # (a few ms later, without waiting for the slow one), or the sweeper "rescues"
    # them and they run twice.
    seconds = [0.1, 2.5, 0.1, 0.1]  # 2 executor threads: the short ones are done ~2 s early
    ids = [
        s.task.id  # type: ignore[union-attr]
        for s in submit_many(runtime, TENANT, [request("sleep", {"seconds": x}) for x in seconds])
    ]
    workers.sweep()
    workers.drain(TASKLANE_LEASE_SECONDS="1", TASKLANE_EXECUTOR_CONCURRENCY="2")
    workers.wait_for(
        lambda: _statuses(fault_db, ids) == {"COMPLETED": len(ids)}, timeout=30, message="the batch to complete"
    )
    stories = task_stories(fault_db, ids)
    assert story_problems(stories) == []
    assert [(s["attempts"], s["result"]) for s in (stories[i] for i in ids)] == [
        (1, {"slept": x, "attempt": 1}) for x in seconds
    ]
    actors = query(
        fault_db,
        "SELECT count(DISTINCT actor) FROM task_events WHERE task_id = ANY(%s::uuid[]) AND to_status = 'PROCESSING'",
        ids,
    )
    assert actors == [(1,)]  # one drainer ran them all, once
