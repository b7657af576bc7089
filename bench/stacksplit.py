"""Where the local stack's CPU goes under 8 keep-alive HTTP clients, process by process.

    .venv/bin/python -m bench.stacksplit [rounds] [seconds]

Each round starts the whole local stack (``python -m tools.devstack run``: the API
process, its drainers and the sweeper) on this run's own database and Redis, warms it,
then runs the bench's HTTP workload (``ours_api.concurrent_submits``: 8 keep-alive clients
of single submits, the lean load client) for ``seconds``.  It prints the rate and, per request, the CPU (ms)
of each of the stack's processes by role, of the PostgreSQL backends serving this
database, of the Redis server and of this process (the 8 clients), with the machine's
busy share of the window (``stats.system_cpu_busy``).  On a 2-core machine the stack saturates both
cores, so the rate follows the machine's speed of the minute (the split stays put while
the rate moves by a third: bench/RESULTS.md, round 14); the split says what to cut.  The
database and the Redis are removed at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import ours, ours_api, stats
from bench.common import self_cpu
from bench.env import BenchEnv, bench_env

# The stack's processes by what their command line runs (``tools.devstack``'s roles).
ROLES = (("devstack api", "api"), ("devstack drain", "drainers"), ("devstack sweep", "sweeper"))


def _role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "ended"
    return next((role for marker, role in ROLES if marker in cmdline), "supervisor")


def split_round(env: BenchEnv, seconds: float) -> dict[str, float]:
    env.flush_redis()
    stack, port, key, _ = ours_api.start_stack(env)
    try:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        body = json.dumps({"name": "noop", "payload": {"n": 1}}).encode()
        for _ in range(3):
            ours_api.concurrent_submits(port, headers, body, clients=8, seconds=0.5)
        pids = stack.pids()
        roles = {pid: _role(pid) for pid in pids}
        before = {p: stats.proc_cpu_seconds(p) for p in pids}
        servers, client, busy = env.server_cpu(), self_cpu(), stats.system_cpu_busy()
        run = ours_api.concurrent_submits(port, headers, body, clients=8, seconds=seconds)
        after = {p: stats.proc_cpu_seconds(p) for p in pids}
        server_delta, client_cpu = env.server_cpu_delta(servers), self_cpu() - client
        busy_after = stats.system_cpu_busy()
    finally:
        ours.stop_workers(env, [stack])
    requests = run["concurrent8_rate"] * seconds
    by_role: dict[str, float] = {}
    for pid in pids:
        if after[pid] == after[pid] and before[pid] == before[pid]:  # NaN: the process ended
            by_role[roles[pid]] = by_role.get(roles[pid], 0.0) + after[pid] - before[pid]
    ms = {role: cpu / requests * 1000 for role, cpu in by_role.items()}
    ms |= {
        "postgres": server_delta["pg"] / requests * 1000,
        "redis": server_delta["redis"] / requests * 1000,
        "clients": client_cpu / requests * 1000,
    }
    return {
        "rate": run["concurrent8_rate"],
        **{f"{k}_ms": v for k, v in sorted(ms.items())},
        "total_ms": sum(ms.values()),
        "machine_busy": (busy_after[0] - busy[0]) / max(busy_after[1] - busy[1], 1),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    with bench_env() as env:
        for r in range(rounds):
            res = split_round(env, seconds)
            print(r, json.dumps({k: round(v, 3) for k, v in res.items()}), flush=True)


if __name__ == "__main__":
    main()
