"""Real worker subprocesses for the fault layer.

``Workers`` starts ``python -m tools.devstack drain|sweep`` (each in a session of
its own, so a test can SIGKILL/SIGSTOP it without touching anything else) and
kills whatever is left in teardown.

``python -m tests.fault.workers drain`` is the same drain worker with one extra
executor, ``spy``: every execution appends ``<task id> <attempt> <pid>`` to the
file named by ``TASKLANE_TEST_SPY_LOG`` before doing anything else, so a test can
count executions independently of what the database says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
SPY_LOG_ENV = "TASKLANE_TEST_SPY_LOG"
T = TypeVar("T")

# Fast knobs: short leases and backoffs so failure paths take about a second.
FAST_ENV = {
    "TASKLANE_LEASE_SECONDS": "2",
    "TASKLANE_SWEEP_INTERVAL_SECONDS": "0.3",
    "TASKLANE_RETRY_BASE_SECONDS": "0.1",
    "TASKLANE_RETRY_MAX_SECONDS": "1",
    "TASKLANE_DRAIN_IDLE_WAIT_SECONDS": "0.1",
    "TASKLANE_DRAIN_MARGIN_SECONDS": "0",
    "TASKLANE_LOG_LEVEL": "WARNING",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


def worker_env(database_url: str, redis_url: str, prefix: str, **overrides: str) -> dict[str, str]:
    """The environment of a worker: this process's minus any TASKLANE_*, plus the fast knobs."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKLANE_")},
        **FAST_ENV,
        "TASKLANE_DATABASE_URL": database_url,
        "TASKLANE_REDIS_URL": redis_url,
        "TASKLANE_REDIS_PREFIX": prefix,
        **overrides,
    }


@dataclass
class Worker:
    kind: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def actor(self) -> str:
        """The actor its drain writes into task_events (chalicelib.services.drain.worker_id)."""
        return f"drain:{socket.gethostname()}:{self.proc.pid}"

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL its whole process group and reap it."""
        self.signal(signal.SIGCONT)  # a stopped process dies just as well, but be explicit
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> None:
        """Ask it to stop (it finishes its current batch first), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Workers:
    """Worker subprocesses of one test; ``close()`` kills every one still running."""

    env: dict[str, str]
    log_dir: Path
    started: list[Worker] = field(default_factory=list)

    def _start(self, kind: str, argv: list[str], env: dict[str, str]) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{kind}-{len(self.started) + 1}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(kind, proc, log_path)
        self.started.append(worker)
        return worker

    def drain(self, *, spy: bool = False, **env: str) -> Worker:
        module = "tests.fault.workers" if spy else "tools.devstack"
        return self._start("drain", [sys.executable, "-m", module, "drain"], env)

    def sweep(self, **env: str) -> Worker:
        return self._start("sweep", [sys.executable, "-m", "tools.devstack", "sweep"], env)

    def describe(self) -> str:
        lines = []
        for w in self.started:
            state = "running" if w.proc.poll() is None else f"exited {w.proc.returncode}"
            lines.append(f"--- {w.kind} pid {w.pid} ({state}) {w.log_path}\n{w.log_tail()}")
        return "\n".join(lines)

    def wait_for(self, condition: Callable[[], T], *, timeout: float, message: str, interval: float = 0.05) -> T:
        """``tests.helpers.wait_for`` that adds the workers' state and logs on timeout."""
        from tests.helpers import wait_for

        try:
            return wait_for(condition, timeout=timeout, interval=interval, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def close(self) -> None:
        for w in self.started:
            if w.proc.poll() is None:
                with contextlib.suppress(Exception):
                    w.kill()


def read_spy_log(path: Path) -> Counter[tuple[str, int]]:
    """How many times each ``(task id, attempt)`` was executed by a spy drainer."""
    counts: Counter[tuple[str, int]] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        task_id, attempt, _pid = line.split()
        counts[(task_id, int(attempt))] += 1
    return counts


def _register_spy() -> None:
    from chalicelib.core.errors import RetryableError, TaskCancelled
    from chalicelib.tasktypes import TaskContext, registry

    log_path = os.environ[SPY_LOG_ENV]

    @registry.task("spy")
    def spy(payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Records the execution, then optionally sleeps and fails the first attempts."""
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.task_id} {ctx.attempt} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        seconds = float(payload.get("seconds", 0))
        if seconds and ctx.wait(seconds):
            raise TaskCancelled("cancelled while sleeping")
        if ctx.attempt <= int(payload.get("fail_times", 0)):
            raise RetryableError(f"spy: transient failure on attempt {ctx.attempt}")
        return {"attempt": ctx.attempt}


if __name__ == "__main__":
    _register_spy()
    from tools.devstack.supervisor import main

    sys.exit(main(sys.argv[1:]))
