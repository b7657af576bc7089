"""Dependencies and workflows over real HTTP against a live local stack: a diamond runs
in order with its parents' results passed, a failed parent cancels its dependents."""

from __future__ import annotations

from typing import Any

from tests.helpers import wait_for
from tests.stack import Stack

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def _workflow(stack: Stack, steps: dict[str, Any]) -> dict[str, Any]:
    r = stack.post("/api/v1/workflows", {"steps": steps})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _ended(stack: Stack, workflow_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = dict(stack.get(f"/api/v1/workflows/{workflow_id}").json())
        return body if all(s["task"]["status"] in FINAL for s in body["steps"].values()) else None

    return wait_for(done, timeout=30, interval=0.1, message="every step to end")


def test_diamond_runs_in_order_with_results_passed(stack: Stack) -> None:
    wf = _workflow(
        stack,
        {
            "a": {"name": "noop", "payload": {"v": "a"}},
            "b": {"name": "noop", "payload": {"v": "b"}, "after": ["a"]},
            "c": {"name": "noop", "payload": {"v": "c"}, "after": ["a"]},
            "d": {"name": "noop", "payload": {"v": "d"}, "after": ["b", "c"]},
        },
    )
    assert {n: s["task"]["status"] for n, s in wf["steps"].items()} == {
        "a": "QUEUED",
        "b": "WAITING",
        "c": "WAITING",
        "d": "WAITING",
    }
    body = _ended(stack, wf["id"])
    assert body["status"] == "COMPLETED"
    steps = {n: s["task"] for n, s in body["steps"].items()}
    assert sorted(body["steps"]["d"]["after"]) == ["b", "c"]
    assert steps["b"]["result"] == {"payload": {"v": "b"}, "parents": {"a": {"v": "a"}}}
    assert steps["d"]["result"]["parents"] == {"b": steps["b"]["result"], "c": steps["c"]["result"]}
    for child, parent in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert steps[child]["started_at"] >= steps[parent]["finished_at"]
    d = stack.task(steps["d"]["id"])
    assert sorted(d["depends_on"]) == sorted([steps["b"]["id"], steps["c"]["id"]])
    assert stack.task(steps["a"]["id"])["dependents"] == sorted([steps["b"]["id"], steps["c"]["id"]])


def test_failed_parent_cancels_dependents_and_depends_on_ids(stack: Stack) -> None:
    wf = _workflow(
        stack,
        {
            "a": {"name": "fail", "payload": {"permanent": True}, "max_retries": 0},
            "b": {"name": "noop", "after": ["a"]},
            "c": {"name": "noop", "after": ["b"]},
        },
    )
    body = _ended(stack, wf["id"])
    assert body["status"] == "FAILED"
    states = {n: (s["task"]["status"], s["task"]["last_error_type"]) for n, s in body["steps"].items()}
    assert states == {
        "a": ("FAILED", "PermanentError"),
        "b": ("CANCELLED", "DependencyFailed"),
        "c": ("CANCELLED", "DependencyFailed"),
    }
    # depends_on by id, on a parent that has failed already: cancelled at once.
    child = stack.submit("noop", depends_on=[body["steps"]["a"]["task"]["id"]])
    assert child["status"] == "CANCELLED" and child["last_error_type"] == "DependencyFailed"
    missing = "00000000-0000-4000-8000-000000000000"
    r = stack.post("/api/v1/tasks", {"name": "noop", "depends_on": [missing]})
    assert r.status_code == 400 and missing in r.json()["error"]["message"]
    r = stack.post(
        "/api/v1/workflows", {"steps": {"x": {"name": "noop", "after": ["y"]}, "y": {"name": "noop", "after": ["x"]}}}
    )
    assert r.status_code == 400 and "cycle" in r.json()["error"]["message"]


def test_the_python_client_submits_and_reads_workflows_and_dependents(stack: Stack) -> None:
    from tasklane_client import Client, TaskStatus

    with Client(stack.base_url, stack.api_key, backoff_base=0.05) as c:
        parent = c.submit("noop", {"p": 1})
        child = c.submit("noop", depends_on=[parent.id], on_dependency_failure="run")
        assert child.status in (TaskStatus.WAITING, TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.COMPLETED)
        assert c.wait(child.id, timeout=30) == {"payload": {}, "parents": {parent.id: {"p": 1}}}
        assert c.get(child.id).depends_on == [parent.id]
        wf = c.submit_workflow({"a": {"name": "noop"}, "b": {"name": "noop", "after": ["a"]}})
        assert wf.steps["b"].after == ["a"] and wf.steps["b"].task is not None
        assert wf.steps["b"].task.status is TaskStatus.WAITING
        done = wait_for(lambda: (w := c.get_workflow(wf.id)).status == "COMPLETED" and w, timeout=30)
        assert done.steps["b"].task is not None and done.steps["b"].task.result == {"payload": {}, "parents": {"a": {}}}
