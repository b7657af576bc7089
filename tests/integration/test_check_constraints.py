"""The single-column checks of tasks and task_events are domains (migration 0034; 0033
before it wrote them as compact table CHECKs): they accept and refuse exactly what the
table constraints did, on INSERT and UPDATE, as the same error class (check_violation),
and the archive's columns follow.  The five invariants that read two columns or more (or
unique_key's length) are one CHECK calling tasklane_task_invariants (0036), which raises
check_violation naming the invariant's old constraint: each is still refused on INSERT and
UPDATE, under the same name."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chalicelib.container import Container
from chalicelib.core.errors import ValidationError

STATUSES = ["WAITING", "PENDING", "QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
PRIORITIES = ["critical", "high", "normal", "low"]
# Each column and its domain.
DOMAINS = {
    ("tasks", "status"): "tasklane_status",
    ("tasks", "priority"): "tasklane_priority",
    ("tasks", "attempts"): "tasklane_count",
    ("tasks", "max_retries"): "tasklane_count",
    ("tasks", "snoozes"): "tasklane_count",
    ("tasks", "waiting_on"): "tasklane_count",
    ("tasks", "timeout_seconds"): "tasklane_positive",
    ("tasks", "progress"): "tasklane_percent",
    ("tasks", "name"): "tasklane_task_name",
    ("tasks", "trace_context"): "tasklane_trace_context",
    ("task_events", "from_status"): "tasklane_status",
    ("task_events", "to_status"): "tasklane_status",
}
# The table CHECKs the domains replaced, and the invariants that read two columns (0036:
# checked by tasks_invariants' function, which raises under these names).
REPLACED = [
    "tasks_status_check",
    "tasks_priority_check",
    "tasks_attempts_check",
    "tasks_max_retries_check",
    "tasks_snoozes_nonnegative",
    "tasks_waiting_on_check",
    "tasks_timeout_seconds_check",
    "tasks_progress_check",
    "tasks_name_check",
    "tasks_trace_context_length",
    "task_events_from_status_check",
    "task_events_to_status_check",
]
INVARIANTS = [
    "tasks_finished_iff_final",
    "tasks_lease_iff_processing",
    "tasks_queued_has_enqueued_at",
    "tasks_waiting_has_parents",
    "tasks_unique_key_length",
]

# Every column a CHECK reads, so that one row can break any one of them.  The status
# parameter is also compared with text below: one type for all its uses.
_TASK = """
INSERT INTO tasks (id, tenant, name, status, priority, enqueued_at, lease_token, lease_expires_at, finished_at,
                   waiting_on)
