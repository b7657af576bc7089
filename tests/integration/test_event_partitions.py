"""task_events is partitioned by UTC day (migration 0019): the sweeper makes the
partitions ahead of time and drops, instead of deleting rows, those past
``TASKLANE_RETENTION_DAYS``; the DEFAULT partition takes what no day partition
covers, so an insert never fails; tasks still present keep their history; and the
migration keeps the rows of the table it converts."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chalicelib.adapters.postgres.migrate import default_dir, migrate
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.adapters.postgres.store import Store
from chalicelib.container import Container
from chalicelib.core.errors import StoreError
from chalicelib.core.model import Status
from chalicelib.services.submit import submit
from chalicelib.services.sweep import EVENT_PARTITION_DAYS_AHEAD, sweep
from tests.helpers import drain_once, query, request
from tools.devstack import services as devservices

TENANT = "partitions"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _partitions(db: str) -> dict[str, tuple[dt.datetime | None, dt.datetime]]:
    rows = query(db, "SELECT name, lower_bound, upper_bound FROM tasklane_event_partitions()")
    return {name: (lower, upper) for name, lower, upper in rows}


def _covering(db: str, at: dt.datetime) -> str | None:
    """The day partition whose range holds ``at`` (None: DEFAULT would take it)."""
    for name, (lower, upper) in _partitions(db).items():
        if (lower is None or lower <= at) and at < upper:
            return name
    return None


def _where(db: str, task_id: str) -> list[str]:
    """The partition of each of the task's events, oldest first."""
    rows = query(db, "SELECT tableoid::regclass::text FROM task_events WHERE task_id = %s ORDER BY id", task_id)
    return [r[0] for r in rows]


