"""A dead letter happens once per run: drainers stall past their leases while sweepers
rescue them, every task always fails, and the dead letters are redriven twice.

Per task and redrive cycle there must be exactly one FAILED transition in
``task_events``, one completion-webhook task (one delivery id at the receiver), and
one "dead-lettered" WARNING in the workers' logs, which names the cycle (``redrives``)
so that a legitimately repeated dead letter is not mistaken for a duplicate.  A stalled
drainer's late outcome, turned away by fencing, must log no dead letter.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from chalicelib.container import Container
from chalicelib.core.model import WEBHOOK_TASK
from chalicelib.services.lifecycle import RedriveSelection, redrive_many
from chalicelib.services.submit import submit_many
from tests.fault.conftest import TENANT, queue_is_empty
from tests.fault.workers import SPY_LOG_ENV, Worker, Workers
from tests.helpers import metric_count, query, receiving, request, story_problems, task_stories

TASKS = 36
CYCLES = 3  # the first run and two redrives
DEAD_LETTER_MESSAGES = ("task dead-lettered", "task dead-lettered after its lease expired")
LEASE_LOST_MESSAGE = "lease lost: outcomes not recorded (another attempt owns these tasks)"
# Longer than the lease (1 s), so a stalled drainer's leases expire mid-attempt and
# the sweepers rescue its tasks before it wakes up and presents its outcomes.
STALL_SECONDS = 1.8


def _log_lines(workers: Workers) -> list[dict[str, Any]]:
    lines = []
    for w in workers.started:
        for raw in w.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
    return lines


def _all_failed(database_url: str, ids: list[str]) -> bool:
    rows = query(database_url, "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'FAILED'", ids)
    return rows[0][0] == len(ids)


def _hooks_settled(database_url: str) -> bool:
    rows = query(database_url, "SELECT count(*) FROM tasks WHERE name = %s AND status <> 'COMPLETED'", WEBHOOK_TASK)
    return rows[0][0] == 0


def _stall_drainers(drainers: list[Worker], stop: threading.Event, stalls: list[int]) -> None:
    """One drainer at a time frozen (SIGSTOP) past its leases, then let go."""
    rng = random.Random(7)
    while not stop.is_set():
        victim = rng.choice(drainers)
        victim.signal(signal.SIGSTOP)
        try:
            stop.wait(STALL_SECONDS)
        finally:
            victim.signal(signal.SIGCONT)
        stalls[0] += 1
        stop.wait(0.3)


def test_each_dead_letter_is_recorded_logged_and_hooked_once(
    runtime: Container, workers: Workers, fault_db: str, tmp_path: Path
) -> None:
    fast = {"TASKLANE_LEASE_SECONDS": "1", "PYTHONUNBUFFERED": "1", SPY_LOG_ENV: str(tmp_path / "spy.log")}
    drainers = [workers.drain(spy=True, **fast) for _ in range(3)]
    for _ in range(2):
        workers.sweep(TASKLANE_SWEEP_INTERVAL_SECONDS="0.2", PYTHONUNBUFFERED="1")

    with receiving() as receiver:
        # Always failing, slow attempts (0.2-0.8 s, beside a 1 s lease), 0-2 retries.
        reqs = [
            request(
                "spy",
                {"seconds": 0.2 + 0.2 * (i % 4), "fail_times": 99},
                max_retries=i % 3,
                callback_url=receiver.url,
            )
            for i in range(TASKS)
        ]
        stop = threading.Event()
        stalls = [0]
        staller = threading.Thread(target=_stall_drainers, args=(drainers, stop, stalls), daemon=True)
        staller.start()
        try:
            ids = [s.task.id for s in submit_many(runtime, TENANT, reqs)]  # type: ignore[union-attr]
            for cycle in range(CYCLES):
                if cycle:
                    redriven = redrive_many(runtime, TENANT, RedriveSelection(ids=ids), actor="test")
                    assert len(redriven) == TASKS
                workers.wait_for(
                    lambda: _all_failed(fault_db, ids), timeout=120, message=f"cycle {cycle}: every task dead-lettered"
                )
        finally:
            stop.set()
            staller.join(timeout=10)
        workers.wait_for(lambda: _hooks_settled(fault_db), timeout=60, message="every webhook delivered")
        workers.wait_for(lambda: queue_is_empty(runtime), timeout=30, message="Redis to hold no id")
        deliveries = list(receiver.calls)
    for w in workers.started:
        w.terminate()

    stories = task_stories(fault_db, ids)
    assert story_problems(stories) == []
    dead_events: Counter[str] = Counter()
    rescued = 0
    for tid in ids:
        events = stories[tid]["events"]
        dead_events[tid] = sum(1 for e in events if e["to"] == "FAILED")
        assert sum(1 for e in events if (e["from"], e["to"]) == ("FAILED", "QUEUED")) == CYCLES - 1
        rescued += sum(1 for e in events if e["error_type"] == "LeaseLostError")
    assert dead_events == dict.fromkeys(ids, CYCLES)
    assert metric_count(fault_db, "dead_lettered") == TASKS * CYCLES

    # One webhook task per dead letter, each delivered (at least once) under its own id.
    hooks = query(
        fault_db,
        "SELECT id::text, payload->'task'->>'id' FROM tasks WHERE name = %s",
        WEBHOOK_TASK,
    )
    assert Counter(parent for _, parent in hooks) == dict.fromkeys(ids, CYCLES)
    delivered = {(json.loads(c["body"])["task"]["id"], c["headers"]["Tasklane-Delivery"]) for c in deliveries}
    assert delivered == {(parent, hook_id) for hook_id, parent in hooks}

    logs = _log_lines(workers)
    # The race happened: leases ran out mid-attempt, sweepers rescued, and stalled
    # drainers came back with outcomes that fencing turned away.
    lost = sum(line.get("count", 0) for line in logs if line.get("message") == LEASE_LOST_MESSAGE)
    assert stalls[0] >= 3 and rescued > 0 and lost > 0, (stalls, rescued, lost)
    logged = [line for line in logs if line.get("message") in DEAD_LETTER_MESSAGES]
    assert Counter(line["task_id"] for line in logged) == dead_events, "dead-letter log lines != dead letters"
    # Each line says which run it ended: a redriven task's dead letter is no duplicate.
    assert Counter((line["task_id"], line.get("redrives")) for line in logged) == {
        (tid, n): 1 for tid in ids for n in range(CYCLES)
    }
