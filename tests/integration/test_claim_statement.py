"""The claim statement, tasklane_claim (migrations 0024, 0028, 0035, 0039, 0042): its plans, made
once per session, are probes even when made on an empty or tiny table, its transaction
commits without waiting for the WAL while the function's own settings end with it, its
one-row path (0035) writes and returns what the path for several rows does, and counts
its own metrics while the statement triggers on tasks and task_events stand aside
(0039); the unique-key row trigger is not looked at for its UPDATE (0040)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.container import Container
from chalicelib.core.model import NewTask
from chalicelib.observability.metrics import BUCKETS


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


@contextmanager
def _explaining(database_url: str, plans: list[str]) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A new session (so the claim function plans afresh) on ``tasks`` as analysed now,
    whose statements' plans, nested ones included, are appended to ``plans``."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE tasks")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET client_min_messages = log")
        yield conn


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
    plans: list[str] = []
    with _explaining(database_url, plans) as conn:
        assert conn.execute(queries()["claim"], _params([str(uuid.uuid4())])).fetchall() == []
        ready = rt.store.insert_tasks([_new() for _ in range(50)], actor="t")
        rows = conn.execute(queries()["claim"], _params([t.id for t in ready[:3]])).fetchall()
    assert sorted(r["id"] for r in rows) == sorted(t.id for t in ready[:3])
    locks = [p for p in plans if "FOR UPDATE" in p and "array_agg" in p]
    updates = [p for p in plans if "UPDATE tasks t" in p]
    unseen = [p for p in plans if "AS fresh" in p]  # 0042: which ids have no row
    # The first claim locked nothing: its id has no row, so it looked for the row again
    # after its wait for a submit in flight (0042), through two statements more.
    assert len(locks) == 3 and len(updates) == 1 and len(unseen) == 1, plans
    for plan in [*locks, *updates, *unseen]:
        assert "Seq Scan" not in plan and "Bitmap" not in plan and "Sort" not in plan, plan
    assert unseen[0].count("Index Scan using tasks_pkey on tasks t") == 1, unseen
    assert "Index Cond: (id = ANY ($1))" in unseen[0] and "Join" not in unseen[0], unseen
    for plan in locks:
        assert plan.count("Index Scan using tasks_pkey on tasks") == 1, plan
        assert "Index Cond: (id = ANY ($1))" in plan, plan
    for plan in updates:
        assert "Tid Scan on tasks" in plan and "TID Cond: (ctid = l.tid)" in plan, plan
        assert "Index Scan" not in plan.split("Insert on task_events")[0], plan


def test_the_one_row_claim_updates_its_row_by_ctid(database_url: str, rt: Container) -> None:
    """0035's UPDATE for a single locked row, planned on an empty table as a drainer's
    first claim of the day is: one TID probe, nothing else."""
    plans: list[str] = []
    with _explaining(database_url, plans) as conn:
        for task in rt.store.insert_tasks([_new() for _ in range(2)], actor="t"):
            assert [r["id"] for r in conn.execute(queries()["claim"], _params([task.id])).fetchall()] == [task.id]
    updates = [p for p in plans if "UPDATE tasks t" in p]
    assert len(updates) == 2, plans
    for plan in updates:
        assert "Tid Scan on tasks" in plan and re.search(r"TID Cond: \(ctid = \(\$\d+\)\[1\]\)", plan), plan
        assert "Seq Scan" not in plan and "Index Scan" not in plan and "Nested Loop" not in plan, plan


# What a claim writes and returns, apart from ids and instants: the returned row, the
# task's row and its PROCESSING event, each time as an offset from started_at.
_CLAIMED = """
SELECT t.status::text, t.attempts::int, t.lease_token::text, t.started_at = t.updated_at AS same_instant,
       t.lease_expires_at - t.started_at AS lease, extract(epoch FROM t.enqueued_at - t.created_at)::float8 AS enqueued,
       e.from_status::text, e.to_status::text, e.attempt, e.actor, e.task_name,
       e.task_enqueued_at = t.enqueued_at AS event_enqueued, e.task_started_at = t.started_at AS event_started
