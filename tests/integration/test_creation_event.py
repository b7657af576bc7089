"""A task's creation event is read from its row (migration 0037): every path that creates
tasks shows the same first event as when it was stored, none stores it, a task created
before the migration keeps its stored one (and shows one, not two), and 'submitted' is
counted once per task by the statement that inserts it."""

from __future__ import annotations

import uuid

import psycopg

from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.core.records import TaskEvent
from chalicelib.services.submit import submit, submit_many
from tests.helpers import drain_once, query, request

TENANT = "acme"


def _first(rt: Container, task_id: str) -> TaskEvent:
    task = rt.store.get_task(TENANT, task_id)
    assert task is not None
    events = rt.store.task_events(task_id, since=task.created_at)
    assert [e.from_status for e in events].count(None) == 1, events
    assert events[0].from_status is None and events[0].at == task.created_at and events[0].attempt == 0
    return events[0]


def _stored_creations(db: str, ids: list[str]) -> int:
    return query(db, "SELECT count(*) FROM task_events WHERE task_id = ANY(%s::uuid[]) AND from_status IS NULL", ids)[
        0
    ][0]


def _submitted(db: str) -> dict[str, int]:
    rows = query(
        db,
        "SELECT name, sum(n)::int FROM (SELECT name, metric, n FROM task_metric_deltas"
        " UNION ALL SELECT name, metric, n FROM task_metric_totals) m WHERE metric = 'submitted' GROUP BY name",
    )
    return dict(rows)  # type: ignore[arg-type]


def test_every_submit_path_derives_its_creation_event_and_stores_none(rt: Container) -> None:
    db = rt.settings.database_url
    single = submit(rt, TENANT, request(), actor="key:single").task
    later = submit(rt, TENANT, request(delay_seconds=3600), actor="key:single").task
    few = [s.task for s in submit_many(rt, TENANT, [request("sleep", {"seconds": 0})] * 3, actor="key:few")]
    copied = [s.task for s in submit_many(rt, TENANT, [request("fail", {"times": 0})] * 120, actor="key:copy")]
    assert _first(rt, single.id) == TaskEvent(single.created_at, None, Status.QUEUED, 0, "key:single", None, None)
    assert _first(rt, later.id).to_status is Status.PENDING
    assert {(_first(rt, t.id).actor, _first(rt, t.id).to_status) for t in few} == {("key:few", Status.QUEUED)}
    assert {_first(rt, t.id).actor for t in copied} == {"key:copy"}
    ids = [single.id, later.id, *(t.id for t in few), *(t.id for t in copied)]
    assert _stored_creations(db, ids) == 0
    assert _submitted(db) == {"noop": 2, "sleep": 3, "fail": 120}


def test_a_task_created_cancelled_shows_its_error_in_the_first_event(rt: Container) -> None:
    db = rt.settings.database_url
    parent = submit(rt, TENANT, request(delay_seconds=3600)).task
    rt.store.cancel(TENANT, parent.id)
    child = submit(rt, TENANT, request(depends_on=(parent.id,)), actor="key:deps").task
    assert child.status is Status.CANCELLED
    first = _first(rt, child.id)
    assert (first.to_status, first.actor, first.error_type) == (Status.CANCELLED, "key:deps", "DependencyFailed")
    assert first.error == child.last_error
    assert len(rt.store.task_events(child.id)) == 1
    # Counted as the stored event was: a submit and a cancel.
    got = dict(query(db, "SELECT metric, sum(n)::int FROM task_metric_deltas WHERE name = 'noop' GROUP BY 1"))
    assert (got["submitted"], got["cancelled"]) == (2, 2)


def test_a_task_created_before_the_migration_keeps_its_one_stored_event(rt: Container) -> None:
    """Its row has no created_by: the stored creation event is its first, not doubled."""
    db = rt.settings.database_url
    old = str(uuid.uuid4())
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (id, tenant, name, status, enqueued_at) VALUES (%s, %s, 'noop', 'QUEUED', now())",
            (old, TENANT),
        )
        conn.execute(
            "INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)"
            " VALUES (%s, NULL, 'QUEUED', 0, 'old-key', 'noop')",
            (old,),
        )
    assert [(e.from_status, e.to_status, e.actor) for e in rt.store.task_events(old)] == [
        (None, Status.QUEUED, "old-key")
    ]
    assert [c.id for c in rt.store.claim([old], str(uuid.uuid4()), 30, actor="drain")] == [old]
    trail = [(e.from_status, e.to_status) for e in rt.store.task_events(old)]
    assert trail == [(None, Status.QUEUED), (Status.QUEUED, Status.PROCESSING)]
    assert query(db, "SELECT count(*) FROM task_trail WHERE task_id = %s AND from_status IS NULL", old) == [(1,)]


def test_a_restore_from_the_archive_is_no_submit(rt: Container) -> None:
    db = rt.settings.database_url
    done = submit(rt, TENANT, request()).task
    drain_once(rt)
    with psycopg.connect(db, autocommit=True) as conn:
        # The move's copy of a row (0027), by hand: the day's partition made first.
        conn.execute("SELECT tasklane_ensure_archive_partitions(current_date - 1, current_date + 1)")
        conn.execute(
            "WITH g AS (DELETE FROM tasks WHERE id = %s RETURNING *) INSERT INTO tasks_archive SELECT * FROM g",
            (done.id,),
        )
    archived = _first(rt, done.id)
    assert (archived.actor, archived.to_status) == ("api", Status.QUEUED)
    before = _submitted(db)
    with rt.store.connection() as conn:
        conn.execute(rt.store._q["restore_archived"], {"tenant": TENANT, "ids": [done.id]})
    assert _submitted(db) == before == {"noop": 1}
    assert _first(rt, done.id) == archived
