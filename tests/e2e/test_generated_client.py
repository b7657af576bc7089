"""A client generated from the served OpenAPI document works (issue 13, item 4).

openapi-python-client turns ``/openapi.json`` into a package; the package must
import (every module), have a submit model per task type with every field, and
submit tasks with every field over the live stack: the task is stored with those
values, runs, and its completion webhook arrives.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.helpers import wait_for
from tests.stack import Stack

PACKAGE = "tasklane_generated_client"


@pytest.fixture(scope="module")
def client_package(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    work = tmp_path_factory.mktemp("generated-client")
    document = work / "openapi.json"
    document.write_text(requests.get(stack.base_url + "/openapi.json", timeout=10).text)
    bin_dir = Path(sys.executable).parent
    generator = bin_dir / "openapi-python-client"
    assert generator.exists(), "openapi-python-client is missing: pip install -r requirements-dev.txt"
    done = subprocess.run(
        [str(generator), "generate", "--path", str(document), "--output-path", str(work / PACKAGE), "--meta", "none"],
        cwd=work,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},  # its ruff post-hook
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(work))
    try:
        package = importlib.import_module(PACKAGE)
        for module in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
            importlib.import_module(module.name)  # every generated module imports
        yield package
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received: list[dict[str, Any]] = []
    _Receiver.received = received
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(client_package: ModuleType, stack: Stack) -> Iterator[Any]:
    """A generated client for the stack, closed afterwards (httpx keeps its sockets open)."""
    authenticated = client_package.AuthenticatedClient(
        base_url=stack.base_url, token=stack.api_key, prefix="", auth_header_name="X-API-Key"
    )
    yield authenticated
    authenticated.get_httpx_client().close()


def test_every_task_type_has_a_submit_model_with_every_field(client_package: ModuleType) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    fields = {"name", "payload", "priority", "run_at", "delay_seconds", "max_retries", "timeout_seconds"}
    fields |= {"idempotency_key", "callback_url", "unique_key", "unique_for_seconds", "expires_at"}
    for type_name in ("Noop", "Sleep", "Fail", "SendEmail", "SendSms", "GeneratePdf", "HttpRequest"):
        model = getattr(models, f"TaskSubmission{type_name}")
        assert fields <= set(model.__init__.__annotations__), type_name
        schedule_model = getattr(models, f"ScheduleTask{type_name}")
        assert {"name", "payload", "priority", "max_retries", "timeout_seconds"} <= set(
            schedule_model.__init__.__annotations__
        )


def test_generated_client_submits_a_task_with_every_field(
    client: Any, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, received = receiver
    models = importlib.import_module(f"{PACKAGE}.models")
    submit = importlib.import_module(f"{PACKAGE}.api.default.post_api_v1_tasks")
    common: dict[str, Any] = {
        "priority": models.TaskSubmissionNoopPriority.HIGH,
        "max_retries": 5,
        "timeout_seconds": 42,
        "callback_url": hook_url,
    }
    payload = models.TaskSubmissionNoopPayload.from_dict({"hello": "generated"})
    key = f"gen-{uuid.uuid4()}"
    by_delay = models.TaskSubmissionNoop(name="noop", payload=payload, delay_seconds=0.5, idempotency_key=key, **common)
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    by_time = models.TaskSubmissionNoop(
        name="noop",
        payload=payload,
        run_at=run_at,
        idempotency_key=key + "-at",
        unique_key=key + "-u",
        unique_for_seconds=60,
        expires_at=run_at + timedelta(minutes=5),
        **common,
    )
    created = []
    for body in (by_delay, by_time):
        response = submit.sync_detailed(client=client, body=body)
        assert response.status_code == 201, response.content
        task = response.parsed
        assert isinstance(task, models.Task), task
        assert (task.name, task.priority.value, task.max_retries, task.timeout_seconds) == ("noop", "high", 5, 42)
        assert task.callback_url == hook_url and task.idempotency_key == body.idempotency_key
        assert task.to_dict()["payload"] == {"hello": "generated"}
        if body is by_time:
            assert task.unique_key == key + "-u" and task.expires_at == body.expires_at
        created.append(task.id)
    replay = submit.sync_detailed(client=client, body=by_delay)
    assert replay.status_code == 200 and replay.parsed.id == created[0]

    wait_for(
        lambda: {e["task"]["id"] for e in received} == {str(i) for i in created},
        timeout=30,
        interval=0.05,
        message="both tasks' completion webhooks",
    )
    assert all(e["event"] == "task.completed" and e["task"]["result"] == {"hello": "generated"} for e in received)


def test_generated_client_creates_a_schedule_and_a_batch(client: Any) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    create = importlib.import_module(f"{PACKAGE}.api.default.post_api_v1_schedules")
    batch = importlib.import_module(f"{PACKAGE}.api.default.post_api_v1_tasks_batch")
    task = models.ScheduleTaskSleep(name="sleep", payload=models.ScheduleTaskSleepPayload(seconds=0.01), max_retries=1)
    body = models.ScheduleSubmission(name=f"gen-{uuid.uuid4().hex[:8]}", cron="0 4 * * *", task=task, enabled=False)
    response = create.sync_detailed(client=client, body=body)
    assert response.status_code == 201, response.content
    assert response.parsed.task.to_dict()["payload"] == {"seconds": 0.01}
    items = [models.BatchRequestTasksItem.from_dict({"name": "noop"}) for _ in range(3)]
    response = batch.sync_detailed(client=client, body=models.BatchRequest(tasks=items, atomic=True))
    assert response.status_code == 201 and response.parsed.created == 3, response.content