def _drop_partition(db: str, name: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def _add_event(db: str, task_id: str, at: dt.datetime) -> None:
    query(
        db,
        "INSERT INTO task_events (task_id, at, from_status, to_status, attempt, actor)"
        " VALUES (%s, %s, 'QUEUED', 'PROCESSING', 1, 'test') RETURNING id",
        task_id,
        at,
    )


def test_sweep_creates_the_day_partitions_ahead(rt: Container) -> None:
    db = rt.settings.database_url
    today = _today()
    for n in range(1, EVENT_PARTITION_DAYS_AHEAD + 1):
        name = _covering(db, _midnight(today + dt.timedelta(days=n)))
        assert name, f"no partition for today + {n} after migrating"
        _drop_partition(db, name)
    report = sweep(rt)
    assert report.errors == []
    assert report.event_partitions_created == EVENT_PARTITION_DAYS_AHEAD
    for n in range(EVENT_PARTITION_DAYS_AHEAD + 1):
        day = today + dt.timedelta(days=n)
        assert _covering(db, _midnight(day) + dt.timedelta(hours=12)) == f"task_events_{day:%Y%m%d}"
    assert sweep(rt).event_partitions_created == 0  # idempotent


def test_an_insert_with_no_partition_lands_in_default_and_moves_to_its_day(rt: Container) -> None:
    db = rt.settings.database_url
    now = dt.datetime.now(dt.UTC)
    today = _covering(db, now)
    assert today, "no partition for today after migrating"
    _drop_partition(db, today)
    assert _covering(db, now) is None

    task = submit(rt, TENANT, request()).task
    drain_once(rt)  # its claim's and finish's events have nowhere but DEFAULT to go
    assert _where(db, task.id) == ["task_events_default"] * 2  # its creation is its row's (0037)

    report = sweep(rt)
    assert report.errors == [] and report.event_partitions_created >= 1
    day = _covering(db, dt.datetime.now(dt.UTC))
    assert day and _where(db, task.id) == [day] * 2
    detail = [(e.from_status, e.to_status) for e in rt.store.task_events(task.id, since=task.created_at)]
    assert detail == [(None, Status.QUEUED), (Status.QUEUED, Status.PROCESSING), (Status.PROCESSING, Status.COMPLETED)]


def test_retention_drops_partitions_past_it_and_keeps_the_history_of_tasks_still_there(
    make_rt: Callable[..., Container],
) -> None:
    rt = make_rt(retention_days=2)
    db = rt.settings.database_url
    today = _today()
    query(db, "SELECT tasklane_ensure_event_partitions(%s, %s)", today - dt.timedelta(days=5), today)
    noon = {n: _midnight(today - dt.timedelta(days=n)) + dt.timedelta(hours=12) for n in range(12)}

    dead = submit(rt, TENANT, request("fail", {"permanent": True})).task.id
    drain_once(rt)
    assert rt.store.get_task(TENANT, dead).status is Status.FAILED  # type: ignore[union-attr]
    pruned = "00000000-0000-4000-8000-000000000001"  # a task long gone
    for n in (5, 4, 3, 2, 1):
        _add_event(db, pruned, noon[n])
    _add_event(db, dead, noon[4])
    _add_event(db, dead, noon[10])  # no day partition that old: DEFAULT
    _add_event(db, pruned, noon[10])
    assert _where(db, pruned)[0] == f"task_events_{today - dt.timedelta(days=5):%Y%m%d}"

    report = sweep(rt)
    assert report.errors == []
    # Every row of days -5, -4 and -3 is older than two days; day -2 still has younger ones.
    gone = [f"task_events_{today - dt.timedelta(days=n):%Y%m%d}" for n in (5, 4, 3)]
    assert report.event_partitions_dropped == gone
    left = _partitions(db)
    assert not set(gone) & set(left)
    assert {f"task_events_{today - dt.timedelta(days=n):%Y%m%d}" for n in (2, 1, 0)} <= set(left)

    # The gone task's events went with their partitions, and its old row in DEFAULT too.
    ats = [r[0] for r in query(db, "SELECT at FROM task_events WHERE task_id = %s ORDER BY at", pruned)]
    assert ats == [noon[2], noon[1]]
    # The dead letter keeps its whole history: the old rows now live in DEFAULT.
    rows = query(db, "SELECT at, tableoid::regclass::text FROM task_events WHERE task_id = %s ORDER BY at", dead)
    assert rows[:2] == [(noon[10], "task_events_default"), (noon[4], "task_events_default")]
    assert len(rows) >= 4, rows  # and its own claim and failure of today (its submit is its row's)
    assert sweep(rt).event_partitions_dropped == []


def test_the_events_read_skips_partitions_older_than_the_task(rt: Container) -> None:
    """The trail of a task is read from the partitions of its first day on (and
    DEFAULT), by the (task_id, id) index: EXPLAIN shows which tables it touches."""
    db = rt.settings.database_url
    today = _today()
    query(db, "SELECT tasklane_ensure_event_partitions(%s, %s)", today - dt.timedelta(days=3), today)
    since = dt.datetime.now(dt.UTC)
    statement = queries()["task_events"]
    with psycopg.connect(db) as conn:
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) " + statement, {"id": "00000000-0000-4000-8000-000000000001", "since": since}
        ).fetchone()
    assert plan
    touched = set(_relations(plan[0] if isinstance(plan[0], list) else json.loads(plan[0])))
    expected = {name for name, (_, upper) in _partitions(db).items() if upper > since} | {"task_events_default"}
    events = {name for name in touched if name.startswith("task_events")}
    assert events == expected
    # The creation event (0037): the task's row in tasks, or in the archive's partition of
    # its id's day (none for this id).
    assert touched - events == {"tasks"}


