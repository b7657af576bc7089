"""Bulk redrive of dead letters by task name, over HTTP: only the tenant's FAILED
tasks of that name go back to QUEUED (fresh budget, an audit event each), within
the limit, and run again."""

from __future__ import annotations

from chalicelib.container import Container
from chalicelib.core.model import Status
from chalicelib.services.submit import submit
from tests.helpers import drain_once, query, request
from tests.integration.app_client import api_for

TENANT = "redrive"
OTHER = "redrive-other"


def _dead(rt: Container, tenant: str, name: str = "fail") -> str:
    """A dead letter of task type ``name`` (a permanent failure on its first attempt)."""
    task = submit(rt, tenant, request("fail", {"permanent": True})).task
    if name != "fail":
        # No other built-in type fails on demand: rename it, and it fails as an unknown name.
        query(rt.settings.database_url, "UPDATE tasks SET name = %s WHERE id = %s RETURNING id", name, task.id)
    return task.id


def _statuses(rt: Container, ids: list[str]) -> dict[str, str]:
    rows = query(rt.settings.database_url, "SELECT id::text, status FROM tasks WHERE id = ANY(%s::uuid[])", ids)
    return {r[0]: r[1] for r in rows}


def test_redrive_by_name_takes_only_that_names_dead_letters_of_the_tenant(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        wanted = [_dead(rt, TENANT) for _ in range(3)]
        other_name = _dead(rt, TENANT, "gone-away")
        other_tenant = _dead(rt, OTHER)
        completed = submit(rt, TENANT, request("fail", {"times": 0})).task.id
        drain_once(rt)
        everyone = [*wanted, other_name, other_tenant, completed]
        assert _statuses(rt, everyone) == {**dict.fromkeys(everyone[:-1], "FAILED"), completed: "COMPLETED"}

        answer = api.post("/api/v1/dead-letters/redrive", {"name": "fail"})
        assert answer.status_code == 200, answer.json_body
        assert answer.json_body["redriven"] == 3 and sorted(answer.json_body["ids"]) == sorted(wanted)
        assert _statuses(rt, everyone) == {
            **dict.fromkeys(wanted, "QUEUED"),
            other_name: "FAILED",
            other_tenant: "FAILED",
            completed: "COMPLETED",
        }
        redriven = query(
            rt.settings.database_url,
            "SELECT task_id::text, attempt FROM task_events WHERE from_status = 'FAILED' AND to_status = 'QUEUED'",
        )
        assert sorted(r[0] for r in redriven) == sorted(wanted)
        assert all(r[1] == 1 for r in redriven)  # the attempt that had failed is on record

        # Back in Redis too: a drain runs them again from a fresh budget.
        drain_once(rt)
        for task_id in wanted:
            task = rt.store.get_task(TENANT, task_id)
            assert task is not None and (task.status, task.attempts) == (Status.FAILED, 1)
        assert api.post("/api/v1/dead-letters/redrive", {"name": "nothing-by-this-name"}).json_body["redriven"] == 0


def test_redrive_by_name_respects_the_limit(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        ids = [_dead(rt, TENANT) for _ in range(5)]
        drain_once(rt)
        first = api.post("/api/v1/dead-letters/redrive", {"name": "fail", "limit": 2}).json_body
        second = api.post("/api/v1/dead-letters/redrive", {"name": "fail", "limit": 500}).json_body
        assert (first["redriven"], second["redriven"]) == (2, 3)
        assert sorted(first["ids"] + second["ids"]) == sorted(ids)


def test_redrive_request_errors_are_400s(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        for body in ({}, {"name": 7}, {"name": "fail", "limit": 0}, {"name": "fail", "limit": 501}, [1]):
            answer = api.post("/api/v1/dead-letters/redrive", body)
            assert answer.status_code == 400, (body, answer.json_body)
            assert answer.json_body["error"]["message"]
