"""The local stack: what API Gateway, EventBridge and Lambda do in AWS, on a laptop.

``python -m tools.devstack run`` finds (or starts) PostgreSQL and Redis, migrates,
ensures the bootstrap API key, then starts and supervises:

- the API: ``chalice local``'s app and gateway (HTTP routes only; it never runs scheduled
  functions), in ``TASKLANE_API_PROCESSES`` processes on one port (``prefork``);
- ``TASKLANE_DRAINERS`` drain workers, each invoking the drain function back to back
  with a Lambda-like time budget, as EventBridge plus Lambda concurrency would;
- one sweep worker invoking the sweep function every ``TASKLANE_SWEEP_INTERVAL_SECONDS``.

A worker that dies is restarted (a new Lambda invocation); Ctrl-C stops everything
this command started, including private database servers.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.devstack.orphans import SUPERVISOR_PID_ENV, sigterm_as_interrupt, stop_with_parent

if TYPE_CHECKING:
    from chalicelib.config import Settings

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".tasklane"
DRAIN_BUDGET_SECONDS = 900.0  # Lambda's ceiling; the worker re-invokes when it ends


class LocalContext:
    """Stands in for the Lambda context: a deadline, cut short on shutdown."""

    def __init__(self, budget_seconds: float, stop: threading.Event) -> None:
        self._deadline = time.monotonic() + budget_seconds
        self._stop = stop

    def get_remaining_time_in_millis(self) -> int:
        if self._stop.is_set():
            return 0
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def _stop_event() -> threading.Event:
    """Set on SIGTERM/SIGINT, or when the supervisor that started us is gone."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stop_with_parent(stop)
    return stop


def drain_worker() -> int:
    """Invoke the drain function back to back until told to stop."""
    from chalicelib import entrypoints as functions
    from chalicelib.config import get_settings
    from chalicelib.observability.log import logger

    stop = _stop_event()
    idle_exit = get_settings().drain_idle_exit_seconds
    while not stop.is_set():
        stats = functions.drain(LocalContext(DRAIN_BUDGET_SECONDS, stop), idle_exit_seconds=idle_exit)
        if stats["claimed"]:
            logger.info("drain invocation finished", extra=stats)
        if stats["errors"]:
            stop.wait(1.0)  # a dependency is down: don't spin on re-invocations
    return 0


def sweep_worker() -> int:
    """Invoke the sweep function on its rate until told to stop."""
    from chalicelib import entrypoints as functions
    from chalicelib.config import get_settings
    from chalicelib.observability.log import logger

    stop = _stop_event()
    interval = get_settings().sweep_interval_seconds
    while not stop.is_set():
        started = time.monotonic()
        report = functions.sweep()
        busy = {k: v for k, v in report.items() if v and k != "errors"}
        if busy or report["errors"]:
            logger.info("sweep finished", extra=report)
        stop.wait(max(interval - (time.monotonic() - started), 0.0))
    return 0


LOCAL_API_POOL_MAX_SIZE = 16  # the local API server's default TASKLANE_POOL_MAX_SIZE (opened as needed)


def local_api_environ(stage: Mapping[str, str], shell: Mapping[str, str]) -> dict[str, str]:
    """The local API server's variables: the ``local`` stage's, the shell's over them,
    and a larger connection pool unless one is set.  Each HTTP connection is served on a
    thread of its own; with the default pool of 4, a fifth concurrent request waited
    for a connection instead of sharing the others' WAL flush."""
    env = {**stage, **shell}
    env.setdefault("TASKLANE_POOL_MAX_SIZE", str(LOCAL_API_POOL_MAX_SIZE))
    return env


API_PROCESSES_ENV = "TASKLANE_API_PROCESSES"
# How long an API process may take to stop once told to (its workers included) before
# it prints every thread's stack and exits anyway: whatever holds it up, its port must
# come free, as the supervisor and the next `make run` expect.
API_STOP_GRACE_SECONDS = 20.0


def api_processes(environ: Mapping[str, str]) -> int:
    """How many API processes the stack runs: ``TASKLANE_API_PROCESSES``, else one per
    two cores (1 to 4; ``prefork.default_processes``)."""
    from tools.devstack import prefork

    value = environ.get(API_PROCESSES_ENV, "").strip()
    if not value:
        return prefork.default_processes()
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{API_PROCESSES_ENV} must be a whole number of at least 1, got {value!r}")
    return int(value)


