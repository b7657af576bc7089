"""The CHECK constraints migration 0033 rewrote (one array constant instead of a list)
accept and refuse exactly what the lists did, and keep their names."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

STATUSES = ["WAITING", "PENDING", "QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
PRIORITIES = ["critical", "high", "normal", "low"]
REWRITTEN = {
    "tasks": ["tasks_status_check", "tasks_priority_check", "tasks_finished_iff_final"],
    "task_events": ["task_events_from_status_check", "task_events_to_status_check"],
}

# Every column a CHECK reads, so that one row can break any one of them.
_TASK = """
INSERT INTO tasks (id, tenant, name, status, priority, enqueued_at, lease_token, lease_expires_at, finished_at,
                   waiting_on)
VALUES (gen_random_uuid(), 'checks', 'noop', %(status)s, %(priority)s, now(),
        CASE WHEN %(status)s = 'PROCESSING' THEN gen_random_uuid() END,
        CASE WHEN %(status)s = 'PROCESSING' THEN now() END,
        CASE WHEN %(finished)s THEN now() END,
        CASE WHEN %(status)s = 'WAITING' THEN 1 END)
"""
_EVENT = """
INSERT INTO task_events (task_id, from_status, to_status, attempt, actor, task_name)
VALUES (%(id)s, %(from_status)s, %(to_status)s, 0, 'test', 'noop')
"""


def _refused(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> str | None:
    """The name of the constraint that refused the row, or None when it went in."""
    try:
        with conn.transaction():
            conn.execute(sql, params)
    except psycopg.errors.CheckViolation as exc:
        return exc.diag.constraint_name
    return None


@pytest.mark.parametrize("status", [*STATUSES, "queued", "DONE", ""])
@pytest.mark.parametrize("finished", [False, True])
def test_task_status_and_finished_at_are_checked_as_before(database_url: str, status: str, finished: bool) -> None:
    with psycopg.connect(database_url) as conn:
        got = _refused(conn, _TASK, {"status": status, "priority": "normal", "finished": finished})
        conn.rollback()
    broken = set()
    if status not in STATUSES:
        broken.add("tasks_status_check")
    if (status in ("COMPLETED", "FAILED", "CANCELLED")) != finished:
        broken.add("tasks_finished_iff_final")
    # PostgreSQL names the first broken one (by name) when a row breaks two.
    assert got == (min(broken) if broken else None)


@pytest.mark.parametrize("priority", [*PRIORITIES, "HIGH", "urgent", ""])
def test_task_priority_is_checked_as_before(database_url: str, priority: str) -> None:
    with psycopg.connect(database_url) as conn:
        got = _refused(conn, _TASK, {"status": "QUEUED", "priority": priority, "finished": False})
        conn.rollback()
    assert got == (None if priority in PRIORITIES else "tasks_priority_check")


def test_an_update_to_a_status_outside_the_list_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            _TASK + " RETURNING id", {"status": "QUEUED", "priority": "normal", "finished": False}
        ).fetchone()
        assert row is not None
        got = _refused(conn, "UPDATE tasks SET status = %(s)s WHERE id = %(id)s", {"s": "RUNNING", "id": row[0]})
        conn.rollback()
    assert got == "tasks_status_check"


@pytest.mark.parametrize("from_status", [None, *STATUSES, "DONE"])
@pytest.mark.parametrize("to_status", ["QUEUED", "processing"])
def test_event_statuses_are_checked_as_before(database_url: str, from_status: str | None, to_status: str) -> None:
    params = {"id": str(uuid.uuid4()), "from_status": from_status, "to_status": to_status}
    with psycopg.connect(database_url) as conn:
        got = _refused(conn, _EVENT, params)
        conn.rollback()
    broken = set()
    if from_status is not None and from_status not in STATUSES:
        broken.add("task_events_from_status_check")
    if to_status not in STATUSES:
        broken.add("task_events_to_status_check")
    # A first event's NULL from_status passes, as it did.
    assert got == (min(broken) if broken else None)


def test_the_rewritten_constraints_are_compact_on_every_partition(database_url: str) -> None:
    """PostgreSQL re-reads each constraint's stored text for every statement (0033 says
    why): each is one array constant, on task_events' partitions as on the table."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid"
            " WHERE c.contype = 'c' AND c.conname = ANY(%s)"
            "   AND (r.relname IN ('tasks', 'task_events') OR r.relispartition AND r.relname LIKE 'task_events%%')",
            ([n for names in REWRITTEN.values() for n in names],),
        ).fetchall()
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'task_events'::regclass"
        ).fetchone()
    assert partitions is not None and partitions[0] > 0
    assert len(rows) == len(REWRITTEN["tasks"]) + len(REWRITTEN["task_events"]) * (1 + partitions[0])
    for table, name, definition in rows:
        assert "ARRAY[" not in definition and "::text[]" in definition, (table, name, definition)
