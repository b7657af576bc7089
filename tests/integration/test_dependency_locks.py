"""Row locks between finishes and submits of dependent tasks: no deadlock where the
order can be fixed, and a retry where PostgreSQL breaks one.

A finish whose tasks have followers settles them (``tasklane_settle_dependents``, a row
trigger per parent), locking each parent's WAITING children.  A submit with
``depends_on`` locks its parents in id order (``lock_parents``).  Before migration 0045
the finish locked the children parent by parent, and a failure's cascade level by
level, so a submit naming two of them in the other order deadlocked with it;
PostgreSQL aborted one, and the submit's caller got a 503.  Now the finish locks every
WAITING task it may settle in id order first, in the order the submit and a cancel use,
and a statement or transaction that PostgreSQL still rolls back to end a deadlock is
run again (``retry_conflicts``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import pytest

from chalicelib.adapters.postgres import errors as pg_errors
from chalicelib.container import Container
from chalicelib.core.errors import StoreConflict
from chalicelib.core.model import Outcome, Status
from chalicelib.core.requests import parse_workflow
from chalicelib.services import lifecycle
from chalicelib.services.submit import submit, submit_workflow
from tests.helpers import query, request, wait_for

TENANT = "dep-locks"
A = TypeVar("A")
B = TypeVar("B")


def _ids(rt: Container, n: int, **kw: Any) -> list[str]:
    return sorted(submit(rt, TENANT, request(**kw)).task.id for _ in range(n))


def _waiting(database_url: str) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    return int(query(database_url, sql)[0][0])


def _blocked(database_url: str, n: int, what: str) -> None:
    wait_for(lambda: _waiting(database_url) >= n, timeout=5, interval=0.01, message=what)


@contextmanager
def _holding(database_url: str, task_id: str) -> Iterator[psycopg.Connection[Any]]:
    """A transaction holding ``task_id``'s row lock until the block ends (rolled back)."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        try:
            yield conn
        finally:
            conn.rollback()


def _race(database_url: str, held: str, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """``first``, then ``second``, each on a thread of its own, while a third transaction
    holds ``held``'s row lock until both wait for a lock; then both answers."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        with _holding(database_url, held):
            one = pool.submit(first)
            _blocked(database_url, 1, "the first never waited for the held row")
            two = pool.submit(second)
            _blocked(database_url, 2, "the second never waited")
        return one.result(timeout=10), two.result(timeout=10)


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadlock reaches the caller: what the lock order alone gives."""
    monkeypatch.setattr(pg_errors, "CONFLICT_ATTEMPTS", 1)


def test_a_finish_and_a_submit_naming_two_of_its_children_do_not_deadlock(
    database_url: str, rt: Container, no_retries: None
) -> None:
    """The finish of parents (a1 < a2) whose children are hi (of a1) and lo (of a2), and a
    submit that depends on lo and hi.  Parent by parent the finish would lock hi, then
    lo; the submit locks lo, then hi.  A third transaction holds hi until both wait."""
    a1, a2 = _ids(rt, 2)
    token = str(uuid.uuid4())
    assert {c.id for c in rt.store.claim([a1, a2], token, 30, actor="t")} == {a1, a2}
    first = submit(rt, TENANT, request(depends_on=(a1,))).task.id
    second = submit(rt, TENANT, request(depends_on=(a2,))).task.id
    lo, hi = sorted([first, second])
    parent_of = {first: a1, second: a2}
    if parent_of[hi] != a1:  # the first parent's child must be the higher id
        a1, a2 = a2, a1
    outcomes = [Outcome(a, token, Status.COMPLETED, result_json="null") for a in (a1, a2)]
    recorded, answer = _race(
        database_url,
        hi,
        lambda: rt.store.finish(outcomes, actor="t"),
        lambda: submit(rt, TENANT, request(depends_on=(lo, hi))),
    )
    assert {r.id for r in recorded} == {a1, a2}
    child = answer.task
    assert child.status is Status.WAITING  # on lo and hi, which the finish made QUEUED
    rows = query(database_url, "SELECT id::text, status FROM tasks WHERE id = ANY(%s::uuid[])", [lo, hi])
    assert dict(rows) == {lo: "QUEUED", hi: "QUEUED"}


def test_a_deadlocked_statement_is_run_again(database_url: str, rt: Container) -> None:
    """A statement PostgreSQL rolled back to end a deadlock is run again, and its answer
    is the caller's; with no attempts left the error says what happened (503)."""
    r1, r2 = _ids(rt, 2)
    rt.store._q["test_lock_both"] = "SELECT id::text FROM tasks WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE"
    runs = 0
    real = rt.store.connection

    @contextmanager
    def counted(*args: Any, **kw: Any) -> Iterator[Any]:
        nonlocal runs
        runs += 1
        with real(*args, **kw) as conn:
            yield conn

    rt.store.connection = counted  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, psycopg.connect(database_url) as other:
            other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (r2,))
            locking = pool.submit(lambda: rt.store._all("test_lock_both", {"ids": [r1, r2]}))
            _blocked(database_url, 1, "the statement never waited for r2")
            # Waits for r1, which the statement holds: a cycle; the statement waited first,
            # so its deadlock check runs first and PostgreSQL aborts it, not this one.
            other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (r1,))
            other.commit()
            rows = locking.result(timeout=10)
    finally:
        del rt.store.connection
        del rt.store._q["test_lock_both"]
    assert [r["id"] for r in rows] == [r1, r2]
    assert runs == 2


