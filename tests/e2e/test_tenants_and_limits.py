"""Tenants, key management, rate limits, idempotency, batch and listing over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import requests

from tests.helpers import wait_for
from tests.stack import ROOT, Stack


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKLANE_DATABASE_URL": stack.database_url}
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def new_key(stack: Stack, tenant: str, *extra: str) -> str:
    done = cli(stack, "keys", "create", "--tenant", tenant, *extra)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("tl_") and len(key) > 40
    return key


def test_cli_creates_lists_and_revokes_keys(stack: Stack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    key = new_key(stack, tenant, "--name", "ci", "--rate-limit", "600/min")
    assert stack.post("/api/v1/tasks", {"name": "noop"}, key=key).status_code == 201
    listed = cli(stack, "keys", "list", "--tenant", tenant)
    assert listed.returncode == 0
    assert key[:11] in listed.stdout and "600/min" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout  # never the secret
    revoked = cli(stack, "keys", "revoke", key[:11])
    assert revoked.returncode == 0, revoked.stderr
    # A warm API caches a valid key for a few seconds; then the revocation holds.
    wait_for(lambda: stack.get(f"/api/v1/tasks/{uuid.uuid4()}", key=key).status_code == 401, timeout=15)
    assert "revoked" in cli(stack, "keys", "list", "--tenant", tenant).stdout
    assert cli(stack, "keys", "revoke", "tl_nothing").returncode == 1
    assert cli(stack, "keys", "create", "--tenant", "x", "--rate-limit", "lots").returncode == 2


def test_a_tenant_never_sees_another_tenants_tasks(stack: Stack) -> None:
    alice = new_key(stack, f"alice-{uuid.uuid4().hex[:6]}")
    bob = new_key(stack, f"bob-{uuid.uuid4().hex[:6]}")
    secret = stack.post("/api/v1/tasks", {"name": "fail", "payload": {"permanent": True}}, key=alice).json()
    # Polled gently: alice has the default 100 requests a minute.
    wait_for(lambda: stack.get(f"/api/v1/tasks/{secret['id']}", key=alice).json()["status"] == "FAILED", interval=0.3)
    for path in (f"/api/v1/tasks/{secret['id']}", f"/api/v1/tasks/{secret['id']}/events"):
        r = stack.get(path, key=bob)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for path in (f"/api/v1/tasks/{secret['id']}/cancel", f"/api/v1/dead-letters/{secret['id']}/redrive"):
        assert stack.post(path, key=bob).status_code == 404
    assert stack.post("/api/v1/dead-letters/redrive", {"ids": [secret["id"]]}, key=bob).json()["redriven"] == 0
    assert stack.get("/api/v1/tasks", key=bob).json()["items"] == []
    assert stack.get("/api/v1/dead-letters", key=bob).json()["items"] == []
    assert [t["id"] for t in stack.get("/api/v1/dead-letters", key=alice).json()["items"]] == [secret["id"]]
    # Same idempotency key in two tenants: two different tasks.
    a = stack.post("/api/v1/tasks", {"name": "noop"}, key=alice, headers={"Idempotency-Key": "k"}).json()
    b = stack.post("/api/v1/tasks", {"name": "noop"}, key=bob, headers={"Idempotency-Key": "k"}).json()
    assert a["id"] != b["id"]


def test_burst_past_the_limit_gets_honest_429s_and_other_keys_are_unaffected(stack: Stack) -> None:
    limited = new_key(stack, f"burst-{uuid.uuid4().hex[:6]}", "--rate-limit", "5/min")
    other = new_key(stack, f"calm-{uuid.uuid4().hex[:6]}", "--rate-limit", "5/min")
    answers = [stack.get("/api/v1/tasks", key=limited) for _ in range(8)]
    codes = [r.status_code for r in answers]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in answers]
    assert remaining[:5] == [4, 3, 2, 1, 0] and remaining[5:] == [0, 0, 0]
    assert all(r.headers["RateLimit-Limit"] == "5" for r in answers)
    denied = answers[-1]
    assert denied.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(denied.headers["Retry-After"]) <= 12  # one request every 12 s at 5/min
    assert int(denied.headers["RateLimit-Reset"]) >= int(denied.headers["Retry-After"])
    ok = stack.get("/api/v1/tasks", key=other)
    assert ok.status_code == 200 and ok.headers["RateLimit-Remaining"] == "4"


def test_twenty_concurrent_identical_submissions_create_one_task(stack: Stack) -> None:
    key = f"order-{uuid.uuid4()}"
    barrier = threading.Barrier(20)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def go() -> None:
        barrier.wait()
        r = stack.post("/api/v1/tasks", {"name": "noop", "payload": {"n": 1}}, headers={"Idempotency-Key": key})
        with lock:
            responses.append(r)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in responses if r.status_code == 200)
    conflict = stack.post("/api/v1/tasks", {"name": "noop", "payload": {"n": 2}}, headers={"Idempotency-Key": key})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"


def test_batch_submit_reports_per_item_and_honours_atomic(stack: Stack) -> None:
    tasks = [{"name": "noop", "payload": {"i": i}} for i in range(5)] + [{"name": "nope"}]
    r = stack.post("/api/v1/tasks/batch", {"tasks": tasks})
    assert r.status_code == 200
    body = r.json()
    assert body["created"] == 5 and body["failed"] == 1
    assert [x["status"] for x in body["results"]] == [201] * 5 + [400]
    assert "unknown task name" in body["results"][5]["error"]["message"]
    ids = [x["task"]["id"] for x in body["results"][:5]]
    wait_for(lambda: all(stack.task(i)["status"] == "COMPLETED" for i in ids))

    atomic = stack.post("/api/v1/tasks/batch", {"tasks": tasks, "atomic": True})
    assert atomic.status_code == 400 and atomic.json()["error"]["details"]["errors"][0]["index"] == 5
    ok = stack.post("/api/v1/tasks/batch", {"tasks": tasks[:5], "atomic": True})
    assert ok.status_code == 201 and ok.json()["created"] == 5
    too_many = stack.post("/api/v1/tasks/batch", {"tasks": [{"name": "noop"}] * 501})
    assert too_many.status_code == 400


def test_listing_is_keyset_paginated_and_stable_under_inserts(stack: Stack) -> None:
    tenant_key = new_key(stack, f"pages-{uuid.uuid4().hex[:6]}")
    first = [stack.post("/api/v1/tasks", {"name": "noop"}, key=tenant_key).json()["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = stack.get("/api/v1/tasks", key=tenant_key, params=params).json()
        seen += [t["id"] for t in page["items"]]
        if not seen[3:]:
            # Inserted between pages: must not shift or duplicate what follows.
            stack.post("/api/v1/tasks", {"name": "noop"}, key=tenant_key)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(first))
    by_name = stack.get("/api/v1/tasks", key=tenant_key, params={"name": "fail"}).json()
    assert by_name["items"] == []
    bad = stack.get("/api/v1/tasks", key=tenant_key, params={"status": "DONE"})
    assert bad.status_code == 400 and "status must be one of" in bad.json()["error"]["message"]
    assert stack.get("/api/v1/tasks", key=tenant_key, params={"sort": "x"}).status_code == 400


def test_body_over_the_limit_is_413(stack: Stack) -> None:
    big = {"name": "noop", "payload": {"blob": "x" * (300 * 1024)}}
    r = stack.post("/api/v1/tasks", data=json.dumps(big))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_null_fields_and_nul_characters_are_refused_clearly(stack: Stack) -> None:
    r = stack.post("/api/v1/tasks", {"name": "noop", "payload": None})
    assert r.status_code == 400 and "may not be null" in r.json()["error"]["message"]
    r = stack.post("/api/v1/tasks", {"name": "noop", "payload": {"a": "x\u0000y"}})
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
