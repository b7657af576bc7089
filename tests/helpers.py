"""Test helpers: waiting with deadlines, building requests, counting states, a
webhook receiver, a local API server in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from chalicelib.adapters.postgres.early_row import SUBMIT_LOCK_CLASS
from chalicelib.adapters.postgres.store import Store
from chalicelib.container import Container
from chalicelib.core.model import Claimed, NewTask, Priority, Task
from chalicelib.core.requests import TaskRequest
from chalicelib.services.apikeys import ensure_key
from chalicelib.services.drain import Drainer
from chalicelib.services.sweep import sweep
from tools.devstack import services as devservices

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.02, message: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)
        last = condition()
    return last


def terminate_backend(pid: int, database_url: str) -> None:
    """End the PostgreSQL backend ``pid`` (a connection of ours) and wait until it is gone."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None,
            timeout=10,
        )


def request(name: str = "noop", payload: dict[str, Any] | None = None, **kw: Any) -> TaskRequest:
    return TaskRequest(
        name=name,
        payload=payload if payload is not None else {},
        priority=Priority(kw.pop("priority", "normal")),
        run_at=kw.pop("run_at", None),
        delay_seconds=kw.pop("delay_seconds", None),
        max_retries=kw.pop("max_retries", 3),
        timeout_seconds=kw.pop("timeout_seconds", 30),
        idempotency_key=kw.pop("idempotency_key", None),
        callback_url=kw.pop("callback_url", None),
        unique_key=kw.pop("unique_key", None),
        unique_for_seconds=kw.pop("unique_for_seconds", None),
        expires_at=kw.pop("expires_at", None),
        depends_on=tuple(kw.pop("depends_on", ())),
        run_anyway=kw.pop("run_anyway", False),
    )


def drain_once(rt: Container, seconds: float = 2.0, drainer: Drainer | None = None) -> dict[str, Any]:
    """Run one drain invocation with a short budget (exits early when idle)."""
    d = drainer or Drainer(rt, name="test-drain")
    deadline = time.monotonic() + seconds
    try:
        return d.run(lambda: deadline - time.monotonic(), idle_exit_seconds=0.2).as_dict()
    finally:
        if drainer is None:
            d.close()


def start_drainers(
    rt: Container, drainers: int, *, seconds: float = 15.0, idle_exit_seconds: float = 0.5
) -> list[threading.Thread]:
    """``drainers`` drain invocations at once, on started threads, each until idle (or
    its budget is spent)."""

    def drain() -> None:
        d = Drainer(rt)
        deadline = time.monotonic() + seconds
        try:
            d.run(lambda: deadline - time.monotonic(), idle_exit_seconds=idle_exit_seconds)
        finally:
            d.close()

    threads = [threading.Thread(target=drain) for _ in range(drainers)]
    for t in threads:
        t.start()
    return threads


def drain_in_threads(rt: Container, drainers: int, *, seconds: float = 15.0) -> None:
    """``start_drainers``, returning when all have ended."""
    for t in start_drainers(rt, drainers, seconds=seconds):
        t.join()


def _until(deadline: float) -> Callable[[], float]:
    """A ``Drainer.run`` clock for a budget ending at ``deadline`` (monotonic), bound
    now: the callers move their deadline on in a loop."""
    return lambda: deadline - time.monotonic()


