"""Progress reporting: ``TaskContext.report_progress`` in an executor, seen over
HTTP in ``GET /api/v1/tasks/{id}`` while the task runs and after it ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.services.submit import submit
from chalicelib.tasktypes import TaskContext
from tests.helpers import drain_once, request
from tests.integration.app_client import api_for

TENANT = "progress"
TASK = "progress-test"


class Reporter:
    """An executor that reports progress, then holds until released."""

    def __init__(self) -> None:
        self.reported = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[int, bool]] = []
        self.ctx: TaskContext | None = None

    def __call__(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        self.ctx = ctx
        self.calls.append((40, ctx.report_progress(40, "rendered page 2 of 5")))
        self.calls.append((50, ctx.report_progress(50, "too soon: throttled")))
        self.reported.set()
        assert self.release.wait(20), "never released"
        self.calls.append((100, ctx.report_progress(100, "done")))  # 100 % is never throttled
        return {"pages": 5}


@pytest.fixture
def reporter(rt: Container) -> Iterator[Reporter]:
    r = Reporter()
    rt.registry.task(TASK)(r)
    try:
        yield r
    finally:
        r.release.set()
        rt.registry._by_name.pop(TASK, None)


def test_progress_shows_in_get_task_while_running_and_after(rt: Container, reporter: Reporter) -> None:
    with api_for(rt, TENANT) as api:
        task = submit(rt, TENANT, request(TASK)).task
        drain = threading.Thread(target=drain_once, args=(rt, 20.0))
        drain.start()
        try:
            assert reporter.reported.wait(15), "the executor never ran"
            running = api.get(f"/api/v1/tasks/{task.id}")
            assert running.status_code == 200
            body = running.json_body
            assert (body["status"], body["progress"], body["progress_message"]) == (
                "PROCESSING",
                40,
                "rendered page 2 of 5",
            )
        finally:
            reporter.release.set()
            drain.join(timeout=30)
        assert not drain.is_alive()
        assert reporter.calls == [(40, True), (50, False), (100, True)]

        done = api.get(f"/api/v1/tasks/{task.id}").json_body  # the drain recorded it before returning
        assert (done["status"], done["progress"], done["progress_message"], done["result"]) == (
            "COMPLETED",
            100,
            "done",
            {"pages": 5},
        )

        # Fencing: the finished attempt's token no longer holds a lease, so a late
        # report (a stray thread of the executor) changes nothing.
        assert reporter.ctx is not None
        assert reporter.ctx.report_progress(100, "late") is False
        assert api.get(f"/api/v1/tasks/{task.id}").json_body["progress_message"] == "done"


def test_progress_is_null_for_a_task_that_never_reported(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        created = api.post("/api/v1/tasks", {"name": "noop"})
        assert created.status_code == 201
        drain_once(rt)
        body = api.get(f"/api/v1/tasks/{created.json_body['id']}").json_body
        assert (body["status"], body["progress"], body["progress_message"]) == ("COMPLETED", None, None)
