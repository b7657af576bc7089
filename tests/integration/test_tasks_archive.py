"""Finished tasks move from ``tasks`` to ``tasks_archive`` (migration 0027), a table
range-partitioned on the UUIDv7 id by UTC day: the sweeper moves them in bounded
batches once past the idempotency window, every read that may meet a finished task
still finds them, and retention drops a whole day's partition instead of deleting
rows.  What may not move (dead letters, tasks with dependency edges, ids that are not
version 7, late finishers) stays in ``tasks`` and is pruned row by row as before."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.container import Container
from chalicelib.core.batches import BatchSpec
from chalicelib.core.errors import StoreError
from chalicelib.core.model import Status
from chalicelib.core.requests import parse_workflow
from chalicelib.services.submit import submit, submit_batch, submit_workflow
from chalicelib.services.sweep import ARCHIVE_AFTER_SECONDS, sweep
from tests.helpers import drain_once, query, request, wait_for
from tests.integration.app_client import api_for

TENANT = "archive"
_DAY = 86400.0


def _v7(at: dt.datetime) -> str:
    """A version-7 id made at ``at`` (its millisecond in the first 48 bits)."""
    ms = f"{int(at.timestamp() * 1000):012x}"
    r = secrets.token_hex(10)
    return str(uuid.UUID(f"{ms}7{r[:3]}{'89ab'[int(r[3], 16) & 3]}{r[4:19]}"))


def _midnight(days_ago: int) -> dt.datetime:
    today = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    return dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)


def _insert_finished(db: str, rows: list[tuple[str, dt.datetime, dt.datetime]], status: str = "COMPLETED") -> None:
    """Finished tasks written directly: (id, created_at, finished_at)."""
    with psycopg.connect(db) as conn:
        conn.cursor().executemany(
            "INSERT INTO tasks (id, tenant, name, status, created_at, updated_at, run_at, finished_at)"
            " VALUES (%s, %s, 'noop', %s, %s, %s, %s, %s)",
            [(i, TENANT, status, c, f, c, f) for i, c, f in rows],
        )


def _where(db: str, task_id: str) -> list[str]:
    """The tables holding the task: [] when gone."""
    rows = query(
        db,
        "SELECT 'tasks' FROM tasks WHERE id = %s"
        " UNION ALL SELECT tableoid::regclass::text FROM tasks_archive WHERE id = %s",
        task_id,
        task_id,
    )
    return [r[0] for r in rows]


def _age(db: str, ids: list[str], interval: str) -> None:
    """Created and finished that much earlier (the same UTC day stays the id's: a task
    finished after its day ended does not move)."""
    query(
        db,
        "UPDATE tasks SET created_at = created_at - %s::interval, finished_at = finished_at - %s::interval"
        " WHERE id = ANY(%s::uuid[]) RETURNING id",
        interval,
        interval,
        ids,
    )


def _partitioned(rt: Container) -> str:
    """The database, with the archive's partitions of the last week (an earlier test's
    shorter retention may have dropped some)."""
    rt.store.ensure_archive_partitions(7 * _DAY, 2)
    return rt.settings.database_url


def _archive_all(rt: Container) -> int:
    moved = 0
    while (page := rt.store.archive_finished(ARCHIVE_AFTER_SECONDS, page_size=500)) is not None:
        moved += page[0]
        if not page[1]:
            return moved
    raise AssertionError("another mover held the lock")


def test_the_archive_has_the_columns_of_tasks_in_their_order(rt: Container) -> None:
    # The move and the restore copy whole rows: a column added to one table only would
    # break them (or a read of an archived task).
    sql = (
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )
    db = rt.settings.database_url
    assert query(db, sql, "tasks_archive") == query(db, sql, "tasks")


def test_finished_tasks_move_and_every_read_still_finds_them(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(retention_days=7)
    db = rt.settings.database_url
    completed = submit(rt, TENANT, request(payload={"k": "done"})).task.id
    cancelled = submit(rt, TENANT, request(delay_seconds=3600)).task.id
    rt.store.cancel(TENANT, cancelled)
    failed = submit(rt, TENANT, request("fail", {"permanent": True}, max_retries=0)).task.id
    batch = submit_batch(rt, TENANT, [request(payload={"b": 1})], spec=BatchSpec())
    assert batch.batch is not None and batch.items[0].submitted is not None
    in_batch, batch_id = batch.items[0].submitted.task.id, batch.batch.id
    wf = submit_workflow(rt, TENANT, parse_workflow({"steps": {"only": {"name": "noop"}}}, rt.settings, rt.registry))
    step = wf.steps["only"].id
    live = submit(rt, TENANT, request(delay_seconds=7200)).task.id
    drain_once(rt)
    finished = [completed, cancelled, failed, in_batch, step]
    assert {t: rt.store.get_task(TENANT, t).status for t in finished} == {  # type: ignore[union-attr]
        completed: Status.COMPLETED,
        cancelled: Status.CANCELLED,
        failed: Status.FAILED,
        in_batch: Status.COMPLETED,
        step: Status.COMPLETED,
    }
    # Inside the window: nothing moves.
    assert sweep(rt).archived == 0
    _age(db, finished, "25 hours")
    report = sweep(rt)
    assert report.errors == [] and report.archived == 4
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    for t in (completed, cancelled, in_batch, step):
        assert _where(db, t) == [f"tasks_archive_{today}"]
    assert _where(db, failed) == ["tasks"], "a dead letter left tasks"
    assert _where(db, live) == ["tasks"]
    assert query(db, "SELECT idempotency_key FROM tasks_archive WHERE id = %s", completed) == [(None,)]

    with api_for(rt, TENANT) as api:
        got = api.get(f"/api/v1/tasks/{completed}")
        assert got.status_code == 200 and got.json_body["result"] == {"k": "done"}
        events = api.get(f"/api/v1/tasks/{completed}/events")
        assert events.status_code == 200
        trail = [(e["from_status"], e["to_status"], e["attempt"]) for e in events.json_body["events"]]
        # The creation event is the archived row's (created_by, created_status: 0037).
        assert trail == [(None, "QUEUED", 0), ("QUEUED", "PROCESSING", 1), ("PROCESSING", "COMPLETED", 1)]
        assert events.json_body["events"][0]["at"] == got.json_body["created_at"]
        # Newest first across both tables through the cursor, whatever the page size:
        # pages of fresh tasks alone are read from `tasks` only (archive_may_hold).
        fresh = [submit(rt, TENANT, request(delay_seconds=3600)).task.id for _ in range(3)]
        union = "SELECT id::text FROM tasks UNION ALL SELECT id::text FROM tasks_archive ORDER BY 1"
        newest_first = [
            r[0]
            for r in query(
                db,
                "SELECT id::text FROM (SELECT id, created_at FROM tasks UNION ALL SELECT id, created_at"
                " FROM tasks_archive) t ORDER BY created_at DESC, id DESC",
            )
        ]
        assert sorted(newest_first) == [r[0] for r in query(db, union)]
        assert sorted(newest_first) == sorted([*finished, live, *fresh])
        for size in (1, 2, 3, 4):
            seen, cursor = [], ""
            while True:
                page = api.get(f"/api/v1/tasks?limit={size}{cursor}").json_body
                seen += [t["id"] for t in page["items"]]
                if not page.get("next_cursor"):
                    break
                cursor = f"&cursor={page['next_cursor']}"
            assert seen == newest_first, size
        assert api.get("/api/v1/tasks?status=CANCELLED").json_body["items"][0]["id"] == cancelled
        assert api.post(f"/api/v1/tasks/{completed}/cancel", {}).status_code == 409
        assert api.post(f"/api/v1/dead-letters/{completed}/redrive", {}).status_code == 409
        assert api.get(f"/api/v1/batches/{batch_id}").json_body["counts"]["COMPLETED"] == 1
        steps = api.get(f"/api/v1/workflows/{wf.id}").json_body
        assert steps["status"] == "COMPLETED" and steps["steps"]["only"]["task"]["id"] == step
        assert api.get("/api/v1/stats").status_code == 200
        # A schedule's recent runs show an archived run's status.
        made = api.post("/api/v1/schedules", {"name": "nightly", "cron": "0 3 * * *", "task": {"name": "noop"}})
        assert made.status_code == 201
        query(
            db,
            "INSERT INTO schedule_runs (schedule_id, fire_at, task_id) VALUES (%s, now(), %s) RETURNING task_id",
            made.json_body["id"],
            completed,
        )
        runs = api.get(f"/api/v1/schedules/{made.json_body['id']}").json_body["recent_runs"]
        assert runs == [{"fire_at": runs[0]["fire_at"], "task_id": completed, "status": "COMPLETED"}]

        # A new task depending on an archived one: the parent comes back to `tasks`
        # (edges reference it there) and counts as done at once.
        child = api.post("/api/v1/tasks", {"name": "noop", "depends_on": [completed]})
        assert child.status_code == 201 and child.json_body["status"] == "QUEUED"
        assert _where(db, completed) == ["tasks"]
        drain_once(rt)
        done = api.get(f"/api/v1/tasks/{child.json_body['id']}").json_body
        assert done["result"]["parents"] == {completed: {"k": "done"}}

    # The batch and the workflow outlive retention while their tasks are archived.
    query(db, "UPDATE batches SET completed_at = now() - interval '8 days' RETURNING id")
    query(db, "UPDATE workflows SET created_at = now() - interval '8 days' RETURNING id")
    assert rt.store.prune_batches(7 * _DAY) == 0
    assert rt.store.prune_workflows(7 * _DAY) == 0


def test_a_lookup_by_id_reads_one_archive_partition(rt: Container) -> None:
    db = _partitioned(rt)
    rows = [
        (_v7(_midnight(d) + dt.timedelta(hours=3)), _midnight(d), _midnight(d) + dt.timedelta(hours=4)) for d in (2, 3)
    ]
    _insert_finished(db, rows)
    assert _archive_all(rt) == 2
    target = rows[0][0]
    partitions = query(db, "SELECT count(*) FROM tasklane_archive_partitions()")[0][0]
    assert partitions >= 5
    sql = queries()["get_task_anywhere"].replace("%(id)s", "$1").replace("%(tenant)s", "$2")
    with psycopg.connect(db, autocommit=True) as conn:
        for mode in ("force_generic_plan", "force_custom_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            conn.execute("DEALLOCATE ALL")
            conn.execute(f"PREPARE q(uuid, text) AS {sql}")
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE q('{target}', '{TENANT}')"
                )
            )
            scanned = [line for line in plan.splitlines() if "on tasks_archive_" in line]
            assert len(scanned) == 1, f"{mode}: {plan}"
            assert f"tasks_archive_{_midnight(2):%Y%m%d}" in scanned[0]
            if mode == "force_generic_plan":
                assert f"Subplans Removed: {partitions - 1}" in plan, plan
            row = conn.execute(f"EXECUTE q('{target}', '{TENANT}')").fetchone()
            assert row is not None and str(row[0]) == target


def test_retention_drops_whole_partitions_and_keeps_what_could_not_move(make_rt: Callable[..., Container]) -> None:
    keep = make_rt(retention_days=7)
    db = keep.settings.database_url
    two_days_ago, yesterday = _midnight(2), _midnight(1)
    old = [
        (_v7(two_days_ago + dt.timedelta(minutes=m)), two_days_ago, two_days_ago + dt.timedelta(hours=1))
        for m in range(5)
    ]
    # Moved only a day after it finished: at the first second of yesterday.
    recent = [(_v7(yesterday), yesterday, yesterday + dt.timedelta(seconds=1))]
    # Finished after its creation day ended: it would outlive its partition's drop.
    late = [(_v7(two_days_ago + dt.timedelta(hours=23)), two_days_ago, yesterday)]
    # A version-4 id (made before UUIDv7): no day, stays in tasks.
    v4 = [(str(uuid.uuid4()), two_days_ago, two_days_ago + dt.timedelta(hours=1))]
    _insert_finished(db, old + recent + late + v4)
    report = sweep(keep)
    assert report.errors == [] and report.archived == 6 and report.archive_partitions_dropped == []
    assert _where(db, late[0][0]) == ["tasks"] and _where(db, v4[0][0]) == ["tasks"]
    part = f"tasks_archive_{two_days_ago:%Y%m%d}"
    assert query(db, f"SELECT count(*) FROM {part}") == [(5,)]

    pruned_sql = (
        "SELECT coalesce(sum(n), 0)::int FROM (SELECT n, name, metric FROM task_metric_deltas"
        " UNION ALL SELECT n, name, metric FROM task_metric_totals) m WHERE metric = 'pruned' AND name = 'noop'"
    )
    before = query(db, pruned_sql)[0][0]
    short = make_rt(retention_days=1)
    report = sweep(short)
    assert report.errors == []
    assert part in report.archive_partitions_dropped
    # The counter counts both ways out (migration 0029): the dropped partition's 5
    # and the 2 pruned row by row (deltas and the totals the sweep folds them into).
    assert query(db, pruned_sql)[0][0] - before == 5 + 2
    assert f"tasks_archive_{yesterday:%Y%m%d}" not in report.archive_partitions_dropped
    assert query(db, "SELECT count(*) FROM pg_class WHERE relname = %s", part) == [(0,)]
    assert all(_where(db, i) == [] for i, _, _ in old)
    assert _where(db, recent[0][0]) == [f"tasks_archive_{yesterday:%Y%m%d}"]
    # The ones that stayed in `tasks` are pruned row by row, as before.
    assert report.pruned == 2
    assert _where(db, late[0][0]) == [] and _where(db, v4[0][0]) == []
    # The next sweep makes no partition it would drop again.
    again = sweep(short)
    assert again.archive_partitions_dropped == [] and again.archive_partitions_created == 0


def test_tasks_with_edges_or_a_held_unique_key_stay_in_tasks(rt: Container) -> None:
    db = _partitioned(rt)
    wf = submit_workflow(
        rt,
        TENANT,
        parse_workflow(
            {"steps": {"a": {"name": "noop"}, "b": {"name": "noop", "after": ["a"]}}}, rt.settings, rt.registry
        ),
    )
    unique = submit(rt, TENANT, request(unique_key="u1", unique_for_seconds=7 * 86400)).task.id
    for _ in range(3):
        drain_once(rt)
    ids = [wf.steps["a"].id, wf.steps["b"].id, unique]
    assert all(rt.store.get_task(TENANT, t).status is Status.COMPLETED for t in ids)  # type: ignore[union-attr]
    _age(db, ids, "25 hours")
    assert _archive_all(rt) == 0
    assert all(_where(db, t) == ["tasks"] for t in ids)


def test_an_interrupted_move_loses_and_duplicates_nothing(rt: Container) -> None:
    db = _partitioned(rt)
    day = _midnight(2)
    rows = [(_v7(day + dt.timedelta(seconds=s)), day, day + dt.timedelta(hours=1)) for s in range(200)]
    _insert_finished(db, rows)
    blocker_id = rows[-1][0]
    with psycopg.connect(db) as blocker:
        # An uncommitted archive row with one of the ids: the move's INSERT waits on it
        # for the primary key, after its DELETE from tasks ran.
        blocker.execute(
            "INSERT INTO tasks_archive (id, tenant, name, status, finished_at)"
            " VALUES (%s, 'x', 'noop', 'COMPLETED', now())",
            (blocker_id,),
        )
        errors: list[BaseException] = []
        pids: list[int] = []

        def move() -> None:
            try:
                with psycopg.connect(db, autocommit=True) as conn:
                    pids.append(conn.info.backend_pid)
                    conn.execute(
                        queries()["archive_finished"], {"after_seconds": ARCHIVE_AFTER_SECONDS, "page_size": 1000}
                    )
            except psycopg.Error as exc:
                errors.append(exc)

        mover = threading.Thread(target=move)
        mover.start()
        wait_for(lambda: pids, message="the mover connected")
        waiting = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
        wait_for(lambda: query(db, waiting, pids[0]) == [("Lock",)], message="the mover waits mid-batch")
        query(db, "SELECT pg_terminate_backend(%s)", pids[0])
        mover.join(timeout=20)
        assert errors, "the killed move did not fail"
        blocker.rollback()
    assert query(db, "SELECT count(*) FROM tasks") == [(200,)]
    assert query(db, "SELECT count(*) FROM tasks_archive") == [(0,)]
    assert _archive_all(rt) == 200
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM tasks_archive") == [(200, 200)]
    assert query(db, "SELECT count(*) FROM tasks") == [(0,)]


def test_concurrent_sweepers_move_each_task_once(rt: Container) -> None:
    db = _partitioned(rt)
    day = _midnight(2)
    rows = [(_v7(day + dt.timedelta(milliseconds=7 * s)), day, day + dt.timedelta(hours=2)) for s in range(3000)]
    _insert_finished(db, rows)
    moved: list[int] = []
    errors: list[BaseException] = []

    def mover() -> None:
        try:
            for _ in range(200):
                page = rt.store.archive_finished(ARCHIVE_AFTER_SECONDS, page_size=250)
                if page is not None:
                    moved.append(page[0])
                if query(db, "SELECT NOT EXISTS (SELECT 1 FROM tasks)")[0][0]:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=mover) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sum(moved) == 3000
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM tasks_archive") == [(3000, 3000)]
    assert query(db, "SELECT count(*) FROM tasks") == [(0,)]


def test_a_busy_archive_delays_the_drop_instead_of_stalling_its_readers(make_rt: Callable[..., Container]) -> None:
    rt = make_rt(retention_days=1)
    db = _partitioned(rt)
    live = submit(rt, TENANT, request(delay_seconds=3600)).task.id
    victim = f"tasks_archive_{_midnight(3):%Y%m%d}"
    with psycopg.connect(db) as reader:
        reader.execute("SELECT count(*) FROM tasks_archive")  # holds the archive until rollback
        results: dict[str, Any] = {}

        def drop() -> None:
            started = time.monotonic()
            try:
                rt.store.drop_archive_partition(_DAY)
            except StoreError as exc:
                results["error"] = exc
            results["took"] = time.monotonic() - started

        dropper = threading.Thread(target=drop)
        dropper.start()
        started = time.monotonic()
        assert rt.store.get_task(TENANT, live) is not None
        read_took = time.monotonic() - started
        dropper.join(timeout=20)
        assert "in use" in str(results["error"]) and results["took"] < 2.0, results
        assert read_took < 2.0, f"a read waited {read_took:.1f} s behind the drop"
        assert query(db, "SELECT count(*) FROM pg_class WHERE relname = %s", victim) == [(1,)]
        reader.rollback()
    report = sweep(rt)
    assert victim in report.archive_partitions_dropped, report
