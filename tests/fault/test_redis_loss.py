"""Redis loses everything (FLUSHALL, a crash and restart) or goes away for a while.

Each test runs its own Redis server: the shared one is never flushed or stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from chalicelib.container import Container
from chalicelib.services.submit import submit_many
from tests.fault.conftest import TENANT, make_runtime, queue_is_empty
from tests.fault.load import live_stack, wait_health_down, wait_on_stack, wait_recovered
from tests.fault.workers import Workers, worker_env
from tests.helpers import query, request, status_counts, story_problems, task_stories
from tools.devstack import services as devservices

TOTAL = 2000


@pytest.fixture
def private_rt(fault_db: str, private_redis: devservices.RedisHandle, prefix: str) -> Iterator[Container]:
    rt = make_runtime(fault_db, private_redis.url, prefix)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def private_workers(
    fault_db: str, private_redis: devservices.RedisHandle, prefix: str, tmp_path: Path
) -> Iterator[Workers]:
    w = Workers(worker_env(fault_db, private_redis.url, prefix), tmp_path / "workers")
    try:
        yield w
    finally:
        w.close()


def _completed(database_url: str) -> int:
    return status_counts(database_url).get("COMPLETED", 0)


@pytest.mark.parametrize("loss", ["flushall", "kill-and-restart"])
def test_redis_losing_its_data_mid_run_loses_no_task(
    loss: str,
    private_rt: Container,
    private_workers: Workers,
    private_redis: devservices.RedisHandle,
    fault_db: str,
) -> None:
    rt, workers = private_rt, private_workers
    workers.sweep()
    workers.drain()
    workers.drain()
    # Short sleeps keep work in every state (ready, leased, running) when Redis goes.
    tasks = [request("sleep", {"seconds": 0.02, "i": i}) for i in range(TOTAL)]
    first, later = tasks[:1500], tasks[1500:]
    for start in range(0, len(first), 500):
        submit_many(rt, TENANT, first[start : start + 500])
    workers.wait_for(lambda: _completed(fault_db) >= 300, timeout=60, message="300 tasks to complete")

    if loss == "flushall":
        redis.Redis.from_url(private_redis.url).flushall()
    else:
        private_redis.kill()
    at_loss = status_counts(fault_db)
    assert at_loss.get("COMPLETED", 0) < 1500 and at_loss.get("QUEUED", 0) > 0, at_loss
    # Submits go on while Redis is empty (or gone: then they persist without the push).
    for start in range(0, len(later), 250):
        submit_many(rt, TENANT, later[start : start + 250])
    if loss != "flushall":
        private_redis.start()  # empty, on the same port

    workers.wait_for(
        lambda: status_counts(fault_db) == {"COMPLETED": TOTAL},
        timeout=90,
        message=f"all {TOTAL} tasks to complete after the Redis {loss}",
    )
    stories = task_stories(fault_db)
    assert len(stories) == TOTAL
    assert story_problems(stories) == []
    assert all(s["result"]["slept"] == 0.02 for s in stories.values())
    # The sweeper rebuilt Redis (sentinel back) and Redis holds no stale ids at the end.
    workers.wait_for(
        lambda: not rt.queue.needs_rebuild() and queue_is_empty(rt),
        timeout=15,
        message="Redis to be rebuilt and drained",
    )


def test_health_is_503_while_redis_is_down_and_submit_still_persists(
    pg_server: str, private_redis: devservices.RedisHandle, tmp_path: Path
) -> None:
    database = devservices.test_database_name("fault")
    try:
        with live_stack(pg_server, private_redis.url, tmp_path / "stack", database=database) as stack:
            r = requests.get(stack.base_url + "/health", timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "UP", r.text
            before = stack.submit("noop", {"before": True})
            wait_on_stack(
                stack, lambda: stack.task(before["id"])["status"] == "COMPLETED", timeout=30, message="a first task"
            )

            private_redis.stop()

            body = wait_health_down(stack)
            assert body["status"] == "DOWN"
            assert body["components"]["redis"]["status"] == "DOWN"
            assert body["components"]["db"]["status"] == "UP"

            during = stack.submit("noop", {"during": True})  # asserts the 201
            rows = query(stack.database_url, "SELECT status FROM tasks WHERE id = %s", during["id"])
            assert rows == [("QUEUED",)], "an accepted task must be committed"
            assert stack.task(during["id"])["status"] == "QUEUED"

            private_redis.start()  # empty: the sweeper must rebuild it from PostgreSQL
            done = wait_recovered(stack, during["id"], message="the task accepted while Redis was down to complete")
            assert done["result"] == {"during": True} and done["attempts"] == 1
            assert story_problems(task_stories(stack.database_url)) == []
    finally:
        devservices.drop_database(pg_server, database)
