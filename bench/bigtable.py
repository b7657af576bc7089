"""Do indexes and partitions keep costs flat as the tables grow?  Drain throughput and
submit latency with ``rows`` finished tasks (and three audit rows each) in the
tables, against an empty database, run as interleaved pairs.  The history is made
with INSERT ... SELECT generate_series in a database of its own: 1,000,000 tasks
with ``--big-table``, 10,000,000 with ``--big-rows 10000000``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
import time
from typing import Any

from bench import ours, stats
from bench.env import BenchEnv

HISTORY_TENANT = "bench-history"
# The history is spread over this many days, inside the default 7-day retention, so
# the sweepers of the measured runs prune none of it and drop no partition.
HISTORY_DAYS = 6.0
CHUNK = 1_000_000

# The ids are what the API makes (chalicelib/core/ids.py): version 7, the first 48
# bits the task's creation time in milliseconds, the rest random (from md5(i), so
# that each event computes its task's id without reading tasks back).
_ID = (
    "(lpad(to_hex((extract(epoch FROM {t}) * 1000)::bigint), 12, '0') || '7'"
    " || substr(md5('h' || i), 1, 3) || '8' || substr(md5('h' || i), 4, 15))::uuid"
)
_T = "(%(start)s::timestamptz - i * %(step)s::interval)"
_TASKS = (
    """
INSERT INTO tasks (id, tenant, name, status, priority, payload, result, attempts, max_retries,
                   timeout_seconds, run_at, enqueued_at, created_at, updated_at, started_at, finished_at)
SELECT """
    + _ID.format(t="t")
    + """, %(tenant)s, 'noop', 'COMPLETED', 'normal', '{"n": 1}'::jsonb, '{"n": 1}'::jsonb,
       1, 3, 60, t, t, t, t + interval '2 ms', t + interval '1 ms', t + interval '2 ms'
FROM (SELECT i, """
    + _T
    + """ AS t FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i) AS g
"""
)
# What the submit, claim and finish statements write, task_name included (so the
# metrics trigger counts them as it counts live traffic, without its join).
_EVENTS = (
    """
INSERT INTO task_events (task_id, at, from_status, to_status, attempt, actor, task_name)
SELECT """
    + _ID.format(t=_T)
    + ", "
    + _T
    + """ + e.after * interval '1 ms', e.from_status, e.to_status, e.attempt, 'bench-history', 'noop'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
CROSS JOIN (VALUES (0, NULL, 'QUEUED', 0), (1, 'QUEUED', 'PROCESSING', 1), (2, 'PROCESSING', 'COMPLETED', 1))
     AS e(after, from_status, to_status, attempt)
"""
)


def build(env: BenchEnv, rows: int) -> tuple[str, float]:
    """A migrated database holding ``rows`` COMPLETED tasks finished over the last
    ``HISTORY_DAYS`` days (within retention: the sweeper keeps them) and three events
    per task in their days' partitions of task_events.  Logged tables, the same
    indexes and trigger as production; only ``maintenance_work_mem`` is raised."""
    url = env.new_database("big")
    start = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    step = dt.timedelta(seconds=HISTORY_DAYS * 86400 / rows)
    with env.connect(url) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        today = now.date()
        conn.execute(
            "SELECT tasklane_ensure_event_partitions(%s, %s)",
            (today - dt.timedelta(days=math.ceil(HISTORY_DAYS) + 1), today),
        )
        for lo in range(1, rows + 1, CHUNK):
            params = {"tenant": HISTORY_TENANT, "start": now, "step": step, "lo": lo, "hi": min(rows, lo + CHUNK - 1)}
            conn.execute(_TASKS, params)
            conn.execute(_EVENTS, params)
            done = params["hi"]
            took = time.perf_counter() - start
            print(f"  history: {done:,} of {rows:,} tasks ({took:.0f} s)", file=sys.stderr, flush=True)
        conn.execute("VACUUM ANALYZE tasks")
        conn.execute("VACUUM ANALYZE task_events")
    return url, time.perf_counter() - start


def compare(env: BenchEnv, *, rows: int, n: int, repeats: int, submit_seconds: float) -> dict[str, Any]:
    big_url, build_seconds = build(env, rows)
    big = dataclasses.replace(env, database_url=big_url)
    runs: dict[str, list[dict[str, Any]]] = {"empty_drain": [], "big_drain": [], "empty_submit": [], "big_submit": []}
    for rep in range(repeats):
        # Which database goes first alternates, so a drift of the machine's load
        # within a pair does not always favour the same side.
        for side in ("empty", "big") if rep % 2 == 0 else ("big", "empty"):
            if side == "empty":
                runs["empty_drain"].append(ours.drain_run(env, drainers=2, n=n))
                runs["empty_submit"].append(ours.single_submit(env, seconds=submit_seconds, max_count=20_000))
            else:
                runs["big_drain"].append(ours.drain_run(big, drainers=2, n=n, truncate=False))
                runs["big_submit"].append(ours.single_submit(big, seconds=submit_seconds, max_count=20_000))
            print(
                f"  {side}: drain {runs[side + '_drain'][-1]['rate']:.0f}/s, submit p50 "
                f"{runs[side + '_submit'][-1]['p50_ms']:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    with env.connect(big_url) as conn:
        counts = conn.execute("SELECT count(*) FROM tasks").fetchone()
        events = conn.execute("SELECT count(*) FROM task_events").fetchone()
        parts = conn.execute("SELECT count(*) FROM tasklane_event_partitions()").fetchone()
    med = {k: {m: stats.median(r[m] for r in v) for m in ("rate", "p50_ms") if m in v[0]} for k, v in runs.items()}
    # Each pair's own ratio: the two sides ran within a minute of each other, so the
    # machine's drift over the run cancels in them, not in the ratio of the medians.
    pairs = {
        "drain_ratio_pairs": [
            b["rate"] / e["rate"] for e, b in zip(runs["empty_drain"], runs["big_drain"], strict=True)
        ],
        "submit_p50_ratio_pairs": [
            b["p50_ms"] / e["p50_ms"] for e, b in zip(runs["empty_submit"], runs["big_submit"], strict=True)
        ],
    }
    return {
        **pairs,
        "drain_ratio_pair_median": stats.median(pairs["drain_ratio_pairs"]),
        "submit_p50_ratio_pair_median": stats.median(pairs["submit_p50_ratio_pairs"]),
        "rows_in_big_table": counts[0] if counts else None,
        "events_in_big_table": events[0] if events else None,
        "event_partitions": parts[0] if parts else None,
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
