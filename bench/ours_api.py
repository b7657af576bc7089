"""Tasklane's API workloads: single and batch submits over HTTP against the whole local
stack (``python -m tools.devstack run``), 8 keep-alive clients at once, and the API
function invoked in-process as Lambda invokes it (``bench.apicost``)."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests

from bench import stats
from bench.common import BenchError, rate, wait_for
from bench.env import BenchEnv, Proc
from bench.loadclient import KeepAlive
from bench.ours import stop_workers
from tools.devstack import services as devservices
from tools.devstack.supervisor import api_processes


def start_stack(env: BenchEnv, **extra: str) -> tuple[Proc, int, str, dict[str, str]]:
    """The whole local stack (``python -m tools.devstack run``: the API, drainers and
    sweeper) on the bench's servers, up: the process, its port, its bootstrap API key
    (no practical rate limit) and its environment (``extra`` added).  Stopped again if
    it does not come up."""
    port = devservices.find_free_port()
    key = "bench-" + uuid.uuid4().hex
    stack_env = env.child_env(
        TASKLANE_PORT=str(port),
        TASKLANE_BOOTSTRAP_API_KEY=key,
        TASKLANE_BOOTSTRAP_RATE_LIMIT_PER_MINUTE="10000000",
        **extra,
    )
    stack = env.python("stack", "-m", "tools.devstack", "run", env=stack_env)

    def up() -> bool:
        if not stack.alive():
            raise BenchError(f"the local stack exited:\n{stack.log_tail()}")
        return "Tasklane is up" in stack.log_tail(200)

    try:
        wait_for(up, timeout=120, interval=0.1, what="the local stack")
    except BaseException:
        stop_workers(env, [stack])
        raise
    return stack, port, key, stack_env


def http_submit(
    env: BenchEnv, *, seconds: float, max_count: int, processes: int | None = None, lean_first: bool = True
) -> dict[str, Any]:
    """Sequential POST /api/v1/tasks against a live local stack (API, 2 drainers, sweeper),
    batches of 500, then 8 keep-alive clients with the lean load client and with
    http.client (the lean one first unless ``lean_first`` is false); ``processes`` sets
    TASKLANE_API_PROCESSES (else the stack's default)."""
    env.flush_redis()
    extra = {"TASKLANE_API_PROCESSES": str(processes)} if processes else {}
    stack, port, key, stack_env = start_stack(env, **extra)
    base = f"http://127.0.0.1:{port}"
    try:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        # Headers and body leave in two sends whatever the body's type (Python 3.11's
        # http.client and urllib3 2 both send the body after ``endheaders``); neither waits
        # on a delayed ACK here (urllib3 sets TCP_NODELAY; for http.client without it the
        # body still arrived with the head: bench/RESULTS.md, round 10).
        body = json.dumps({"name": "noop", "payload": {"n": 1}}).encode()
        with requests.Session() as s:
            for _ in range(20):
                s.post(base + "/api/v1/tasks", data=body, headers=headers, timeout=10).raise_for_status()
            lat: list[float] = []
            start = time.perf_counter()
            for _ in range(max_count):
                t = time.perf_counter()
                r = s.post(base + "/api/v1/tasks", data=body, headers=headers, timeout=10)
                lat.append(time.perf_counter() - t)
                if r.status_code != 201:
                    raise BenchError(f"HTTP submit answered {r.status_code}: {r.text[:200]}")
                if t - start > seconds:
                    break
            wall = time.perf_counter() - start
            batch = json.dumps({"tasks": [{"name": "noop", "payload": {"n": 1}}] * 500}).encode()
            blat = []
            bstart = time.perf_counter()
            for _ in range(max(2, int(seconds))):
                t = time.perf_counter()
                r = s.post(base + "/api/v1/tasks/batch", data=batch, headers=headers, timeout=30)
                blat.append(time.perf_counter() - t)
                if r.status_code not in (200, 201, 207):
                    raise BenchError(f"HTTP batch answered {r.status_code}: {r.text[:200]}")
            bwall = time.perf_counter() - bstart
        # The sessions above reached one API process; with several (TASKLANE_API_PROCESSES),
        # new connections warm the others (their first requests' imports) before the count.
        for _ in range(2 * (api_processes(stack_env) - 1)):
            concurrent_submits(port, headers, body, clients=8, seconds=0.5)
        # 8 clients twice: the lean load client (the goal's figure: one write a request,
        # little CPU of the cores the stack runs on) and http.client (the figure of the
        # runs before round 17).  Each window's stack CPU (API processes, drainers,
        # sweeper) per request.
        windows: dict[str, tuple[dict[str, Any], float]] = {}
        for client in ("lean", "http.client") if lean_first else ("http.client", "lean"):
            cpu0 = stack.cpu_seconds()
            got = concurrent_submits(port, headers, body, clients=8, seconds=seconds, client=client)
            cpu_ms = (stack.cpu_seconds() - cpu0) / (got["concurrent8_rate"] * seconds) * 1000
            windows[client] = got, cpu_ms
    finally:
        stop_workers(env, [stack])
    (lean, lean_cpu), (concurrent, concurrent_cpu) = windows["lean"], windows["http.client"]
    return {
        "rate": rate(len(lat), wall),
        **stats.latency_summary(lat),
        "batch_rate": rate(len(blat) * 500, bwall),
        **{k.replace("concurrent8", "lean8"): v for k, v in lean.items()},
        "stack_cpu_lean8_ms": lean_cpu,
        **concurrent,
        "stack_cpu8_ms": concurrent_cpu,
        "api_processes": api_processes(stack_env),  # what the stack started (TASKLANE_API_PROCESSES or cores)
    }


def concurrent_submits(
    port: int,
    headers: dict[str, str],
    body: bytes,
    *,
    clients: int,
    seconds: float,
    max_each: int = 20_000,
    client: str = "lean",
) -> dict[str, Any]:
    """``clients`` threads, each with its own keep-alive connection, POSTing single
    submits for ``seconds``: through ``bench.loadclient`` (``client="lean"``: one write a
    request, about a quarter of http.client's CPU) or ``http.client``."""
    if client not in ("lean", "http.client"):
        raise ValueError(f"unknown client {client!r}")
    lats: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def connect() -> tuple[Callable[[], int], Callable[[], None]]:
        """One client's POST (its answer's status) and its close."""
        if client == "lean":
            lean = KeepAlive(port, "/api/v1/tasks", headers, body)
            return (lambda: lean.post()[0]), lean.close
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def post() -> int:
            conn.request("POST", "/api/v1/tasks", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status

        return post, conn.close

    def run(mine: list[float]) -> None:
        close: Callable[[], None] | None = None
        try:
            post, close = connect()
            barrier.wait(timeout=30)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end and len(mine) < max_each:
                t = time.perf_counter()
                status = post()
                mine.append(time.perf_counter() - t)
                if status != 201:
                    errors.append(f"HTTP {status}")
                    return
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(f"{type(exc).__name__}: {exc}")
            barrier.abort()  # the others, and the clock below, stop waiting for this one
        finally:
            if close is not None:
                close()

    threads = [threading.Thread(target=run, args=(mine,), daemon=True) for mine in lats]
    for th in threads:
        th.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: reported below
        barrier.wait(timeout=30)
    start = time.perf_counter()
    for th in threads:
        th.join(timeout=seconds + 30)
    wall = time.perf_counter() - start
    if errors:
        raise BenchError(f"concurrent HTTP submit: {errors[0]}")
    every = [x for mine in lats for x in mine]
    summary = stats.latency_summary(every)
    return {
        "concurrent8_rate": rate(len(every), wall),
        "concurrent8_p50_ms": summary["p50_ms"],
        "concurrent8_p99_ms": summary["p99_ms"],
    }


def api_in_process(env: BenchEnv, *, seconds: float, max_count: int) -> dict[str, Any]:
    """``python -m bench.apicost``: API Gateway proxy events into ``app.app`` in a
    process of its own (see bench/apicost.py); no drainer runs, so the ids wait in
    Redis until the next workload flushes the bench's db."""
    env.flush_redis()
    out = subprocess.run(
        [sys.executable, "-m", "bench.apicost", str(seconds), str(max_count)],
        cwd=env.code_root,
        env=env.child_env(),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if out.returncode != 0:
        raise BenchError(f"bench.apicost failed: {out.stderr.strip()[-500:] or out.stdout[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
