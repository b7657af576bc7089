"""The operator CLI (python -m tools.cli submit/status/tail/dlq/stats) against the
live local stack over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

from tests.e2e.test_dashboard import tenant_counts, tenant_key
from tests.helpers import wait_for
from tests.stack import ROOT, Stack


def ops(stack: Stack, key: str | None, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLANE_")}
    env["TASKLANE_API_URL"] = stack.base_url
    if key:
        env["TASKLANE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bulk_submit_stats_status_and_dead_letters(stack: Stack) -> None:
    tenant, key = tenant_key(stack)
    done = ops(stack, key, "submit", "noop", "--payload", '{"hello": "cli"}', "--priority", "high", "--count", "600")
    assert done.returncode == 0, done.stderr
    assert "submitted 600 noop task(s)" in done.stdout
    assert "600/600 (100%" in done.stderr  # progress (plain lines when not a terminal)
    one = ops(stack, key, "submit", "fail", "--payload", '{"permanent": true, "message": "boom"}')
    assert one.returncode == 0, one.stderr
    failed_id = one.stdout.splitlines()[1].split()[0]
    wait_for(lambda: tenant_counts(stack, tenant) == {"COMPLETED": 600, "FAILED": 1}, timeout=60)

    stats = ops(stack, key, "stats")
    assert stats.returncode == 0, stats.stderr
    assert f"tenant {tenant}" in stats.stdout
    assert "submitted 601  completed 600  failed 1" in stats.stdout
    high = next(line for line in stats.stdout.splitlines() if line.startswith("high "))
    assert high.split()[1:3] == ["600", "600"]

    status = ops(stack, key, "status", failed_id)
    assert status.returncode == 0, status.stderr
    assert "FAILED" in status.stdout and "PermanentError: boom" in status.stdout
    assert "QUEUED -> PROCESSING" in status.stdout and "PROCESSING -> FAILED" in status.stdout

    listed = ops(stack, key, "dlq", "list")
    assert listed.returncode == 0 and failed_id in listed.stdout and "PermanentError: boom" in listed.stdout
    redrive = ops(stack, key, "dlq", "redrive", "--name", "fail")
    assert redrive.returncode == 0, redrive.stderr
    assert "redriven 1 of 1 task(s)" in redrive.stdout
    # Redriven means back to QUEUED and run again (the permanent error fails it again):
    # a FAILED status alone would not tell a redrive from nothing happening.
    first_run = [(None, "QUEUED"), ("QUEUED", "PROCESSING"), ("PROCESSING", "FAILED")]

    def events() -> list[tuple[str | None, str]]:
        body = stack.get(f"/api/v1/tasks/{failed_id}/events", key=key).json()
        return [(e["from_status"], e["to_status"]) for e in body["events"]]

    wait_for(lambda: len(events()) == 6, timeout=30, message="the redriven task to run again")
    assert events() == [*first_run, ("FAILED", "QUEUED"), ("QUEUED", "PROCESSING"), ("PROCESSING", "FAILED")]
    again = stack.get(f"/api/v1/tasks/{failed_id}", key=key).json()
    assert (again["status"], again["attempts"]) == ("FAILED", 1)  # a fresh budget, spent again
    assert ops(stack, key, "status", str(uuid.uuid4())).returncode == 1


def test_tail_follows_tasks_as_they_finish(stack: Stack) -> None:
    _, key = tenant_key(stack)
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    follower = threading.Thread(
        target=lambda: result.setdefault(
            "tail", ops(stack, key, "tail", "--since", "60", "--duration", "10", "--interval", "0.3")
        )
    )
    # The tenant is new, so "--since 60" sees exactly these three tasks, whenever the
    # CLI process gets going relative to the submits below.
    follower.start()
    slow = stack.post("/api/v1/tasks", {"name": "sleep", "payload": {"seconds": 1.5}}, key=key).json()
    quick = stack.post("/api/v1/tasks", {"name": "noop"}, key=key).json()
    dead = stack.post("/api/v1/tasks", {"name": "fail", "payload": {"permanent": True}}, key=key).json()
    follower.join(timeout=60)
    out = result["tail"].stdout
    assert result["tail"].returncode == 0, result["tail"].stderr
    lines = {line.split()[4]: line for line in out.splitlines() if line.strip()}
    assert "COMPLETED" in lines[slow["id"]] and "COMPLETED" in lines[quick["id"]]
    assert "FAILED" in lines[dead["id"]] and "PermanentError" in lines[dead["id"]]
    assert len(out.splitlines()) == 3  # each once


def test_cli_needs_a_key_and_a_reachable_api(stack: Stack) -> None:
    missing = ops(stack, None, "stats")
    assert missing.returncode == 2 and "TASKLANE_API_KEY" in missing.stderr
    refused = ops(stack, "tl_" + "x" * 43, "stats")
    assert refused.returncode == 1 and "401" in refused.stderr
    env_url = ops(stack, "k" * 20, "stats", "--api-url", "http://127.0.0.1:9")
    assert env_url.returncode == 1 and "cannot reach" in env_url.stderr
