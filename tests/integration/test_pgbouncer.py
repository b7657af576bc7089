"""The submit and claim paths through a real PgBouncer in transaction mode, which is what
``TASKLANE_DB_PREPARED_STATEMENTS=false`` is for (infra/deploy.md, "RDS Proxy").

A transaction pooler hands each transaction to whichever server connection is free, so
what must hold is that nothing of ours outlives its transaction on the server: the
single submit sends its lock, its INSERT and its commit as two unnamed statements and a
Sync in one pipeline (``adapters/postgres/early_row.py``), the claim one unnamed
statement (``direct.py``), and both must stay on one server connection until their
Sync.  Here a private PgBouncer 1.18 (no prepared statements in transaction mode) with
two server connections serves more client connections than that; Debian's package,
fetched by ``make test`` when none is installed (the Makefile's ``pgbouncer`` target)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.adapters.postgres.store import Store
from chalicelib.core.model import NewTask, Status, Task
from tests.helpers import claim_during_a_slow_insert, wait_for
from tools.devstack.services import find_free_port
from tools.devstack.services.pg_tools import PG_SYSTEM_USER, _pg_run_as

ROOT = Path(__file__).resolve().parents[2]
FETCHED = ROOT / ".tasklane" / "pgbouncer"
TENANT = "pooled"


def _pgbouncer() -> Path | None:
    """The unpacked tree (its ``usr``) of the binary ``make test`` fetched, or None when
    one is on the PATH."""
    if shutil.which("pgbouncer"):
        return None
    if not (FETCHED / "usr" / "sbin" / "pgbouncer").exists():
        pytest.fail(
            "pgbouncer not found: install it (Debian: apt-get install pgbouncer) or run `make pgbouncer`, "
            f"which unpacks Debian's package under {FETCHED}"
        )
    return FETCHED / "usr"


@pytest.fixture(scope="module")
def pooled_url(database_url: str) -> Iterator[str]:
    """``database_url`` through a private PgBouncer in transaction mode, two server
    connections at most."""
    unpacked = _pgbouncer()
    target = conninfo_to_dict(database_url)
    port = find_free_port()
    user = target.get("user") or "postgres"
    # PgBouncer refuses to run as root: it runs as the postgres system user then (as the
    # tests' private PostgreSQL servers do), from a directory of that user's with a copy
    # of the unpacked binary (a checkout under /root is not that user's to read).
    home = Path(tempfile.mkdtemp(prefix="tasklane-pgbouncer-"))
    run_as = _pg_run_as()
    if unpacked is not None and run_as:
        unpacked = Path(shutil.copytree(unpacked, home / "usr"))
    env = dict(os.environ)
    if unpacked is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(str(p) for p in (unpacked / "lib").glob("*") if p.is_dir())
    if run_as:
        owner = pwd.getpwnam(PG_SYSTEM_USER)
        for path in (home, *home.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    argv = [*run_as, str(unpacked / "sbin" / "pgbouncer") if unpacked else "pgbouncer"]
    (home / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={target.get("host") or "127.0.0.1"} port={target.get("port") or 5432} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
ignore_startup_parameters = extra_float_digits,options
logfile = {home / "pgbouncer.log"}
pidfile = {home / "pgbouncer.pid"}
"""
    )
    proc = subprocess.Popen(
        [*argv, str(home / "pgbouncer.ini")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = make_conninfo(database_url, host="127.0.0.1", port=port, user=user)

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    try:
        wait_for(answers, timeout=20, message="pgbouncer did not answer")
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)  # and closes its stderr pipe
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        shutil.rmtree(home, ignore_errors=True)


def _new(tenant: str = TENANT) -> NewTask:
    return NewTask(str(uuid.uuid4()), tenant, "noop", "normal", '{"n": 1}', 3, 30)


def _submit(store: Store, new: NewTask) -> tuple[Task, list[Task]]:
    handed: list[Task] = []
    [task] = store.insert_tasks([new], actor="t", inserted=handed.extend)
    return task, handed


def test_single_submits_and_claims_share_two_server_connections(pooled_url: str, database_url: str) -> None:
    """Six client connections over two server connections: every early submit is handed
    over once and committed with the created_at it was handed over with, and every id is
    claimed exactly once, one claim statement each."""
    submitter = Store(pooled_url, max_size=4, prepare=False)
    claimer = Store(pooled_url, max_size=2, prepare=False)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            done = list(pool.map(lambda _: _submit(submitter, _new()), range(120)))
        for task, handed in done:
            assert [t.id for t in handed] == [task.id] and handed[0].created_at == task.created_at
        ids = [task.id for task, _ in done]
        with ThreadPoolExecutor(max_workers=2) as pool:
            claims = list(pool.map(lambda i: claimer.claim([i], str(uuid.uuid4()), 30, actor="t"), ids))
        assert sorted(c.id for batch in claims for c in batch) == sorted(ids)
        with psycopg.connect(database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT status::text, count(*) FROM tasks WHERE id = ANY(%s::uuid[]) GROUP BY 1", (ids,)
            ).fetchall()
            created = conn.execute(
                "SELECT id::text, created_at FROM tasks WHERE id = ANY(%s::uuid[])", (ids,)
            ).fetchall()
        assert rows == [("PROCESSING", len(ids))]
        assert dict(created) == {task.id: task.created_at for task, _ in done}
    finally:
        submitter.close()
        claimer.close()


def test_a_claim_through_the_pooler_waits_for_a_submit_still_running(pooled_url: str, database_url: str) -> None:
    """The id is handed over before its INSERT runs (a trigger holds the INSERT 0.5 s):
    a claim through the pooler, on the other server connection, waits on the id's key
    and claims the task once the submit has committed."""
    submitter, claimer = Store(pooled_url, max_size=1, prepare=False), Store(pooled_url, max_size=1, prepare=False)
    try:
        run = claim_during_a_slow_insert(database_url, submitter, claimer, "pooled-slow")
        assert not run.visible_at_handover and run.handed_early_by >= 0.4
        assert [(c.id, c.attempts) for c in run.claimed] == [(run.task.id, 1)]
        row = submitter.get_task("pooled-slow", run.task.id)
        assert row is not None and row.status is Status.PROCESSING
    finally:
        submitter.close()
        claimer.close()
