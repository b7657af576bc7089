"""Start the real local stack (``python -m tools.devstack run``) as a subprocess,
and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.databases import migrated_database
from tests.helpers import wait_for
from tools.devstack import services as devservices
from tools.devstack.orphans import parent_death_argv

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    base_url: str
    api_key: str
    database_url: str
    redis_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    aws_endpoint: str = ""  # the stack's own AWS emulator (moto), on a free port

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key or self.api_key, "Content-Type": "application/json"}

    def post(self, path: str, body: Any = None, *, key: str | None = None, **kw: Any) -> requests.Response:
        data = kw.pop("data", None)
        if data is None and body is not None:
            data = json.dumps(body)
        headers = {**self.headers(key), **kw.pop("headers", {})}
        return requests.post(self.base_url + path, data=data, headers=headers, timeout=10, **kw)

    def get(self, path: str, *, key: str | None = None, **kw: Any) -> requests.Response:
        headers = {**self.headers(key), **kw.pop("headers", {})}
        return requests.get(self.base_url + path, headers=headers, timeout=10, **kw)

    def submit(self, name: str = "noop", payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        r = self.post("/api/v1/tasks", {"name": name, "payload": payload or {}, **fields})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.get(f"/api/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_stack(
    pg_server: str,
    redis_server_url: str,
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    database: str | None = None,
    timeout: float = 90.0,
    aws: bool = False,
) -> Stack:
    """Start a stack on a fresh migrated database (or ``database``, made the same way
    when missing) and a free port (or ``env["TASKLANE_PORT"]``).

    ``aws``: with its AWS emulator (moto's server on a free port, seeded), as ``make
    run`` starts it.  A stack for a test that sends no AWS call goes without
    (``TASKLANE_AWS_EMULATOR=off``, what a user who deploys to AWS or runs no AWS task
    types sets): moto's import and the seeding were about 7 of a stack's 15 s to come
    up on a slow 2-core machine, and the suite starts a stack some twenty times."""
    name = database or devservices.test_database_name("e2e")
    db_url = migrated_database(pg_server, name)  # the stack's own migrate then finds nothing to do
    port = int((env or {}).get("TASKLANE_PORT") or devservices.find_free_port())
    aws_port = devservices.find_free_port()  # never the developer's emulator on 4566
    key = "e2e-" + uuid.uuid4().hex
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKLANE_")},
        "TASKLANE_DATABASE_URL": db_url,
        "TASKLANE_REDIS_URL": redis_server_url,
        "TASKLANE_PORT": str(port),
        "TASKLANE_BOOTSTRAP_API_KEY": key,
        "TASKLANE_LEASE_SECONDS": "2",
        "TASKLANE_SWEEP_INTERVAL_SECONDS": "0.5",
        "TASKLANE_RETRY_BASE_SECONDS": "0.1",
        "TASKLANE_RETRY_MAX_SECONDS": "1",
        "TASKLANE_DRAINERS": "2",
        "TASKLANE_DRAIN_IDLE_WAIT_SECONDS": "0.2",
        "TASKLANE_LOG_LEVEL": "WARNING",
        "TASKLANE_BOOTSTRAP_RATE_LIMIT_PER_MINUTE": "1000000",
        "TASKLANE_AWS_EMULATOR_PORT": str(aws_port),
        "TASKLANE_AWS_EMULATOR": "auto" if aws else "off",
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"stack-{port}.log"
    with log_path.open("wb") as log:
        # The supervisor gets SIGTERM the moment this process is gone (kill -9 of pytest
        # too) and stops its API, drainers and sweeper in order: they would run on else.
        proc = subprocess.Popen(
            [*parent_death_argv("TERM"), sys.executable, "-m", "tools.devstack", "run"],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    aws_endpoint = (
        full_env.get("TASKLANE_AWS_ENDPOINT") or f"http://127.0.0.1:{full_env['TASKLANE_AWS_EMULATOR_PORT']}"
        if aws
        else ""
    )
    stack = Stack(f"http://127.0.0.1:{port}", key, db_url, redis_server_url, proc, log_path, aws_endpoint)

    def exited_or_up() -> bool:
        return proc.poll() is not None or "Tasklane is up" in stack.log()

    try:
        wait_for(exited_or_up, timeout=timeout, interval=0.1)
    except AssertionError as exc:
        stack.stop()
        raise AssertionError(f"stack did not come up in {timeout}s:\n{stack.log()[-4000:]}") from exc
    if proc.poll() is not None:
        raise AssertionError(f"stack exited early ({proc.returncode}):\n{stack.log()[-4000:]}")
    return stack
