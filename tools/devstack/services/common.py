"""Shared pieces of :mod:`tools.devstack.services`: settings, ports, waiting, processes, state files.

Nothing here starts a server; :mod:`.postgres` and :mod:`.redis_server` build on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

ENV_DATABASE_URL = "TASKLANE_DATABASE_URL"
ENV_REDIS_URL = "TASKLANE_REDIS_URL"
ENV_PRIVATE_SERVICES = "TASKLANE_PRIVATE_SERVICES"

LOCALHOST = "127.0.0.1"
SHARED_PG_PORT = 5432
SHARED_REDIS_PORT = 6379
SHARED_PG_URL = f"postgresql://postgres@{LOCALHOST}:{SHARED_PG_PORT}/postgres"
SHARED_REDIS_URL = f"redis://{LOCALHOST}:{SHARED_REDIS_PORT}/0"

#: Seconds allowed for a private server to come up / go down.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
#: How often waits re-check their condition.
POLL_INTERVAL = 0.02


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
