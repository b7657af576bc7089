"""The finish statement's plan (tasklane_finish, migration 0038): a finish reads its rows
through the primary key, whatever the partial index of PROCESSING tasks holds (after a
burst it holds tens of thousands of dead entries until vacuum), also with the plan the
function keeps for the session made on an empty or tiny table; and it does not call the
completion-webhook function when no row needs it (bench/RESULTS.md, rounds 6 and 8)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from chalicelib.adapters.postgres.rows import finish_params
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.container import Container
from chalicelib.core.model import Outcome, Status
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


def _finished_tasks(rt: Container, n: int) -> None:
    """``n`` finished tasks, analysed (few rows are PROCESSING by the statistics, the case
    where the partial index looked cheapest)."""
    if n:
        submit_many(rt, TENANT, [request() for _ in range(n)])
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET status = 'COMPLETED', attempts = 1, started_at = now(), finished_at = now()")
        conn.execute("ANALYZE tasks")


def _in_flight(rt: Container) -> tuple[str, str]:
    task = submit(rt, TENANT, request()).task
    token = str(uuid.uuid4())
    assert [c.id for c in rt.store.claim([task.id], token, 30.0, actor="test")] == [task.id]
    return task.id, token


def _params(task_id: str, token: str) -> dict[str, object]:
    outcome = Outcome(task_id, token, Status.COMPLETED, "{}")
    return finish_params([outcome], "test", webhook_max_retries=5, webhook_timeout=10)


def _explain_finish(
    rt: Container, task_id: str, token: str, *, plan_first: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finish of ``task_id`` in a new session, rolled back; the plan nodes of the
    function's two statements, the lock and the statement with the UPDATE (auto_explain,
    nested statements, analysed).  With ``plan_first`` the session first finishes an
    unknown id, so the plans the function keeps were made on the table as it was before
    the task was in flight (that call locks nothing and ends after the lock)."""
    plans: list[str] = []
    with psycopg.connect(rt.settings.database_url) as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_format = json",
            "SET client_min_messages = log",
        ):
            conn.execute(setting)
        conn.commit()
        if plan_first:
            assert conn.execute(queries()["finish"], _params(str(uuid.uuid4()), token)).fetchall() == []
            conn.commit()
            plans.clear()
        assert len(conn.execute(queries()["finish"], _params(task_id, token)).fetchall()) == 1
        conn.rollback()
    locks = [p for p in plans if "FOR UPDATE" in p and "array_agg" in p]
    updates = [p for p in plans if "UPDATE tasks t" in p]
    assert len(locks) == 1 and len(updates) == 1, plans
    return tuple(list(_nodes(json.loads(p.split("plan:", 1)[1]))) for p in (locks[0], updates[0]))  # type: ignore[return-value]


def _reads_tasks_by_probes_only(rt: Container, task_id: str, token: str, *, plan_first: bool = False) -> None:
    """The lock probes tasks_pkey per id; the UPDATE finds each locked row by its ctid."""
    lock, update = _explain_finish(rt, task_id, token, plan_first=plan_first)
    for nodes, expected in ((lock, {("Index Scan", "tasks_pkey")}), (update, {("Tid Scan", None)})):
        on_tasks = [n for n in nodes if n.get("Relation Name") == "tasks" and n.get("Operation") is None]
        assert {(n["Node Type"], n.get("Index Name")) for n in on_tasks} == expected, nodes


def test_finish_reads_its_row_by_primary_key_not_the_processing_index(rt: Container) -> None:
    _finished_tasks(rt, 1000)
    task_id, token = _in_flight(rt)
    _reads_tasks_by_probes_only(rt, task_id, token)


@pytest.mark.parametrize("rows_analysed", [0, 3])
def test_the_finish_plan_made_on_a_tiny_table_probes_the_primary_key(rt: Container, rows_analysed: int) -> None:
    """The function's plan is generic, made at its first call in a session and kept:
    made on a table analysed empty or with three rows, it must still find the rows by id
    (as 0028 found for the claim, a whole-index scan can look as cheap as a probe there)."""
    _finished_tasks(rt, rows_analysed)
    task_id, token = _in_flight(rt)
    submit_many(rt, TENANT, [request() for _ in range(200)])  # the table grows after the plan's statistics
    _reads_tasks_by_probes_only(rt, task_id, token, plan_first=True)


def test_finish_runs_the_webhook_function_only_when_a_row_needs_it(rt: Container) -> None:
    _finished_tasks(rt, 1000)
    task_id, token = _in_flight(rt)
    _, nodes = _explain_finish(rt, task_id, token)
    calls = [n for n in nodes if n.get("Function Name") == "tasklane_completion_webhooks"]
    assert len(calls) == 1, nodes
    assert calls[0]["Actual Loops"] == 0  # the one-time filter held it back: never run
    assert query(rt.settings.database_url, "SELECT status FROM tasks WHERE id = %s", task_id) == [("PROCESSING",)]
