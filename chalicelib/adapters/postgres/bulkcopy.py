"""Bulk submit through COPY: ``Store.insert_tasks`` for many tasks at once.

The one ``insert_tasks`` statement costs a 500-task submit ~24 µs of PostgreSQL CPU a
task (the jsonb recordset, the CTEs, the executor) and ~29 µs of client CPU (its JSON
parameter, the rows it returns).  COPY is PostgreSQL's cheapest way in: nothing is
planned and the heap takes the rows a page at a time.  A task without an idempotency or
unique key needs nothing back from the server: its id is made here (UUIDv7), and all
the statement would decide (status, run_at, enqueued_at, created_at) follows from the
transaction's ``now()``, read first.  Those tasks go in by one COPY (their creation
events are their rows' created_by and created_status, migration 0037) and their
'submitted' counters by one statement, as the INSERT writes them; the keyed ones still
take the statement, whose ``ON CONFLICT`` decides their races, in the same transaction:
the call stays all or nothing, durable at its commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import psycopg

from chalicelib.adapters.postgres.rows import accepted
from chalicelib.core.model import Accepted, NewTask, Status, Task
from chalicelib.core.schemas import MAX_DELAY_SECONDS

Row = dict[str, Any]
T = TypeVar("T")

# Below this many tasks the one statement (one round trip) costs less than the COPY
# transaction's six (BEGIN, now(), a COPY of two, the counters, COMMIT) and its per-COPY setup:
# interleaved calls, COPY/statement wall time 1.16x at 32 tasks, 1.00x at 64, 0.81x at 128.
COPY_MIN = 100

# created_at and updated_at are left to their default, now(): the transaction's, the same
# instant as the stamp sent for run_at and enqueued_at, two timestamps fewer to parse a row.
_TASK_COLUMNS = (
    "id, tenant, name, status, priority, payload, max_retries, timeout_seconds, run_at, enqueued_at,"
    " callback_url, trace_context, batch_id, has_followers, expires_at, created_by, created_status"
)
COPY_TASKS = f"COPY tasks ({_TASK_COLUMNS}) FROM STDIN"
# What the insert statements' `counted` CTE writes (COPY has no RETURNING to count from).
COUNT_SUBMITTED = (
    "INSERT INTO task_metric_deltas (name, metric, n)"
    " SELECT name, 'submitted', n FROM unnest(%(names)s::text[], %(counts)s::bigint[]) AS c(name, n)"
)
NULL = "\\N"
_QUEUED, _PENDING = Status.QUEUED.value, Status.PENDING.value
CHUNK = 100


class _Store(Protocol):
    _q: dict[str, str]

    def _transaction(self, work: Callable[[psycopg.Connection[Row]], T]) -> T: ...
    def _insert_params(self, tasks: Sequence[NewTask], actor: str) -> dict[str, Any]: ...
    def copy_in(self, conn: psycopg.Connection[Row], tasks: Sequence[NewTask], actor: str) -> list[Task]: ...


def copyable(t: NewTask) -> bool:
    """Whether the COPY can take ``t``: no key whose conflict the server must decide, and
    instants it can compare with the transaction's (aware; a delay the API accepts)."""
    return (
        t.idempotency_key is None
        and t.unique_key is None
        and (t.run_at is None or t.run_at.tzinfo is not None)
        and (t.expires_at is None or t.expires_at.tzinfo is not None)
        and (t.delay_seconds is None or 0 <= t.delay_seconds <= MAX_DELAY_SECONDS)
    )


class BulkCopy:
    """A mixin of ``Store``."""

    def copy_tasks(self: _Store, tasks: Sequence[NewTask], actor: str) -> list[Task]:
        """``insert_tasks`` for many, in a transaction of its own (``copy_in``)."""
        return self._transaction(lambda conn: self.copy_in(conn, tasks, actor))

    def insert_in(self: _Store, conn: psycopg.Connection[Row], tasks: Sequence[NewTask], actor: str) -> list[Task]:
        """``insert_tasks`` in the open transaction: by COPY from ``COPY_MIN`` tasks, by
        the one statement below that."""
        if len(tasks) >= COPY_MIN:
            return self.copy_in(conn, tasks, actor)
        return _by_statement(self, conn, tasks, actor)

    def copy_in(self: _Store, conn: psycopg.Connection[Row], tasks: Sequence[NewTask], actor: str) -> list[Task]:
        """``insert_tasks`` in the open transaction: the copyable tasks by COPY, the others
        by the statement; returns those inserted."""
        plain = [t for t in tasks if copyable(t)]
        keyed = [t for t in tasks if not copyable(t)] if len(plain) < len(tasks) else []
        row = conn.execute("SELECT now() AS now").fetchone()
        assert row is not None
        made = _copy(conn, plain, row["now"], actor)
        if keyed:
            made += _by_statement(self, conn, keyed, actor)
        return made


