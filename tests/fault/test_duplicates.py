"""Every id is in Redis more than once (ready and delayed) while drainers run.

The drainers run the ``spy`` executor (tests/fault/workers.py), which appends each
execution to a file before anything else: an execution count that does not
depend on what the database says.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from chalicelib.container import Container
from chalicelib.core.model import Priority, QueueEntry
from chalicelib.services.submit import submit_many
from tests.fault.conftest import TENANT, queue_is_empty
from tests.fault.workers import SPY_LOG_ENV, Workers, read_spy_log
from tests.helpers import request, status_counts, story_problems, task_stories

CHUNKS, PER_CHUNK = 8, 50


def _push_duplicates(rt: Container, ids: list[str]) -> None:
    """Each id into ready and into delayed (due now), as a racing producer would."""
    now_ms = time.time() * 1000
    rt.queue.push([QueueEntry.ready(tid, TENANT, Priority.NORMAL, now_ms, None) for tid in ids])
    rt.queue.push([QueueEntry.due_at(tid, TENANT, Priority.NORMAL, now_ms, None) for tid in ids])


def test_ids_in_redis_twice_run_once_per_attempt(
    runtime: Container, workers: Workers, fault_db: str, tmp_path: Path
) -> None:
    spy_log = tmp_path / "executions.log"
    workers.sweep()
    # Leases long enough that none expires here: an extra attempt could only come from a duplicate.
    for _ in range(2):
        workers.drain(spy=True, **{SPY_LOG_ENV: str(spy_log), "TASKLANE_LEASE_SECONDS": "5"})
    warm = [s.task.id for s in submit_many(runtime, TENANT, [request("spy", {})])]  # type: ignore[union-attr]
    workers.wait_for(lambda: status_counts(fault_db) == {"COMPLETED": 1}, timeout=30, message="the drainers to start")

    ids: list[str] = list(warm)
    lock = threading.Lock()
    stop = threading.Event()
    rounds_in_flight = 0

    def pusher() -> None:
        # Again and again, every id so far goes back into ready and delayed: while it
        # waits, while it is leased and running, while it waits for its retry, after it ended.
        nonlocal rounds_in_flight
        while not stop.is_set():
            with lock:
                snapshot = list(ids)
            live = sum(n for st, n in status_counts(fault_db).items() if st not in ("COMPLETED",))
            _push_duplicates(runtime, snapshot)
            if live:
                rounds_in_flight += 1
            stop.wait(0.05)

    thread = threading.Thread(target=pusher, daemon=True)
    thread.start()
    fails_once: set[str] = set()
    try:
        for _ in range(CHUNKS):
            # A quarter fail their first attempt, so duplicates also meet tasks waiting for a retry.
            reqs = [request("spy", {"seconds": 0.02, "fail_times": 1 if i % 4 == 0 else 0}) for i in range(PER_CHUNK)]
            chunk = [s.task.id for s in submit_many(runtime, TENANT, reqs)]  # type: ignore[union-attr]
            fails_once.update(tid for i, tid in enumerate(chunk) if i % 4 == 0)
            with lock:
                ids.extend(chunk)
            _push_duplicates(runtime, chunk)
        total = len(ids)
        workers.wait_for(
            lambda: status_counts(fault_db) == {"COMPLETED": total},
            timeout=60,
            message=f"{total} tasks to complete",
        )
    finally:
        stop.set()
        thread.join(timeout=10)
    assert rounds_in_flight >= 3, "the duplicates never met tasks in flight"
    _push_duplicates(runtime, ids)  # even after the end: nothing runs again
    workers.wait_for(
        lambda: queue_is_empty(runtime),
        timeout=15,
        message="the drainers to turn every duplicate away",
    )

    stories = task_stories(fault_db, ids)
    assert story_problems(stories) == []
    executions = read_spy_log(spy_log)
    for tid in ids:
        s = stories[tid]
        expected = 2 if tid in fails_once else 1
        assert s["attempts"] == expected, s["events"]
        assert s["result"] == {"attempt": expected}
        # One execution per attempt, and no execution of an attempt that was not claimed.
        assert {a: executions[(tid, a)] for a in range(1, expected + 1)} == dict.fromkeys(range(1, expected + 1), 1)
        assert sum(1 for e in s["events"] if e["to"] == "PROCESSING") == expected
        assert sum(1 for e in s["events"] if e["to"] == "COMPLETED") == 1
    assert sum(executions.values()) == len(ids) + len(fails_once)
