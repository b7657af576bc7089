"""Do indexes keep costs flat as the table grows?  Drain throughput and submit
latency with 1,000,000 finished tasks (and their 3,000,000 audit rows) in the
table, against an empty table, run as interleaved pairs.  The history is made
with INSERT ... SELECT generate_series in a database of its own."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bench import ours, stats
from bench.env import BenchEnv

HISTORY_TENANT = "bench-history"


def build(env: BenchEnv, rows: int) -> tuple[str, float]:
    """A migrated database holding ``rows`` COMPLETED tasks (finished within the
    retention window, so the sweeper keeps them) and three events per task."""
    url = env.new_database("big")
    start = time.perf_counter()
    with env.connect(url) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(
            """
            INSERT INTO tasks (id, tenant, name, status, priority, payload, result, attempts, max_retries,
                               timeout_seconds, run_at, enqueued_at, created_at, updated_at, started_at,
                               finished_at)
            SELECT gen_random_uuid(), %s, 'noop', 'COMPLETED', 'normal', '{"n": 1}'::jsonb, '{"n": 1}'::jsonb,
                   1, 3, 60, t, t, t, t + interval '2 ms', t + interval '1 ms', t + interval '2 ms'
            FROM (SELECT now() - i * interval '400 ms' AS t FROM generate_series(1, %s) AS i) AS g
            """,
            (HISTORY_TENANT, rows),
        )
        conn.execute(
            """
            INSERT INTO task_events (task_id, at, from_status, to_status, attempt, actor)
            SELECT t.id, t.created_at, e.from_status, e.to_status, e.attempt, 'bench-history'
            FROM tasks t
            CROSS JOIN (VALUES (NULL, 'QUEUED', 0), ('QUEUED', 'PROCESSING', 1), ('PROCESSING', 'COMPLETED', 1))
                 AS e(from_status, to_status, attempt)
            WHERE t.tenant = %s
            """,
            (HISTORY_TENANT,),
        )
        conn.execute("VACUUM ANALYZE tasks")
        conn.execute("VACUUM ANALYZE task_events")
    return url, time.perf_counter() - start


def compare(env: BenchEnv, *, rows: int, n: int, repeats: int, submit_seconds: float) -> dict[str, Any]:
    big_url, build_seconds = build(env, rows)
    big = dataclasses.replace(env, database_url=big_url)
    runs: dict[str, list[dict[str, Any]]] = {"empty_drain": [], "big_drain": [], "empty_submit": [], "big_submit": []}
    for _ in range(repeats):
        runs["empty_drain"].append(ours.drain_run(env, drainers=2, n=n))
        runs["big_drain"].append(ours.drain_run(big, drainers=2, n=n, truncate=False))
        runs["empty_submit"].append(ours.single_submit(env, seconds=submit_seconds, max_count=20_000))
        runs["big_submit"].append(ours.single_submit(big, seconds=submit_seconds, max_count=20_000))
    with env.connect(big_url) as conn:
        counts = conn.execute("SELECT count(*) FROM tasks").fetchone()
    med = {k: {m: stats.median(r[m] for r in v) for m in ("rate", "p50_ms") if m in v[0]} for k, v in runs.items()}
    return {
        "rows_in_big_table": counts[0] if counts else None,
        "history_rows": rows,
        "build_seconds": build_seconds,
        "runs": runs,
        "drain_rate_empty": med["empty_drain"]["rate"],
        "drain_rate_big": med["big_drain"]["rate"],
        "drain_ratio": med["big_drain"]["rate"] / med["empty_drain"]["rate"],
        "submit_p50_ms_empty": med["empty_submit"]["p50_ms"],
        "submit_p50_ms_big": med["big_submit"]["p50_ms"],
        "submit_rate_empty": med["empty_submit"]["rate"],
        "submit_rate_big": med["big_submit"]["rate"],
        "submit_p50_ratio": med["big_submit"]["p50_ms"] / med["empty_submit"]["p50_ms"],
    }
