"""Cancel races drain: tasks are cancelled while drainers are claiming them.

Row locks order the two: either the cancel wins (the task is CANCELLED and never
runs) or the claim wins (the task is PROCESSING and the cancel becomes a request).
The drainers run the ``spy`` executor, so "never runs" is checked against the
executions themselves, not only against the database.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from pathlib import Path

from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.services.submit import submit_many
from tests.fault.conftest import TENANT
from tests.fault.workers import SPY_LOG_ENV, Workers, read_spy_log
from tests.helpers import FINAL_STATES, request, status_counts, story_problems, task_stories

CHUNKS, PER_CHUNK, CANCELLERS = 40, 15, 3


def test_a_task_reported_cancelled_never_runs(
    runtime: Container, workers: Workers, fault_db: str, tmp_path: Path
) -> None:
    spy_log = tmp_path / "executions.log"
    workers.sweep()
    for _ in range(2):
        # Small batches of short tasks: many claims, each racing the cancels.
        workers.drain(
            spy=True,
            **{SPY_LOG_ENV: str(spy_log), "TASKLANE_LEASE_SECONDS": "5", "TASKLANE_DRAIN_BATCH_SIZE": "10"},
        )
    warm = submit_many(runtime, TENANT, [request("spy", {})])
    workers.wait_for(lambda: status_counts(fault_db) == {"COMPLETED": 1}, timeout=30, message="the drainers to start")

    todo: queue.PriorityQueue[tuple[float, str | None]] = queue.PriorityQueue()
    answers: dict[str, tuple[Status, Status]] = {}  # id -> (status before the cancel, after it)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def canceller() -> None:
        while (item := todo.get())[1] is not None:
            due, tid = item
            time.sleep(max(due - time.monotonic(), 0))  # the cancel's moment, not a wait for work
            try:
                done = runtime.store.cancel(TENANT, tid, actor="test-cancel")
                assert done is not None
                with lock:
                    answers[tid] = (done.before, done.task.status)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=canceller, daemon=True) for _ in range(CANCELLERS)]
    for t in threads:
        t.start()
    ids: list[str] = []
    retrying: set[str] = set()
    try:
        for _ in range(CHUNKS):
            # Mostly short tasks; every fifth fails once, so some cancels meet a task waiting
            # for its retry (PENDING) and others one that is running.
            reqs = [request("spy", {"seconds": 0.05, "fail_times": 1 if i % 5 == 0 else 0}) for i in range(PER_CHUNK)]
            chunk = [s.task.id for s in submit_many(runtime, TENANT, reqs)]  # type: ignore[union-attr]
            retrying.update(tid for i, tid in enumerate(chunk) if i % 5 == 0)
            ids.extend(chunk)
            # Cancelled 0 to 200 ms after the submit: the cancels meet tasks waiting,
            # being claimed, running, waiting for a retry and finished.
            now = time.monotonic()
            for i, tid in enumerate(chunk):
                todo.put((now + (i % 6) * 0.04, tid))
            time.sleep(0.05)  # pacing: about what the drainers take, so they are never far behind
    finally:
        for _ in threads:
            todo.put((float("inf"), None))
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert len(answers) == len(ids)
    workers.wait_for(
        lambda: set(status_counts(fault_db)) <= FINAL_STATES,
        timeout=60,
        message="every task to reach a final state",
    )

    everything = [*ids, warm[0].task.id]  # type: ignore[union-attr]
    stories = task_stories(fault_db, everything)
    assert story_problems(stories) == []
    executions = read_spy_log(spy_log)
    ran: Counter[str] = Counter()
    for (tid, _attempt), n in executions.items():
        ran[tid] += n
    outcomes: Counter[str] = Counter()
    for tid in ids:
        s = stories[tid]
        before, after = answers[tid]
        # Whatever the cancel said, the executor ran at most once per attempt, and once
        # for every attempt unless a cancel request stopped that attempt before it started.
        assert all(executions[(tid, a)] <= 1 for a in range(1, s["attempts"] + 1)), (tid, executions)
        stopped_unstarted = s["status"] == "CANCELLED" and s["events"][-1]["from"] == "PROCESSING"
        assert ran[tid] == s["attempts"] or (stopped_unstarted and ran[tid] == s["attempts"] - 1), (tid, s)
        if after is Status.CANCELLED and before in (Status.QUEUED, Status.PENDING):
            outcomes[f"cancelled-from-{before.value}"] += 1
            assert s["status"] == "CANCELLED"
            cancel_event = s["events"][-1]
            assert (cancel_event["from"], cancel_event["actor"]) == (before.value, "test-cancel")
            # Nothing ran after the cancel: the attempts (PROCESSING events, executions) are
            # those made before it.  Cancelled before its first attempt, a task never ran.
            made = cancel_event["attempt"]
            assert s["attempts"] == made == ran[tid], (tid, s, ran[tid])
            assert sum(1 for e in s["events"] if e["to"] == "PROCESSING") == made
            if made == 0:
                outcomes["never-ran"] += 1
            else:
                assert tid in retrying, s  # only a task that failed once waits again after running
        elif before is Status.PROCESSING:
            outcomes["cancel-requested"] += 1
            assert s["status"] in ("COMPLETED", "CANCELLED", "FAILED")
            assert s["attempts"] >= 1
        else:
            assert before.is_final and after is before, (before, after)
            outcomes["already-final"] += 1
    # Both sides of the race happened (typically a few hundred of each).
    assert outcomes["never-ran"] > 0 and outcomes["cancel-requested"] > 0, outcomes
