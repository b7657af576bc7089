"""Interleaved A/B of the local API server between two checkouts, on one database and Redis.

    .venv/bin/python -m bench.httpab [--stack] /path/to/checkout-A[@N] /path/to/checkout-B[@N] [rounds] [seconds]

Each round starts A's and B's API server (``python -m tools.devstack api``, the code
from that checkout, ``@N``: N processes on one port with ``--processes N``; alternating
which side goes first), warms it, then runs the bench's
HTTP workload against it: ``seconds`` of single submits (POST /api/v1/tasks) from 8
keep-alive clients (``bench.ours_api.concurrent_submits``, the lean load client), then
``seconds`` from one.
Per side it prints the rates, the p50s and the API processes' CPU per request
(``/proc``, the server and any processes it started), then the medians and B/A.  No
drainer runs: the ids wait in the private Redis, which is flushed between sides.  The
database and the Redis are this run's own and are removed at the end.  On a loaded
machine only the ratios mean anything.

With ``--stack`` each side is instead the bench's own HTTP workload
(``ours_api.http_submit``: the whole local stack, ``TASKLANE_API_PROCESSES=N``, its two
drainers and sweeper draining what is submitted): the sequential rate and p50, the 8
lean clients' rate and p50, and the stack's CPU per request during their window.
"""

from __future__ import annotations

import json
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

from bench import ours_api
from bench.env import BenchEnv, bench_env
from tests.helpers import wait_for
from tools.devstack import services as devservices


def side(env: BenchEnv, root: Path, processes: int, key: str, seconds: float) -> dict[str, Any]:
    env.flush_redis()
    env.code_root = root
    port = devservices.find_free_port()
    argv = ["-m", "tools.devstack", "api", "--port", str(port)] + (
        ["--processes", str(processes)] if processes > 1 else []
    )
    # One process; with --processes N it forks the others (their CPU is counted with its own).
    procs = [env.python("api", *argv)]
    try:

        def up() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise SystemExit(f"the API server exited:\n{proc.log_tail()}")
            return procs[0].log_tail(200).count("Serving on") >= processes

        wait_for(up, timeout=60, interval=0.1, message="the API servers")
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        body = json.dumps({"name": "noop", "payload": {"n": 1}}).encode()
        # Warm every process (pool, caches, and the first request's imports: hundreds of
        # ms of CPU a process): each call opens 8 new connections, which go to whichever
        # process accepts first, so a cold one, idle, gets its share within a few calls.
        for _ in range(2 * processes):
            ours_api.concurrent_submits(port, headers, body, clients=8, seconds=0.5)
        cpu0 = sum(proc.cpu_seconds() for proc in procs)
        many = ours_api.concurrent_submits(port, headers, body, clients=8, seconds=seconds)
        cpu = sum(proc.cpu_seconds() for proc in procs) - cpu0
        cpu8 = cpu / (many["concurrent8_rate"] * seconds) * 1000
        one = ours_api.concurrent_submits(port, headers, body, clients=1, seconds=seconds)
        one = {"rate1": one["concurrent8_rate"], "p50_1_ms": one["concurrent8_p50_ms"]}
        return {**many, **one, "api_cpu8_ms": cpu8}
    finally:
        for proc in procs:
            proc.stop()


def stack_side(env: BenchEnv, root: Path, processes: int, seconds: float) -> dict[str, Any]:
    """The bench's own HTTP workload (``ours_api.http_submit``: the whole local stack, its
    drainers draining what is submitted) with ``processes`` API processes."""
    env.code_root = root
    res = ours_api.http_submit(env, seconds=seconds, max_count=20_000, processes=processes)
    # The 8 clients' window of the lean load client: the goal's figure.
    return {k: res[k] for k in ("lean8_rate", "lean8_p50_ms", "stack_cpu_lean8_ms", "rate", "p50_ms")}


def _side_spec(arg: str) -> tuple[Path, int]:
    """``/path/to/checkout`` or ``/path/to/checkout@N`` (N API processes sharing the port;
    the checkout's ``tools.devstack api`` must know ``--processes``)."""
    path, _, count = arg.partition("@")
    return Path(path).resolve(), int(count or 1)


def main() -> None:
    stack = "--stack" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if a != "--stack"]
    (a, a_procs), (b, b_procs) = _side_spec(args[0]), _side_spec(args[1])
    rounds = int(args[2]) if len(args) > 2 else 3
    seconds = float(args[3]) if len(args) > 3 else 4.0
    from chalicelib.adapters.postgres.store import Store
    from chalicelib.services.apikeys import ensure_key

    results: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    with bench_env() as env:
        key = "httpab-" + uuid.uuid4().hex
        store = Store(env.database_url)
        ensure_key(store, key, rate_limit_per_minute=100_000_000)
        store.close()
        for r in range(rounds):
            order = [("A", a, a_procs), ("B", b, b_procs)]
            for name, root, processes in order if r % 2 == 0 else order[::-1]:
                res = stack_side(env, root, processes, seconds) if stack else side(env, root, processes, key, seconds)
                results[name].append(res)
                print(name, r, json.dumps({k: round(v, 3) for k, v in res.items()}), flush=True)
    keys = list(results["A"][0])
    med = {n: {k: statistics.median(x[k] for x in results[n]) for k in keys} for n in results}
    for k in keys:
        print(f"{k:20s} A {med['A'][k]:9.3f}  B {med['B'][k]:9.3f}  B/A {med['B'][k] / med['A'][k]:.3f}")


if __name__ == "__main__":
    main()