VALUES (gen_random_uuid(), 'checks', 'noop', %(status)s::text, %(priority)s, now(),
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


def _queued(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        _TASK + " RETURNING id", {"status": "QUEUED", "priority": "normal", "finished": False}
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("status", [*STATUSES, "queued", "DONE", ""])
@pytest.mark.parametrize("finished", [False, True])
def test_task_status_and_finished_at_are_checked_as_before(database_url: str, status: str, finished: bool) -> None:
    with psycopg.connect(database_url) as conn:
        got = _refused(conn, _TASK, {"status": status, "priority": "normal", "finished": finished})
        conn.rollback()
    # The domain checks the value as it is assigned, before the row's table CHECKs.
    if status not in STATUSES:
        assert got == "tasklane_status_check"
    elif (status in ("COMPLETED", "FAILED", "CANCELLED")) != finished:
        assert got == "tasks_finished_iff_final"
    else:
        assert got is None


@pytest.mark.parametrize("priority", [*PRIORITIES, "HIGH", "urgent", ""])
def test_task_priority_is_checked_as_before(database_url: str, priority: str) -> None:
    with psycopg.connect(database_url) as conn:
        got = _refused(conn, _TASK, {"status": "QUEUED", "priority": priority, "finished": False})
        conn.rollback()
    assert got == (None if priority in PRIORITIES else "tasklane_priority_check")


@pytest.mark.parametrize(
    ("column", "bad", "good", "constraint"),
    [
        ("attempts", -1, 0, "tasklane_count_check"),
        ("max_retries", -1, 0, "tasklane_count_check"),
        ("snoozes", -1, 0, "tasklane_count_check"),
        ("waiting_on", -1, 0, "tasklane_count_check"),
        ("timeout_seconds", 0, 1, "tasklane_positive_check"),
        ("progress", 101, 100, "tasklane_percent_check"),
        ("progress", -1, 0, "tasklane_percent_check"),
        ("name", "", "n", "tasklane_task_name_check"),
        ("name", "n" * 201, "n" * 200, "tasklane_task_name_check"),
        ("trace_context", "t" * 257, "t" * 256, "tasklane_trace_context_check"),
    ],
)
def test_numbers_and_lengths_are_checked_on_update_as_before(
    database_url: str, column: str, bad: object, good: object, constraint: str
) -> None:
    with psycopg.connect(database_url) as conn:
        task_id = _queued(conn)
        update = f"UPDATE tasks SET {column} = %(v)s WHERE id = %(id)s"
        refused = _refused(conn, update, {"v": bad, "id": task_id})
        accepted = _refused(conn, update, {"v": good, "id": task_id})
        conn.rollback()
    assert (refused, accepted) == (constraint, None)


def test_an_update_to_a_status_outside_the_list_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        task_id = _queued(conn)
        got = _refused(conn, "UPDATE tasks SET status = %(s)s WHERE id = %(id)s", {"s": "RUNNING", "id": task_id})
        conn.rollback()
    assert got == "tasklane_status_check"


@pytest.mark.parametrize("from_status", [None, *STATUSES, "DONE"])
@pytest.mark.parametrize("to_status", ["QUEUED", "processing"])
def test_event_statuses_are_checked_as_before(database_url: str, from_status: str | None, to_status: str) -> None:
    params = {"id": str(uuid.uuid4()), "from_status": from_status, "to_status": to_status}
    with psycopg.connect(database_url) as conn:
        got = _refused(conn, _EVENT, params)
        conn.rollback()
    # A first event's NULL from_status passes, as it did.
    bad = (from_status is not None and from_status not in STATUSES) or to_status not in STATUSES
    assert got == ("tasklane_status_check" if bad else None)


def test_a_value_outside_a_domain_reaches_the_caller_as_before(rt: Container) -> None:
    # check_violation (23514) as the table CHECK raised: the store's boundary maps it to
    # a ValidationError (a 400), not to a server error.
    with pytest.raises(ValidationError, match="tasklane_priority_check"), rt.store.connection() as conn:
        conn.execute(_TASK, {"status": "QUEUED", "priority": "urgent", "finished": False})


def test_the_columns_are_domains_on_tasks_every_partition_and_the_archive(database_url: str) -> None:
    """The single-column table CHECKs are gone (each statement re-read and compiled them:
    0034 says why), the columns carry validated domains instead, and the archive and
    every partition have the same types as their parent."""
    with psycopg.connect(database_url) as conn:
        types = {
            (table, column): typ
            for table, column, typ in conn.execute(
                "SELECT c.relname::text, a.attname::text, a.atttypid::regtype::text"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " WHERE c.relname IN ('tasks', 'task_events', 'tasks_archive')"
                "    OR c.relispartition AND (c.relname LIKE 'task_events%%' OR c.relname LIKE 'tasks_archive%%')"
            ).fetchall()
        }
        checks = {
            name
            for (name,) in conn.execute(
                "SELECT conname::text FROM pg_constraint"
                " WHERE contype = 'c' AND conrelid IN ('tasks'::regclass, 'task_events'::regclass)"
            ).fetchall()
        }
        domains = conn.execute(
            "SELECT t.typname::text, c.convalidated FROM pg_constraint c JOIN pg_type t ON t.oid = c.contypid"
            " WHERE t.typname LIKE 'tasklane%%'"
        ).fetchall()
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent IN ('task_events'::regclass, 'tasks_archive'::regclass)"
        ).fetchone()
    assert partitions is not None and partitions[0] > 0
    for (table, column), domain in DOMAINS.items():
        assert types[(table, column)] == domain, (table, column)
        if table == "tasks":
            assert types[("tasks_archive", column)] == domain, column
    for (table, column), typ in types.items():
        parent = "task_events" if table.startswith("task_events") else "tasks_archive"
        if table not in ("tasks", parent):
            assert typ == types[(parent, column)], (table, column)
    assert not checks & set(REPLACED)
    assert not checks & set(INVARIANTS)
    assert "tasks_invariants" in checks
    assert sorted(domains) == sorted((d, True) for d in set(DOMAINS.values()))


# A valid QUEUED row, and for each invariant the columns that break it (0036).  Each
# breaks only its own invariant, so the name proves which condition refused the row.
_VALID = {"tenant": "checks", "name": "noop", "status": "QUEUED", "enqueued_at": "now"}
_NOW = "2026-01-01T00:00:00Z"
_LEASE = {"lease_token": "00000000-0000-4000-8000-000000000001", "lease_expires_at": _NOW}
BROKEN = [
    ("tasks_finished_iff_final", {"status": "COMPLETED", "enqueued_at": None}),
    ("tasks_finished_iff_final", {"finished_at": _NOW}),
    ("tasks_lease_iff_processing", {"status": "PROCESSING"}),
    ("tasks_lease_iff_processing", {"status": "PROCESSING", "lease_token": _LEASE["lease_token"]}),
    ("tasks_lease_iff_processing", _LEASE),
    ("tasks_queued_has_enqueued_at", {"enqueued_at": None}),
    ("tasks_unique_key_length", {"unique_key": ""}),
    ("tasks_unique_key_length", {"unique_key": "k" * 201}),
    ("tasks_waiting_has_parents", {"status": "WAITING", "waiting_on": 0}),
    # Nothing would count a NULL down to zero, so nothing would release the task (0041).
    ("tasks_waiting_has_parents", {"status": "WAITING", "waiting_on": None}),
]
# Their neighbours that hold: accepted, so the refusals above are not blanket ones.
HOLDING = [
    {"status": "COMPLETED", "finished_at": _NOW},
    {"status": "PROCESSING", **_LEASE},
    {"status": "PENDING", "enqueued_at": None},
    {"unique_key": "k"},
    {"unique_key": "k" * 200},
    {"status": "WAITING", "waiting_on": 1},
    # unique_key's NULL passes: a task without a key.
    {"unique_key": None},
]


def _insert(cols: dict[str, Any]) -> sql.Composed:
    row = {**_VALID, **cols}
    return sql.SQL("INSERT INTO tasks (id, {}) VALUES (gen_random_uuid(), {})").format(
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.SQL("now()") if v == "now" else sql.Placeholder(k) for k, v in row.items()),
    )


