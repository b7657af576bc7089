"""The finish statement's plan: a one-task finish reads its row through the primary key,
whatever the partial index of PROCESSING tasks holds (after a burst it holds tens of
thousands of dead entries until vacuum), and does not call the completion-webhook
function when no row needs it (bench/RESULTS.md, round 6)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.container import Container
from chalicelib.services.submit import submit, submit_many
from tests.helpers import query, request

TENANT = "finish-plan"


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "Node Type" in node:
            yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item)


def _one_task_in_flight(rt: Container) -> tuple[str, str]:
    """A table of 1,000 finished tasks (analysed: few rows are PROCESSING by the
    statistics, the case where the partial index looked cheapest) and one task claimed."""
    submit_many(rt, TENANT, [request() for _ in range(1000)])
    db = rt.settings.database_url
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET status = 'COMPLETED', attempts = 1, started_at = now(), finished_at = now()")
        conn.execute("ANALYZE tasks")
    task = submit(rt, TENANT, request()).task
    token = str(uuid.uuid4())
    assert [c.id for c in rt.store.claim([task.id], token, 30.0, actor="test")] == [task.id]
    return task.id, token


def _explain_finish(rt: Container, task_id: str, token: str) -> list[dict[str, Any]]:
    """The finish of ``task_id`` under EXPLAIN ANALYZE, rolled back; its plan's nodes."""
    outcome = {"id": task_id, "token": token, "status": "COMPLETED", "result": "{}", "error": None}
    params = {
        "outcomes": json.dumps([outcome]),
        "ids": [task_id],
        "actor": "test",
        "webhook_max_retries": 5,
        "webhook_timeout": 10,
    }
    with psycopg.connect(rt.settings.database_url) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + queries()["finish"], params).fetchone()
        conn.rollback()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return list(_nodes(plan))


def test_finish_reads_its_row_by_primary_key_not_the_processing_index(rt: Container) -> None:
    task_id, token = _one_task_in_flight(rt)
    nodes = _explain_finish(rt, task_id, token)
    on_tasks = [n for n in nodes if n.get("Relation Name") == "tasks" and n.get("Operation") is None]
    assert on_tasks, nodes
    assert {n.get("Index Name") for n in on_tasks} == {"tasks_pkey"}, on_tasks


def test_finish_runs_the_webhook_function_only_when_a_row_needs_it(rt: Container) -> None:
    task_id, token = _one_task_in_flight(rt)
    nodes = _explain_finish(rt, task_id, token)
    calls = [n for n in nodes if n.get("Function Name") == "tasklane_completion_webhooks"]
    assert len(calls) == 1, nodes
    assert calls[0]["Actual Loops"] == 0  # the one-time filter held it back: never run
    assert query(rt.settings.database_url, "SELECT status FROM tasks WHERE id = %s", task_id) == [("PROCESSING",)]
