"""One task, one trace: the trace context given at submit is stored on the task row,
reaches every log line of the task's attempt in the drainer, is shown by
``GET /api/v1/tasks/{id}``, and leaves with the task's outbound calls (the
``http-request`` task type and the completion webhook)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.model import WEBHOOK_TASK
from chalicelib.core.records import ScheduleSpec
from chalicelib.core.tracecontext import parse_amzn, stored
from chalicelib.observability.log import logger
from chalicelib.services.submit import submit, submit_many
from chalicelib.tasktypes import TaskContext
from tests.helpers import drain_and_sweep_until, drain_once, request
from tests.integration.app_client import api_for

TENANT = "tracing"
PROBE = "trace-probe"
ROOT = "1-5759e988-bd862e3fe1be46a994272793"
HEADER = f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def probe(rt: Container) -> Iterator[list[TaskContext]]:
    """A task type that logs two lines (and remembers its context)."""
    seen: list[TaskContext] = []

    def run(payload: Any, ctx: TaskContext) -> dict[str, Any]:
        seen.append(ctx)
        logger.info("probe started")
        logger.warning("probe halfway", extra={"step": 2})
        return {"ok": True}

    rt.registry.task(PROBE)(run)
    try:
        yield seen
    finally:
        rt.registry._by_name.pop(PROBE, None)


def test_submit_header_trace_is_on_every_log_line_of_the_attempt(
    rt: Container, probe: list[TaskContext], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.setFormatter(logger.registered_formatter)
    with caplog.at_level("INFO", logger="tasklane"), api_for(rt, TENANT) as api:
        response = api.client.http.post(
            "/api/v1/tasks",
            headers={**api._headers(None), "X-Amzn-Trace-Id": HEADER},
            body=json.dumps({"name": PROBE, "payload": {}}),
        )
        assert response.status_code == 201, response.body
        task_id = json.loads(response.body)["id"]
        assert json.loads(response.body)["trace_id"] == ROOT
        # A sibling in the same batch, on the same executor threads, with a trace of its own.
        sibling = submit(rt, TENANT, request(PROBE)).task
        assert drain_once(rt, 10.0)["completed"] == 2
        shown = api.get(f"/api/v1/tasks/{task_id}")
    assert json.loads(shown.body)["trace_id"] == ROOT
    lines = [json.loads(t) for t in caplog.text.splitlines() if t.startswith("{")]
    for tid, trace_id in ((task_id, ROOT), (sibling.id, sibling.trace_id)):
        attempt = [line for line in lines if line.get("task_id") == tid]
        assert {line["message"] for line in attempt} >= {"probe started", "probe halfway"}
        assert all(line.get("trace_id") == trace_id for line in attempt), attempt
    assert sibling.trace_id not in (None, ROOT)
    assert {ctx.trace_id for ctx in probe} == {ROOT, sibling.trace_id}


def test_traceparent_is_accepted_and_a_malformed_header_gets_a_fresh_root(rt: Container) -> None:
    with api_for(rt, TENANT) as api:

        def post(headers: dict[str, str]) -> dict[str, Any]:
            response = api.client.http.post(
                "/api/v1/tasks",
                headers={**api._headers(None), **headers},
                body=json.dumps({"name": "noop", "payload": {}}),
            )
            assert response.status_code == 201, response.body
            return dict(json.loads(response.body))

        w3c = post({"traceparent": "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"})
        hostile = post({"X-Amzn-Trace-Id": "Root=1-zzzz;Parent=\u00e9", "traceparent": "ff-" + "0" * 60})
        plain = post({})
    assert w3c["trace_id"] == ROOT
    assert hostile["trace_id"] != ROOT and parse_amzn(f"Root={hostile['trace_id']}") is not None
    assert plain["trace_id"] not in (ROOT, hostile["trace_id"])


def test_batch_and_schedule_fired_tasks_each_start_their_own_trace(rt: Container) -> None:
    results = submit_many(rt, TENANT, [request(), request(), request()])
    roots = {r.task.trace_id for r in results}  # type: ignore[union-attr]
    assert len(roots) == 3 and None not in roots
    spec = ScheduleSpec(
        name="every-minute",
        cron="* * * * *",
        timezone="UTC",
        task_name="noop",
        payload={},
        priority="normal",
        max_retries=0,
        timeout_seconds=30,
        enabled=True,
        catch_up="once",
    )
    first = datetime.now(UTC) - timedelta(minutes=1)
    assert rt.store.insert_schedule(TENANT, str(uuid.uuid4()), spec, first, actor="key:test")
    fired = rt.store.fire_due_schedules(lambda s, now: (now, now + timedelta(hours=1)), limit=10)
    assert len(fired) == 1 and fired[0].trace_id is not None and fired[0].trace_id not in roots


def test_http_request_and_webhook_carry_the_task_trace_to_a_local_server(rt: Container) -> None:
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            received.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        trace = parse_amzn(HEADER)
        task = submit(
            rt, TENANT, request("http-request", {"url": f"{url}/call"}, callback_url=f"{url}/hook"), trace=trace
        ).task
        assert task.trace_id == ROOT
        drain_and_sweep_until(rt, lambda: len(received) >= 2, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    for headers in received:  # the http-request call, then the completion webhook
        assert stored(headers["x-amzn-trace-id"]) is not None
        assert headers["x-amzn-trace-id"].startswith(f"Root={ROOT}")
        assert headers["traceparent"].startswith("00-5759e988bd862e3fe1be46a994272793-")
    hooks = rt.store.list_tasks(TENANT, name=WEBHOOK_TASK)
    assert len(hooks) == 1 and hooks[0].trace_id == ROOT  # the webhook task carries on the trace
