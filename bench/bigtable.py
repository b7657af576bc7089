"""Do indexes and partitions keep costs flat as the tables grow? Drain throughput and
submit latency with ``rows`` finished tasks (and two stored audit rows each: the
creation event is derived from the row, migration 0037) in the tables, against an
empty database. The history is made with INSERT ... SELECT generate_series in a
database of its own: 1,000,000 tasks with ``--big-table``, 10,000,000 with
``--big-rows 10000000``; ``--big-keep`` keeps that database for a later run's
``--big-db NAME`` (the build takes minutes of both cores). The tasks finished more
than a day ago go to ``tasks_archive``, where the sweeper keeps them (migration 0027);
a database built before that has them all in ``tasks``, and the measured runs'
sweepers would move them meanwhile.

Drain runs as whole interleaved pairs (30,000 tasks a side).  Submit runs as many
short blocks alternating between the two databases in one process (``submit_blocks``):
the commit time of this machine's disk swings several-fold from one minute to the
next, so only sides measured within the same second compare."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from bench import ours, stats
from bench.env import BenchEnv
from chalicelib.container import Container
from chalicelib.services.submit import submit
from tools.devstack import services as devservices

HISTORY_TENANT = "bench-history"
# The history is spread over this many days, inside the default 7-day retention, so
# the sweepers of the measured runs prune none of it and drop no partition.
HISTORY_DAYS = 6.0
CHUNK = 1_000_000
# Submits per block: long enough that a block's median is not one commit's luck,
# short enough (~30-100 ms) that the disk's drift is the same for both blocks of a pair.
BLOCK = 30

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
INSERT INTO {table} (id, tenant, name, status, priority, payload, result, attempts, max_retries,
                   timeout_seconds, run_at, enqueued_at, created_at, updated_at, started_at, finished_at,
                   created_by, created_status)
SELECT """
    + _ID.format(t="t")
    + """, %(tenant)s, 'noop', 'COMPLETED', 'normal', '{"n": 1}'::jsonb, '{"n": 1}'::jsonb,
       1, 3, 60, t, t, t, t + interval '2 ms', t + interval '1 ms', t + interval '2 ms',
       'bench-history', 'QUEUED'
FROM (SELECT i, """
    + _T
    + """ AS t FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i) AS g
WHERE (t + interval '2 ms' < %(archived_before)s
       AND date_trunc('day', t, 'UTC') = date_trunc('day', t + interval '2 ms', 'UTC')) = %(archived)s
"""
)
# Where the sweeper keeps finished tasks (migration 0027): those that finished more than
# a day ago, within their creation day (UTC), are in tasks_archive, the rest in tasks.
# The history is written where the sweeper would have moved it, with an hour's margin
# (23 h), so that the measured runs' sweepers have next to nothing to move.
ARCHIVED_AFTER = dt.timedelta(hours=23)
# What the claim and finish statements write, task_name included (so the metrics
# trigger counts them as it counts live traffic, without its join).  The submit writes
# no event since migration 0037: its creation event is the row's (created_by,
# created_status above), as for a task submitted through the API.
_EVENTS = (
    """
INSERT INTO task_events (task_id, at, from_status, to_status, attempt, actor, task_name)
SELECT """
    + _ID.format(t=_T)
    + ", "
    + _T
    + """ + e.after * interval '1 ms', e.from_status, e.to_status, e.attempt, 'bench-history', 'noop'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
CROSS JOIN (VALUES (1, 'QUEUED', 'PROCESSING', 1), (2, 'PROCESSING', 'COMPLETED', 1))
     AS e(after, from_status, to_status, attempt)
"""
)


def build(env: BenchEnv, rows: int, *, keep: bool = False) -> tuple[str, float]:
    """A migrated database holding ``rows`` COMPLETED tasks finished over the last
    ``HISTORY_DAYS`` days (within retention: the sweeper keeps them) and two stored
    events per task in their days' partitions of task_events; the tasks older than a day in
    ``tasks_archive`` (``ARCHIVED_AFTER``), as the sweeper keeps them, so ``tasks``
    holds the last day's.  Logged tables, the same
    indexes and trigger as production; only ``maintenance_work_mem`` is raised.
    ``keep``: not dropped when the bench ends (its name is printed; a scratch name, so
    ``drop_stale_test_databases`` removes it should nobody else, after 6 hours)."""
    url = env.new_database(f"big{rows}")
    if keep:
        env.extra_dbs.remove(f"{env.dbname}_big{rows}")
        print(f"  history database kept for --big-db: {env.dbname}_big{rows}", file=sys.stderr, flush=True)
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
            for table, archived in (("tasks", False), ("tasks_archive", True)):
                where = {"archived_before": now - ARCHIVED_AFTER, "archived": archived}
                conn.execute(_TASKS.replace("{table}", table), params | where)
            conn.execute(_EVENTS, params)
            done = params["hi"]
            took = time.perf_counter() - start
            print(f"  history: {done:,} of {rows:,} tasks ({took:.0f} s)", file=sys.stderr, flush=True)
        conn.execute("VACUUM ANALYZE tasks")
        conn.execute("VACUUM ANALYZE tasks_archive")
        conn.execute("VACUUM ANALYZE task_events")
    return url, time.perf_counter() - start


