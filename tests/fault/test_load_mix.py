"""Many workers, many tasks, some failing: every accepted task ends exactly once, in
the right final state, after the right number of attempts and backoffs."""

from __future__ import annotations

from datetime import timedelta

from chalicelib.container import Container
from chalicelib.services.submit import submit_many
from tests.fault.conftest import TENANT
from tests.fault.workers import Workers
from tests.helpers import FINAL_STATES, request, status_counts, story_problems, task_stories

TOTAL = 5000
BASE, CAP, JITTER = 0.2, 1.0, 0.25  # retry backoff knobs given to the workers
EPSILON = timedelta(milliseconds=2)  # timestamps are microseconds; make_interval rounds


def _kind(i: int) -> str:
    if i % 100 == 0:
        return "permanent"  # 1 %
    if i % 10 == 5:
        return "transient"  # 10 %
    return "ok"


def test_4_drainers_2_sweepers_5000_tasks_with_failures(runtime: Container, workers: Workers, fault_db: str) -> None:
    knobs = {
        "TASKLANE_RETRY_BASE_SECONDS": str(BASE),
        "TASKLANE_RETRY_MAX_SECONDS": str(CAP),
        "TASKLANE_RETRY_JITTER": str(JITTER),
        "TASKLANE_SWEEP_INTERVAL_SECONDS": "0.2",
        # Nobody dies here: leases long enough that starved CPUs cannot make one expire.
        "TASKLANE_LEASE_SECONDS": "10",
    }
    for _ in range(2):
        workers.sweep(**knobs)
    for _ in range(4):
        workers.drain(**knobs)
    bodies = {
        "ok": lambda i: request("noop", {"i": i}),
        "transient": lambda i: request("fail", {"times": 1}),
        "permanent": lambda i: request("fail", {"permanent": True}),
    }
    kinds: dict[str, str] = {}
    for start in range(0, TOTAL, 500):
        indices = range(start, start + 500)
        results = submit_many(runtime, TENANT, [bodies[_kind(i)](i) for i in indices])
        for i, r in zip(indices, results, strict=True):
            kinds[r.task.id] = _kind(i)  # type: ignore[union-attr]
    assert len(kinds) == TOTAL

    permanent = {tid for tid, k in kinds.items() if k == "permanent"}
    transient = {tid for tid, k in kinds.items() if k == "transient"}
    assert (len(permanent), len(transient)) == (TOTAL // 100, TOTAL // 10)
    workers.wait_for(
        lambda: set(status_counts(fault_db)) <= FINAL_STATES,
        timeout=120,
        message=f"all {TOTAL} tasks to reach a final state",
    )
    assert status_counts(fault_db) == {"COMPLETED": TOTAL - len(permanent), "FAILED": len(permanent)}

    stories = task_stories(fault_db)
    assert len(stories) == TOTAL
    assert story_problems(stories) == []  # exactly one final event each, attempts = runs

    # The dead-letter queue holds exactly the permanent failures.
    dead: list[str] = []
    after = None
    while True:
        page = runtime.store.list_dead_letters(TENANT, name=None, limit=100, after=after)
        dead.extend(t.id for t in page)
        if len(page) < 100:
            break
        last = page[-1]
        assert last.finished_at is not None
        after = (last.finished_at, last.id)
    assert len(dead) == len(set(dead)) and set(dead) == permanent

    nominal = timedelta(seconds=min(CAP, BASE))  # the backoff after attempt 1
    floor = nominal * (1 - JITTER)
    for tid, s in stories.items():
        kind = kinds[tid]
        if kind == "ok":
            assert s["attempts"] == 1 and s["status"] == "COMPLETED", s
        elif kind == "permanent":
            assert s["attempts"] == 1 and s["last_error_type"] == "PermanentError", s
        else:
            assert s["status"] == "COMPLETED" and s["attempts"] == 2, s
            assert s["result"] == {"succeeded_on_attempt": 2}
            events = s["events"]
            failure = next(e for e in events if e["to"] == "PENDING")
            retry = next(e for e in events if e["to"] == "PROCESSING" and e["attempt"] == 2)
            assert (failure["attempt"], failure["error_type"]) == (1, "RetryableError")
            # The retry was scheduled a jittered backoff after the failure (same statement,
            # same database clock) and did not start before it was due.
            delay = s["run_at"] - failure["at"]
            assert floor - EPSILON <= delay <= nominal + EPSILON, (delay, events)
            assert retry["at"] >= s["run_at"], events
            assert retry["at"] - failure["at"] >= floor - EPSILON, events