def _by_statement(store: _Store, conn: psycopg.Connection[Row], tasks: Sequence[NewTask], actor: str) -> list[Task]:
    """The ``insert_tasks`` statement in the open transaction; returns those inserted."""
    return accepted(tasks, conn.execute(store._q["insert_tasks"], store._insert_params(tasks, actor)))


def _copy(conn: psycopg.Connection[Row], tasks: Sequence[NewTask], now: datetime, actor: str) -> list[Task]:
    """COPY ``tasks`` (and count them) in the open transaction whose ``now()`` is
    ``now``; returns the tasks as ``insert_tasks`` would have."""
    if not tasks:
        return []
    rows = _Rows(now, actor)
    with conn.cursor() as cur:
        with cur.copy(COPY_TASKS) as copy:
            # Sent a chunk at a time as they are made: PostgreSQL inserts one while the
            # next is built, and the answers are built before the COPY's end is awaited.
            for i in range(0, len(tasks), CHUNK):
                copy.write("".join([rows.line(t) for t in tasks[i : i + CHUNK]]))
            decided = zip(tasks, rows.decided, strict=True)
            out = [Accepted(t.id, s, due, enq, now, None).task(t) for t, (s, due, enq) in decided]
        per_name = Counter(t.name for t in tasks)
        cur.execute(COUNT_SUBMITTED, {"names": list(per_name), "counts": list(per_name.values())})
    return out


class _Rows:
    """The COPY lines of one call's tasks and what each line decided (status, run_at,
    enqueued_at) for the answers."""

    def __init__(self, now: datetime, actor: str) -> None:
        self.now, self.stamp = now, now.isoformat()
        self.esc = _Escaper()
        self.actor = self.esc(actor)
        self.decided: list[tuple[Status, datetime, datetime | None]] = []

    def line(self, t: NewTask) -> str:
        now, stamp, esc = self.now, self.stamp, self.esc
        due = now if t.run_at is None and not t.delay_seconds else _due(t, now)
        if due <= now:
            status, run_at, enqueued = _QUEUED, stamp if due is now else due.isoformat(), stamp
            self.decided.append((Status.QUEUED, due, now))
        else:
            status, run_at, enqueued = _PENDING, due.isoformat(), NULL
            self.decided.append((Status.PENDING, due, None))
        return (
            f"{t.id}\t{esc(t.tenant)}\t{esc(t.name)}\t{status}\t{t.priority}\t{_json(t.payload_json)}\t"
            f"{t.max_retries}\t{t.timeout_seconds}\t{run_at}\t{enqueued}\t"
            f"{esc.opt(t.callback_url)}\t{esc.opt(t.trace_context)}\t{t.batch_id or NULL}\t"
            f"{'f' if t.batch_id is None else 't'}\t{NULL if t.expires_at is None else t.expires_at.isoformat()}\t"
            f"{self.actor}\t{status}\n"
        )


def _due(t: NewTask, now: datetime) -> datetime:
    """``coalesce(run_at, now() + make_interval(secs => delay))`` as the statement
    computes it: make_interval rounds the double ``secs * 1e6`` half to even (rint),
    which ``round`` of the same product does; ``timedelta(seconds=delay)`` rounds the
    float's exact value instead, 1 µs off for some delays (123.4567895 s)."""
    if t.run_at is not None:
        return t.run_at
    return now + timedelta(microseconds=round((t.delay_seconds or 0) * 1_000_000))


def _json(text: str) -> str:
    """JSON text as a COPY field: the store's encoder escapes every control character
    (``ensure_ascii``), so only backslashes need doubling."""
    return text.replace("\\", "\\\\") if "\\" in text else text


class _Escaper:
    """Text as a COPY field (backslash, tab, newline and carriage return escaped), with
    the call's repeated values (tenant, task names, actor) escaped once."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        done = self._seen.get(value)
        if done is None:
            done = self._seen[value] = _escape(value)
        return done

    def opt(self, value: str | None) -> str:
        return NULL if value is None else _escape(value)


def _escape(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value
