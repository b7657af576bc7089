"""Black box: a batch over HTTP, its progress, and its callback arriving once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.adapters.webhooks import verify
from tests.helpers import Receiver, receiving, wait_for
from tests.stack import Stack


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def test_a_batch_callback_arrives_once_signed_with_the_counts(stack: Stack, hooks: Receiver) -> None:
    body = {
        "tasks": [
            {"name": "sleep", "payload": {"seconds": 0.3}},
            {"name": "fail", "payload": {"permanent": True}},
            {"name": "nope"},  # refused: not in the batch
        ],
        "batch": {"callback_url": hooks.url, "on_complete": {"name": "noop", "payload": {"step": "report"}}},
    }
    r = stack.post("/api/v1/tasks/batch", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    batch_id = answer["batch_id"]
    assert answer["created"] == 2 and answer["failed"] == 1 and batch_id
    assert [i.get("task", {}).get("batch_id") for i in answer["results"]] == [batch_id, batch_id, None]
    first = stack.get(f"/api/v1/batches/{batch_id}").json()
    assert first["total"] == 2 and first["status"] in ("OPEN", "COMPLETED")

    done = wait_for(
        lambda: (b := stack.get(f"/api/v1/batches/{batch_id}").json())["status"] == "COMPLETED" and b, timeout=30
    )
    assert (done["remaining"], done["progress"]) == (0, 100)
    assert done["counts"] == {"PENDING": 0, "QUEUED": 0, "PROCESSING": 0, "COMPLETED": 1, "FAILED": 1, "CANCELLED": 0}
    wait_for(lambda: len(hooks.calls) >= 1, timeout=30, message="the batch callback")
    follow_up: dict[str, Any] = wait_for(
        lambda: (t := stack.task(done["follow_up_task_id"]))["status"] == "COMPLETED" and t, timeout=30
    )
    assert follow_up["payload"]["step"] == "report" and follow_up["payload"]["batch"]["failed"] == 1
    # The webhook task is done (delivered, so never retried): one delivery, and one
    # webhook task for the batch.
    wait_for(lambda: stack.task(done["callback_task_id"])["status"] == "COMPLETED", timeout=30)
    assert len(hooks.calls) == 1
    headers, raw = hooks.calls[0]["headers"], hooks.calls[0]["body"]
    secret = stack.get("/api/v1/webhook-secret").json()["secret"]
    assert verify(secret, headers["Tasklane-Timestamp"], raw, headers["Tasklane-Signature"])
    event = json.loads(raw)
    assert event["event"] == "batch.completed" and event["batch"]["id"] == batch_id
    assert (event["batch"]["total"], event["batch"]["completed"], event["batch"]["failed"]) == (2, 1, 1)
    assert headers["Tasklane-Delivery"] == done["callback_task_id"]
    listed = stack.get("/api/v1/batches", params={"status": "COMPLETED", "limit": 500}).json()
    assert batch_id in [b["id"] for b in listed["items"]]
    assert stack.get("/api/v1/batches", params={"status": "DONE"}).status_code == 400


def test_batches_are_in_the_openapi_document_and_unknown_ones_are_404(stack: Stack) -> None:
    doc = stack.get("/openapi.json").json()
    assert "/api/v1/batches/{batch_id}" in doc["paths"]
    assert "batch" in doc["components"]["schemas"]["BatchRequest"]["properties"]
    assert stack.get("/api/v1/batches/00000000-0000-0000-0000-000000000000").status_code == 404
    assert stack.get("/api/v1/batches/not-a-uuid").status_code == 404
    r = stack.post("/api/v1/tasks/batch", {"tasks": [{"name": "noop"}], "batch": {"on_complete": {"name": "nope"}}})
    assert r.status_code == 400 and "batch.on_complete" in r.json()["error"]["message"]


def test_the_python_client_opens_reads_and_verifies_a_batch(stack: Stack, hooks: Receiver) -> None:
    from tasklane_client import Client, NewTask, verify_webhook

    with Client(stack.base_url, stack.api_key, backoff_base=0.05) as client:
        tasks = [NewTask("noop", {"i": i}, idempotency_key=f"client-batch-{uuid.uuid4()}") for i in range(3)]
        batch = {"callback_url": hooks.url, "on_complete": NewTask("noop", {"step": "after"})}
        result = client.submit_many(tasks, batch=batch)
        assert result.created == 3 and result.batch_id and all(t.batch_id == result.batch_id for t in result.tasks)
        # The same request again: every item replayed, no second batch, the first one named.
        again = client.submit_many(tasks, batch=batch)
        assert again.created == 0 and again.batch_id == result.batch_id
        done = wait_for(lambda: (b := client.get_batch(result.batch_id or "")).is_complete and b, timeout=30)
        assert done.total == 3 and done.counts["COMPLETED"] == 3 and done.progress == 100
        assert done.id in [b.id for b in client.batches_page(status="COMPLETED", limit=500).items]
        wait_for(lambda: hooks.calls, timeout=30, message="the batch callback")
        secret = client.webhook_secret().secret
        event = verify_webhook(secret, hooks.calls[0]["headers"], hooks.calls[0]["body"])
        assert event.event == "batch.completed" and event.batch is not None and event.batch["id"] == done.id