def test_a_conflict_past_its_attempts_is_a_503_that_says_so() -> None:
    error = pg_errors.translated(psycopg.errors.DeadlockDetected("deadlock detected\nDETAIL: ..."))
    assert isinstance(error, StoreConflict) and error.status == 503 and error.code == "database_conflict"
    assert error.headers == {"Retry-After": "1"}
    assert "deadlock detected" in str(error) and "unreachable" not in str(error)


def test_a_finish_and_a_submit_naming_one_of_its_tasks_and_a_waiting_child_do_not_deadlock(
    database_url: str, rt: Container, no_retries: None
) -> None:
    """The finish of a1 and a2 locks them, then a1's WAITING child c; a submit depending
    on c and a2 (c < a2) locked c, then a2, until lock_parents took the tasks that are
    not WAITING first, as the finish does.  A third transaction holds a2 until both wait."""
    a1 = submit(rt, TENANT, request()).task.id
    c = submit(rt, TENANT, request(depends_on=(a1,))).task.id
    a2 = submit(rt, TENANT, request()).task.id
    assert a1 < c < a2  # time-ordered ids
    token = str(uuid.uuid4())
    assert {x.id for x in rt.store.claim([a1, a2], token, 30, actor="t")} == {a1, a2}
    outcomes = [Outcome(a, token, Status.COMPLETED, result_json="null") for a in (a1, a2)]
    recorded, answer = _race(
        database_url,
        a2,
        lambda: rt.store.finish(outcomes, actor="t"),
        lambda: submit(rt, TENANT, request(depends_on=(c, a2))),
    )
    assert {r.id for r in recorded} == {a1, a2}
    child = answer.task
    assert child.status is Status.WAITING  # on c, which a1's end made QUEUED; a2 is COMPLETED


def _workflow_with(rt: Container, steps: dict[str, Any], ordered: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """A workflow whose step ids (random within a millisecond) satisfy ``ordered``."""
    for _ in range(200):
        wf = submit_workflow(rt, TENANT, parse_workflow({"steps": steps}, rt.settings, rt.registry))
        ids = {name: task.id for name, task in wf.steps.items()}
        if ordered(ids):
            return ids
    raise AssertionError("no workflow with the wanted id order in 200 tries")


def test_a_failing_finish_and_a_submit_naming_a_grandchild_below_its_child_do_not_deadlock(
    database_url: str, rt: Container, no_retries: None
) -> None:
    """p fails: its child c is cancelled, then c's child g (g < c).  Locked level by level
    the finish held c and wanted g, while a submit depending on g and c held g and wanted
    c.  The finish now locks g and c together, in id order (0045)."""
    steps = {"p": {"name": "noop"}, "c": {"name": "noop", "after": ["p"]}, "g": {"name": "noop", "after": ["c"]}}
    ids = _workflow_with(rt, steps, lambda i: i["g"] < i["c"])
    token = str(uuid.uuid4())
    assert [x.id for x in rt.store.claim([ids["p"]], token, 30, actor="t")] == [ids["p"]]
    failed = [Outcome(ids["p"], token, Status.FAILED, error="no", error_type="Boom")]
    recorded, answer = _race(
        database_url,
        ids["c"],
        lambda: rt.store.finish(failed, actor="t"),
        lambda: submit(rt, TENANT, request(depends_on=(ids["g"], ids["c"]))),
    )
    assert [r.id for r in recorded] == [ids["p"]]
    child = answer.task
    assert child.status is Status.CANCELLED  # its parents were cancelled by p's failure first
    rows = query(database_url, "SELECT status FROM tasks WHERE id = ANY(%s::uuid[])", [ids["c"], ids["g"]])
    assert [r[0] for r in rows] == ["CANCELLED", "CANCELLED"]


def test_a_cancel_and_a_finish_locking_its_children_do_not_deadlock(
    database_url: str, rt: Container, no_retries: None
) -> None:
    """p's children are t and d (d < t), and d also waits for t.  The finish of p locks
    d, then t; a cancel of t locked t, then (cancelling it) its child d.  It now locks t's
    cascade in the same order first.  A third transaction holds d until both wait."""
    steps = {"p": {"name": "noop"}, "t": {"name": "noop", "after": ["p"]}, "d": {"name": "noop", "after": ["p", "t"]}}
    ids = _workflow_with(rt, steps, lambda i: i["d"] < i["t"])
    token = str(uuid.uuid4())
    assert [x.id for x in rt.store.claim([ids["p"]], token, 30, actor="t")] == [ids["p"]]
    done = [Outcome(ids["p"], token, Status.COMPLETED, result_json="null")]
    recorded, _ = _race(
        database_url,
        ids["d"],
        lambda: rt.store.finish(done, actor="t"),
        lambda: lifecycle.cancel(rt, TENANT, ids["t"]),
    )
    assert [r.id for r in recorded] == [ids["p"]]
    rows = query(database_url, "SELECT id::text, status FROM tasks WHERE id = ANY(%s::uuid[])", [ids["t"], ids["d"]])
    assert dict(rows) == {ids["t"]: "CANCELLED", ids["d"]: "CANCELLED"}