FROM tasks t JOIN task_events e ON e.task_id = t.id AND e.to_status = 'PROCESSING'
WHERE t.id = %s
"""


@pytest.mark.parametrize("status", ["QUEUED", "PENDING"])
def test_a_one_row_claim_writes_what_a_claim_of_several_does(database_url: str, rt: Container, status: str) -> None:
    """0035 gave a claim that locked one row an UPDATE of its own: for a QUEUED task and
    for a PENDING one already due (its enqueued_at becomes its run_at), the one-row
    path and the general path (the same task shape claimed with another) return the same
    columns, leave the same row and event, and move the same metrics."""
    alone, first, second = rt.store.insert_tasks([_new() for _ in range(3)], actor="t")
    token = str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        if status == "PENDING":
            conn.execute(
                "UPDATE tasks SET status = 'PENDING', run_at = created_at - interval '1 second' WHERE id = ANY(%s)",
                ([alone.id, first.id, second.id],),
            )
        conn.execute("UPDATE tasks SET enqueued_at = created_at + interval '2 seconds' WHERE status = 'QUEUED'")
        conn.execute("DELETE FROM task_metric_deltas")
        [one] = conn.execute(queries()["claim"], {**_params([alone.id]), "token": token}).fetchall()
        one_metrics = conn.execute("SELECT name, metric, le, n FROM task_metric_deltas ORDER BY 1, 2, 3").fetchall()
        conn.execute("DELETE FROM task_metric_deltas")
        both = conn.execute(queries()["claim"], {**_params([first.id, second.id]), "token": token}).fetchall()
        two_metrics = conn.execute("SELECT name, metric, le, n FROM task_metric_deltas ORDER BY 1, 2, 3").fetchall()
        several = next(r for r in both if r["id"] == first.id)
        assert len(both) == 2
        # The instants differ (two statements); their offsets are compared below.
        for row in (one, several):
            assert row["started_at"] is not None and row["enqueued_at"] is not None
        instants = ("id", "started_at", "enqueued_at")
        assert {k: v for k, v in one.items() if k not in instants} == {
            k: v for k, v in several.items() if k not in instants
        }
        rows = [conn.execute(_CLAIMED, (i,)).fetchall() for i in (alone.id, first.id)]
        assert rows[0] == rows[1] and len(rows[0]) == 1, rows
        row = rows[0][0]
        assert row["enqueued"] == (-1.0 if status == "PENDING" else 2.0), row
        assert row["from_status"] == status and row["status"] == "PROCESSING" and row["lease_token"] == token
        assert row["same_instant"] and row["event_enqueued"] and row["event_started"], row
    assert [(m["metric"], m["n"]) for m in one_metrics] == [(m["metric"], m["n"] // 2) for m in two_metrics]


@pytest.mark.parametrize("count", [1, 2])
def test_the_claim_commits_without_waiting_for_the_wal_and_leaves_its_settings(rt: Container, count: int) -> None:
    """synchronous_commit is set transaction-locally inside the function: it must hold
    until the claim's commit (it is not one of the function's SET clauses, which end with
    the call) and not after it; the planner settings end with the call.  For one row
    and for several (0035's two paths)."""
    ready = [t.id for t in rt.store.insert_tasks([_new() for _ in range(count)], actor="t")]
    with rt.store.connection() as conn:
        with conn.transaction():
            claimed = [r["id"] for r in conn.execute(queries()["claim"], _params(ready)).fetchall()]
            assert sorted(claimed) == sorted(ready)
            setting = conn.execute("SHOW synchronous_commit").fetchone()
            assert setting is not None and setting["synchronous_commit"] == "off"
            for name in ("plan_cache_mode", "enable_seqscan", "enable_bitmapscan"):
                row = conn.execute("SELECT current_setting(%s) AS v", (name,)).fetchone()
                assert row is not None and row["v"] in ("auto", "on"), (name, row)
        setting = conn.execute("SHOW synchronous_commit").fetchone()
        assert setting is not None and setting["synchronous_commit"] == "on"


def test_a_one_row_claim_runs_no_statement_over_the_triggers_transition_tables(
    database_url: str, rt: Container
) -> None:
    """0039: the one-row claim counts its metrics itself, and the statement triggers on tasks
    (batch counts) and task_events (metrics) return before reading their transition
    tables; a claim of several rows is still counted by the metrics trigger's statement."""
    one, *two = [t.id for t in rt.store.insert_tasks([_new() for _ in range(3)], actor="t")]
    alone: list[str] = []
    several: list[str] = []
    with _explaining(database_url, alone) as conn:
        assert len(conn.execute(queries()["claim"], _params([one])).fetchall()) == 1
    with _explaining(database_url, several) as conn:
        assert len(conn.execute(queries()["claim"], _params(two)).fetchall()) == 2
    assert any("UPDATE tasks t" in p for p in alone), alone
    assert not [p for p in alone if "Named Tuplestore Scan" in p], alone
    assert [p for p in several if "Named Tuplestore Scan" in p], several


@pytest.mark.parametrize("enqueued", [5.0, -0.3, -7.0])
def test_a_one_row_claim_counts_what_the_metrics_trigger_counts(
    database_url: str, rt: Container, enqueued: float
) -> None:
    """The one-row claim's own counting (0039) is the metrics trigger's claim rule: 'started'
    once, and queue_wait (the event's started - enqueued, 0 when enqueued later) in the
    bucket of the first bound at or above it; a task enqueued 5 s ahead of its claim, 0.3 s
    and 7 s before it."""
    [task] = rt.store.insert_tasks([_new()], actor="t")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("UPDATE tasks SET enqueued_at = now() + %s * interval '1 s' WHERE id = %s", (enqueued, task.id))
        conn.execute("DELETE FROM task_metric_deltas")
        assert len(conn.execute(queries()["claim"], _params([task.id])).fetchall()) == 1
        event = conn.execute(
            "SELECT greatest(extract(epoch FROM task_started_at - task_enqueued_at)::float8, 0) AS waited "
            "FROM task_events WHERE task_id = %s AND to_status = 'PROCESSING'",
            (task.id,),
        ).fetchone()
        deltas = conn.execute("SELECT name, metric, le, n, total FROM task_metric_deltas ORDER BY metric").fetchall()
    assert event is not None
    waited = event["waited"]
    assert (waited == 0) == (enqueued > 0), waited
    le = next((b for b in BUCKETS if b >= waited), float("inf"))
    assert [tuple(d.values()) for d in deltas] == [
        ("noop", "queue_wait", le, 1, waited),
        ("noop", "started", float("inf"), 1, 0.0),
    ]


def test_the_one_row_claim_leaves_the_triggers_on_for_the_rest_of_its_transaction(rt: Container) -> None:
    """The setting that turns the triggers aside is back to '' when the claim returns: an
    event written later in the same transaction is counted by the metrics trigger, a
    batch task finished in it moves its batch's counts."""
    [task] = rt.store.insert_tasks([_new()], actor="t")
    with rt.store.connection() as conn:
        with conn.transaction():
            batch = conn.execute(
                "INSERT INTO batches (id, tenant, total, remaining) "
                "VALUES (gen_random_uuid(), 'claim-statement', 1, 1) RETURNING id"
            ).fetchone()
            assert batch is not None
            conn.execute("UPDATE tasks SET batch_id = %s WHERE id = %s", (batch["id"], task.id))
            assert len(conn.execute(queries()["claim"], _params([task.id])).fetchall()) == 1
            flag = conn.execute("SELECT current_setting('tasklane.one_row_claim', true) AS v").fetchone()
            assert flag is not None and flag["v"] != "on"
            conn.execute("DELETE FROM task_metric_deltas")
            conn.execute(
                "UPDATE tasks SET status = 'COMPLETED', finished_at = now(), lease_token = NULL, "
                "lease_expires_at = NULL WHERE id = %s",
                (task.id,),
            )
            conn.execute(
                "INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name, task_started_at) "
                "SELECT id, 'PROCESSING', 'COMPLETED', attempts, 't', name, started_at FROM tasks WHERE id = %s",
                (task.id,),
            )
            counted = conn.execute("SELECT metric, n FROM task_metric_deltas WHERE metric = 'completed'").fetchall()
            counts = conn.execute("SELECT remaining, completed FROM batches WHERE id = %s", (batch["id"],)).fetchone()
    assert counted == [{"metric": "completed", "n": 1}]
    assert counts == {"remaining": 0, "completed": 1}


def test_the_unique_key_trigger_fires_only_for_updates_of_finished_at(database_url: str) -> None:
    """0040: tasks_unique_key_follow has a column list, so an UPDATE that does not set
    finished_at (a claim, a heartbeat) skips it before compiling its WHEN clause."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT array_agg(a.attname::text) FROM pg_trigger g "
            "JOIN pg_attribute a ON a.attrelid = g.tgrelid AND a.attnum = ANY(g.tgattr) "
            "WHERE g.tgrelid = 'tasks'::regclass AND g.tgname = 'tasks_unique_key_follow'"
        ).fetchone()
    assert row is not None and row[0] == ["finished_at"]
