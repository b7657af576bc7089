"""The drain loop's Redis connection (issue 14 round 9): its wake waits and claims go
on a connection the drainer holds (``client.HeldConnection``), not through the
client's pool."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.services.drain import Drainer
from chalicelib.services.submit import submit
from tests.helpers import drain_once, request

TENANT = "loop-conn"


def test_the_drain_loop_waits_and_claims_on_a_connection_of_its_own(
    make_rt: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt()

    def pool_path(*args: object, **kw: object) -> None:
        raise AssertionError("the drain loop went through the client's pool")

    first = submit(rt, TENANT, request()).task
    monkeypatch.setattr(rt.queue, "_claim", pool_path)
    monkeypatch.setattr(rt.queue.client, "blpop", pool_path)
    drainer = Drainer(rt, name="held")
    try:
        drain_once(rt, drainer=drainer)  # claims, then waits for a wake token while idle
        second = submit(rt, TENANT, request()).task
        stats = drain_once(rt, drainer=drainer)
    finally:
        drainer.close()
    assert stats["completed"] == 1 and not stats["errors"]
    for task in (first, second):
        assert rt.store.get_task(TENANT, task.id).status is Status.COMPLETED  # type: ignore[union-attr]
