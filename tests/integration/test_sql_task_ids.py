"""The tasks SQL makes (completion webhooks, a batch's webhook and follow-up) get
version-7 ids from ``tasklane_uuid_v7()`` (migration 0032), with the bit layout of
chalicelib/core/ids.py, so that once finished they move to ``tasks_archive`` like
the tasks submitted through Python instead of staying in ``tasks`` until retention."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg

from chalicelib.container import Container
from chalicelib.core.batches import parse_batch_spec
from chalicelib.core.ids import new_ids
from chalicelib.core.model import WEBHOOK_TASK, Status
from chalicelib.services import batches
from chalicelib.services.submit import submit, submit_batch
from tests.helpers import drain_and_sweep_until, query, receiving, request, wait_for
from tests.integration.test_tasks_archive import _age, _archive_all, _partitioned, _where

TENANT = "sqlids"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def _ms(at: dt.datetime) -> int:
    """Unix milliseconds, floored, in integers (a float product misses by one at .xxx000)."""
    return (at - _EPOCH) // _MS


def _id_ms(task_id: str | uuid.UUID) -> int:
    return uuid.UUID(str(task_id)).int >> 80


def _assert_v7_made_at(task_id: str | uuid.UUID, at: dt.datetime) -> None:
    u = uuid.UUID(str(task_id))
    assert (u.version, u.variant) == (7, uuid.RFC_4122), task_id
    assert _id_ms(u) == _ms(at), (task_id, at)


def _partition_of(at: dt.datetime) -> str:
    return f"tasks_archive_{at.astimezone(dt.UTC):%Y%m%d}"


def test_sql_ids_are_version_7_at_the_transaction_time_unique_and_time_ordered(rt: Container) -> None:
    db = rt.settings.database_url
    n = 20_000
    sql = (
        "SELECT tasklane_uuid_v7(), now(), tasklane_day_first_id((now() AT TIME ZONE 'UTC')::date),"
        " tasklane_day_first_id((now() AT TIME ZONE 'UTC')::date + 1) FROM generate_series(1, %s)"
    )
    before = _id_ms(new_ids(1)[0])
    with psycopg.connect(db) as conn:
        first = conn.execute(sql, (n,)).fetchall()
    after = _id_ms(new_ids(1)[0])
    ids = [r[0] for r in first]
    # Many calls in one statement: one a row, every one different (74 random bits).
    assert len(set(ids)) == n
    assert len({u.int & ((1 << 62) - 1) for u in ids}) == n
    for u, now, lower, upper in first:
        _assert_v7_made_at(u, now)
        # Inside the archive partition of the transaction's UTC day (0027's bounds).
        assert lower <= u < upper
    # The same clock and layout as the ids Python makes: a SQL id sorts between two
    # Python ids made before and after it.
    assert before <= _id_ms(ids[0]) <= after

    # A later transaction's ids sort after every id of this one.
    wait_for(
        lambda: query(db, "SELECT clock_timestamp() > %s + interval '2 ms'", first[0][1])[0][0],
        message="the database clock moved on",
    )
    with psycopg.connect(db) as conn:
        second = [r[0] for r in conn.execute("SELECT tasklane_uuid_v7() FROM generate_series(1, 1000)")]
    assert min(second) > max(ids)


def test_completion_webhook_tasks_get_v7_ids_and_move_to_the_archive(rt: Container) -> None:
    db = _partitioned(rt)
    with receiving() as receiver:
        done = submit(rt, TENANT, request(payload={"x": 1}, callback_url=receiver.url)).task
        # A dependent cancelled by its parent gets its webhook from the trigger (0020).
        parent = submit(rt, TENANT, request("fail", {"permanent": True}, max_retries=0)).task
        child = submit(rt, TENANT, request(depends_on=[parent.id], callback_url=receiver.url)).task

        def delivered() -> bool:
            rows = query(db, "SELECT status FROM tasks WHERE name = %s", WEBHOOK_TASK)
            return len(receiver.calls) == 2 and [r[0] for r in rows] == ["COMPLETED"] * 2

        drain_and_sweep_until(rt, delivered)
    hooks = query(
        db,
        "SELECT h.id, h.payload->'task'->>'id', h.created_at, p.finished_at FROM tasks h"
        " JOIN tasks p ON p.id = (h.payload->'task'->>'id')::uuid WHERE h.name = %s",
        WEBHOOK_TASK,
    )
    assert {r[1] for r in hooks} == {done.id, child.id}
    assert rt.store.get_task(TENANT, child.id).status is Status.CANCELLED  # type: ignore[union-attr]
    for hook_id, _, created_at, parent_finished_at in hooks:
        # Born in the parent's final transition: the same now().
        _assert_v7_made_at(hook_id, created_at)
        assert created_at == parent_finished_at
    hook_ids = [str(r[0]) for r in hooks]
    _age(db, hook_ids, "25 hours")
    assert _archive_all(rt) >= 2
    for hook_id, _, created_at, _ in hooks:
        assert _where(db, str(hook_id)) == [_partition_of(created_at)]


def test_a_batch_webhook_and_follow_up_get_v7_ids_and_move_to_the_archive(rt: Container) -> None:
    db = _partitioned(rt)
    with receiving() as receiver:
        spec = parse_batch_spec(
            {"callback_url": receiver.url, "on_complete": {"name": "noop", "payload": {"report": 1}}},
            rt.settings,
            rt.registry,
        )
        made = submit_batch(rt, TENANT, [request(), request(payload={"n": 2})], spec=spec)
        assert made.batch is not None
        batch_id = made.batch.id

        def fired() -> bool:
            b = batches.get_batch(rt, TENANT, batch_id)
            if b.callback_task_id is None or b.follow_up_task_id is None:
                return False
            made_by = [rt.store.get_task(TENANT, t) for t in (b.callback_task_id, b.follow_up_task_id)]
            return len(receiver.calls) == 1 and all(t is not None and t.status is Status.COMPLETED for t in made_by)

        drain_and_sweep_until(rt, fired)
    b = batches.get_batch(rt, TENANT, batch_id)
    [(completed_at,)] = query(db, "SELECT completed_at FROM batches WHERE id = %s", batch_id)
    made_ids = [b.callback_task_id or "", b.follow_up_task_id or ""]
    for task_id in made_ids:
        # Made by the statement that finished the batch's last task.
        _assert_v7_made_at(task_id, completed_at)
        assert query(db, "SELECT created_at FROM tasks WHERE id = %s", task_id) == [(completed_at,)]
    _age(db, made_ids, "25 hours")
    assert _archive_all(rt) >= 2
    for task_id in made_ids:
        assert _where(db, task_id) == [_partition_of(completed_at)]
    follow_up = rt.store.get_task(TENANT, made_ids[1])  # read from the archive
    assert follow_up is not None and follow_up.payload["report"] == 1
