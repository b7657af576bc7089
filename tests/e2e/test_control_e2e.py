"""Black-box, over real HTTP against the live stack: a paused task type runs nothing
until resumed while other types flow; the operator CLI pauses a type for every
tenant; cancel by filter stops what is waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.helpers import wait_for
from tests.stack import ROOT, Stack


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKLANE_DATABASE_URL": stack.database_url, "TASKLANE_REDIS_URL": stack.redis_url}
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _api(stack: Stack, key: str) -> tuple[str, ...]:
    return ("--api-url", stack.base_url, "--api-key", key)


def _key(stack: Stack) -> str:
    done = _cli(stack, "keys", "create", "--tenant", f"ctl-{uuid.uuid4().hex[:6]}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _submit(stack: Stack, key: str, name: str, n: int) -> list[str]:
    payload = {"seconds": 0} if name == "sleep" else {}
    body = {"tasks": [{"name": name, "payload": payload} for _ in range(n)]}
    answer = stack.post("/api/v1/tasks/batch", body, key=key)
    assert answer.status_code == 201, answer.text
    return [r["task"]["id"] for r in answer.json()["results"]]


def _last_sweep(stack: Stack) -> str:
    return str(stack.get("/health").json()["components"]["sweeper"].get("last_sweep_at"))


def _statuses(stack: Stack, key: str, ids: list[str]) -> set[str]:
    return {stack.get(f"/api/v1/tasks/{i}", key=key).json()["status"] for i in ids}


def test_a_paused_type_runs_nothing_until_resumed_while_other_types_flow(stack: Stack) -> None:
    key = _key(stack)
    paused = stack.post("/api/v1/task-types/sleep/pause", key=key)
    assert paused.status_code == 200 and paused.json()["changed"] is True, paused.text
    held = _submit(stack, key, "sleep", 5)
    flowing = _submit(stack, key, "noop", 5)
    wait_for(lambda: _statuses(stack, key, flowing) == {"COMPLETED"}, timeout=30, message="other types to flow")
    # Two sweeps later (reconcile, promotion) nothing paused has started either.
    seen: set[str] = set()
    wait_for(lambda: len(seen.add(_last_sweep(stack)) or seen) >= 3, timeout=15, message="two more sweeps")
    tasks = [stack.get(f"/api/v1/tasks/{i}", key=key).json() for i in held]
    assert {t["status"] for t in tasks} == {"QUEUED"} and {t["attempts"] for t in tasks} == {0}

    resumed = stack.post("/api/v1/task-types/sleep/resume", key=key)
    assert resumed.status_code == 200 and resumed.json()["requeued"] == 5, resumed.text
    wait_for(lambda: _statuses(stack, key, held) == {"COMPLETED"}, timeout=30, message="resumed tasks to run")


def test_the_operator_cli_pauses_a_type_for_every_tenant_and_cancel_by_filter_stops_it(stack: Stack) -> None:
    alice, bob = _key(stack), _key(stack)
    paused = _cli(stack, "pause", "sleep")
    assert paused.returncode == 0 and "every tenant" in paused.stdout, paused.stderr
    try:
        a_ids, b_ids = _submit(stack, alice, "sleep", 3), _submit(stack, bob, "sleep", 3)
        types = {t["name"]: t for t in stack.get("/api/v1/task-types", key=bob).json()["task_types"]}
        assert [p["scope"] for p in types["sleep"]["pauses"]] == ["global"]
        # A tenant cannot lift an operator's pause.
        assert stack.post("/api/v1/task-types/sleep/resume", key=bob).json()["changed"] is False
        cancelled = _cli(stack, "cancel", "--name", "sleep", "--status", "QUEUED", *_api(stack, alice))
        assert cancelled.returncode == 0 and "cancelled 3 task(s)" in cancelled.stdout, cancelled.stderr
    finally:
        resumed = _cli(stack, "resume", "sleep")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: _statuses(stack, bob, b_ids) == {"COMPLETED"}, timeout=30, message="bob's tasks to run")
    assert _statuses(stack, alice, a_ids) == {"CANCELLED"}
