"""Fair share between tenants over HTTP (the black-box check) and a queue quota's 429."""

from __future__ import annotations

import uuid

from tests.e2e.test_tenants_and_limits import cli, new_key
from tests.helpers import wait_for
from tests.stack import Stack


def _stats(stack: Stack, key: str) -> dict:
    r = stack.get("/api/v1/stats", key=key)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_small_tenant_starts_promptly_behind_a_large_tenants_backlog(stack: Stack) -> None:
    # Both keys are polled below (the small one for its 20 tasks, the big one until its
    # lanes are idle, which under a loaded suite takes seconds): limits polling cannot reach.
    big = new_key(stack, f"big-{uuid.uuid4().hex[:6]}", "--rate-limit", "100000/min")
    small = new_key(stack, f"small-{uuid.uuid4().hex[:6]}", "--rate-limit", "100000/min")
    # 16 executors (2 drainers x 8) at 0.1 s a task: ~10 s of backlog.
    backlog = {"tasks": [{"name": "sleep", "payload": {"seconds": 0.1}} for _ in range(500)]}
    for _ in range(3):
        assert stack.post("/api/v1/tasks/batch", backlog, key=big).status_code == 201
    r = stack.post("/api/v1/tasks/batch", {"tasks": [{"name": "noop"} for _ in range(20)]}, key=small)
    assert r.status_code == 201
    ids = [item["task"]["id"] for item in r.json()["results"]]
    wait_for(
        lambda: all(stack.get(f"/api/v1/tasks/{i}", key=small).json()["status"] == "COMPLETED" for i in ids),
        timeout=30,
        interval=0.2,
    )
    # Served first come, first served the 20 would wait for ~1,500 sleeps; shared, they
    # ran while most of the backlog was still waiting.
    left = _stats(stack, big)["totals"]["queue_size"]
    assert left >= 500, f"only {left} of the big tenant's 1,500 tasks were still waiting"
    assert _stats(stack, big)["fair_share"]["weight"] == 1
    # Leave the stack idle for the next tests: cancel what is still waiting.
    while stack.post("/api/v1/tasks/cancel", {"status": "QUEUED"}, key=big).json()["more"]:
        pass
    wait_for(lambda: _stats(stack, big)["totals"]["processing"] == 0, timeout=30, interval=0.2)


def test_a_queue_quota_refuses_a_submit_with_429_and_retry_after(stack: Stack) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:6]}"
    key = new_key(stack, tenant)
    done = cli(stack, "tenants", "set", tenant, "--max-queued", "3")
    assert done.returncode == 0, done.stderr
    assert "max queued 3" in done.stdout
    r = stack.post("/api/v1/tasks/batch", {"tasks": [{"name": "noop"} for _ in range(5)]}, key=key)
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "5"
    error = r.json()["error"]
    assert error["code"] == "tenant_quota_exceeded" and error["details"]["limit"] == 3
    assert stack.post("/api/v1/tasks", {"name": "noop"}, key=key).status_code == 201
    fair = _stats(stack, key)["fair_share"]
    assert (fair["max_queued"], fair["max_running"], fair["weight"]) == (3, None, 1)
