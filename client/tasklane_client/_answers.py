"""Reading the API's successful answers into the client's models (``_core`` builds
the calls that use them)."""

from __future__ import annotations

import httpx

from tasklane_client.errors import error_class
from tasklane_client.models import AuditEntry, Batch, BatchItem, BatchResult, Page, Schedule, Task, TaskEvent
from tasklane_client.workflows import Workflow

REPLAYED_HEADER = "Idempotent-Replayed"
DUPLICATE_HEADER = "Unique-Duplicate"


def task(response: httpx.Response) -> Task:
    replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
    duplicate = response.headers.get(DUPLICATE_HEADER, "").lower() == "true"
    return Task.from_dict(response.json(), replayed=replayed, duplicate=duplicate)


def workflow(response: httpx.Response) -> Workflow:
    return Workflow.from_dict(response.json())


def task_page(response: httpx.Response) -> Page[Task]:
    body = response.json()
    return Page([Task.from_dict(t) for t in body.get("items", [])], body.get("next_cursor"))


def batch(response: httpx.Response) -> BatchResult:
    body = response.json()
    results: list[BatchItem] = []
    for item in body.get("results", []):
        status = int(item.get("status", 0))
        if "error" in item:
            err = item["error"]
            cls = error_class(status, err.get("code"))
            error = cls(str(err.get("message", "")), status=status, code=err.get("code"), details=err.get("details"))
            results.append(BatchItem(int(item["index"]), status, None, error))
        else:
            replayed = bool(item.get("replayed", False))
            task = Task.from_dict(item["task"], replayed=replayed, duplicate=bool(item.get("duplicate", False)))
            results.append(BatchItem(int(item["index"]), status, task, None, replayed))
    batch_id = body.get("batch_id")
    if batch_id is None:
        # A retry whose items were all replayed opens no batch: theirs is the first one's.
        seen = {r.task.batch_id for r in results if r.task is not None}
        batch_id = seen.pop() if len(seen) == 1 and body.get("created") == 0 else None
    return BatchResult(int(body.get("created", 0)), int(body.get("failed", 0)), results, batch_id)


def batch_page(response: httpx.Response) -> Page[Batch]:
    body = response.json()
    return Page([Batch.from_dict(b) for b in body.get("items", [])], body.get("next_cursor"))


def batch_info(response: httpx.Response) -> Batch:
    return Batch.from_dict(response.json())


def schedule(response: httpx.Response) -> Schedule:
    return Schedule.from_dict(response.json())


def schedules(response: httpx.Response) -> list[Schedule]:
    return [Schedule.from_dict(s) for s in response.json().get("items", [])]


def events(response: httpx.Response) -> list[TaskEvent]:
    return [TaskEvent.from_dict(e) for e in response.json().get("events", [])]


def audit_page(response: httpx.Response) -> Page[AuditEntry]:
    body = response.json()
    return Page([AuditEntry.from_dict(e) for e in body.get("items", [])], body.get("next_cursor"))


def none(response: httpx.Response) -> None:
    return None
