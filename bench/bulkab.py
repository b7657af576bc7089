"""Interleaved A/B of bulk submit between two checkouts, on one database and Redis.

    .venv/bin/python -m bench.bulkab /path/to/checkout-A /path/to/checkout-B [rounds] [calls]

Each round runs A and B (alternating which goes first) in fresh processes whose code
comes from that checkout: ``submit_many`` ``calls`` times with 500 noop tasks, the push
in the background (the process default), the clock stopped once every push is done.
Per task it prints the rate, the client's CPU (``getrusage``) and the PostgreSQL
backends' CPU (``/proc`` ticks), then the medians and B/A.  The database
(``tasklane_bulkab_*``) and the private Redis are this run's own and are removed at the
end.  On a loaded machine only the ratios mean anything.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve()


def _backend_cpu(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def worker(db: str, redis_url: str, calls: int) -> dict[str, float]:
    """One side of a round, run with the checkout under test first on ``sys.path``."""
    import psycopg

    from bench.ours import request
    from chalicelib.config import Settings
    from chalicelib.container import Container
    from chalicelib.services.submit import submit_many

    rt = Container.build(Settings(database_url=db, redis_url=redis_url, redis_prefix="bulkab"))
    tenant = "ab-" + uuid.uuid4().hex[:6]
    batches = [[request() for _ in range(500)] for _ in range(calls)]
    submit_many(rt, tenant, batches[0][:5])
    with psycopg.connect(db, autocommit=True) as conn:
        sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        pids = [r[0] for r in conn.execute(sql)]
    pg0, r0, t0 = _backend_cpu(pids), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for b in batches:
        submit_many(rt, tenant, b)
    if not rt.flush_pushes(30):
        raise RuntimeError("the background pushes did not finish")
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    rt.close()
    n = 500 * calls
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return {"rate": n / wall, "client_us": cpu / n * 1e6, "pg_us": (_backend_cpu(pids) - pg0) / n * 1e6}


def main(a: str, b: str, rounds: int, calls: int) -> None:
    from chalicelib.adapters.postgres.migrate import migrate
    from tools.devstack import services

    server = services.ensure_postgres(HERE.parents[1] / ".tasklane").url
    name = f"tasklane_bulkab_{int(time.time())}_{uuid.uuid4().hex[:6]}"
    db = services.ensure_database(server, name)
    migrate(db)
    redis_dir = HERE.parents[1] / ".tasklane" / f"bulkab-redis-{os.getpid()}"
    redis = services.start_private_redis(redis_dir)
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for i in range(rounds):
            order = [("A", a), ("B", b)] if i % 2 == 0 else [("B", b), ("A", a)]
            for tag, root in order:
                argv = [sys.executable, str(HERE), "--worker", root, db, redis.url, str(calls)]
                out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=root)
                results[tag].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(i, tag, {k: round(v, 1) for k, v in results[tag][-1].items()}, flush=True)
    finally:
        services.drop_database(server, name)
        redis.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)
    for key in ("rate", "client_us", "pg_us"):
        ma = statistics.median(r[key] for r in results["A"])
        mb = statistics.median(r[key] for r in results["B"])
        print(f"{key}: A {ma:.1f}  B {mb:.1f}  B/A {mb / ma:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        root = sys.argv[2]
        sys.path.insert(0, root)
        os.environ.setdefault("TASKLANE_LOG_LEVEL", "WARNING")
        print(json.dumps(worker(sys.argv[3], sys.argv[4], int(sys.argv[5]))))
    else:
        main(
            sys.argv[1],
            sys.argv[2],
            int(sys.argv[3]) if len(sys.argv) > 3 else 6,
            int(sys.argv[4]) if len(sys.argv) > 4 else 20,
        )