def reuse(env: BenchEnv, name: str, rows: int) -> str:
    """The URL of a history database an earlier ``--big-keep`` run built (never dropped
    by this run); refused unless it holds at least ``rows`` history tasks."""
    url = devservices.database_url(env.pg_server_url, name)
    with env.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM tasks WHERE tenant = %(t)s)"
            " + (SELECT count(*) FROM tasks_archive WHERE tenant = %(t)s)",
            {"t": HISTORY_TENANT},
        ).fetchone()
    held = cast(int, row[0]) if row else 0  # count(*) + count(*): bigint
    if held < rows:
        raise RuntimeError(f"database {name} holds {held:,} history tasks, not {rows:,}")
    return url


def _timed_store(rt: Container, into: list[float]) -> None:
    """Time each ``insert_tasks`` call of ``rt`` (pool checkout, the INSERT, its commit)
    into ``into``: the database's share of a submit, the rest being Python and the
    hand-off to the pusher thread."""
    inner: Callable[..., Any] = rt.store.insert_tasks

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)

    rt.store.insert_tasks = timed  # type: ignore[method-assign]


def submit_blocks(env: BenchEnv, big: BenchEnv, *, pairs: int, block: int = BLOCK) -> dict[str, Any]:
    """``pairs`` pairs of ``block`` single submits (``chalicelib.services.submit``, the
    push on the pusher thread, into the bench's Redis) on the empty and the big
    database, alternating, which goes first alternating too, from one process holding
    a runtime for each.  Each block ends when its pushes are done, so no block pays
    for the one before.  The ratio of each pair's block medians (big / empty) cancels
    the machine's drift; its median and quartiles are the result."""
    env.flush_redis()
    rts = {"empty": ours._submitter(env), "big": ours._submitter(big)}
    tenant = "bench-blocks-" + os.urandom(3).hex()
    lat: dict[str, list[list[float]]] = {"empty": [], "big": []}
    db: dict[str, list[float]] = {"empty": [], "big": []}
    try:
        for side, rt in rts.items():
            for _ in range(block):  # warm the pool, the prepared statement, the pusher
                submit(rt, tenant, ours.request())
            if not rt.flush_pushes(30):
                raise RuntimeError("the background pushes did not finish")
            _timed_store(rt, db[side])
        for i in range(pairs):
            for side in ("empty", "big") if i % 2 == 0 else ("big", "empty"):
                rt, got = rts[side], []
                for _ in range(block):
                    t = time.perf_counter()
                    submit(rt, tenant, ours.request())
                    got.append(time.perf_counter() - t)
                if not rt.flush_pushes(30):
                    raise RuntimeError("the background pushes did not finish")
                lat[side].append(got)
    finally:
        for rt in rts.values():
            ours.close_runtime(rt)
    return _block_summary(lat, db)


def _median_interval(xs: list[float], draws: int = 2000) -> list[float]:
    """A 95 % bootstrap interval of the median of ``xs`` (seeded: the same pairs give
    the same interval), so a reader can tell 1.01 from "somewhere near 1"."""
    rng = random.Random(0)
    meds = sorted(stats.median(rng.choices(xs, k=len(xs))) for _ in range(draws))
    return [meds[int(draws * 0.025)], meds[int(draws * 0.975) - 1]]


