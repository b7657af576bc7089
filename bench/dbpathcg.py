"""Instructions PostgreSQL executes for one single submit, one one-task claim and a finish.

    .venv/bin/python -m bench.dbpathcg PGDATA PORT [variant ...]

The load-independent twin of ``bench.dbpathab``: a private cluster (``PGDATA``, made with
``initdb -U postgres --auth=trust`` as the ``postgres`` user; served on
127.0.0.1:``PORT`` while the variants' databases are made, then stopped) holds a database
``tmpl`` migrated beforehand (``chalicelib.adapters.postgres.migrate.migrate``, with the
migrations of the schema to compare against); each variant is a copy of it changed by the
variant's SQL (``bench.dbpathab.VARIANTS``, ``$DBPATHAB_VARIANTS``).  Each measurement
runs PostgreSQL in single-user mode (``postgres --single``, as the ``postgres`` user)
under ``valgrind --tool=callgrind`` twice, with ``FEW`` and ``MANY`` statements after the
same set-up, and divides the difference of the instruction counts by ``MANY - FEW``:
start-up, set-up and shutdown cancel.  ``$DBPATHCG_REPEATS`` (3) rounds, the variants in
turn; it prints the median and the range per variant.  Statements are prepared (``PREPARE``/``EXECUTE``),
as psycopg prepares them on a pooled connection.  Claims take tasks inserted QUEUED by
one set-up statement; finishes (``finish``, one COMPLETED outcome a statement, the
drainer's common case, and ``FINISH_WIDE`` outcomes a statement) take tasks inserted
PROCESSING under one lease token the same way.  The finishes are printed in a second
table, after the submit and claim one.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.dbpathab import (
    CLAIM_SQL,
    EXTRA_SQL,
    FINISH_SQL,
    SESSION_SQL,
    SUBMIT_SQL,
    VARIANTS,
    WEBHOOK,
    extra_variants,
)
from chalicelib.adapters.postgres.rows import finish_params
from chalicelib.adapters.postgres.sqlfile import queries
from chalicelib.core.model import Outcome, Status

BIN = Path("/usr/lib/postgresql/15/bin")
FEW, MANY = 20, 120
FINISH_WIDE = 50
REPEATS = int(os.environ.get("DBPATHCG_REPEATS", "3"))


def _one_line(sql: str) -> str:
    lines = [ln.split("--")[0] for ln in sql.splitlines()]
    return " ".join(ln.strip() for ln in lines if ln.strip())


def _positional(sql: str, order: list[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return re.sub(r"%\((\w+)\)s", sub, sql)


def _lit(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, list):
        return "'{" + ",".join(str(x) for x in v) + "}'"
    return "'" + str(v).replace("'", "''") + "'"


def _uuid(rng: random.Random) -> uuid.UUID:
    # The same ids for every variant in a round: with random ones a claim's count moved by
    # up to 10 % between runs of the same schema (where each id lands in the indexes).
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _submit_script(sql: str, n: int, seed: int = 0) -> str:
    rng = random.Random(f"submit {n} {seed}")
    order: list[str] = []
    prepared = _one_line(_positional(sql, order))
    out = [f"PREPARE s AS {prepared};"]
    for _ in range(n):
        vals = {
            "id": _uuid(rng),
            "tenant": "cg",
            "name": "noop",
            "priority": "normal",
            "payload": "{}",
            "max_retries": 3,
            "timeout_seconds": 30,
            "actor": "cg",
        }
        out.append(f"EXECUTE s({', '.join(_lit(vals.get(k)) for k in order)});")
    return "\n".join(out) + "\n"


def _claim_script(sql: str, n: int, total: int, seed: int = 0) -> str:
    rng = random.Random(f"claim {n} {seed}")
    ids = [_uuid(rng) for _ in range(total)]
    setup = (
        "INSERT INTO tasks (id, tenant, name, status, enqueued_at) SELECT x::uuid, 'cg', 'noop', 'QUEUED', now() "
        f"FROM unnest('{{{','.join(map(str, ids))}}}'::text[]) AS x;"
    )
    order: list[str] = []
    prepared = _one_line(_positional(sql, order))
    out = [setup, f"PREPARE c AS {prepared};"]
    token = _uuid(rng)
    for i in ids[:n]:
        vals = {"ids": [i], "token": token, "lease_seconds": 30, "actor": "cg"}
        out.append(f"EXECUTE c({', '.join(_lit(vals[k]) for k in order)});")
    return "\n".join(out) + "\n"


def _finish_script(sql: str, n: int, width: int, seed: int = 0) -> str:
    rng = random.Random(f"finish {n} {width} {seed}")
    token = _uuid(rng)
    ids = [_uuid(rng) for _ in range(MANY * width)]
    setup = (
        "INSERT INTO tasks (id, tenant, name, status, attempts, lease_token, lease_expires_at, started_at, "
        "enqueued_at) SELECT x::uuid, 'cg', 'noop', 'PROCESSING', 1, "
        f"'{token}', now() + interval '30 seconds', now(), now() "
        f"FROM unnest('{{{','.join(map(str, ids))}}}'::text[]) AS x;"
    )
    order: list[str] = []
    prepared = _one_line(_positional(sql, order))
    # Analysed, as autovacuum keeps the real table: on a never-analysed one (single-user
    # mode runs no autovacuum) the plan cache picks a generic plan for the finish after
    # five custom ones, on an analysed one it plans every call (bench/RESULTS.md, round 8).
    out = [setup, "ANALYZE tasks;", f"PREPARE f AS {prepared};"]
    for j in range(n):
        chunk = ids[j * width : (j + 1) * width]
        outcomes = [Outcome(str(i), str(token), Status.COMPLETED, "{}") for i in chunk]
        vals = finish_params(outcomes, "cg", **WEBHOOK)
        out.append(f"EXECUTE f({', '.join(_lit(vals[k]) for k in order)});")
    return "\n".join(out) + "\n"


def _instructions(pgdata: str, db: str, script: str, tmp: Path, session: str = "") -> int:
    out = tmp / f"cg.{uuid.uuid4().hex}"
    script = session + "\n" + script if session else script
    done = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            str(BIN / "postgres"),
            "--single",
            "-D",
            pgdata,
            "-c",
            "synchronous_commit=off",
            db,
        ],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )
    if "ERROR" in done.stdout + done.stderr:
        raise RuntimeError((done.stdout + done.stderr)[-2000:])
    for line in out.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError("no totals in callgrind output")


def _pg(port: str, db: str, sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def main(argv: list[str]) -> None:
    pgdata, port, *chosen = argv
    extra_variants()
    every = [*SUBMIT_SQL, *CLAIM_SQL, *FINISH_SQL, *SESSION_SQL, *EXTRA_SQL]
    names = chosen or ["base", *VARIANTS.keys() - {"base"}, *every]
    q = queries()
    ctl = ["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", pgdata, "-w"]
    subprocess.run(
        [*ctl, "-o", f"-h 127.0.0.1 -p {port} -k {Path(pgdata).parent}", "-l", f"{pgdata}.log", "start"],
        check=True,
        capture_output=True,
    )
    try:
        for i, name in enumerate(names):
            _pg(port, "postgres", f"DROP DATABASE IF EXISTS v{i}")
            _pg(port, "postgres", f"CREATE DATABASE v{i} TEMPLATE tmpl")
            setup = VARIANTS.get(name, "") or EXTRA_SQL.get(name, "")
            if setup:
                _pg(port, f"v{i}", setup)
    finally:
        subprocess.run([*ctl, "stop"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tmp.chmod(0o777)
        per: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in names}
        fin: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in names}
        for r in range(REPEATS):
            # The variants in turn, the order rotating; each database keeps what earlier
            # repeats left in it, the same for every variant.
            k = r % len(names)
            for name in names[k:] + names[:k]:
                db = f"v{names.index(name)}"
                s_sql, c_sql = SUBMIT_SQL.get(name, q["insert_task"]), CLAIM_SQL.get(name, q["claim"])
                ses = SESSION_SQL.get(name, "")
                s = [_instructions(pgdata, db, _submit_script(s_sql, n, r), tmp, ses) for n in (FEW, MANY)]
                c = [_instructions(pgdata, db, _claim_script(c_sql, n, MANY, r), tmp, ses) for n in (FEW, MANY)]
                per[name][0].append((s[1] - s[0]) // (MANY - FEW))
                per[name][1].append((c[1] - c[0]) // (MANY - FEW))
                f_sql = FINISH_SQL.get(name, q["finish"])
                for width, into in ((1, fin[name][0]), (FINISH_WIDE, fin[name][1])):
                    f = [_instructions(pgdata, db, _finish_script(f_sql, n, width, r), tmp, ses) for n in (FEW, MANY)]
                    into.append((f[1] - f[0]) // (MANY - FEW))
        print(f"{'variant':28} {'submit instr (min-max)':>30} {'claim instr (min-max)':>30}")
        for name, (subs, claims) in per.items():
            cols = [f"{statistics.median(v):11,.0f} ({min(v):,}-{max(v):,})" for v in (subs, claims)]
            print(f"{name:28} {cols[0]:>30} {cols[1]:>30}", flush=True)
        print(f"\n{'variant':28} {'finish 1 instr (min-max)':>30} {f'finish {FINISH_WIDE} instr (min-max)':>32}")
        for name, (ones, wides) in fin.items():
            cols = [f"{statistics.median(v):11,.0f} ({min(v):,}-{max(v):,})" for v in (ones, wides)]
            print(f"{name:28} {cols[0]:>30} {cols[1]:>32}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