def api_server(host: str, port: int, *, processes: int = 1) -> int:
    """Serve the API the way ``chalice local`` does (the same app object, the same API
    Gateway proxy events through chalice's ``LocalGateway``), with these differences:
    the shell's environment wins over the stage's ``environment_variables`` (so a
    variable you set reaches the API exactly as it reaches the drainers), the HTTP
    layer is ``tools.devstack.api_handler``'s (a lean request parser, JSON 4xx answers
    where the dev server sent an HTML page, a 501 or nothing, and no access log line
    per request unless the log level is INFO or DEBUG), and ``processes`` processes
    serve the one port (``tools.devstack.prefork``)."""
    from tools.devstack import prefork

    sock = prefork.bind(host, port)
    workers = prefork.fork_workers(processes)  # before any thread or import of the app
    stop = _stop_event()
    died: list[int] = []

    def worker_exited(pid: int, code: int) -> None:
        died.append(pid)
        print(f"API process {pid} exited with code {code}; stopping the others", flush=True)

    if workers:
        prefork.watch_workers(workers, stop, worker_exited)
    try:
        _serve_api(sock, stop)
    finally:
        if workers:
            prefork.stop_workers(workers)
    return 1 if died else 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _exit_if_stuck(grace: float) -> None:
    """Exit the process ``grace`` seconds from now unless it has stopped by then, first
    printing where each thread is, so that a stop that hangs says why in the log."""

    def dump_and_exit() -> None:
        import faulthandler

        print(f"API process {os.getpid()} still running {grace:.0f} s after it was told to stop:", flush=True)
        faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
        sys.stdout.flush()
        os._exit(1)

    timer = threading.Timer(grace, dump_and_exit)
    timer.daemon = True  # the normal exit does not wait for it
    timer.start()


