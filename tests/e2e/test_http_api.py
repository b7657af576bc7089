"""The HTTP API over real HTTP against a live local stack."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import query, wait_for
from tests.stack import Stack

PRIORITIES = ["critical", "high", "normal", "low"]
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def test_200_noop_tasks_in_four_priorities_complete_with_payload(stack: Stack) -> None:
    def submit(i: int) -> dict[str, object]:
        return stack.submit("noop", {"i": i, "tag": uuid.uuid4().hex}, priority=PRIORITIES[i % 4])

    with ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(submit, range(200)))
    ids = [str(t["id"]) for t in submitted]
    wait_for(
        lambda: (
            query(
                stack.database_url,
                "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'COMPLETED'",
                ids,
            )[0][0]
            == 200
        ),
        timeout=60,
        message="200 tasks to complete",
    )
    for t in submitted[::20]:
        got = stack.task(str(t["id"]))
        assert got["status"] == "COMPLETED"
        assert got["result"] == t["payload"]
        events = stack.get(f"/api/v1/tasks/{t['id']}/events").json()["events"]
        assert [e["to_status"] for e in events] == ["QUEUED", "PROCESSING", "COMPLETED"]
    no_events = query(
        stack.database_url,
        "SELECT count(*) FROM tasks t WHERE id = ANY(%s::uuid[]) AND "
        "(SELECT count(*) FROM task_trail e WHERE e.task_id = t.id) <> 3",
        ids,
    )[0][0]
    assert no_events == 0


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        ("{not json", 400, "validation_error", "not valid JSON"),
        ({"payload": {}}, 400, "validation_error", "missing field(s) name"),
        ({"name": "noop", "payload": [1, 2]}, 400, "validation_error", "payload must be a JSON object"),
        ({"name": "no-such-task"}, 400, "validation_error", "known task names: "),
        ({"name": "noop", "priority": "urgent"}, 400, "validation_error", "priority must be one of"),
        ({"name": "noop", "delay_seconds": -1}, 400, "validation_error", "delay_seconds"),
        ({"name": "noop", "run_at": "tomorrow"}, 400, "validation_error", "run_at must be ISO-8601"),
        ({"name": "noop", "max_retries": "3"}, 400, "validation_error", "max_retries"),
        ({"name": "noop", "delay": 5}, 400, "validation_error", "unknown field(s) delay"),
        ({"name": "sleep", "payload": {"seconds": "x"}}, 400, "validation_error", "payload is invalid for sleep"),
        ([1, 2, 3], 400, "validation_error", "JSON object"),
    ],
)
def test_bad_submissions_get_4xx_json_errors(stack: Stack, body: object, status: int, code: str, needle: str) -> None:
    if isinstance(body, str):
        r = stack.post("/api/v1/tasks", data=body)
    else:
        r = stack.post("/api/v1/tasks", body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert needle in error["message"]


def test_wrong_content_type_is_415(stack: Stack) -> None:
    r = stack.post("/api/v1/tasks", data="name=noop", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/tasks", {"name": "noop"}),
        ("/api/v1/tasks/batch", {"tasks": [{"name": "noop"}]}),
        ("/api/v1/dead-letters/redrive", {"name": "noop"}),
        ("/api/v1/schedules", {"name": "n", "cron": "0 9 * * *", "task": {"name": "noop"}}),
    ],
)
def test_a_body_without_content_type_is_415_over_http(stack: Stack, path: str, body: object) -> None:
    """Issue 12: one rule on every route that takes a body (Chalice alone takes a
    missing Content-Type for JSON)."""
    r = requests.post(stack.base_url + path, data=json.dumps(body), headers={"X-API-Key": stack.api_key}, timeout=10)
    assert "Content-Type" not in r.request.headers  # requests adds none for a str body
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert stack.post(path, body, headers={"Content-Type": "application/json; charset=utf-8"}).status_code in (200, 201)


@pytest.mark.parametrize("key", [None, "", "tl_not-a-real-key-at-all-000000"])
def test_missing_or_unknown_key_is_401(stack: Stack, key: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    r = requests.post(stack.base_url + "/api/v1/tasks", json={"name": "noop"}, headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = requests.get(stack.base_url + f"/api/v1/tasks/{uuid.uuid4()}", headers=headers, timeout=10)
    assert r.status_code == 401


@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "not-a-uuid", "1"], ids=["unknown", "not-a-uuid", "digit"])
def test_unknown_or_malformed_id_is_404(stack: Stack, task_id: str) -> None:
    r = stack.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_health_reports_components(stack: Stack) -> None:
    r = requests.get(stack.base_url + "/health", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "UP"
    assert body["components"]["db"]["status"] == "UP"
    assert body["components"]["redis"]["status"] == "UP"


def test_retried_task_shows_every_error_then_completes(stack: Stack) -> None:
    task = stack.submit("fail", {"times": 2})
    done = wait_for(lambda: (t := stack.task(task["id"]))["status"] in FINAL and t, timeout=30)
    assert done["status"] == "COMPLETED" and done["attempts"] == 3
    assert [e["attempt"] for e in done["errors"]] == [1, 2]


def test_dead_letter_list_and_redrive_over_http(stack: Stack) -> None:
    name_tag = uuid.uuid4().hex[:8]
    task = stack.submit("fail", {"permanent": True, "message": name_tag})
    wait_for(lambda: stack.task(task["id"])["status"] == "FAILED", timeout=30)
    page = stack.get("/api/v1/dead-letters", params={"name": "fail", "limit": 500}).json()
    assert task["id"] in [t["id"] for t in page["items"]]
    r = stack.post(f"/api/v1/dead-letters/{task['id']}/redrive")
    assert r.status_code == 200 and r.json()["status"] == "QUEUED"

    def ran_again() -> list[dict[str, object]] | None:
        events: list[dict[str, object]] = stack.get(f"/api/v1/tasks/{task['id']}/events").json()["events"]
        return events if [e["to_status"] for e in events].count("FAILED") == 2 else None

    events = wait_for(ran_again, timeout=30)
    assert stack.task(task["id"])["attempts"] == 1
    assert ["FAILED", "QUEUED"] in [[e["from_status"], e["to_status"]] for e in events]
    r = stack.post(f"/api/v1/dead-letters/{uuid.uuid4()}/redrive")
    assert r.status_code == 404


def test_cancel_over_http(stack: Stack) -> None:
    later = stack.submit("noop", {}, delay_seconds=3600)
    r = stack.post(f"/api/v1/tasks/{later['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    r = stack.post(f"/api/v1/tasks/{later['id']}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    running = stack.submit("sleep", {"seconds": 30})
    wait_for(lambda: stack.task(running["id"])["status"] == "PROCESSING", timeout=30)
    r = stack.post(f"/api/v1/tasks/{running['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    wait_for(lambda: stack.task(running["id"])["status"] == "CANCELLED", timeout=30)


def test_trace_id_round_trips_through_the_live_stack(stack: Stack) -> None:
    root = f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
    sent = stack.post(
        "/api/v1/tasks",
        {"name": "noop", "payload": {"traced": True}},
        headers={"X-Amzn-Trace-Id": f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1"},
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["trace_id"] == root
    w3c = stack.post(
        "/api/v1/tasks",
        {"name": "noop", "payload": {}},
        headers={"traceparent": f"00-{root[2:].replace('-', '')}-53995c3f42cd8ad8-01"},
    )
    assert w3c.status_code == 201 and w3c.json()["trace_id"] == root
    hostile = stack.post(
        "/api/v1/tasks", {"name": "noop", "payload": {}}, headers={"X-Amzn-Trace-Id": "Root=1-x;" + "A" * 5000}
    )
    assert hostile.status_code == 201, hostile.text
    assert hostile.json()["trace_id"] not in (None, root)
    task_id = str(sent.json()["id"])
    wait_for(lambda: stack.task(task_id)["status"] == "COMPLETED", timeout=30, message="the traced task to complete")
    assert stack.task(task_id)["trace_id"] == root
