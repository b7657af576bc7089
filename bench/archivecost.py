"""PostgreSQL CPU of retention: the archive (moving finished tasks to ``tasks_archive``,
then dropping its day partitions; migration 0027) against deleting the same tasks row by
row (the ``prune_finished`` statement), interleaved.

    .venv/bin/python -m bench.archivecost [tasks] [pairs]

Each side starts from ``tasks`` holding ``tasks`` finished tasks (default 50,000) spread
over five past UTC days, written by COPY and vacuumed, and empties it: ``archive`` calls
``archive_finished`` page after page (1,000 a page) and then ``drop_archive_partition``
with a retention of one day until none is left; ``prune`` calls ``prune_finished`` with
that retention (5,000 a call) until it deletes nothing.  It prints the CPU of the one
backend both use (``/proc/<pid>/schedstat``: nothing else runs on it) per side and pair,
the medians and the per-pair ratios.  The database (``tasklane_archivecost_*``) is this
run's own, migrated, and dropped at the end.  On a loaded machine only the ratios mean
anything.
"""

from __future__ import annotations

import datetime as dt
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench.common import backend_cpu_ns
from chalicelib.adapters.postgres.store import Store

HERE = Path(__file__).resolve()
DAYS = 5


def _v7(at: dt.datetime) -> str:
    ms = f"{int(at.timestamp() * 1000):012x}"
    r = secrets.token_hex(10)
    return str(uuid.UUID(f"{ms}7{r[:3]}{'89ab'[int(r[3], 16) & 3]}{r[4:19]}"))


def _fill(conn: psycopg.Connection[tuple[object, ...]], store: Store, count: int) -> None:
    conn.execute("TRUNCATE tasks, tasks_archive, retention_cursors, task_metric_deltas CASCADE")
    store.ensure_archive_partitions(7 * 86400.0, 1)
    today = dt.datetime.now(dt.UTC).date()
    per = count // DAYS
    columns = "id, tenant, name, status, created_at, updated_at, run_at, finished_at, payload, result"
    with conn.cursor().copy(f"COPY tasks ({columns}) FROM STDIN") as copy:
        for d in range(2, 2 + DAYS):
            day = dt.datetime.combine(today - dt.timedelta(days=d), dt.time(), dt.UTC)
            for i in range(per):
                at = day + dt.timedelta(seconds=i * 80_000 / per)
                done = at + dt.timedelta(seconds=1)
                copy.write_row((_v7(at), "bench", "noop", "COMPLETED", at, at, at, done, '{"x": 1}', '{"x": 1}'))
    conn.execute("VACUUM ANALYZE tasks")


def _archive(store: Store) -> None:
    while (page := store.archive_finished(86400.0, page_size=1000)) is not None and page[1]:
        pass
    while store.drop_archive_partition(86400.0):
        pass


def _prune(store: Store) -> None:
    while store.prune_finished(86400.0):
        pass


def main(count: int, pairs: int) -> None:
    from chalicelib.adapters.postgres.migrate import migrate
    from tools.devstack import services

    server = services.ensure_postgres(HERE.parents[1] / ".tasklane").url
    name = f"tasklane_archivecost_{int(time.time())}_{uuid.uuid4().hex[:6]}"
    db = services.ensure_database(server, name)
    sides: dict[str, Callable[[Store], None]] = {"archive": _archive, "prune": _prune}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    try:
        migrate(db)
        store = Store(db, max_size=1)
        with store.connection() as sconn:  # the pool's one connection, kept open
            row = sconn.execute("SELECT pg_backend_pid() AS pid").fetchone()
            assert row is not None
            pid = int(row["pid"])
        for p in range(pairs):
            order = ["archive", "prune"] if p % 2 == 0 else ["prune", "archive"]
            for side in order:
                with psycopg.connect(db, autocommit=True) as conn:
                    _fill(conn, store, count)
                    before = backend_cpu_ns(pid)
                    sides[side](store)
                    cpu[side].append((backend_cpu_ns(pid) - before) / 1e9)
                    left = conn.execute("SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM tasks_archive)")
                    assert left.fetchone() == (0,), f"{side} left tasks behind"
                print(f"pair {p + 1} {side}: {cpu[side][-1]:.3f} s backend CPU", flush=True)
        store.close()
    finally:
        services.drop_database(server, name)
    for side, values in cpu.items():
        per_task = statistics.median(values) / count * 1e6
        print(f"{side}: median {statistics.median(values):.3f} s, {per_task:.1f} us a task")
    print("archive / prune per pair:", [round(a / b, 2) for a, b in zip(cpu["archive"], cpu["prune"], strict=True)])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000, int(sys.argv[2]) if len(sys.argv) > 2 else 4)