def drain_and_sweep_until(rt: Container, done: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Alternate drain and sweep (as the scheduler would) until ``done()``."""
    drainer = Drainer(rt, name="test-drain")
    try:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("timed out draining")
            budget = time.monotonic() + 0.5
            drainer.run(_until(budget), idle_exit_seconds=0.05)
            sweep(rt)
    finally:
        drainer.close()


@contextmanager
def running_workers(rt: Container, drainers: int, sweepers: int = 1) -> Iterator[list[BaseException]]:
    """``drainers`` drain loops and ``sweepers`` sweep loops on threads until the block
    ends; the list collects what any of them raised."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def drain(i: int) -> None:
        d = Drainer(rt, name=f"race-{i}")
        try:
            while not stop.is_set():
                budget = time.monotonic() + 0.3
                d.run(_until(budget), idle_exit_seconds=0.05)
        except BaseException as exc:
            errors.append(exc)
        finally:
            d.close()

    def sweeper(i: int) -> None:
        try:
            while not stop.wait(0.05):
                sweep(rt, actor=f"sweep-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(drainers)]
    threads += [threading.Thread(target=sweeper, args=(i,)) for i in range(sweepers)]
    for t in threads:
        t.start()
    try:
        yield errors
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def lease_lapsed(database_url: str, task_id: str) -> bool:
    """Whether the task's lease has expired on the database's clock (the one the sweeper's
    rescue reads), so a test waits for exactly that rather than sleeping past it."""
    rows = query(database_url, "SELECT lease_expires_at < now() FROM tasks WHERE id = %s", task_id)
    return bool(rows and rows[0][0])


def peak_running(database_url: str, where: str, *params: Any) -> int:
    """The most tasks matching ``where`` (a fixed SQL condition on ``tasks``, values bound
    from ``params``) that were PROCESSING at one instant, from their final rows.

    A task's ``started_at``..``finished_at`` lies inside the time it held its slot (the
    claim takes the Redis slot before the PostgreSQL row is stamped; the row is
    finished before the ack gives the slot back), so this never overstates a limit's
    peak, and unlike sampling the table while the workers run it cannot miss one:
    how fast the test polls or how loaded the machine is does not matter."""
    rows = query(database_url, f"SELECT started_at, finished_at FROM tasks WHERE {where}", *params)
    # Ends sort before starts at the same instant: touching intervals do not overlap.
    edges = sorted([(start, 1) for start, _ in rows] + [(end, -1) for _, end in rows], key=lambda e: (e[0], e[1]))
    peak = running = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def claim_waiting_on_a_submit(database_url: str, *, timeout: float = 5.0) -> None:
    """Until some backend waits for a submit's key, ``(7301955, uuid_hash(id))`` (a claim
    that found no row for an id has reached its wait: migration 0042)."""

    def waiting() -> bool:
        rows = query(
            database_url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = %s AND objsubid = 2",
            SUBMIT_LOCK_CLASS,
        )
        return bool(rows[0][0])

    wait_for(waiting, timeout=timeout, interval=0.01, message="no claim waited for the submit's key")


@contextmanager
def tasks_trigger(database_url: str, name: str, tenant: str, body: str, kind: str, timing: str = "") -> Iterator[None]:
    """A row trigger on tasks (``kind``: "TRIGGER {name} BEFORE INSERT", ...) that runs
    ``body`` for rows of ``tenant``; dropped afterwards."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.tenant = '{tenant}' THEN {body}; END IF; RETURN NEW; END $$;
                CREATE {kind.format(name=name)} ON tasks {timing} FOR EACH ROW EXECUTE FUNCTION {name}()"""
        )
    try:
        yield
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER {name} ON tasks; DROP FUNCTION {name}()")


@dataclass
class SlowInsertClaim:
    task: Task  # what the submit returned
    claimed: list[Claimed]  # what the claim sent at the hand-off returned
    handed_early_by: float  # seconds between the hand-off and the submit's return
    visible_at_handover: bool  # whether another session saw the row when the claim waited


def claim_during_a_slow_insert(database_url: str, submitter: Store, claimer: Store, tenant: str) -> SlowInsertClaim:
    """A single submit whose INSERT a BEFORE INSERT trigger holds 0.5 s, and a claim of its
    id sent (on ``claimer``, from another thread) as soon as the submit hands the task
    over; returns once the claim has answered, the claim having first reached its wait on
    the id's key (``claim_waiting_on_a_submit``)."""
    new = NewTask(str(uuid.uuid4()), tenant, "noop", "normal", '{"n": 1}', 3, 30)
    slow, name = "PERFORM pg_sleep(0.5)", f"slow_insert_{uuid.uuid4().hex[:8]}"
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        tasks_trigger(database_url, name, tenant, slow, "TRIGGER {name} BEFORE INSERT"),
    ):
        claims: list[Future[list[Claimed]]] = []
        seen: dict[str, float | bool] = {}

        def inserted(tasks: list[Task]) -> None:
            seen["handed"] = time.monotonic()
            claims.append(pool.submit(claimer.claim, [new.id], str(uuid.uuid4()), 30, actor="t"))
            claim_waiting_on_a_submit(database_url)
            seen["visible"] = bool(query(database_url, "SELECT count(*) FROM tasks WHERE id = %s", new.id)[0][0])

        [task] = submitter.insert_tasks([new], actor="t", inserted=inserted)
        returned = time.monotonic()
        claimed = claims[0].result(timeout=5)
    return SlowInsertClaim(task, claimed, returned - float(seen["handed"]), bool(seen["visible"]))


def metric_count(database_url: str, metric: str) -> int:
    """A counter of the metrics trigger, summed over task names (folded or not)."""
    sql = (
        "SELECT coalesce(sum(n), 0) FROM (SELECT n FROM task_metric_deltas WHERE metric = %s"
        " UNION ALL SELECT n FROM task_metric_totals WHERE metric = %s) m"
    )
    return int(query(database_url, sql, metric, metric)[0][0])


def status_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {status: count for status, count in rows}


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


# --- task stories: each task's row with its audit trail, and what contradicts it -------

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


