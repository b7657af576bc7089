"""The claim statement, tasklane_claim (migrations 0024, 0028): its plans, made once per
session, are probes even when made on an empty or tiny table, and its transaction
commits without waiting for the WAL while the function's own settings end with it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.container import Container
from chalicelib.core.model import NewTask


def _new() -> NewTask:
    return NewTask(
        id=str(uuid.uuid4()),
        tenant="claim-statement",
        name="noop",
        priority="normal",
        payload_json="{}",
        max_retries=3,
        timeout_seconds=30,
    )


def _params(ids: list[str]) -> dict[str, object]:
    return {"ids": ids, "token": str(uuid.uuid4()), "lease_seconds": 30, "actor": "t"}


@pytest.mark.parametrize("rows_analysed", [0, 3])
def test_the_claim_plan_made_on_a_tiny_table_probes_the_primary_key(
    database_url: str, rt: Container, rows_analysed: int
) -> None:
    """Round 5's generic plan, made while the bench's table was empty, was a sequential
    scan of tasks kept as the table grew; 0024's, made on a table analysed with a few
    rows, scanned whole indexes.  The function's plans are made at its first call in a
    session and kept: made here on a table analysed empty or with three rows, they must
    still find the rows by id (the lock) and by ctid (the UPDATE), and they are the plans
    the later claims (on a bigger table) run."""
    if rows_analysed:
        rt.store.insert_tasks([_new() for _ in range(rows_analysed)], actor="t")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE tasks")
    plans: list[str] = []
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET client_min_messages = log")
        assert conn.execute(queries()["claim"], _params([str(uuid.uuid4())])).fetchall() == []
        ready = rt.store.insert_tasks([_new() for _ in range(50)], actor="t")
        rows = conn.execute(queries()["claim"], _params([t.id for t in ready[:3]])).fetchall()
    assert sorted(r["id"] for r in rows) == sorted(t.id for t in ready[:3])
    locks = [p for p in plans if "FOR UPDATE" in p and "array_agg" in p]
    updates = [p for p in plans if "UPDATE tasks t" in p]
    assert len(locks) == 2 and len(updates) == 1, plans  # the first claim locked nothing
    for plan in [*locks, *updates]:
        assert "Seq Scan" not in plan and "Bitmap" not in plan and "Sort" not in plan, plan
    for plan in locks:
        assert plan.count("Index Scan using tasks_pkey on tasks") == 1, plan
        assert "Index Cond: (id = ANY ($1))" in plan, plan
    for plan in updates:
        assert "Tid Scan on tasks" in plan and "TID Cond: (ctid = l.tid)" in plan, plan
        assert "Index Scan" not in plan.split("Insert on task_events")[0], plan


def test_the_claim_commits_without_waiting_for_the_wal_and_leaves_its_settings(rt: Container) -> None:
    """synchronous_commit is set transaction-locally inside the function: it must hold
    until the claim's commit (it is not one of the function's SET clauses, which end with
    the call) and not after it; the planner settings end with the call."""
    [ready] = rt.store.insert_tasks([_new()], actor="t")
    with rt.store.connection() as conn:
        with conn.transaction():
            assert [r["id"] for r in conn.execute(queries()["claim"], _params([ready.id])).fetchall()] == [ready.id]
            setting = conn.execute("SHOW synchronous_commit").fetchone()
            assert setting is not None and setting["synchronous_commit"] == "off"
            for name in ("plan_cache_mode", "enable_seqscan", "enable_bitmapscan"):
                row = conn.execute("SELECT current_setting(%s) AS v", (name,)).fetchone()
                assert row is not None and row["v"] in ("auto", "on"), (name, row)
        setting = conn.execute("SHOW synchronous_commit").fetchone()
        assert setting is not None and setting["synchronous_commit"] == "on"
