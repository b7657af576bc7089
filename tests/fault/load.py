"""A live local stack under HTTP submit load, and killing a process tree.

The local stack starts its children (API, drainers, sweeper) in sessions of their
own, so killing the stack's process group alone would leave them running:
``kill_tree`` finds every descendant and SIGKILLs each one's process group.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from tests.helpers import wait_for
from tests.stack import Stack, start_stack
from tools.devstack import services as devservices


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def _alive(pid: int) -> bool:
    return devservices.pid_alive(pid)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid``, every descendant and their process groups; wait until all are gone.

    The root is frozen first so that it cannot restart a child in between.  Reaping
    the root, when it is our child, is the caller's (``Popen.wait``)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    victims = [pid, *descendants(pid)]
    groups = set()
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(victim))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not any(_alive(v) for v in victims), timeout=15, message=f"the process tree of {pid} to die")
    return victims


def shutdown_stack(stack: Stack) -> None:
    """Stop a stack politely (Ctrl-C), then make sure nothing of it is left running."""
    tree = [stack.proc.pid, *descendants(stack.proc.pid)]
    try:
        stack.stop()
    finally:
        for pid in tree:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)


@contextlib.contextmanager
def live_stack(
    pg_server: str,
    redis_url: str,
    log_dir: Path,
    *,
    database: str,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """A local stack on database ``database`` (created if missing), stopped at the end."""
    stack = start_stack(pg_server, redis_url, log_dir, env=env, database=database)
    try:
        yield stack
    finally:
        shutdown_stack(stack)


@dataclass(frozen=True)
class Reply:
    """One submit: the HTTP status (None: no answer at all) and what came back."""

    status: int | None
    body: Any
    body_text: str
    at: float  # time.monotonic() when the answer came
    sent: dict[str, Any]

    @property
    def task_id(self) -> str | None:
        if self.status == 201 and isinstance(self.body, dict):
            return str(self.body["id"])
        return None


@dataclass
class SubmitLoad:
    """Client threads submitting tasks over HTTP until stopped; every reply is kept."""

    base_url: str
    api_key: str
    make_body: Callable[[int], dict[str, Any]]
    threads: int = 3
    pause: float = 0.01  # pacing between a thread's requests, so 2 cores stay responsive
    timeout: float = 30.0
    replies: list[Reply] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def on(cls, stack: Stack, make_body: Callable[[int], dict[str, Any]], **kw: Any) -> SubmitLoad:
        return cls(stack.base_url, stack.api_key, make_body, **kw)

    def _run(self) -> None:
        session = requests.Session()
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        while not self._stop.is_set():
            with self._lock:
                n = next(self._counter)
            body = self.make_body(n)
            try:
                r = session.post(f"{self.base_url}/api/v1/tasks", json=body, headers=headers, timeout=self.timeout)
                try:
                    parsed: Any = r.json()
                except ValueError:
                    parsed = None
                reply = Reply(r.status_code, parsed, r.text[:500], time.monotonic(), body)
            except requests.RequestException as exc:
                reply = Reply(None, None, f"{type(exc).__name__}: {exc}"[:500], time.monotonic(), body)
                session.close()
                session = requests.Session()
            with self._lock:
                self.replies.append(reply)
            self._stop.wait(self.pause)
        session.close()

    def start(self) -> SubmitLoad:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"submit-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)

    def snapshot(self) -> list[Reply]:
        with self._lock:
            return list(self.replies)

    def count(self, predicate: Callable[[Reply], bool]) -> int:
        return sum(1 for r in self.snapshot() if predicate(r))

    def accepted_ids(self) -> list[str]:
        return [r.task_id for r in self.snapshot() if r.task_id is not None]

    def summary(self) -> str:
        replies = self.snapshot()
        statuses = Counter(r.status for r in replies)
        odd = [r.body_text for r in replies if r.status not in (201, 503)][:3]
        return f"replies by status {dict(statuses)}; first odd ones: {odd}"


def wait_on_stack(
    stack: Stack, condition: Callable[[], Any], *, timeout: float, message: str, load: SubmitLoad | None = None
) -> Any:
    """``wait_for`` that reports the stack's task counts, the load's replies and the
    stack's log when the deadline passes."""
    try:
        return wait_for(condition, timeout=timeout, interval=0.05, message=message)
    except AssertionError as exc:
        try:
            with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
                counts = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY 1").fetchall())
        except psycopg.Error as db_exc:
            counts = {"unavailable": str(db_exc)}
        alive = "running" if stack.proc.poll() is None else f"exited {stack.proc.returncode}"
        raise AssertionError(
            f"{exc}\ntasks by status: {counts}\n{load.summary() if load else ''}\n"
            f"stack ({alive}) log tail:\n{stack.log()[-6000:]}"
        ) from None


def wait_health_down(stack: Stack) -> dict[str, Any]:
    """Wait for ``/health`` to answer 503 (Redis away); its body."""

    def down() -> dict[str, Any] | None:
        r = requests.get(stack.base_url + "/health", timeout=10)
        return dict(r.json()) if r.status_code == 503 else None

    body: dict[str, Any] = wait_on_stack(stack, down, timeout=20, message="/health to turn 503")
    return body


def wait_recovered(stack: Stack, task_id: str, *, message: str) -> dict[str, Any]:
    """After Redis came back empty: wait for ``task_id`` (accepted meanwhile) to complete
    and ``/health`` to be 200 again; the task."""
    done: dict[str, Any] = wait_on_stack(
        stack, lambda: (t := stack.task(task_id))["status"] == "COMPLETED" and t, timeout=40, message=message
    )
    wait_on_stack(
        stack,
        lambda: requests.get(stack.base_url + "/health", timeout=10).status_code == 200,
        timeout=20,
        message="/health to be 200 again",
    )
    return done
