"""Where a submit's database time goes with a big history, measured apart from the
service: the ``insert_task`` statement a single submit sends, run under
``EXPLAIN (ANALYZE, BUFFERS, WAL)`` in a transaction of its own on an empty database
and on a ``--big-keep`` history database, alternating in short blocks (the disk's
drift cancels in each block pair), its execution, round trip and commit timed apart.
Then the same after a ``CHECKPOINT`` each time (a plain command, no setting changed):
the first change of each page after a checkpoint writes the whole page to the WAL.

    .venv/bin/python -m bench.bigtable_explain --big-db NAME

The empty database is made (migrated) for the run and dropped at the end; the history
database is only read from and inserted into (bench-explain tenant)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import psycopg

from bench.env import STATE_DIR
from chalicelib.adapters.postgres.migrate import migrate
from chalicelib.adapters.postgres.rows import one_task_params
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.core.ids import new_ids
from chalicelib.core.model import NewTask
from chalicelib.core.tracecontext import new_root_headers
from tools.devstack import services as devservices

TENANT = "bench-explain"
_PLAN_KEYS = ("Shared Hit Blocks", "Shared Read Blocks", "Shared Dirtied Blocks", "WAL Records", "WAL FPI", "WAL Bytes")


def _params() -> dict[str, Any]:
    """What ``Store.insert_tasks`` sends for one noop task (the bench's request): the
    one-task statement's parameters."""
    task = NewTask(
        id=new_ids(1)[0],
        tenant=TENANT,
        name="noop",
        priority="normal",
        payload_json='{"n": 1}',
        max_retries=3,
        timeout_seconds=60,
        trace_context=new_root_headers(1)[0],
    )
    return one_task_params(task, "api")


def one(conn: psycopg.Connection[Any], checkpoint: bool) -> dict[str, float]:
    """One submit statement in its own transaction: the plan's counters, execution
    (server), round trip (client), commit."""
    if checkpoint:
        conn.execute("CHECKPOINT")
        conn.commit()
    sql = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + queries()["insert_task"]
    t0 = time.perf_counter()
    row = conn.execute(sql, _params()).fetchone()
    t1 = time.perf_counter()
    conn.commit()
    t2 = time.perf_counter()
    assert row is not None
    doc = row[0] if isinstance(row[0], list) else json.loads(row[0])
    # The data-modifying CTEs (the tasks row, its event) are InitPlans of the top node;
    # the event's runs after the main query, outside the top node's counters: their sum.
    plan = doc[0]["Plan"]
    writes = [p for p in plan.get("Plans", []) if p["Node Type"] == "ModifyTable"] or [plan]
    out = {k: float(sum(p.get(k, 0) for p in writes)) for k in _PLAN_KEYS}
    out["trigger_ms"] = sum(t.get("Time", 0.0) for t in doc[0].get("Triggers", []))
    out.update(
        execution_ms=doc[0]["Execution Time"],
        planning_ms=doc[0]["Planning Time"],
        round_trip_ms=(t1 - t0) * 1000,
        commit_ms=(t2 - t1) * 1000,
    )
    return out


def alternate(
    conns: dict[str, psycopg.Connection[Any]], *, blocks: int, block: int, checkpoint: bool
) -> dict[str, list[dict[str, float]]]:
    got: dict[str, list[dict[str, float]]] = {side: [] for side in conns}
    for i in range(blocks):
        for side in ("empty", "big") if i % 2 == 0 else ("big", "empty"):
            got[side] += [one(conns[side], checkpoint) for _ in range(block)]
    return got


def summary(got: dict[str, list[dict[str, float]]]) -> list[str]:
    keys = list(got["empty"][0])
    lines = ["| per statement (median) | empty | big | ratio |", "|---|---|---|---|"]
    for k in keys:
        e = statistics.median(r[k] for r in got["empty"])
        b = statistics.median(r[k] for r in got["big"])
        lines.append(f"| {k} | {e:.3f} | {b:.3f} | {b / e:.2f} |" if e else f"| {k} | {e:.3f} | {b:.3f} | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bigtable_explain", description=__doc__.splitlines()[0])
    ap.add_argument("--big-db", required=True, help="the history database a --big-keep run kept")
    ap.add_argument("--blocks", type=int, default=20, help="block pairs (default 20)")
    ap.add_argument("--block", type=int, default=20, help="statements a block (default 20)")
    ap.add_argument("--checkpoints", type=int, default=10, help="statements a side after a CHECKPOINT (default 10)")
    args = ap.parse_args(argv)
    pg = devservices.ensure_postgres(STATE_DIR)
    empty_name = devservices.test_database_name("bench") + "_explain"
    empty_url = devservices.ensure_database(pg.url, empty_name)
    try:
        migrate(empty_url)
        urls = {"empty": empty_url, "big": devservices.database_url(pg.url, args.big_db)}
        conns = {side: psycopg.connect(url) for side, url in urls.items()}
        try:
            alternate(conns, blocks=2, block=args.block, checkpoint=False)  # warm both
            steady = alternate(conns, blocks=args.blocks, block=args.block, checkpoint=False)
            print(f"## {args.blocks} block pairs of {args.block}, alternating\n", *summary(steady), sep="\n")
            after = alternate(conns, blocks=args.checkpoints, block=1, checkpoint=True)
            print(f"\n## {args.checkpoints} a side, each right after a CHECKPOINT\n", *summary(after), sep="\n")
        finally:
            for c in conns.values():
                c.close()
    finally:
        devservices.drop_database(pg.url, empty_name)
        pg.stop()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
