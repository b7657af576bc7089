"""SIGTERM to a local drain worker (what ``make run``'s Ctrl-C and the supervisor's
shutdown send): the task it is running finishes and is recorded, nothing else is
claimed, and nothing is lost.  The proof is in PostgreSQL and Redis afterwards."""

from __future__ import annotations

import signal

from chalicelib.container import Container
from chalicelib.services.submit import submit, submit_many
from tests.fault.conftest import TENANT, queue_is_empty
from tests.fault.workers import Worker, Workers
from tests.helpers import query, request, story_problems, task_stories

SLEEP_SECONDS = 3.0
# The drainers here would run for ten minutes if SIGTERM did not stop them (their idle
# exit; the invocation budget is fifteen), so "it stopped" is an exit within a minute,
# however long a loaded machine takes to record, close its pools and leave Python.
NO_IDLE_EXIT = {"TASKLANE_DRAIN_IDLE_EXIT_SECONDS": "600"}
EXIT_DEADLINE_SECONDS = 60


def _row(database_url: str, task_id: str) -> tuple[str, int]:
    [(status, attempts)] = query(database_url, "SELECT status, attempts FROM tasks WHERE id = %s", task_id)
    return status, attempts


def _wait_exit(workers: Workers, drainer: Worker) -> None:
    workers.wait_for(
        lambda: drainer.proc.poll() is not None, timeout=EXIT_DEADLINE_SECONDS, message="the drainer to exit"
    )
    assert drainer.proc.returncode == 0, workers.describe()


def test_sigterm_mid_task_finishes_it_and_leaves_the_rest_queued(
    runtime: Container, workers: Workers, fault_db: str
) -> None:
    drainer = workers.drain(TASKLANE_DRAIN_BATCH_SIZE="1", **NO_IDLE_EXIT)
    running = submit(runtime, TENANT, request("sleep", {"seconds": SLEEP_SECONDS}, timeout_seconds=60)).task.id
    workers.wait_for(lambda: _row(fault_db, running)[0] == "PROCESSING", timeout=20, message="the task to start")
    waiting = [s.task.id for s in submit_many(runtime, TENANT, [request() for _ in range(5)])]  # type: ignore[union-attr]

    drainer.signal(signal.SIGTERM)
    assert _row(fault_db, running) == ("PROCESSING", 1), "the task ended before the signal: no test"
    # It waited for the running task, not for its idle exit or its invocation budget.
    _wait_exit(workers, drainer)

    # The running task finished under its own lease: one attempt, recorded by the
    # drainer that ran it (not rescued by a sweeper after a lost lease).
    stories = task_stories(fault_db, [running, *waiting])
    assert story_problems(stories) == []
    finished = stories[running]
    assert (finished["status"], finished["attempts"]) == ("COMPLETED", 1)
    assert finished["result"] == {"slept": SLEEP_SECONDS, "attempt": 1}
    assert [e["actor"] for e in finished["events"][1:]] == [drainer.actor, drainer.actor]
    # Nothing else was claimed after the signal; the rest waits, in PostgreSQL and in
    # Redis, with no lease left behind.
    assert {stories[t]["status"] for t in waiting} == {"QUEUED"}
    assert all(stories[t]["attempts"] == 0 for t in waiting)
    depths = runtime.queue.depths()
    assert depths == {"ready": 5, "delayed": 0, "leased": 0}, depths

    # A new drainer takes them from there: every task completes exactly once.
    workers.drain()
    workers.wait_for(
        lambda: query(fault_db, "SELECT count(*) FROM tasks WHERE status = 'COMPLETED'") == [(6,)],
        timeout=30,
        message="the queued tasks to run after the restart",
    )
    stories = task_stories(fault_db)
    assert story_problems(stories) == []
    assert {s["attempts"] for s in stories.values()} == {1}
    workers.wait_for(lambda: queue_is_empty(runtime), timeout=10, message="Redis to hold nothing")


def test_sigterm_while_idle_exits_at_once(runtime: Container, workers: Workers, fault_db: str) -> None:
    drainer = workers.drain(**NO_IDLE_EXIT)
    # Its loop is running (signal handlers installed) once it has run a task; then it
    # idles, blocked on Redis for a wake token.
    probe = submit(runtime, TENANT, request()).task.id
    workers.wait_for(lambda: _row(fault_db, probe)[0] == "COMPLETED", timeout=30, message="the drainer to run")
    drainer.signal(signal.SIGTERM)
    # At its next idle wait (0.1 s), not at its idle exit ten minutes away.
    _wait_exit(workers, drainer)