def _block_summary(lat: dict[str, list[list[float]]], db: dict[str, list[float]]) -> dict[str, Any]:
    med = {side: [stats.median(b) * 1000 for b in blocks] for side, blocks in lat.items()}
    ratios = [b / e for e, b in zip(med["empty"], med["big"], strict=True)]
    flat = {side: [x for b in blocks for x in b] for side, blocks in lat.items()}
    out: dict[str, Any] = {
        "block": len(lat["empty"][0]),
        "block_pairs": len(ratios),
        "ratios": ratios,
        "ratio_median": stats.median(ratios),
        "ratio_p25": stats.percentile(ratios, 25),
        "ratio_p75": stats.percentile(ratios, 75),
        "ratio_median_ci95": _median_interval(ratios),
        "big_slower_share": sum(r > 1 for r in ratios) / len(ratios),
    }
    for side in ("empty", "big"):
        out[side] = {
            **stats.latency_summary(flat[side]),
            "rate": len(flat[side]) / sum(flat[side]),
            "block_median_ms_p25_p50_p75": [stats.percentile(med[side], p) for p in (25, 50, 75)],
            "db_p50_ms": stats.percentile(db[side], 50) * 1000,
            "rest_p50_ms": stats.percentile([t - d for t, d in zip(flat[side], db[side], strict=True)], 50) * 1000,
        }
    return out


def compare(
    env: BenchEnv,
    *,
    rows: int,
    n: int,
    repeats: int,
    block_pairs: int,
    big_db: str | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    if big_db:
        big_url, build_seconds = reuse(env, big_db, rows), 0.0
    else:
        big_url, build_seconds = build(env, rows, keep=keep)
    big = dataclasses.replace(env, database_url=big_url)
    runs: dict[str, list[dict[str, Any]]] = {"empty_drain": [], "big_drain": []}
    for rep in range(repeats):
        # Which database goes first alternates, so a drift of the machine's load
        # within a pair does not always favour the same side.
        for side in ("empty", "big") if rep % 2 == 0 else ("big", "empty"):
            if side == "empty":
                runs["empty_drain"].append(ours.drain_run(env, drainers=2, n=n))
            else:
                runs["big_drain"].append(ours.drain_run(big, drainers=2, n=n, truncate=False))
            print(f"  {side}: drain {runs[side + '_drain'][-1]['rate']:.0f}/s", file=sys.stderr, flush=True)
    sub = submit_blocks(env, big, pairs=block_pairs)
    print(
        f"  submit: {sub['block_pairs']} block pairs of {sub['block']}, ratio of block medians "
        f"{sub['ratio_median']:.2f} (quartiles {sub['ratio_p25']:.2f}-{sub['ratio_p75']:.2f}, 95 % interval "
        f"{sub['ratio_median_ci95'][0]:.2f}-{sub['ratio_median_ci95'][1]:.2f}); "
        f"p50 {sub['empty']['p50_ms']:.2f} / {sub['big']['p50_ms']:.2f} ms",
        file=sys.stderr,
        flush=True,
    )
    with env.connect(big_url) as conn:
        counts = conn.execute("SELECT count(*) FROM tasks").fetchone()
        archived = conn.execute("SELECT count(*) FROM tasks_archive").fetchone()
        events = conn.execute("SELECT count(*) FROM task_events").fetchone()
        parts = conn.execute("SELECT count(*) FROM tasklane_event_partitions()").fetchone()
    drain = {k: stats.median(r["rate"] for r in v) for k, v in runs.items()}
    # Each pair's own ratio: the two sides ran within a minute of each other, so the
    # machine's drift over the run cancels in them, not in the ratio of the medians.
    drain_pairs = [b["rate"] / e["rate"] for e, b in zip(runs["empty_drain"], runs["big_drain"], strict=True)]
    return {
        "drain_ratio_pairs": drain_pairs,
        "drain_ratio_pair_median": stats.median(drain_pairs),
        "submit_p50_ratio_pairs": sub["ratios"],
        "submit_p50_ratio_pair_median": sub["ratio_median"],
        "submit_blocks": sub,
        "rows_in_big_table": counts[0] if counts else None,
        "rows_in_archive": archived[0] if archived else None,
        "events_in_big_table": events[0] if events else None,
        "event_partitions": parts[0] if parts else None,
        "history_rows": rows,
        "build_seconds": build_seconds,  # 0 with --big-db (built by an earlier run)
        "reused_database": big_db,
        "runs": runs,
        "drain_rate_empty": drain["empty_drain"],
        "drain_rate_big": drain["big_drain"],
        "drain_ratio": drain["big_drain"] / drain["empty_drain"],
        "submit_p50_ms_empty": sub["empty"]["p50_ms"],
        "submit_p50_ms_big": sub["big"]["p50_ms"],
        "submit_rate_empty": sub["empty"]["rate"],
        "submit_rate_big": sub["big"]["rate"],
        # The median of the block pairs' ratios: the drift-free estimate (the ratio of
        # the pooled p50s is in the two lines above).
        "submit_p50_ratio": sub["ratio_median"],
    }
