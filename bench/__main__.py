"""``python -m bench``: Tasklane's performance benchmark (see bench/README.md).

One command measures, in the same run and on the same PostgreSQL and Redis:
single and bulk submit, drain throughput with 1/2/4 real drainer processes,
end-to-end latency at a steady 200 tasks/s, CPU per 1,000 tasks, drainer RSS;
the same workloads on the seed's naive design, Dramatiq and Procrastinate; and
the hardware baselines.  Prints a table, writes bench/results/latest.json and
(full runs) the generated block of bench/RESULTS.md.
"""

from __future__ import annotations

import os

# Before chalicelib is imported: its logger reads the level once.  Per-batch INFO
# lines are the product's concern, not the benchmark's.
os.environ.setdefault("TASKLANE_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

import argparse
import datetime as dt
import functools
import json
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import hardware, report, stats
from bench.env import RESULTS_DIR, ROOT, BenchEnv, bench_env

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass(frozen=True)
class Plan:
    repeats: int
    submit_seconds: float
    hw_seconds: float
    bulk_calls: int
    drain_n: int
    drain_n_side: int  # 1 and 4 drainers
    latency_count: int
    http_seconds: float
    naive_n: int
    dramatiq_n: int
    procrastinate_n: int
    peer_latency_count: int
    big_rows: int
    big_n: int
    big_repeats: int
    big_blocks: int  # pairs of submit blocks, empty vs big (bench/bigtable.py)
    burst_n: int  # the burst drained before the "after a burst" latency run
    api_seconds: float


FULL = Plan(
    repeats=3,
    submit_seconds=2.0,
    hw_seconds=1.5,
    bulk_calls=30,
    drain_n=30_000,
    drain_n_side=20_000,
    latency_count=2400,
    http_seconds=3.0,
    naive_n=3000,
    dramatiq_n=10_000,
    procrastinate_n=2000,
    peer_latency_count=1000,
    big_rows=1_000_000,
    big_n=30_000,
    big_repeats=3,
    big_blocks=150,
    burst_n=20_000,
    api_seconds=2.0,
)
QUICK = Plan(
    repeats=1,
    submit_seconds=1.0,
    hw_seconds=0.7,
    bulk_calls=10,
    drain_n=10_000,
    drain_n_side=5000,
    latency_count=600,
    http_seconds=1.5,
    naive_n=1000,
    dramatiq_n=3000,
    procrastinate_n=600,
    peer_latency_count=400,
    big_rows=200_000,
    big_n=10_000,
    big_repeats=1,
    big_blocks=40,
    burst_n=5000,
    api_seconds=1.0,
)

ALL_PARTS = ("hardware", "ours", "http", "naive", "dramatiq", "procrastinate")


class Run:
    def __init__(self, env: BenchEnv, plan: Plan) -> None:
        self.env = env
        self.plan = plan
        self.raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.skipped: list[str] = []
        self.interference: list[str] = []

    def record(self, system: str, section: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        label = f"{system}/{section}"
        deadline = time.monotonic() + 20
        while (foreign := self.env.foreign_redis_clients()) and time.monotonic() < deadline:
            time.sleep(0.5)  # another process on db 8: let it go before measuring
        if foreign:
            msg = f"{label}: {foreign} other client(s) on Redis db 8 (another suite using the bench's db?)"
            self.interference.append(msg)
            print(f"  ! {msg}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            try:
                result = fn()
            except Exception as first:  # once more: a flush of db 8 by someone else, a hiccup
                print(f"  ! {label}: {type(first).__name__}: {str(first)[:200]}; retrying once", file=sys.stderr)
                self.interference.append(f"{label}: retried after {type(first).__name__}")
                result = fn()
        except Exception as exc:  # a workload (or a peer) that cannot run must not stop the others
            msg = f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc) else ''}"
            self.skipped.append(msg)
            print(f"  ! {msg}", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            return None
        if "drainer_rss_mb" in result or "worker_rss_mb" in result:
            result["rss_mb"] = result.get("drainer_rss_mb", result.get("worker_rss_mb"))
        self.raw.setdefault(system, {}).setdefault(section, []).append(result)
        headline = {k: result[k] for k in ("rate", "p50_ms", "p99_ms", "cpu_s_per_1000") if k in result}
        shown = ", ".join(f"{k}={stats.fmt(v, 2 if k != 'rate' else 0)}" for k, v in headline.items())
        print(f"  {label:<28} {shown}  ({time.perf_counter() - t:.1f} s)", flush=True)
        return result


def medians(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, sections in raw.items():
        out[system] = {}
        for section, runs in sections.items():
            keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out[system][section] = {k: stats.median(float(r[k]) for r in runs if k in r) for k in keys}
    return out


def run_all(env: BenchEnv, plan: Plan, parts: set[str]) -> Run:
    from bench import naive, ours, ours_api, peer_dramatiq, peer_procrastinate

    run = Run(env, plan)
    p = plan
    print(f"bench database {env.dbname}, Redis db 8; {p.repeats} repeat(s)", flush=True)

    for rep in range(p.repeats):
        # Each kind of workload runs for every system back to back, so that the
        # comparisons are between numbers taken at nearly the same moment (the
        # machine's load and the disk's fsync time drift over minutes).
        print(f"-- round {rep + 1}/{p.repeats}", flush=True)
        if "hardware" in parts:
            run.record("hardware", "pg_single_insert", lambda: hardware.pg_single_insert(env, seconds=p.hw_seconds))
        if "ours" in parts:
            single = run.record(
                "ours", "single", lambda: ours.single_submit(env, seconds=p.submit_seconds, max_count=50_000)
            )
            hw = run.raw.get("hardware", {}).get("pg_single_insert")
            if single and hw:
                ratio = {"rate": single["rate"] / hw[-1]["rate"]}
                run.raw["ours"].setdefault("single_vs_insert_pairs", []).append(ratio)
        ns = None
        if "naive" in parts:
            ns = run.record(
                "naive", "single", lambda: naive.single_submit(env, seconds=p.submit_seconds, max_count=50_000)
            )
            if ns:
                run.raw["naive"].setdefault("bulk", []).append({"rate": ns["rate"]})  # no batch path
        if "dramatiq" in parts:
            run.record(
                "dramatiq",
                "single",
                lambda: peer_dramatiq.single_submit(env, seconds=p.submit_seconds, max_count=50_000),
            )
        if "procrastinate" in parts:
            run.record(
                "procrastinate",
                "single",
                lambda: peer_procrastinate.single_submit(env, seconds=p.submit_seconds, max_count=50_000),
            )
        if "hardware" in parts:
            run.record("hardware", "pg_multirow_insert", lambda: hardware.pg_multirow_insert(env, seconds=p.hw_seconds))
            run.record("hardware", "pg_copy", lambda: hardware.pg_copy(env, seconds=p.hw_seconds))
            run.record("hardware", "redis_lpush", lambda: hardware.redis_lpush(env, seconds=p.hw_seconds))
            run.record(
                "hardware", "redis_lpush_x16", lambda: hardware.redis_lpush(env, seconds=p.hw_seconds, pipeline=16)
            )
        if "ours" in parts:
            run.record("ours", "bulk", lambda: ours.bulk_submit(env, calls=p.bulk_calls))
        if "dramatiq" in parts:
            run.record("dramatiq", "bulk", lambda: peer_dramatiq.bulk_submit(env, n=p.bulk_calls * 100))
        if "procrastinate" in parts:
            run.record(
                "procrastinate", "bulk", lambda: peer_procrastinate.bulk_submit(env, calls=max(2, p.bulk_calls // 5))
            )
        if "ours" in parts:
            # 2 and 4 drainers back to back on as many tasks, which goes first alternating:
            # their ratio is the goal's.  drain4 used to drain 20,000 tasks against
            # drain2's 30,000, four workloads later: the ratio compared unlike runs (a
            # drain's start and end do not grow with its size) minutes apart, while this
            # machine's speed drifts by a third from one minute to the next.
            order = [2, 4] if rep % 2 == 0 else [4, 2]
            drained = {
                d: run.record("ours", f"drain{d}", functools.partial(ours.drain_run, env, drainers=d, n=p.drain_n))
                for d in order
            }
            if drained[2] and drained[4]:
                pair = {"rate": drained[4]["rate"] / drained[2]["rate"]}
                run.raw["ours"].setdefault("drain4_vs_2_pairs", []).append(pair)
        if "naive" in parts and ns:
            cpu_ms = ns["cpu_ms_per_submit"]
            run.record(
                "naive",
                "drain2",
                functools.partial(naive.drain_run, env, workers=2, n=p.naive_n, submit_cpu_ms=cpu_ms),
            )
        if "dramatiq" in parts:
            run.record("dramatiq", "drain2", lambda: peer_dramatiq.drain_run(env, processes=2, n=p.dramatiq_n))
        if "procrastinate" in parts:
            run.record(
                "procrastinate", "drain2", lambda: peer_procrastinate.drain_run(env, workers=2, n=p.procrastinate_n)
            )
        if "ours" in parts:
            run.record("ours", "drain1", lambda: ours.drain_run(env, drainers=1, n=p.drain_n_side))
            run.record("ours", "drain2_b100", lambda: ours.drain_run(env, drainers=2, n=p.drain_n_side, batch_size=100))
            run.record("ours", "api", lambda: ours_api.api_in_process(env, seconds=p.api_seconds, max_count=20_000))
        # Latency: ours and the naive design back to back, on a fresh table and then
        # straight after a burst, which goes first alternating by repeat; the pair's ratio
        # (naive p50 / ours p50) is the goal's.  The ratio of the two medians compared
        # runs from different repeats, minutes apart, while this machine's speed drifts
        # by a third: round 16's pairs were 0.64x, 1.04x and 1.07x, its medians 0.69x.
        for section, burst in (("latency", 0), ("latency_burst", p.burst_n)):
            got: dict[str, dict[str, Any] | None] = {}
            for side in ("ours", "naive") if rep % 2 == 0 else ("naive", "ours"):
                if side not in parts:
                    continue
                workload = ours.latency_run if side == "ours" else naive.latency_run
                count = p.latency_count if side == "ours" else p.peer_latency_count
                got[side] = run.record(
                    side, section, functools.partial(workload, env, per_second=200, count=count, burst=burst)
                )
            mine, theirs = got.get("ours"), got.get("naive")
            if mine and theirs:
                pair = {"rate": theirs["p50_ms"] / mine["p50_ms"]}
                run.raw["ours"].setdefault(f"{section}_vs_naive_pairs", []).append(pair)
                # The goal counts until the task finishes as well as until it starts.
                pair = {"rate": theirs["finish_p50_ms"] / mine["finish_p50_ms"]}
                run.raw["ours"].setdefault(f"{section}_finish_vs_naive_pairs", []).append(pair)

    print("-- steady 200 tasks/s, peers", flush=True)
    if "dramatiq" in parts:
        run.record(
            "dramatiq", "latency", lambda: peer_dramatiq.latency_run(env, per_second=200, count=p.peer_latency_count)
        )
    if "procrastinate" in parts:
        run.record(
            "procrastinate",
            "latency",
            lambda: peer_procrastinate.latency_run(env, per_second=200, count=p.peer_latency_count),
        )
    if "http" in parts:
        print("-- HTTP against a live local stack", flush=True)
        # Repeated like the other goals' workloads (medians of the repeats), the two 8-client
        # windows of each in turn first: within one stack the second window ran later.
        for rep in range(p.repeats):
            run.record(
                "ours",
                "http",
                functools.partial(
                    ours_api.http_submit, env, seconds=p.http_seconds, max_count=20_000, lean_first=rep % 2 == 0
                ),
            )
    if "hardware" in parts:
        hardware.cleanup(env)
    return run


def environment(env: BenchEnv, args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in ("psycopg", "redis", "dramatiq", "procrastinate", "py-spy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "chalicelib"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        git += " (+ uncommitted chalicelib changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        git = "?"
    return {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "mode": "quick" if args.quick else "full",
        "repeats": plan.repeats,
        "cpus": os.cpu_count(),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
        "pg": hardware.fsync_method(env),
        "git": git,
        "plan": plan.__dict__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short repeat of everything (~2 minutes)")
    parser.add_argument(
        "--big-table",
        action="store_true",
        help="also compare drain and submit with 1,000,000 finished tasks in the table (~2-3 more minutes)",
    )
    parser.add_argument(
        "--big-pairs",
        type=int,
        default=None,
        help="interleaved empty/big drain pairs for --big-table (default 3, quick 1)",
    )
    parser.add_argument(
        "--big-blocks",
        type=int,
        default=None,
        help="pairs of 30-submit blocks, empty vs big, alternating, for --big-table (default 150, quick 40)",
    )
    parser.add_argument(
        "--big-keep",
        action="store_true",
        help="keep the history database --big-table builds (its name is printed) for a later --big-db",
    )
    parser.add_argument(
        "--big-db",
        default=None,
        metavar="NAME",
        help="use this database a --big-keep run built instead of building the history again (not dropped)",
    )
    parser.add_argument(
        "--big-rows",
        type=int,
        default=None,
        help="finished tasks for --big-table (default 1,000,000, quick 200,000); 10000000 builds in 7-10 minutes",
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL_PARTS),
        help=f"comma-separated subset of {','.join(ALL_PARTS)}, or none (e.g. with --big-table)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats per workload (default 3, quick 1)")
    parser.add_argument(
        "--profile", action="store_true", help="also sample the drainers with py-spy during a drain and a 200/s run"
    )
    parser.add_argument("--no-results-md", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = Plan(**{**plan.__dict__, "repeats": max(1, min(args.repeats, 10))})
    if args.big_rows is not None:
        if args.big_rows < 1000:
            parser.error("--big-rows must be at least 1000")
        plan = Plan(**{**plan.__dict__, "big_rows": args.big_rows})
    if args.big_pairs is not None:
        plan = Plan(**{**plan.__dict__, "big_repeats": max(1, min(args.big_pairs, 20))})
    if args.big_blocks is not None:
        plan = Plan(**{**plan.__dict__, "big_blocks": max(2, min(args.big_blocks, 2000))})
    if args.big_db and args.big_keep:
        parser.error("--big-db reuses a kept database; --big-keep builds one: give one of them")
    parts = {p.strip() for p in args.only.split(",") if p.strip()} - {"none"}
    unknown = parts - set(ALL_PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with bench_env() as env:
        env_info = environment(env, args, plan)
        run = run_all(env, plan, parts)
        results: dict[str, Any] = {
            "environment": env_info,
            "raw": run.raw,
            "skipped": run.skipped,
            "interference": run.interference,
        }
        from bench import coldstart

        print("-- cold start: import app in fresh interpreters", flush=True)
        results["cold_start"] = coldstart.measure(runs=3 if args.quick else 7)
        if args.big_table:
            from bench import bigtable

            print(f"-- {plan.big_rows:,} finished tasks vs an empty table", flush=True)
            try:
                results["big_table"] = bigtable.compare(
                    env,
                    rows=plan.big_rows,
                    n=plan.big_n,
                    repeats=plan.big_repeats,
                    block_pairs=plan.big_blocks,
                    big_db=args.big_db,
                    keep=args.big_keep,
                )
            except Exception as exc:
                run.skipped.append(f"big table: {type(exc).__name__}: {exc}")
                traceback.print_exc()
        if args.profile:
            from bench import profiling

            print("-- py-spy profiles of the drainers", flush=True)
            results["profile"] = {
                "drain": profiling.profile_drain(env, n=plan.drain_n, seconds=3),
                "latency": profiling.profile_latency(env, count=plan.latency_count // 2, seconds=4),
            }
    results["medians"] = medians(run.raw)
    for pairs_of, ratio in (
        ("single_vs_insert_pairs", "single_vs_insert"),
        ("drain4_vs_2_pairs", "drain4_vs_2"),
        ("latency_vs_naive_pairs", "latency_vs_naive"),
        ("latency_burst_vs_naive_pairs", "latency_burst_vs_naive"),
        ("latency_finish_vs_naive_pairs", "latency_finish_vs_naive"),
        ("latency_burst_finish_vs_naive_pairs", "latency_burst_finish_vs_naive"),
    ):
        pairs = run.raw.get("ours", {}).get(pairs_of, [])
        if pairs:
            results["medians"]["ours"][ratio] = stats.median(x["rate"] for x in pairs)
    results["noise"] = {
        f"{sys_}/{sec}": stats.spread(r["rate"] for r in runs if "rate" in r)
        for sys_, secs in run.raw.items()
        for sec, runs in secs.items()
        if len(runs) > 1
    }
    env_info["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    env_info["duration_seconds"] = time.perf_counter() - started
    body = report.render(results)
    print()
    print(body)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS_DIR / "latest.json", RESULTS_DIR / f"run-{stamp}.json"):
        path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {RESULTS_DIR / 'latest.json'}")
    if not args.quick and not args.no_results_md and parts == set(ALL_PARTS):
        report.write_results_md(RESULTS_MD, body)
        print(f"wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
