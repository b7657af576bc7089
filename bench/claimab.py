"""Interleaved A/B of the claim statement between two checkouts, on one database.

    .venv/bin/python -m bench.claimab /path/to/checkout-A /path/to/checkout-B grow|big [pairs] [claims] [size]

Each pair runs A and B (alternating which goes first) in fresh processes whose code
comes from that checkout, each with a new connection (so a new plan cache) for
``Store.claim`` alone (the connection the drain loop holds, ``Store.hold_connection``,
where the checkout has one; else the store's pool), and claims ``claims`` times ``size`` tasks:

- ``grow``: ``tasks`` truncated first, then submit, claim, finish, one claim at a time:
  the claim's first plan is made on an empty table, the later claims run on a table
  growing to ``claims * size`` finished tasks (the bench's latency run, and a new
  deployment).
- ``big``: 20,000 finished tasks, analysed, made once before the first pair; each side
  submits its tasks first, then claims them (the table a drainer usually sees).

Per claim it prints the PostgreSQL CPU of the claiming connection's backend
(``/proc/<pid>/schedstat``, ns: nothing else runs on that backend), the client's CPU
(``time.thread_time``) and the wall time's p50, then the medians of the pairs and
B/A.  Each side has a database of this run's own (``tasklane_claimab_*``), migrated with
that side's checkout's migrations (so a migration that changes the claim function is
compared too, not only the Python around it), made the same way and dropped at the end.
On a loaded machine only the ratios mean anything.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
BIG_TABLE = 20_000


def _backend_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def worker(db: str, mode: str, claims: int, size: int) -> dict[str, float]:
    """One side of a pair, run with the checkout under test first on ``sys.path``."""
    import psycopg

    from chalicelib.adapters.postgres.store import Store
    from chalicelib.core.model import NewTask, Outcome, Status

    def new() -> NewTask:
        return NewTask(str(uuid.uuid4()), "claimab", "noop", "normal", "{}", 3, 30)

    if mode == "grow":
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("TRUNCATE tasks, task_events CASCADE")
    store, claimer = Store(db), Store(db, max_size=1)
    # The drain loop's path: a connection it holds, where the checkout has one.
    held = claimer.hold_connection() if hasattr(claimer, "hold_connection") else None
    kw: dict[str, Any] = {} if held is None else {"held": held}
    with claimer.connection(**kw) as claim_conn:
        row = claim_conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert row is not None
        pid = int(row["pid"])
    token = str(uuid.uuid4())
    walls: list[float] = []
    backend = client = 0.0
    pending = (
        [t.id for t in store.insert_tasks([new() for _ in range(claims * size)], actor="ab")] if mode == "big" else []
    )
    for i in range(claims):
        ids = (
            pending[i * size : (i + 1) * size]
            if mode == "big"
            else [t.id for t in store.insert_tasks([new() for _ in range(size)], actor="ab")]
        )
        b0, c0, w0 = _backend_ns(pid), time.thread_time(), time.perf_counter()
        got = claimer.claim(ids, token, 30, actor="ab", **kw)
        walls.append(time.perf_counter() - w0)
        client += time.thread_time() - c0
        backend += _backend_ns(pid) - b0
        if len(got) != len(ids):
            raise RuntimeError(f"claimed {len(got)} of {len(ids)}")
        if mode == "grow":
            store.finish([Outcome(c.id, token, Status.COMPLETED, result_json="{}") for c in got], actor="ab")
    if held is not None:
        held.close()
    store.close()
    claimer.close()
    return {
        "pg_us": backend / claims / 1e3,
        "client_us": client / claims * 1e6,
        "wall_p50_ms": statistics.median(walls) * 1e3,
    }


def _big_table(db: str) -> None:
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO tasks (id, tenant, name, status, enqueued_at, started_at, finished_at, attempts)
               SELECT gen_random_uuid(), 'claimab-old', 'noop', 'COMPLETED', now(), now(), now(), 1
               FROM generate_series(1, %s)""",
            (BIG_TABLE,),
        )
        conn.execute("VACUUM ANALYZE tasks")


def main(a: str, b: str, mode: str, pairs: int, claims: int, size: int) -> None:
    from chalicelib.adapters.postgres.migrate import migrate
    from tools.devstack import services

    server = services.ensure_postgres(HERE.parents[1] / ".tasklane").url
    stamp = f"{int(time.time())}_{uuid.uuid4().hex[:6]}"
    names = {tag: f"tasklane_claimab_{stamp}_{tag.lower()}" for tag in ("A", "B")}
    dbs: dict[str, str] = {}
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for tag, root in (("A", a), ("B", b)):
            dbs[tag] = services.ensure_database(server, names[tag])
            migrate(dbs[tag], Path(root) / "infra" / "migrations")
            if mode == "big":
                _big_table(dbs[tag])
        for i in range(pairs):
            order = [("A", a), ("B", b)] if i % 2 == 0 else [("B", b), ("A", a)]
            for tag, root in order:
                argv = [sys.executable, str(HERE), "--worker", root, dbs[tag], mode, str(claims), str(size)]
                out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=root)
                results[tag].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(i, tag, {k: round(v, 3) for k, v in results[tag][-1].items()}, flush=True)
    finally:
        for tag in dbs:
            services.drop_database(server, names[tag])
    for key in ("pg_us", "client_us", "wall_p50_ms"):
        ma = statistics.median(r[key] for r in results["A"])
        mb = statistics.median(r[key] for r in results["B"])
        ratios = sorted(rb[key] / ra[key] for ra, rb in zip(results["A"], results["B"], strict=True))
        print(f"{key}: A {ma:.3f}  B {mb:.3f}  B/A {mb / ma:.2f}  pair ratios {[round(r, 2) for r in ratios]}")


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        sys.path.insert(0, sys.argv[2])
        print(json.dumps(worker(sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))))
    else:
        args = sys.argv[1:]
        main(
            args[0],
            args[1],
            args[2],
            int(args[3]) if len(args) > 3 else 4,
            int(args[4]) if len(args) > 4 else 300,
            int(args[5]) if len(args) > 5 else 1,
        )