def _serve_api(sock: socket.socket, stop: threading.Event) -> None:
    """One API process: chalice's app and local gateway on ``sock`` until ``stop``."""
    import logging
    import socketserver

    from chalice.cli.factory import CLIFactory
    from chalice.local import CustomLocalChalice, LocalChalice, RouteMatcher

    from chalicelib.config import get_settings
    from tools.devstack import chalice_shortcuts, prefork
    from tools.devstack.api_handler import RememberingMatcher, make_gateway, make_handler

    shell_env = dict(os.environ)
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    # The factory applies the stage's variables to the mapping it is given when
    # ``config.chalice_app`` first imports app.py -- after anything done here, so a
    # shell's TASKLANE_REDIS_PREFIX or TASKLANE_LOG_LEVEL lost to the stage's.  It gets
    # a scratch copy; the stage's variables go in under the shell's before that import
    # (the logger reads its level once, at import).
    factory = CLIFactory(str(ROOT), environ=dict(os.environ))
    config = factory.create_config_obj(chalice_stage_name="local")
    os.environ.update(local_api_environ(config.environment_variables, shell_env))
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    app = config.chalice_app
    routes = app.routes
    matcher = RememberingMatcher(RouteMatcher(list(routes)))
    # What chalice.local.create_local_server does before serving: the server runs each
    # connection on a thread of its own, so ``current_request`` must be thread-local
    # or concurrent requests read each other's bodies and headers.
    CustomLocalChalice.__bases__ = (LocalChalice, type(app))
    app.__class__ = CustomLocalChalice
    gateway = make_gateway(app, config, matcher)
    chalice_shortcuts.install()
    # http.server wrote an access line per request to stderr; the app's logger level
    # (read from the same variable) says whether anyone wants INFO lines.
    access_log = os.environ.get("TASKLANE_LOG_LEVEL", "INFO").upper() in ("DEBUG", "INFO")
    handler = make_handler(gateway, routes, matcher, get_settings().max_payload_bytes, access_log=access_log)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

    server = Server(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock  # bound already (prefork.bind), maybe shared with other API processes

    def shutdown_on_signal() -> None:
        stop.wait()
        _exit_if_stuck(API_STOP_GRACE_SECONDS)
        server.shutdown()

    threading.Thread(target=shutdown_on_signal, daemon=True).start()
    prefork.start_listening(sock)
    host, port = sock.getsockname()[:2]
    print(f"Serving on http://{host}:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever()


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    after_start: Callable[[subprocess.Popen[bytes]], None] | None = None  # e.g. wait for and seed the emulator

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, start_new_session=True)
        if self.after_start is not None:
            self.after_start(self.proc)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


PORT_WAIT_SECONDS = 10.0


def _wait_for_port(port: int, timeout: float = PORT_WAIT_SECONDS) -> None:
    """Wait briefly for ``port`` to be free: the API of a stack that was just stopped
    (or whose supervisor was killed) takes a moment to close its socket."""
    if _port_free(port):
        return
    print(f"port {port} is in use; waiting up to {timeout:.0f} s for it to be freed", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if _port_free(port):
            return
    raise SystemExit(
        f"port {port} is still in use after {timeout:.0f} s: another program (or a stack still running) "
        "holds it; stop it or set TASKLANE_PORT to another port"
    )


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (503 while a dependency is down is still an answer)
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the API did not answer on port {port} within {timeout:.0f} s")


def _check_task_types(settings: Settings) -> None:
    """Import the team's task modules and read the declarations once, before anything
    starts: a mistake stops the stack with its message instead of failing every request."""
    from chalicelib.config import ConfigError
    from chalicelib.tasktypes.loading import load_task_types

    try:
        types = load_task_types(settings)
    except ConfigError as exc:  # TaskTypesError, or a declarations file it cannot use
        raise SystemExit(f"tasklane: {exc}") from None
    print(f"task types: {', '.join(types.names())}", flush=True)


def run_stack(args: argparse.Namespace) -> int:
    from chalicelib.adapters.postgres.migrate import migrate
    from chalicelib.adapters.postgres.store import Store
    from chalicelib.config import Settings
    from chalicelib.services.apikeys import ensure_key
    from tools.devstack import services as devservices

    settings = Settings.from_env()
    processes = api_processes(os.environ)
    _check_task_types(settings)
    _wait_for_port(settings.port)
    # Until _supervise takes SIGTERM over: a SIGTERM while the servers start, the schema
    # migrates or the emulator is seeded unwinds through the finally below (Python's
    # default would end the process there and leave private servers it started running).
    sigterm_as_interrupt()
    pg = rd = None
    try:
        pg = devservices.ensure_postgres(STATE_DIR)
        rd = devservices.ensure_redis(STATE_DIR)
        if os.environ.get("TASKLANE_DATABASE_URL"):
            db_url = os.environ["TASKLANE_DATABASE_URL"]
            dbname = db_url.rsplit("/", 1)[-1].split("?", 1)[0]
            devservices.ensure_database(devservices.database_url(db_url, "postgres"), dbname)
        else:
            db_url = devservices.ensure_database(pg.url, "tasklane")
        redis_url = os.environ.get("TASKLANE_REDIS_URL") or rd.url
        applied = migrate(db_url)
        env = {**os.environ, "TASKLANE_DATABASE_URL": db_url, "TASKLANE_REDIS_URL": redis_url}
        env[SUPERVISOR_PID_ENV] = str(os.getpid())  # children stop when this process is gone
        env.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
        if settings.bootstrap_api_key:
            store = Store(db_url)
            ensure_key(
                store, settings.bootstrap_api_key, rate_limit_per_minute=settings.bootstrap_rate_limit_per_minute
            )
            store.close()
        emulator = aws_emulator(env, db_url, redis_url)
        if emulator is not None:
            emulator.start(env)  # before the rest: executors need it seeded
        api_argv = [sys.executable, "-m", "tools.devstack", "api", "--port", str(settings.port)]
        api_argv += ["--processes", str(processes)]
        children = [
            Child("api", api_argv, restart=False),
            *[
                Child(f"drain-{i + 1}", [sys.executable, "-m", "tools.devstack", "drain"], restart=True)
                for i in range(settings.drainers)
            ],
            Child("sweep", [sys.executable, "-m", "tools.devstack", "sweep"], restart=True),
            *([emulator] if emulator is not None else []),
        ]
        return _supervise(children, env, settings.port, db_url, redis_url, applied, processes)
    finally:
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()


def aws_emulator(env: dict[str, str], db_url: str, redis_url: str) -> Child | None:
    """Point the children at an AWS emulator (``env`` is updated) and return the one to
    start, if any.  ``TASKLANE_AWS_EMULATOR=off`` leaves AWS alone (real endpoints, your
    credentials); ``TASKLANE_AWS_ENDPOINT`` names one you run yourself; otherwise
    whatever answers on ``TASKLANE_AWS_EMULATOR_PORT`` (4566: a LocalStack, a moto) is
    used, else moto's server is started there.  Either way it is seeded."""
    from tools.devstack import emulator

    mode = (env.get("TASKLANE_AWS_EMULATOR") or "auto").lower()
    if mode in ("off", "0", "false", "no"):
        return None
    env.setdefault("TASKLANE_S3_BUCKET", emulator.DEFAULT_BUCKET)
    env.setdefault("TASKLANE_SES_SENDER", emulator.DEFAULT_SENDER)
    env.setdefault("AWS_DEFAULT_REGION", emulator.DEFAULT_REGION)
    # Dummy credentials: an emulator needs none, and real ones must not leave the laptop.
    env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    port = int(env.get("TASKLANE_AWS_EMULATOR_PORT") or emulator.DEFAULT_PORT)
    endpoint = env.get("TASKLANE_AWS_ENDPOINT") or emulator.endpoint_for(port)
    if not env.get("TASKLANE_AWS_ENDPOINT"):
        env.pop("AWS_ENDPOINT_URL", None)  # it would win over LOCALSTACK_HOST in localstack-client
        env["LOCALSTACK_HOST"] = f"127.0.0.1:{port}"

    def seed(proc: subprocess.Popen[bytes] | None = None) -> None:
        try:
            emulator.wait_ready(endpoint, proc=proc)
            emulator.seed(
                endpoint,
                region=env["AWS_DEFAULT_REGION"],
                bucket=env["TASKLANE_S3_BUCKET"],
                sender=env["TASKLANE_SES_SENDER"],
                database_url=db_url,
                redis_url=redis_url,
            )
        except Exception as exc:  # noqa: BLE001 - the queue works without it; AWS tasks will fail
            print(f"AWS emulator at {endpoint} is not usable: {exc}", flush=True)

    if env.get("TASKLANE_AWS_ENDPOINT") or emulator.answers(endpoint):
        seed()  # someone else's emulator (LocalStack, moto): use it as it is
        return None
    import importlib.util

    if importlib.util.find_spec("moto") is None:
        print("moto is not installed (requirements-dev.txt): no AWS emulator; AWS task types will fail", flush=True)
        return None
    argv = [sys.executable, "-m", "tools.devstack.emulator", "serve", "--port", str(port)]
    return Child("aws-emulator", argv, restart=True, after_start=seed)


def _supervise(
    children: list[Child],
    env: dict[str, str],
    port: int,
    db_url: str,
    redis_url: str,
    applied: list[int],
    api_processes: int,
) -> int:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    for child in children:
        if child.proc is None:
            child.start(env)
    api = children[0]
    assert api.proc is not None
    code = 0
    drainers = sum(c.name.startswith("drain-") for c in children)
    try:
        _wait_http(port, api.proc)
        print(
            f"Tasklane is up: http://127.0.0.1:{port}  (database {_redact(db_url)}, redis {redis_url}, "
            f"{_count(api_processes, 'API process', 'API processes')}, {_count(drainers, 'drainer', 'drainers')}, "
            f"migrations applied now: {applied or 'none'}). "
            "Ctrl-C stops it.",
            flush=True,
        )
        while not stop.wait(0.5):
            for child in children:
                assert child.proc is not None
                if child.proc.poll() is None:
                    continue
                if not child.restart:
                    print(f"{child.name} exited with code {child.proc.returncode}; stopping", flush=True)
                    code = 1
                    stop.set()
                    break
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > 1:
                    stop.wait(min(2 ** len(child.restarts) * 0.1, 10))  # crash loop: back off
                print(f"{child.name} exited with code {child.proc.returncode}; restarting", flush=True)
                child.start(env)
    finally:
        _terminate(children)
    return code


def _terminate(children: list[Child]) -> None:
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in running:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for proc in running:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _redact(url: str) -> str:
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}//{creds.split(':', 1)[0]}:***@{host}"
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.devstack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the whole local stack (API, drainers, sweeper)")
    api = sub.add_parser("api", help="serve only the HTTP API (chalice local's server)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--processes", type=int, default=1, help="API processes sharing the port (default 1)")
    sub.add_parser("drain", help="run one drain worker (invokes drain back to back)")
    sub.add_parser("sweep", help="run one sweep worker (invokes sweep on its rate)")
    sub.add_parser("check-task-types", help="import the task modules, read the declarations, list the task types")
    args = parser.parse_args(argv)
    if args.command == "check-task-types":
        from chalicelib.config import Settings

        _check_task_types(Settings.from_env())
        return 0
    if args.command == "api":
        if args.processes < 1:
            parser.error("--processes must be at least 1")
        return api_server(args.host, args.port, processes=args.processes)
    if args.command == "drain":
        return drain_worker()
    if args.command == "sweep":
        return sweep_worker()
    return run_stack(args)


if __name__ == "__main__":
    sys.exit(main())
