"""PostgreSQL server tools for :mod:`tools.devstack.services`: finding, running and driving them.

Binary discovery (``initdb``/``pg_ctl``), running them as the ``postgres`` user
when we are root, and the cluster primitives (initdb, start, stop, kill) that
:class:`~tools.devstack.services.postgres.PostgresHandle` is built on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.devstack.services.common import (
    LOCALHOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    _check_private_port,
    _children,
    _proc_name,
    _tail,
    _wait_for,
    pid_alive,
)

#: System user that runs initdb/pg_ctl when we are root (both refuse to run as root).
PG_SYSTEM_USER = "postgres"

# Unix socket paths are limited to 107 bytes (sun_path); longer socket dirs are
# replaced by "no Unix socket" since everything here connects over TCP anyway.
_MAX_SOCKET_PATH = 100


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