def _update(cols: dict[str, Any]) -> sql.Composed:
    return sql.SQL("UPDATE tasks SET {} WHERE id = %(task_id)s").format(
        sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in cols)
    )


@pytest.mark.parametrize(("constraint", "cols"), BROKEN)
def test_each_invariant_is_refused_on_insert_and_update(
    database_url: str, constraint: str, cols: dict[str, Any]
) -> None:
    with psycopg.connect(database_url) as conn:
        task_id = _queued(conn)
        inserted = _refused(conn, _insert(cols), {**_VALID, **cols})
        updated = _refused(conn, _update(cols), {**cols, "task_id": task_id})
        conn.rollback()
    assert (inserted, updated) == (constraint, constraint)


@pytest.mark.parametrize("cols", HOLDING)
def test_rows_that_keep_the_invariants_are_accepted(database_url: str, cols: dict[str, Any]) -> None:
    with psycopg.connect(database_url) as conn:
        task_id = _queued(conn)
        inserted = _refused(conn, _insert(cols), {**_VALID, **cols})
        updated = _refused(conn, _update(cols), {**cols, "task_id": task_id})
        conn.rollback()
    assert (inserted, updated) == (None, None)


def test_a_broken_invariant_reaches_the_caller_as_a_validation_error(rt: Container) -> None:
    # The function's RAISE is a check_violation like the table CHECK's: a 400, not a 500.
    cols = {"status": "PROCESSING"}
    with pytest.raises(ValidationError, match="tasks_lease_iff_processing"), rt.store.connection() as conn:
        conn.execute(_insert(cols), {**_VALID, **cols})


def test_the_table_checks_of_tasks_stay_short(database_url: str) -> None:
    """PostgreSQL re-reads and compiles every table CHECK of tasks from its stored text for
    each INSERT and UPDATE (0036 says why): a new invariant goes into
    tasklane_task_invariants, or into a domain when it reads one column."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(length(conbin)), 0) FROM pg_constraint"
            " WHERE conrelid = 'tasks'::regclass AND contype = 'c'"
        ).fetchone()
    assert row is not None and row[0] < 1500, row
