"""The audit log and the dead-letter queue over HTTP and through the operator CLI,
against the live local stack: a key's actions carry its id, another tenant's
entries are invisible, purges take exactly what their filters say (and nothing
without one), and dead letters outlive the sweeper's prune however old they are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from typing import Any

import requests

from tests.e2e.test_ops_cli import ops
from tests.helpers import query, wait_for
from tests.stack import ROOT, Stack


def key_with_id(stack: Stack) -> tuple[str, str, str]:
    """A new tenant's key, made with the CLI: (tenant, secret, key id)."""
    tenant = f"audit-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "TASKLANE_DATABASE_URL": stack.database_url, "TASKLANE_ACTOR": "e2e-operator"}
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "keys", "create", "--tenant", tenant, "--rate-limit", "100000/min"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"# key ([0-9a-f-]{36}) for tenant", done.stderr)
    assert found, done.stderr
    return tenant, done.stdout.strip(), found.group(1)


def audit(stack: Stack, key: str, **params: str) -> list[dict[str, Any]]:
    """Every audit entry the key can see, following cursors (pages of 2)."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {"limit": "2", **params, **({"cursor": cursor} if cursor else {})}
        r = stack.get("/api/v1/audit", key=key, params=q)
        assert r.status_code == 200, r.text
        entries += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return entries


def dead_letter(stack: Stack, key: str, *, age: str | None = None) -> str:
    r = stack.post("/api/v1/tasks", {"name": "fail", "payload": {"permanent": True}}, key=key)
    assert r.status_code == 201, r.text
    task_id = str(r.json()["id"])
    wait_for(lambda: stack.get(f"/api/v1/tasks/{task_id}", key=key).json()["status"] == "FAILED", timeout=30)
    if age is not None:
        sql = "UPDATE tasks SET finished_at = finished_at - %s::interval WHERE id = %s RETURNING id"
        assert query(stack.database_url, sql, age, task_id)
    return task_id


def test_a_keys_actions_carry_its_id_and_other_tenants_see_none_of_them(stack: Stack) -> None:
    tenant, key, key_id = key_with_id(stack)
    _, other_key, other_id = key_with_id(stack)
    actor = f"key:{key_id}"

    later = stack.post("/api/v1/tasks", {"name": "noop", "delay_seconds": 3600}, key=key).json()
    assert stack.post(f"/api/v1/tasks/{later['id']}/cancel", key=key).status_code == 200
    events = stack.get(f"/api/v1/tasks/{later['id']}/events", key=key).json()["events"]
    assert [(e["to_status"], e["actor"]) for e in events] == [("PENDING", actor), ("CANCELLED", actor)]

    body = {"name": "nightly", "cron": "0 3 * * *", "task": {"name": "noop"}}
    created = stack.post("/api/v1/schedules", body, key=key)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    patched = requests.patch(
        f"{stack.base_url}/api/v1/schedules/{sid}", data='{"enabled": false}', headers=stack.headers(key), timeout=10
    )
    assert patched.status_code == 200, patched.text
    assert requests.delete(f"{stack.base_url}/api/v1/schedules/{sid}", headers=stack.headers(key), timeout=10).ok
    rotated = stack.post("/api/v1/webhook-secret/rotate", key=key)
    assert rotated.status_code == 200

    mine = audit(stack, key)
    assert [(e["action"], e["actor"]) for e in reversed(mine)] == [
        ("api_key.created", "cli:e2e-operator"),
        ("schedule.created", actor),
        ("schedule.disabled", actor),
        ("schedule.deleted", actor),
        ("webhook_secret.rotated", actor),
    ]
    assert rotated.json()["secret"] not in str(mine)
    assert mine[-1]["subject_id"] == key_id and mine[-2]["subject_id"] == sid
    assert [e["action"] for e in audit(stack, key, action="schedule.deleted")] == ["schedule.deleted"]

    theirs = audit(stack, other_key)
    assert [(e["action"], e["subject_id"]) for e in theirs] == [("api_key.created", other_id)]
    assert audit(stack, other_key, action="schedule.created") == []
    assert tenant not in str(theirs)

    for params in ({"action": "schedule.exploded"}, {"cursor": "not-a-cursor"}, {"limit": "0"}, {"tenant": "x"}):
        r = stack.get("/api/v1/audit", key=key, params=params)
        assert r.status_code == 400, (params, r.text)


def test_purge_over_http_by_id_name_and_age_and_never_without_a_filter(stack: Stack) -> None:
    _, key, key_id = key_with_id(stack)
    _, other_key, _ = key_with_id(stack)
    young = dead_letter(stack, key)
    old = dead_letter(stack, key, age="40 days")
    theirs = dead_letter(stack, other_key, age="40 days")

    for body in ({}, {"limit": 5}, {"name": ""}):
        r = stack.post("/api/v1/dead-letters/purge", body, key=key)
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", r.text

    by_age = stack.post(
        "/api/v1/dead-letters/purge", {"name": "fail", "failed_before": "2000-01-01T00:00:00Z"}, key=key
    )
    assert by_age.json() == {"purged": 0, "ids": [], "more": False}
    cutoff = query(stack.database_url, "SELECT (now() - interval '30 days')::text")[0][0]
    by_age = stack.post("/api/v1/dead-letters/purge", {"name": "fail", "failed_before": cutoff}, key=key)
    assert by_age.status_code == 200 and by_age.json() == {"purged": 1, "ids": [old], "more": False}
    by_id = stack.post("/api/v1/dead-letters/purge", {"ids": [young, theirs]}, key=key)
    assert by_id.json() == {"purged": 1, "ids": [young], "more": False}

    assert stack.get(f"/api/v1/tasks/{old}", key=key).status_code == 404
    listed = stack.get("/api/v1/dead-letters", key=other_key).json()["items"]
    assert [t["id"] for t in listed] == [theirs]  # another tenant's dead letter is untouched
    purges = audit(stack, key, action="dead_letters.purged")
    assert [(e["actor"], e["details"]["ids"]) for e in purges] == [(f"key:{key_id}", [young]), (f"key:{key_id}", [old])]


def test_dead_letters_survive_a_prune_past_retention(stack: Stack) -> None:
    _, key, _ = key_with_id(stack)
    dead = dead_letter(stack, key, age="400 days")
    done = stack.post("/api/v1/tasks", {"name": "noop"}, key=key).json()["id"]
    wait_for(lambda: stack.get(f"/api/v1/tasks/{done}", key=key).json()["status"] == "COMPLETED", timeout=30)
    sql = "UPDATE tasks SET finished_at = finished_at - interval '400 days' WHERE id = %s RETURNING id"
    assert query(stack.database_url, sql, done)
    # The completed one going proves the sweeper pruned past retention meanwhile.
    wait_for(
        lambda: stack.get(f"/api/v1/tasks/{done}", key=key).status_code == 404,
        timeout=30,
        message="the sweeper to prune the old completed task",
    )
    assert stack.get(f"/api/v1/tasks/{dead}", key=key).json()["status"] == "FAILED"
    assert [t["id"] for t in stack.get("/api/v1/dead-letters", key=key).json()["items"]] == [dead]
    events = stack.get(f"/api/v1/tasks/{dead}/events", key=key).json()["events"]
    assert [e["to_status"] for e in events] == ["QUEUED", "PROCESSING", "FAILED"]


def test_cli_dlq_purge_and_audit(stack: Stack) -> None:
    _, key, key_id = key_with_id(stack)
    young = dead_letter(stack, key)
    old = [dead_letter(stack, key, age="10 days") for _ in range(2)]

    nothing = ops(stack, key, "dlq", "purge")
    assert nothing.returncode == 2 and "give --id, --name and/or --older-than" in nothing.stderr
    bad_age = ops(stack, key, "dlq", "purge", "--older-than", "soon")
    assert bad_age.returncode == 2 and "unit" in bad_age.stderr

    aged = ops(stack, key, "dlq", "purge", "--name", "fail", "--older-than", "7d")
    assert aged.returncode == 0, aged.stderr
    assert "purged 2 dead letter(s)" in aged.stdout
    for task_id in old:
        assert stack.get(f"/api/v1/tasks/{task_id}", key=key).status_code == 404
    assert stack.get(f"/api/v1/tasks/{young}", key=key).json()["status"] == "FAILED"
    by_id = ops(stack, key, "dlq", "purge", "--id", young)
    assert by_id.returncode == 0 and "purged 1 dead letter(s)" in by_id.stdout, by_id.stderr

    shown = ops(stack, key, "audit")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    purge_lines = [line for line in lines if "dead_letters.purged" in line]
    assert len(purge_lines) == 2 and all(f"key:{key_id}" in line for line in purge_lines)
    assert any("api_key.created" in line and "cli:e2e-operator" in line for line in lines)
    only = ops(stack, key, "audit", "--action", "api_key.created")
    assert only.returncode == 0 and "dead_letters.purged" not in only.stdout and "api_key.created" in only.stdout
