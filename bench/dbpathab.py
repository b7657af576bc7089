"""PostgreSQL backend CPU of one single submit, one one-task claim and its finish, per schema variant.

    .venv/bin/python -m bench.dbpathab [rounds] [calls] [variant ...]

Each variant is a database of its own, copied from one template migrated with this
checkout's migrations (or those in ``$DBPATHAB_MIGRATIONS``), then changed by the variant's SQL (``VARIANTS``: a trigger
dropped, an index dropped, another claim function, ...).  A round runs, for every
variant in turn (the order rotates from round to round, so none is always first),
``calls`` single submits (``insert_task``, the statement ``Store.insert_tasks`` sends for
one task) and then ``calls`` one-task claims (``claim``) of tasks a second connection
inserted beforehand, then the one-task finish (``finish``, a COMPLETED outcome) of each
task claimed, on one connection per variant whose backend runs nothing else.
What is counted is that backend's CPU (``/proc/<pid>/schedstat``, ns) per statement,
the median of the block's statements.
Both connections set ``synchronous_commit = off``: the WAL flush is the same for every
variant and its wait is not CPU.  Prints per variant the median over rounds and its
ratio to the first variant (``base``) with the spread of the per-round ratios (each
round's ratio is taken between blocks run a second or so apart, so the machine's drift
mostly cancels).  The databases (``tasklane_dbpathab_*``) are dropped at the end.
"""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import backend_cpu_ns
from chalicelib.adapters.postgres.migrate import migrate
from chalicelib.adapters.postgres.rows import finish_params
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.core.model import Outcome, Status

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The finish's webhook limits (the settings' defaults); no measured task has a callback.
WEBHOOK = {"webhook_max_retries": 5, "webhook_timeout": 10}

# A claim function with the body of 0028 and the given header lines instead of its SET
# clauses (for measuring what the clauses cost).
_Q = queries()

# Each variant: SQL run once on its database, and optionally other submit/claim SQL.
VARIANTS: dict[str, str] = {
    "base": "",
    "no_event_metrics_trigger": "DROP TRIGGER task_events_metrics ON task_events;",
    "no_batch_trigger": "DROP TRIGGER tasks_batch_counts ON tasks;",
    "no_row_triggers": "DROP TRIGGER tasks_settle_dependents ON tasks; DROP TRIGGER tasks_unique_key_follow ON tasks;",
    "no_event_index": "DROP INDEX task_events_task;",
    "no_tenant_created": "DROP INDEX tasks_tenant_created;",
    "no_queued_index": "DROP INDEX tasks_queued_enqueued_at;",
    # Every CHECK of tasks and task_events, and (migration 0034 on) of the domains on
    # their columns, whatever the schema's migration: read from the catalog.
    "no_checks": """
        DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT conrelid::regclass AS rel, conname FROM pg_constraint
                     WHERE contype = 'c' AND conrelid IN ('tasks'::regclass, 'task_events'::regclass) LOOP
                EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.rel, r.conname);
            END LOOP;
            FOR r IN SELECT c.contypid::regtype AS dom, c.conname FROM pg_constraint c
                     JOIN pg_type t ON t.oid = c.contypid WHERE t.typname LIKE 'tasklane%' LOOP
                EXECUTE format('ALTER DOMAIN %s DROP CONSTRAINT %I', r.dom, r.conname);
            END LOOP;
        END
        $$;
    """,
}

# Variants whose statements differ (the schema is base's).
SUBMIT_SQL: dict[str, str] = {
    # The submit without its 'submitted' counter (migration 0037; before it, the CTE that
    # wrote the creation event, "no_event_row" in bench/RESULTS.md round 7).
    "no_submit_count": _Q["insert_task"].split("), counted AS (")[0]
    + ")\nSELECT id::text AS id, status, run_at, enqueued_at, created_at, unique_until FROM ins",
}
SUBMIT_SQL["no_on_conflict"] = _Q["insert_task"].replace(
    "    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING\n", ""
)
# What a single submit due now without an idempotency key sends (round 9): the submit
# scripts' tasks are of that kind, so this is their real statement; base keeps
# insert_task, the general one.  Since round 12 the early path (early_row.py) sends
# submit_lock before it in the same transaction, which this variant leaves out.
SUBMIT_SQL["insert_task_now"] = _Q["insert_task_now"]
CLAIM_SQL: dict[str, str] = {}
FINISH_SQL: dict[str, str] = {}
# Variants that differ in a session setting (e.g. ``SET plan_cache_mode = ...``): run
# first on each of the variant's sessions (an ALTER DATABASE ... SET is not applied in
# bench.dbpathcg's single-user mode).
SESSION_SQL: dict[str, str] = {"generic_plans": "SET plan_cache_mode = force_generic_plan;"}

EXTRA_SQL: dict[str, str] = {}


def extra_variants() -> None:
    """Variants read from ``$DBPATHAB_VARIANTS``/*.sql (experiments: a file per variant)."""
    folder = Path(os.environ.get("DBPATHAB_VARIANTS", "/nonexistent"))
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        EXTRA_SQL[path.stem] = path.read_text()


@dataclass
class Side:
    name: str
    db: str
    conn: psycopg.Connection
    helper: psycopg.Connection
    pid: int
    submit_sql: str
    claim_sql: str
    finish_sql: str
    submit: list[float]
    claim: list[float]
    finish: list[float]


