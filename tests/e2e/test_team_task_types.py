"""A team's task types on the real local stack, without touching Tasklane's tree:
a Python module written outside the repository (found through ``PYTHONPATH`` and
``TASKLANE_TASK_MODULES``) and an HTTP target declared in a file of the test's own
(``TASKLANE_TASK_TYPES_FILE``).  A stack of its own: these variables must not leak
into the shared e2e stack."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import wait_for
from tests.stack import ROOT, Stack, start_stack
from tools.devstack import services as devservices

TEAM_REDIS_DB = 4  # free: see tests/e2e/test_aws_executors.py

TEAM_MODULE = '''
"""Acme's task types: lives in Acme's repository, not in Tasklane's."""

from chalicelib.core.errors import RetryableError
from chalicelib.tasktypes import TaskContext, registry, require


def _validate_greet(payload):
    require(isinstance(payload.get("who"), str) and payload["who"], 'greet needs {"who": "<name>"}')


@registry.task(
    "acme.greet",
    validate=_validate_greet,
    payload_schema={"type": "object", "required": ["who"], "properties": {"who": {"type": "string", "minLength": 1}}},
    max_retries=4,
    timeout_seconds=20,
    priority="high",
)
def greet(payload, ctx: TaskContext):
    """Greets someone, failing its first attempt on purpose."""
    if ctx.attempt == 1:
        raise RetryableError("the greeting service is warming up")
    return {"greeting": f"hello {payload['who']}", "attempt": ctx.attempt, "tenant": ctx.tenant}
'''


class Endpoint:
    """The team's HTTP endpoint on 127.0.0.1."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps({"stored": True}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/acme/archive"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.server.shutdown()
    e.server.server_close()


def _team_env(team_dir: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(team_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def team_stack(
    pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory, endpoint: Endpoint
) -> Iterator[Stack]:
    team_dir = tmp_path_factory.mktemp("acme")
    (team_dir / "acme_e2e_tasks.py").write_text(textwrap.dedent(TEAM_MODULE))
    declarations = team_dir / "tasktypes.json"
    archive = {
        "http": {"url": endpoint.url},
        "payload_schema": {"type": "object", "required": ["doc"], "properties": {"doc": {"type": "string"}}},
        "max_retries": 1,
    }
    declarations.write_text(json.dumps({"task_types": {"acme.archive": archive}}))
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{TEAM_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = _team_env(team_dir, TASKLANE_TASK_MODULES="acme_e2e_tasks", TASKLANE_TASK_TYPES_FILE=str(declarations))
    s = start_stack(pg_server, redis_url, ROOT / "test-artifacts", env=env)
    try:
        yield s
    finally:
        s.stop()
        devservices.drop_database(pg_server, s.database_url.rsplit("/", 1)[-1])


def _finished(stack: Stack, task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (t := stack.task(task_id))["status"] in ("COMPLETED", "FAILED") and t,
        timeout=30,
        message=f"task {task_id} to finish",
    )


def test_a_module_outside_the_repo_runs_on_the_stack_with_its_defaults(team_stack: Stack) -> None:
    created = team_stack.submit("acme.greet", {"who": "Ada"})
    assert (created["max_retries"], created["timeout_seconds"], created["priority"]) == (4, 20, "high")
    task = _finished(team_stack, created["id"])
    assert task["status"] == "COMPLETED", task
    assert task["result"] == {"greeting": "hello Ada", "attempt": 2, "tenant": "default"}
    assert task["attempts"] == 2


def test_the_modules_validation_answers_400(team_stack: Stack) -> None:
    r = team_stack.post("/api/v1/tasks", {"name": "acme.greet", "payload": {"who": ""}})
    assert r.status_code == 400, r.text
    assert "greet needs" in r.json()["error"]["message"]


def test_a_declared_http_type_runs_and_is_validated_by_its_schema(team_stack: Stack, endpoint: Endpoint) -> None:
    r = team_stack.post("/api/v1/tasks", {"name": "acme.archive", "payload": {}})
    assert r.status_code == 400 and "payload must contain ['doc']" in r.json()["error"]["message"], r.text
    task = _finished(team_stack, team_stack.submit("acme.archive", {"doc": "q3.pdf"})["id"])
    assert (task["status"], task["result"]) == ("COMPLETED", {"stored": True}), task
    assert json.loads(endpoint.bodies[-1]) == {"doc": "q3.pdf"}


def test_team_types_are_listed_with_their_schemas(team_stack: Stack) -> None:
    spec = team_stack.get("/openapi.json").json()
    text = json.dumps(spec)
    assert '"acme.greet"' in text and '"acme.archive"' in text
    r = team_stack.get("/api/v1/task-types")
    assert r.status_code == 200, r.text
    types = {t["name"]: t for t in r.json()["task_types"]}
    assert {"acme.greet", "acme.archive", "noop"} <= set(types)
    assert types["acme.greet"]["target"] == "python" and types["acme.greet"]["defaults"]["max_retries"] == 4
    assert types["acme.archive"]["target"] == "http"
    assert types["acme.archive"]["payload_schema"]["required"] == ["doc"]
    assert "tasklane.webhook" not in types  # internal types stay internal


def test_a_module_that_does_not_import_stops_the_stack_with_a_clear_message(
    pg_server: str, redis_server: str, tmp_path: Path
) -> None:
    (tmp_path / "acme_broken_tasks.py").write_text("raise ImportError('acme_sdk is not installed')\n")
    name = devservices.test_database_name("e2e")
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{TEAM_REDIS_DB}"
    try:
        with pytest.raises(AssertionError) as caught:
            start_stack(
                pg_server,
                redis_url,
                ROOT / "test-artifacts",
                env=_team_env(tmp_path, TASKLANE_TASK_MODULES="acme_broken_tasks"),
                database=name,
                timeout=60,
            )
    finally:
        devservices.drop_database(pg_server, name)
    message = str(caught.value)
    assert "stack exited early" in message
    assert "task module 'acme_broken_tasks' (TASKLANE_TASK_MODULES) failed to import" in message
    assert "ImportError: acme_sdk is not installed" in message