def _relations(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if "Relation Name" in node:
            yield node["Relation Name"]
        for value in node.values():
            yield from _relations(value)
    elif isinstance(node, list):
        for item in node:
            yield from _relations(item)


@pytest.fixture
def old_database(pg_server: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A database migrated up to 0017, the last version with an unpartitioned task_events."""
    name = devservices.test_database_name("test")
    url = devservices.ensure_database(pg_server, name)
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(default_dir().glob("*.sql")):
        if int(path.name[:4]) <= 17:
            shutil.copy(path, before / path.name)
    migrate(url, before)
    try:
        yield url, before
    finally:
        devservices.drop_database(pg_server, name)


def test_the_migration_keeps_the_old_rows_in_a_legacy_partition(old_database: tuple[str, Path]) -> None:
    url, _ = old_database
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO tasks (id, tenant, name, status, attempts, created_at, finished_at, last_error)"
            " SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, %s, 'noop',"
            "        CASE WHEN i <= 2 THEN 'FAILED' ELSE 'COMPLETED' END, 1,"
            "        now() - i * interval '1 day', now() - i * interval '1 day', 'x'"
            " FROM generate_series(1, 6) AS i",
            (TENANT,),
        )
        conn.execute(
            "INSERT INTO task_events (task_id, at, from_status, to_status, attempt, actor)"
            " SELECT t.id, t.created_at + e.d * interval '1 ms', e.f, e.s, 1, 'old'"
            " FROM tasks t CROSS JOIN (VALUES (0, NULL, 'QUEUED'), (1, 'QUEUED', 'PROCESSING')) AS e(d, f, s)"
        )
    before = query(url, "SELECT id, task_id, at, to_status FROM task_events ORDER BY id")
    assert len(before) == 12
    assert 19 in migrate(url)

    assert query(url, "SELECT id, task_id, at, to_status FROM task_events ORDER BY id") == before
    assert {r[0] for r in query(url, "SELECT tableoid::regclass::text FROM task_events")} == {"task_events_legacy"}
    parts = _partitions(url)
    tomorrow = _midnight(_today() + dt.timedelta(days=1))
    assert parts["task_events_legacy"] == (None, tomorrow)
    for n in range(1, EVENT_PARTITION_DAYS_AHEAD + 1):
        day = _today() + dt.timedelta(days=n)
        assert parts[f"task_events_{day:%Y%m%d}"] == (_midnight(day), _midnight(day + dt.timedelta(days=1)))

    store = Store(url)
    try:
        # New events go on after the old ones (one sequence), through the metrics trigger.
        counted = query(url, "SELECT coalesce(sum(n), 0) FROM task_metric_deltas")[0][0]
        _add_event(url, "00000000-0000-4000-8000-000000000003", dt.datetime.now(dt.UTC))
        assert query(url, "SELECT coalesce(sum(n), 0) FROM task_metric_deltas")[0][0] > counted
        trail = store.task_events("00000000-0000-4000-8000-000000000003")
        assert [e.actor for e in trail] == ["old", "old", "test"]

        # Retention drops the legacy partition like any other; only the tasks' rows
        # that are still there (the dead letters, ids 1 and 2) keep their history.
        query(url, "DELETE FROM tasks WHERE status = 'COMPLETED' RETURNING id")
        assert store.drop_event_partition(-2 * 86400.0) == "task_events_legacy"
        kept = query(url, "SELECT DISTINCT task_id::text FROM task_events_default ORDER BY 1")
        assert [r[0] for r in kept] == ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"]
    finally:
        store.close()


def test_a_drop_behind_a_long_reader_gives_up_quickly_instead_of_stalling_transitions(
    make_rt: Callable[..., Container],
) -> None:
    """DETACH locks task_events whole, and every transition writes an event row: queued
    behind a long reader, the drop would hold every submit, claim and finish behind it for
    its whole lock wait.  It waits 200 ms and leaves the drop to a later sweep (0030)."""
    rt = make_rt(retention_days=2)
    db = rt.settings.database_url
    today = _today()
    query(db, "SELECT tasklane_ensure_event_partitions(%s, %s)", today - dt.timedelta(days=5), today)
    victim = f"task_events_{today - dt.timedelta(days=5):%Y%m%d}"
    results: dict[str, Any] = {}

    def drop() -> None:
        started = time.monotonic()
        try:
            results["dropped"] = rt.store.drop_event_partition(2 * 86400.0)
        except StoreError as exc:
            results["error"] = exc
        results["took"] = time.monotonic() - started

    with psycopg.connect(db) as reader:
        reader.execute("SELECT count(*) FROM task_events")  # holds the table until rollback
        dropper = threading.Thread(target=drop)
        dropper.start()
        started = time.monotonic()
        submit(rt, TENANT, request())  # its event row queues behind the DETACH, if any
        submit_took = time.monotonic() - started
        dropper.join(timeout=30)
        assert "error" in results and "lock timeout" in str(results["error"]), results
        assert results["took"] < 2.0, results
        assert submit_took < 2.0, f"a submit waited {submit_took:.1f} s behind the drop"
        assert victim in _partitions(db)
        reader.rollback()
    assert victim in sweep(rt).event_partitions_dropped