def task_stories(database_url: str, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{id: {"status", "attempts", "result", "run_at", "last_error_type", "events": [...]}}``
    for ``ids`` (default: every task), events in the order they were written."""
    with psycopg.connect(database_url) as conn:
        if ids is None:
            rows = conn.execute(
                "SELECT id::text, status, attempts, result, run_at, last_error_type FROM tasks"
            ).fetchall()
            evs = conn.execute(
                "SELECT task_id::text, id, at, from_status, to_status, attempt, actor, error_type "
                "FROM task_trail ORDER BY task_id, id"
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT id::text, status, attempts, result, run_at, last_error_type FROM tasks "
                "WHERE id = ANY(%s::uuid[])",
                (ids,),
            ).fetchall()
            evs = conn.execute(
                "SELECT task_id::text, id, at, from_status, to_status, attempt, actor, error_type "
                "FROM task_trail WHERE task_id = ANY(%s::uuid[]) ORDER BY task_id, id",
                (ids,),
            ).fetchall()
    stories: dict[str, dict[str, Any]] = {
        r[0]: {
            "status": r[1],
            "attempts": r[2],
            "result": r[3],
            "run_at": r[4],
            "last_error_type": r[5],
            "events": [],
        }
        for r in rows
    }
    for task_id, _id, at, frm, to, attempt, actor, error_type in evs:
        if task_id in stories:
            stories[task_id]["events"].append(
                {"at": at, "from": frm, "to": to, "attempt": attempt, "actor": actor, "error_type": error_type}
            )
    return stories


def in_forked_child(body: Callable[[], str]) -> str:
    """What ``body`` returns, run in a forked child that never returns into pytest
    (an exception in it gives an empty answer)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, body().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        answer = f.read()
    os.waitpid(pid, 0)
    return answer


def story_problems(stories: dict[str, dict[str, Any]]) -> list[str]:
    """Everything in ``stories`` that contradicts the lifecycle's invariants:

    - the events chain (each starts where the previous one ended, the first from
      nothing) and the last one ends in the task's status;
    - a final task has exactly one final event per run (one, plus one per redrive);
    - the PROCESSING events since the last redrive number 1..attempts (a snoozed
      one gives its number back), and every outcome is recorded under the attempt
      that was running.
    """
    from itertools import pairwise

    problems: list[str] = []
    for task_id, s in stories.items():
        events = s["events"]
        if not events:
            problems.append(f"{task_id}: no events")
            continue
        if events[0]["from"] is not None:
            problems.append(f"{task_id}: first event starts from {events[0]['from']}")
        for prev, ev in pairwise(events):
            if ev["from"] != prev["to"]:
                problems.append(f"{task_id}: event {prev['to']} is followed by one from {ev['from']}")
        if events[-1]["to"] != s["status"]:
            problems.append(f"{task_id}: status {s['status']} but the last event says {events[-1]['to']}")
        redrives = sum(1 for e in events if (e["from"], e["to"]) == ("FAILED", "QUEUED"))
        finals = sum(1 for e in events if e["to"] in FINAL_STATES)
        expected_finals = redrives + (1 if s["status"] in FINAL_STATES else 0)
        if finals != expected_finals:
            problems.append(f"{task_id}: {finals} final events, expected {expected_finals}")
        since = max((i for i, e in enumerate(events) if (e["from"], e["to"]) == ("FAILED", "QUEUED")), default=-1)
        # A snoozed attempt was given back: the next PROCESSING event has its number again.
        later = events[since + 1 :]
        runs = [
            e["attempt"]
            for i, e in enumerate(later)
            if e["to"] == "PROCESSING" and not (i + 1 < len(later) and later[i + 1]["error_type"] == "Snoozed")
        ]
        if runs != list(range(1, s["attempts"] + 1)):
            problems.append(f"{task_id}: attempts={s['attempts']} but PROCESSING events for attempts {runs}")
        running: int | None = None
        for e in events:
            if e["to"] == "PROCESSING":
                running = e["attempt"]
            elif e["from"] == "PROCESSING" and e["attempt"] != running:
                problems.append(f"{task_id}: outcome recorded for attempt {e['attempt']} while {running} ran")
    return problems


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every call and answers with
    scripted statuses (204 once the script is spent)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: list[int] = []
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.calls.append({"headers": dict(self.headers), "body": body})
                    status = receiver.script.pop(0) if receiver.script else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A ``Receiver`` for the duration of the block (a fixture's body)."""
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


ROOT = Path(__file__).resolve().parents[1]


def new_api_key(database_url: str, prefix: str) -> str:
    """A new API key (``prefix`` + random) with a rate limit no test reaches."""
    key = prefix + uuid.uuid4().hex
    store = Store(database_url)
    try:
        ensure_key(store, key, rate_limit_per_minute=1_000_000)
    finally:
        store.close()
    return key


def start_local_api(
    database_url: str, redis_url: str, redis_prefix: str, log: Path, *args: str
) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m tools.devstack api`` (plus ``args``) on a free port, its output in
    ``log``; the shell's environment without its TASKLANE_ variables, logging at WARNING.
    The caller stops it (and any process it forked)."""
    port = devservices.find_free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKLANE_")},
        "TASKLANE_DATABASE_URL": database_url,
        "TASKLANE_REDIS_URL": redis_url,
        "TASKLANE_REDIS_PREFIX": redis_prefix,
        "TASKLANE_LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.devstack", "api", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, port
