"""PostgreSQL for :mod:`tools.devstack.services`: handles, private servers, databases.

:func:`ensure_postgres` picks a server (env URL, shared 5432, or private),
:func:`start_private_postgres` gives fault tests one of their own, and
:func:`ensure_database` / :func:`drop_database` manage databases on a server.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from tools.devstack.services.common import (
    ENV_DATABASE_URL,
    LOCALHOST,
    SHARED_PG_URL,
    START_TIMEOUT,
    _check_private_port,
    _file_lock,
    _port_is_free,
    _read_json,
    _record_int,
    _write_json,
    find_free_port,
    private_services_forced,
)
from tools.devstack.services.pg_tools import (
    _initdb,
    _kill_tree,
    _pg_run_as,
    _pg_start,
    _pg_stop,
    _postmaster_pid,
    _read_postmaster_pid,
    _resolve_pg_data_dir,
    find_pg_bindir,
)

_PG_RECORD = "pg.json"
_PROTECTED_DBS = frozenset({"postgres", "template0", "template1"})

_PG_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them "
    "(Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`) "
    f"or point {ENV_DATABASE_URL} at a running server, e.g. "
    f"export {ENV_DATABASE_URL}=postgresql://postgres@127.0.0.1:5432/postgres"
)


# --------------------------------------------------------------- URLs and probes


def database_url(server_url: str, dbname: str) -> str:
    """Return ``server_url`` with its database part replaced by ``dbname``.

    User, password, host, port and query parameters (e.g. ``sslmode``) are kept.
    """
    parts = urlsplit(server_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
        raise ValueError(f"not a postgresql:// URL: {server_url!r}")
    if not dbname:
        raise ValueError("dbname must not be empty")
    # quote() so names with '/', '?' or spaces cannot change the URL's structure.
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def pg_server_url(port: int, host: str = LOCALHOST) -> str:
    """Return the admin URL (database ``postgres``, user ``postgres``) of a server."""
    return f"postgresql://postgres@{host}:{port}/postgres"


def postgres_answers(url: str, timeout: int = 2) -> bool:
    """Return True if a PostgreSQL server accepts a connection to ``url``."""
    try:
        # libpq's connect_timeout has a 2 s floor; smaller values act as 2.
        with psycopg.connect(url, connect_timeout=max(timeout, 2), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, OSError):
        return False
    return True


# ------------------------------------------------------------ PostgreSQL servers


@dataclass
class PostgresHandle:
    """A PostgreSQL server to use.

    ``url`` is a server URL whose database part is ``postgres`` (or, when it came
    from ``TASKLANE_DATABASE_URL``, that URL as given); use :func:`database_url` /
    :meth:`database_url` for another database. ``started`` is True when this
    handle owns the server's lifecycle: only then do :meth:`stop`, :meth:`kill`,
    :meth:`start` and :meth:`restart` act. ``data_dir``/``port`` are set for
    private servers.
    """

    url: str
    started: bool = False
    data_dir: Path | None = None
    port: int | None = None
    bindir: Path | None = None
    run_as: tuple[str, ...] = field(default=(), repr=False)

    @property
    def private(self) -> bool:
        """True for a server that lives in a private data directory."""
        return self.data_dir is not None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while a private server runs, else None."""
        return None if self.data_dir is None else _postmaster_pid(self.data_dir)

    def is_running(self) -> bool:
        """Return True while the private server's postmaster is alive."""
        return self.pid is not None

    def database_url(self, dbname: str) -> str:
        """Return the URL of database ``dbname`` on this server."""
        return database_url(self.url, dbname)

    def _owned(self, action: str) -> tuple[Path, Path, int]:
        if not self.started or self.data_dir is None or self.bindir is None or self.port is None:
            raise RuntimeError(f"refusing to {action} a PostgreSQL server this handle did not start")
        return self.data_dir, self.bindir, self.port

    def stop(self, *, remove_data: bool = False) -> None:
        """Stop the server (``pg_ctl -m fast stop``) if this handle started it.

        With ``remove_data`` the data directory is deleted too (fault tests use
        this so their throw-away clusters do not pile up under /tmp).
        """
        if not self.started or self.data_dir is None or self.bindir is None:
            return
        _pg_stop(self.bindir, self.data_dir, self.run_as)
        if remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and its children, wait until gone.

        Data written with fsync=on survives; the next :meth:`start` runs crash
        recovery, as after a power cut.
        """
        data_dir, _, _ = self._owned("kill")
        pid = _postmaster_pid(data_dir)
        if pid is not None:
            _kill_tree(pid)

    def start(self) -> None:
        """Start the (stopped or killed) server again on the same port."""
        data_dir, bindir, port = self._owned("start")
        if _postmaster_pid(data_dir) is None:
            _pg_start(bindir, data_dir, port, self.run_as)

    def restart(self) -> None:
        """Stop (fast) and start the server; the URL stays the same."""
        data_dir, bindir, _ = self._owned("restart")
        _pg_stop(bindir, data_dir, self.run_as)
        self.start()


def _start_private_postgres(data_dir: Path, port: int | None) -> tuple[PostgresHandle, bool]:
    """Start or reuse the cluster in ``data_dir``; return (handle, reused)."""
    if port is not None:
        _check_private_port(port)
    bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError(_PG_INSTALL_HINT)
    requested = Path(os.path.abspath(data_dir))
    with _file_lock(requested.parent / f".{requested.name}.lock"):
        real_dir = _resolve_pg_data_dir(requested)
        run_as = _pg_run_as()

        def handle(at_port: int) -> PostgresHandle:
            return PostgresHandle(pg_server_url(at_port), True, real_dir, at_port, bindir, run_as)

        # Reuse a postmaster already running on this directory (e.g. started by
        # an earlier test run or the local runner); wait if it is still starting.
        deadline = time.monotonic() + START_TIMEOUT
        while (pid := _postmaster_pid(real_dir)) is not None:
            info = _read_postmaster_pid(real_dir)
            running_port = info.port if info is not None else None
            if running_port is not None and postgres_answers(pg_server_url(running_port)):
                if port is not None and port != running_port:
                    raise RuntimeError(f"{real_dir} already runs on port {running_port}, not {port}")
                return handle(running_port), True
            if time.monotonic() >= deadline:
                raise RuntimeError(f"postmaster {pid} of {real_dir} runs but does not answer")
            time.sleep(0.1)
        _initdb(bindir, real_dir, run_as)
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            chosen = port if port is not None else find_free_port()
            try:
                _pg_start(bindir, real_dir, chosen, run_as)
            except RuntimeError as exc:
                # Someone grabbed the free port between our check and the bind.
                if attempt + 1 < attempts and "could not bind" in str(exc).lower():
                    continue
                raise
            return handle(chosen), False
    raise AssertionError("unreachable")


def start_private_postgres(data_dir: Path, port: int | None = None) -> PostgresHandle:
    """Start a PostgreSQL server of your own in ``data_dir`` on 127.0.0.1.

    ``initdb`` runs once (``-U postgres --auth=trust``); an initialised directory
    is reused, and so is a server already running on it. ``port`` defaults to a
    free port. The returned handle owns the server (``started=True``): the caller
    may stop, kill and restart it. As root the server runs as the ``postgres``
    system user (created if missing); if that user cannot reach ``data_dir``, the
    cluster lives under ``/tmp/tasklane-pg/`` instead (see ``handle.data_dir``).
    Raises RuntimeError with install instructions when no server binaries exist.
    """
    handle, _ = _start_private_postgres(data_dir, port)
    return handle


def ensure_postgres(state_dir: Path, *, force_private: bool = False) -> PostgresHandle:
    """Return a PostgreSQL server to use: env URL, else shared 5432, else private.

    ``force_private`` (or ``TASKLANE_PRIVATE_SERVICES=1``) skips the shared
    server, never the env URL. A private server lives in ``state_dir/pg`` and is
    reused across calls and processes; ``started`` is True only when this call
    started it, so a test session does not stop a server someone else runs.
    """
    env_url = os.environ.get(ENV_DATABASE_URL)
    if env_url:
        return PostgresHandle(env_url)
    if not (force_private or private_services_forced()) and postgres_answers(SHARED_PG_URL):
        return PostgresHandle(SHARED_PG_URL)
    state_dir = Path(os.path.abspath(state_dir))
    state_dir.mkdir(parents=True, exist_ok=True)
    record_path = state_dir / _PG_RECORD
    # Keep the previous port when it is free so URLs in open shells stay valid.
    previous = _record_int(_read_json(record_path), "port")
    port = previous if previous is not None and _port_is_free(previous) else None
    handle, reused = _start_private_postgres(state_dir / "pg", port)
    _write_json(
        record_path,
        {
            "data_dir": str(handle.data_dir),
            "port": handle.port,
            "bindir": str(handle.bindir),
            "url": handle.url,
        },
    )
    handle.started = not reused
    return handle


def ensure_database(server_url: str, dbname: str, *, template: str | None = None) -> str:
    """Create database ``dbname`` if missing and return its URL.

    ``template`` names the database to copy (``CREATE DATABASE ... TEMPLATE``; the
    tests copy a migrated one), else it is template1.  Safe when several processes
    do it at once: the loser of the race gets DuplicateDatabase (or a unique
    violation on pg_database) and moves on.
    """
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    url = database_url(server_url, dbname)
    deadline = time.monotonic() + START_TIMEOUT
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        while True:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                return url
            try:
                conn.execute(create)
            except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
                return url
            except pg_errors.ObjectInUse:
                # "source database template1 is being accessed by other users":
                # a transient state while someone else is connected to it (for a
                # copied template, autovacuum may be, for a moment).
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
                continue
            return url


def drop_database(server_url: str, dbname: str) -> None:
    """Drop database ``dbname`` if it exists, disconnecting its sessions (FORCE)."""
    if dbname in _PROTECTED_DBS:
        raise ValueError(f"refusing to drop system database {dbname!r}")
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


# Databases the test suite and the benchmark create: <prefix>_<kind>_<unix seconds>_<random>.
# The creation time in the name lets a later run drop what an interrupted one left.
_SCRATCH_PREFIXES = ("tasklane_test_", "tasklane_e2e_", "tasklane_fault_", "tasklane_bench_")
STALE_AFTER_SECONDS = 6 * 3600.0  # far longer than any run, so a live run's database is never taken


def test_database_name(kind: str) -> str:
    """A fresh scratch database name, ``tasklane_<kind>_<created>_<random>``."""
    return f"tasklane_{kind}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def drop_stale_test_databases(server_url: str, *, now: float | None = None) -> list[str]:
    """Drop scratch databases an interrupted run left behind.

    Only names this project's test suite and benchmark create are considered, and only
    when they were created more than ``STALE_AFTER_SECONDS`` ago and no session is
    connected, so a run in progress on the same server keeps its database.  The
    creation time comes from the name, or for older undated names from the
    database's ``PG_VERSION`` file (readable by a superuser; otherwise they are left)."""
    now = time.time() if now is None else now
    dropped = []
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT d.datname, d.oid, (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)"
            " FROM pg_database d WHERE d.datname LIKE 'tasklane%%'"
        ).fetchall()
        candidates = []
        for name, oid, sessions in rows:
            if not name.startswith(_SCRATCH_PREFIXES) or sessions:
                continue
            created = _created_at(name)
            if created is None:
                try:
                    stat = conn.execute(
                        "SELECT extract(epoch FROM (pg_stat_file(%s)).modification)", (f"base/{oid}/PG_VERSION",)
                    ).fetchone()
                except psycopg.Error:
                    continue  # not a superuser: leave undated databases alone
                created = float(stat[0]) if stat and stat[0] is not None else None
            if created is not None and now - created > STALE_AFTER_SECONDS:
                candidates.append(name)
    for name in candidates:
        try:
            drop_database(server_url, name)
            dropped.append(name)
        except psycopg.Error:
            continue  # dropped concurrently by another run: nothing to do
    return dropped


def _created_at(name: str) -> float | None:
    parts = name.split("_")
    if len(parts) >= 4 and parts[2].isdigit() and len(parts[2]) == 10:
        return float(parts[2])
    return None
