"""The drain loop's own Redis connection (``HeldConnection``, issue 14 round 9) after
Redis restarted empty: the next wait and claim reconnect and load the claim script
again (NOSCRIPT).  The Redis is this test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit
from tests.fault.conftest import TENANT, make_runtime
from tests.helpers import drain_once, request
from tools.devstack import services as devservices


@pytest.fixture
def rt(fault_db: str, private_redis: devservices.RedisHandle, prefix: str) -> Iterator[Container]:
    runtime = make_runtime(fault_db, private_redis.url, prefix, drain_margin_seconds=0.0, drain_idle_wait_seconds=0.1)
    try:
        yield runtime
    finally:
        runtime.close()


def test_the_drain_loops_connection_survives_a_redis_restart(
    rt: Container, private_redis: devservices.RedisHandle
) -> None:
    drainer = Drainer(rt, name="held-restart")
    try:
        first = submit(rt, TENANT, request()).task
        assert drain_once(rt, drainer=drainer)["completed"] == 1
        private_redis.kill()
        private_redis.start()  # empty, same port: the held connection is dead and the script gone
        second = submit(rt, TENANT, request()).task
        stats = drain_once(rt, seconds=10.0, drainer=drainer)
    finally:
        drainer.close()
    assert stats["completed"] == 1, stats
    for task in (first, second):
        assert rt.store.get_task(TENANT, task.id).status is Status.COMPLETED  # type: ignore[union-attr]
