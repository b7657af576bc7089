"""``insert_task_now`` with its commit in flight (``adapters/postgres/early_row``): the
task is handed to ``inserted`` once the id's advisory lock is held, while the INSERT and
its commit are on their way, and the lock is held until then; an INSERT or a commit that
fails after the hand-off fails the call; the callback's own error comes after the
commit; values libpq's text parameters cannot carry take the ordinary path; a session
that lost the prepared statements gets them again; the path without prepared
statements (a proxy) works the same."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import psycopg
import pytest

from chalicelib.adapters.postgres.direct import numbered
from chalicelib.adapters.postgres.early_row import SUBMIT_LOCK_CLASS
from chalicelib.adapters.postgres.store import Store
from chalicelib.core.errors import ConflictError, ValidationError
from chalicelib.core.model import NewTask, Status, Task
from tests.helpers import claim_during_a_slow_insert, tasks_trigger

TENANT = "early-tenant"


def _new(**fields: object) -> NewTask:
    base: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "tenant": TENANT,
        "name": "noop",
        "priority": "normal",
        "payload_json": '{"n": 1}',
        "max_retries": 3,
        "timeout_seconds": 30,
    }
    base.update(fields)
    return NewTask(**base)  # type: ignore[arg-type]


@pytest.fixture(params=[True, False], ids=["prepared", "unprepared"])
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[Store]:
    s = Store(database_url, max_size=1, prepare=request.param)
    yield s
    s.close()


def _visible(database_url: str, task_id: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM tasks WHERE id = %s", (task_id,)).fetchone() == (1,)


def _key_free(database_url: str, task_id: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_try_advisory_xact_lock_shared(%s, uuid_hash(%s::uuid))", (SUBMIT_LOCK_CLASS, task_id)
        ).fetchone()
        return bool(row and row[0])


@contextmanager
def _at_commit(database_url: str, name: str, tenant: str, body: str) -> Iterator[None]:
    """A deferred trigger that runs ``body`` at the commit of a row of ``tenant``."""
    with tasks_trigger(
        database_url, name, tenant, body, "CONSTRAINT TRIGGER {name} AFTER INSERT", "DEFERRABLE INITIALLY DEFERRED"
    ):
        yield


def test_the_row_is_handed_over_before_its_commit_with_the_lock_held(store: Store, database_url: str) -> None:
    seen: list[tuple[list[Task], bool, bool]] = []
    new = _new()

    def inserted(tasks: list[Task]) -> None:
        seen.append((tasks, _visible(database_url, new.id), _key_free(database_url, new.id)))

    [task] = store.insert_tasks([new], actor="t", inserted=inserted)
    [(handed, visible, free)] = seen
    assert handed == [task]
    # The callback ran before the commit was durable: nothing else saw the row yet, and
    # the key a claim waits on was held.  The commit may finish while the callback runs
    # (it is on its way), so each is "not yet" or "done", never the row without the lock.
    assert not (visible and not free)
    assert _visible(database_url, new.id) and _key_free(database_url, new.id)
    assert task.status is Status.QUEUED and task.id == new.id
    # created_at is the row's, to the microsecond, in the session's time zone.
    row = store.get_task(TENANT, new.id)
    assert row is not None and row.created_at == task.created_at == task.run_at == task.enqueued_at
    assert isinstance(task.created_at, datetime) and task.created_at.utcoffset() is not None


def test_the_handover_precedes_the_commit_when_the_commit_is_slow(database_url: str) -> None:
    """A commit that waits (a deferred trigger sleeping 0.3 s): the callback sees neither
    the row nor a free key, and returns long before the call does."""
    store = Store(database_url, max_size=1)
    with _at_commit(database_url, "early_slow_commit", "early-slow", "PERFORM pg_sleep(0.3)"):
        new = _new(tenant="early-slow")
        at: dict[str, object] = {}

        def inserted(tasks: list[Task]) -> None:
            at["visible"], at["free"] = _visible(database_url, new.id), _key_free(database_url, new.id)
            at["handed"] = datetime.now().astimezone()

        store.insert_tasks([new], actor="t", inserted=inserted)
        done = datetime.now().astimezone()
        assert at["visible"] is False and at["free"] is False
        handed = at["handed"]
        assert isinstance(handed, datetime) and done - handed >= timedelta(seconds=0.2)
        assert _visible(database_url, new.id)
    store.close()


def test_a_claim_sent_while_the_insert_runs_waits_for_the_commit_and_claims_the_task(database_url: str) -> None:
    """The hand-off comes before the INSERT runs (here a trigger holds the INSERT 0.5 s):
    a claim of the id sent then finds no row, waits on the id's key, and claims the task
    once the submit has committed, in the same call."""
    store, claimer = Store(database_url, max_size=1), Store(database_url, max_size=1)
    try:
        run = claim_during_a_slow_insert(database_url, store, claimer, "early-slow-insert")
        assert not run.visible_at_handover
        assert run.handed_early_by >= 0.4  # handed over before the INSERT's trigger slept
        assert [(c.id, c.attempts) for c in run.claimed] == [(run.task.id, 1)]
        row = store.get_task("early-slow-insert", run.task.id)
        assert row is not None and row.status is Status.PROCESSING
    finally:
        store.close()
        claimer.close()


def test_a_commit_that_fails_after_the_handover_fails_the_call(database_url: str) -> None:
    store = Store(database_url, max_size=1)
    refuse = "RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'"
    with _at_commit(database_url, "early_refuse_commit", "early-refused", refuse):
        new = _new(tenant="early-refused")
        handed: list[list[Task]] = []
        with pytest.raises(ValidationError, match="refused at commit"):
            store.insert_tasks([new], actor="t", inserted=handed.append)
        assert [t.id for t in handed[0]] == [new.id]  # pushed: a claim finds no row and drops it
        assert not _visible(database_url, new.id) and _key_free(database_url, new.id)
        # The connection is clean for the next submit.
        ok = _new()
        assert [t.id for t in store.insert_tasks([ok], actor="t", inserted=lambda tasks: None)] == [ok.id]
        assert _visible(database_url, ok.id)
    store.close()


def test_an_error_of_the_callback_comes_after_the_commit(store: Store, database_url: str) -> None:
    new = _new()

    def inserted(tasks: list[Task]) -> None:
        raise RuntimeError("push bug")

    with pytest.raises(RuntimeError, match="push bug"):
        store.insert_tasks([new], actor="t", inserted=inserted)
    assert _visible(database_url, new.id)
    again = _new()
    assert [t.id for t in store.insert_tasks([again], actor="t", inserted=lambda tasks: None)] == [again.id]


def test_an_error_of_the_insert_comes_after_the_handover_and_is_the_ordinary_one(
    store: Store, database_url: str
) -> None:
    """The id is handed over once its lock is held, before the INSERT runs: an INSERT
    refused then (here a second task with the first one's id) fails the call with the
    error the ordinary path gives, after the hand-off, and leaves the key free."""
    first = _new()
    store.insert_tasks([first], actor="t", inserted=lambda tasks: None)
    handed: list[list[Task]] = []
    with pytest.raises(ConflictError, match="already exists"):
        store.insert_tasks([_new(id=first.id, tenant="early-other")], actor="t", inserted=handed.append)
    assert [[t.id for t in tasks] for tasks in handed] == [[first.id]]
    assert _key_free(database_url, first.id)
    assert store.get_task("early-other", first.id) is None
    ok = _new()
    assert [t.id for t in store.insert_tasks([ok], actor="t", inserted=lambda tasks: None)] == [ok.id]


@pytest.mark.parametrize("field", ["tenant", "name"])
def test_a_nul_takes_the_ordinary_path_and_is_refused_whole(store: Store, database_url: str, field: str) -> None:
    """libpq sends text parameters as C strings: a NUL would cut the value short.  Such a
    value goes the ordinary way, where psycopg refuses it (400), never truncated."""
    new = _new(**{field: "a\x00b"})
    handed: list[list[Task]] = []
    with pytest.raises(ValidationError, match="NUL"):
        store.insert_tasks([new], actor="t", inserted=handed.append)
    assert handed == [] and not _visible(database_url, new.id)


def test_a_session_that_lost_the_prepared_statements_prepares_them_again(database_url: str) -> None:
    store = Store(database_url, max_size=1)
    try:
        store.insert_tasks([_new()], actor="t", inserted=lambda tasks: None)
        with store.connection() as conn:
            conn.execute("DEALLOCATE ALL")
        new = _new()
        assert [t.id for t in store.insert_tasks([new], actor="t", inserted=lambda tasks: None)] == [new.id]
        # Only the INSERT lost: the lock ran and the task was handed over before the
        # INSERT failed; the run is retried whole, so it is handed over again (a second
        # push of one id is one entry in Redis) and inserted once.
        with store.connection() as conn:
            conn.execute("DEALLOCATE tasklane_insert_task_now")
        handed: list[list[Task]] = []
        half = _new()
        assert [t.id for t in store.insert_tasks([half], actor="t", inserted=handed.append)] == [half.id]
        assert {t.id for tasks in handed for t in tasks} == {half.id} and len(handed) == 2
        # And both prepared behind its back (a run whose bookkeeping was lost).
        for statement in (store._early._lock, store._early._insert):  # the state under test
            statement._sessions.clear()
        other = _new()
        assert [t.id for t in store.insert_tasks([other], actor="t", inserted=lambda tasks: None)] == [other.id]
        for task_id in (new.id, half.id, other.id):
            assert _visible(database_url, task_id)
    finally:
        store.close()


def test_concurrent_submits_on_one_store(database_url: str) -> None:
    store = Store(database_url, max_size=3)
    ids: list[str] = []
    lock = threading.Lock()

    def submit_some() -> None:
        for _ in range(40):
            new = _new()
            store.insert_tasks([new], actor="t", inserted=lambda tasks: None)
            with lock:
                ids.append(new.id)

    try:
        threads = [threading.Thread(target=submit_some) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(ids) == 160
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[])", (ids,)).fetchone()
        assert row == (160,)
    finally:
        store.close()


def test_numbered_placeholders() -> None:
    sql, names = numbered("SELECT %(a)s, %(b)s::int, %(a)s")
    assert sql == b"SELECT $1, $2::int, $1" and names == ("a", "b")
