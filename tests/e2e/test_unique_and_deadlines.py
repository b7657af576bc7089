"""Black-box, over real HTTP against the live stack: a unique key yields one task under
twenty concurrent submits; a task past its expires_at never runs."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from tasklane_client import Client

from tests.helpers import wait_for
from tests.stack import Stack


def test_twenty_concurrent_submits_of_one_unique_key_make_one_task(stack: Stack) -> None:
    key = f"nightly-{uuid.uuid4().hex[:8]}"
    body = {"name": "sleep", "payload": {"seconds": 1}, "unique_key": key}
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: stack.post("/api/v1/tasks", body), range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 19 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert all(a.headers.get("Unique-Duplicate") == "true" for a in answers if a.status_code == 200)
    task_id = answers[0].json()["id"]
    assert stack.task(task_id)["unique_key"] == key
    # Held while active: once the task is final the key makes a new task.
    wait_for(lambda: stack.task(task_id)["status"] == "COMPLETED", timeout=30, message="the holder to finish")
    again = stack.post("/api/v1/tasks", body)
    assert again.status_code == 201 and again.json()["id"] != task_id, again.text


def test_a_task_past_its_deadline_never_runs(stack: Stack) -> None:
    # The type is paused for the stack's tenant, so nothing can start the task in time.
    assert stack.post("/api/v1/task-types/fail/pause").status_code == 200
    try:
        deadline = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        task = stack.submit("fail", {"times": 0}, expires_at=deadline)
        assert task["expires_at"] is not None and task["status"] == "QUEUED"
        wait_for(lambda: stack.task(task["id"])["status"] == "CANCELLED", timeout=30, message="the task to expire")
    finally:
        stack.post("/api/v1/task-types/fail/resume")
    done = stack.task(task["id"])
    assert done["last_error_type"] == "Expired" and done["started_at"] is None and done["attempts"] == 0
    events = stack.get(f"/api/v1/tasks/{task['id']}/events").json()["events"]
    assert [e["to_status"] for e in events] == ["QUEUED", "CANCELLED"]
    assert events[-1]["error_type"] == "Expired"
    late = stack.post("/api/v1/tasks", {"name": "noop", "expires_at": "2001-01-01T00:00:00Z"})
    assert late.status_code == 400 and "expires_at" in late.json()["error"]["message"]


def test_the_python_client_says_duplicate_and_shows_the_new_fields(stack: Stack) -> None:
    key = f"client-{uuid.uuid4().hex[:8]}"
    deadline = datetime.now(UTC) + timedelta(hours=1)
    with Client(stack.base_url, stack.api_key) as tl:
        first = tl.submit(
            "noop", {"n": 1}, delay_seconds=600, unique_key=key, unique_for_seconds=60, expires_at=deadline
        )
        again = tl.submit("noop", {"n": 2}, unique_key=key)
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert first.unique_key == key and first.unique_until is not None and first.expires_at == deadline
    assert first.snoozes == 0
