"""The task outbox (migration 0007): tasks a trigger made ready reach Redis from the
drainer right after the finish that released them, and from every sweep."""

from __future__ import annotations

import psycopg
import pytest

from chalicelib.container import Container
from chalicelib.core.errors import QueueError
from chalicelib.core.model import QueueEntry, Status
from chalicelib.core.records import LiveTask
from chalicelib.services import outbox
from chalicelib.services.submit import submit
from chalicelib.services.sweep import sweep
from tests.helpers import drain_once, query, request

TENANT = "outbox"


def _exec(database_url: str, sql: str, *params: object) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


def _hidden_from_redis(rt: Container, database_url: str) -> str:
    """A QUEUED task that Redis does not know, listed in the outbox (what a trigger that
    released it leaves behind)."""
    task = submit(rt, TENANT, request()).task
    rt.queue.remove([QueueEntry.of(task)])
    _exec(database_url, "INSERT INTO task_outbox (task_id) VALUES (%s)", task.id)
    return task.id


def _outbox(database_url: str, task_id: str) -> int:
    return int(query(database_url, "SELECT count(*) FROM task_outbox WHERE task_id = %s", task_id)[0][0])


def test_drainer_releases_the_outbox_after_a_finish_with_followers(rt: Container, database_url: str) -> None:
    hidden = _hidden_from_redis(rt, database_url)
    parent = submit(rt, TENANT, request()).task
    _exec(database_url, "UPDATE tasks SET has_followers = true WHERE id = %s", parent.id)
    drain_once(rt)  # no sweep: the drainer's own release must push the hidden task
    for tid in (parent.id, hidden):
        task = rt.store.get_task(TENANT, tid)
        assert task is not None and task.status is Status.COMPLETED
    assert _outbox(database_url, hidden) == 0


def test_plain_finish_leaves_the_outbox_to_the_sweeper(rt: Container, database_url: str) -> None:
    hidden = _hidden_from_redis(rt, database_url)
    drain_once(rt)
    task = rt.store.get_task(TENANT, hidden)
    assert task is not None and task.status is Status.QUEUED
    report = sweep(rt)
    assert report.released >= 1 and _outbox(database_url, hidden) == 0
    drain_once(rt)
    task = rt.store.get_task(TENANT, hidden)
    assert task is not None and task.status is Status.COMPLETED


def test_a_failed_push_leaves_the_rows_for_the_next_taker(rt: Container, database_url: str) -> None:
    hidden = _hidden_from_redis(rt, database_url)

    def publish(tasks: list[LiveTask]) -> None:
        raise QueueError("redis is away")

    with pytest.raises(QueueError):
        rt.store.take_outbox(publish, limit=1000)
    assert _outbox(database_url, hidden) == 1
    assert outbox.release(rt) >= 1
    assert _outbox(database_url, hidden) == 0