def _params(actor: str = "ab") -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "tenant": "dbpathab",
        "name": "noop",
        "priority": "normal",
        "payload": "{}",
        "max_retries": 3,
        "timeout_seconds": 30,
        "run_at": None,
        "delay": None,
        "idempotency_key": None,
        "request_hash": None,
        "callback_url": None,
        "trace_context": None,
        "expires_at": None,
        "actor": actor,
    }


def _url(db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


def _block(side: Side, calls: int) -> None:
    # Each statement's CPU apart and the block's median: a block's mean moved by half
    # when another process's burst shared the core (an interrupt, a cache flush).
    c, pid = side.conn, side.pid
    each: list[int] = []
    for _ in range(calls):
        t0 = backend_cpu_ns(pid)
        c.execute(side.submit_sql, _params()).fetchall()
        each.append(backend_cpu_ns(pid) - t0)
    side.submit.append(statistics.median(each) / 1000)
    ids = [r[0] for r in (side.helper.execute(_Q["insert_task"], _params()).fetchone() for _ in range(calls)) if r]
    token = str(uuid.uuid4())
    each.clear()
    for i in ids:
        t0 = backend_cpu_ns(pid)
        got = c.execute(side.claim_sql, {"ids": [i], "token": token, "lease_seconds": 30.0, "actor": "ab"}).fetchall()
        each.append(backend_cpu_ns(pid) - t0)
        if len(got) != 1:
            raise RuntimeError(f"{side.name}: claimed {len(got)} of 1")
    side.claim.append(statistics.median(each) / 1000)
    each.clear()
    for i in ids:
        params = finish_params([Outcome(i, token, Status.COMPLETED, "{}")], "ab", **WEBHOOK)
        t0 = backend_cpu_ns(pid)
        got = c.execute(side.finish_sql, params).fetchall()
        each.append(backend_cpu_ns(pid) - t0)
        if len(got) != 1:
            raise RuntimeError(f"{side.name}: finished {len(got)} of 1")
    side.finish.append(statistics.median(each) / 1000)


def main(argv: list[str]) -> None:
    rounds = int(argv[0]) if argv else 8
    calls = int(argv[1]) if len(argv) > 1 else 200
    extra_variants()
    every = ["base", *VARIANTS.keys() - {"base"}, *SUBMIT_SQL, *CLAIM_SQL, *FINISH_SQL, *SESSION_SQL, *EXTRA_SQL]
    chosen = ["base", *[v for v in argv[2:] if v != "base"]] if len(argv) > 2 else every
    tag = uuid.uuid4().hex[:8]
    template = f"tasklane_dbpathab_{tag}_t"
    sides: list[Side] = []
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{template}"')
        try:
            migrate(
                _url(template), Path(os.environ["DBPATHAB_MIGRATIONS"]) if "DBPATHAB_MIGRATIONS" in os.environ else None
            )
            for i, name in enumerate(chosen):
                db = f"tasklane_dbpathab_{tag}_{i}"
                admin.execute(f'CREATE DATABASE "{db}" TEMPLATE "{template}"')
                conn = psycopg.connect(_url(db), autocommit=True)
                helper = psycopg.connect(_url(db), autocommit=True)
                for x in (conn, helper):
                    x.execute("SET synchronous_commit = off")
                if name in SESSION_SQL:
                    conn.execute(SESSION_SQL[name])
                setup = VARIANTS.get(name, "") or EXTRA_SQL.get(name, "")
                if setup:
                    helper.execute(setup)
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                sides.append(
                    Side(
                        name,
                        db,
                        conn,
                        helper,
                        int(row[0]),
                        SUBMIT_SQL.get(name, _Q["insert_task"]),
                        CLAIM_SQL.get(name, _Q["claim"]),
                        FINISH_SQL.get(name, _Q["finish"]),
                        [],
                        [],
                        [],
                    )
                )
            for s in sides:  # warm-up: caches, plans, the first partition look-ups
                _block(s, 50)
                s.submit.clear()
                s.claim.clear()
                s.finish.clear()
            for r in range(rounds):
                k = r % len(sides)
                for s in sides[k:] + sides[:k]:
                    _block(s, calls)
                print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
            _report(sides)
        finally:
            for s in sides:
                s.conn.close()
                s.helper.close()
            for i in range(len(sides)):
                admin.execute(f'DROP DATABASE IF EXISTS "tasklane_dbpathab_{tag}_{i}"')
            admin.execute(f'DROP DATABASE IF EXISTS "{template}"')


def _report(sides: list[Side]) -> None:
    base = sides[0]
    print(f"{'variant':28} {'submit us':>9} {'ratio':>6} {'spread':>11} {'claim us':>9} {'ratio':>6} {'spread':>11}")
    for s in sides:
        cols = []
        for mine, theirs in ((s.submit, base.submit), (s.claim, base.claim)):
            ratios = sorted(a / b for a, b in zip(mine, theirs, strict=True))
            cols.append(
                f"{statistics.median(mine):9.0f} {statistics.median(ratios):6.3f} {ratios[0]:5.2f}-{ratios[-1]:5.2f}"
            )
        print(f"{s.name:28} {cols[0]} {cols[1]}")
    print(f"\n{'variant':28} {'finish us':>9} {'ratio':>6} {'spread':>11}")
    for s in sides:
        ratios = sorted(a / b for a, b in zip(s.finish, base.finish, strict=True))
        print(
            f"{s.name:28} {statistics.median(s.finish):9.0f} {statistics.median(ratios):6.3f} "
            f"{ratios[0]:5.2f}-{ratios[-1]:5.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
