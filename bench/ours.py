"""Tasklane's own workloads: single submit (service layer), bulk submit, drain with N
real drainer subprocesses, end-to-end latency at a steady rate, CPU and RSS.  The API's
(HTTP, and the API function in-process) are in ``bench.ours_api``."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, SupportsFloat, cast

import redis

from bench import stats
from bench.common import BenchError, blocked_clients, paced, rate, self_cpu, wait_for
from bench.env import BENCH_REDIS_DB, BENCH_REDIS_PREFIX, BenchEnv, Proc
from chalicelib.adapters.redis.client import ClusterClient
from chalicelib.adapters.redis.keys import Keys
from chalicelib.config import Settings, default_submit_push
from chalicelib.container import Container
from chalicelib.core.model import Priority, QueueEntry
from chalicelib.core.requests import TaskRequest
from chalicelib.services.submit import submit, submit_many

DRAIN_ARGV = ["-m", "tools.devstack", "drain"]
STAMP_DRAIN_ARGV = ["-m", "bench.stampdrain"]
SWEEP_ARGV = ["-m", "tools.devstack", "sweep"]


def runtime(env: BenchEnv, **overrides: Any) -> Container:
    """A runtime on the bench's servers; it pushes inline unless ``submit_push`` says
    otherwise (the drain and latency runs read the pushes in the calling thread)."""
    settings = Settings(database_url=env.database_url, redis_url=env.named_redis_url, redis_prefix=BENCH_REDIS_PREFIX)
    settings = replace(settings, **overrides)
    return Container.build(settings)


def request(name: str = "noop", payload: dict[str, Any] | None = None) -> TaskRequest:
    return TaskRequest(
        name=name,
        payload=payload if payload is not None else {"n": 1},
        priority=Priority.NORMAL,
        run_at=None,
        delay_seconds=None,
        max_retries=3,
        timeout_seconds=60,
        idempotency_key=None,
    )


def close_runtime(rt: Container) -> None:
    """Close the pool and the Redis connections (``Container.close`` keeps the latter)."""
    rt.close()
    # Queue types its client as the subset it uses (RedisLike: no close); it is client.connect's.
    cast("redis.Redis | ClusterClient", rt.queue.client).close()


class DeferredQueue:
    """Stands in for ``rt.queue`` during a pre-submit: records pushes so the bench can
    release all ids to Redis at one instant, after the drainers are idle."""

    def __init__(self, real: Any) -> None:
        self.real = real
        # The submit's inline push (``pusher.HeldPush``) holds a connection of the real
        # client for its script; what it pushes through still comes to ``push`` here.
        self.client = real.client
        self.ready: list[QueueEntry] = []

    def push(self, entries: Iterable[QueueEntry], **kw: Any) -> None:
        entries = list(entries)
        assert not any(e.delayed for e in entries)
        self.ready.extend(entries)

    def release(self, chunk: int = 5000) -> None:
        for i in range(0, len(self.ready), chunk):
            self.real.push(self.ready[i : i + chunk])


def _with_queue(rt: Container, queue: Any) -> Container:
    return Container(settings=rt.settings, store=rt.store, queue=queue, registry=rt.registry, retry=rt.retry)


# --- single and bulk submit ------------------------------------------------------------


def _submitter(env: BenchEnv) -> Container:
    """The runtime a long-running process gets from its environment: outside Lambda
    the push follows the commit on the pusher thread (``TASKLANE_SUBMIT_PUSH``)."""
    return runtime(env, submit_push=default_submit_push(os.environ))


def single_submit(env: BenchEnv, *, seconds: float, max_count: int, min_count: int = 500) -> dict[str, Any]:
    """Sequential ``chalicelib.services.submit.submit`` calls (INSERT + Redis push each);
    the clock stops once every push is done.  At least ``min_count`` of them: the
    servers' CPU per submit is read from /proc in 10 ms ticks, too coarse over a few
    dozen submits of a loaded machine."""
    env.flush_redis()
    rt = _submitter(env)
    tenant = "bench-single-" + uuid.uuid4().hex[:6]
    try:
        submit(rt, tenant, request())  # warm the pool
        lat: list[float] = []
        servers0 = env.server_cpu()  # the server side of a submit, for bench/capacity.py
        cpu0 = self_cpu()
        start = time.perf_counter()
        for _ in range(max_count):
            t = time.perf_counter()
            submit(rt, tenant, request())
            lat.append(time.perf_counter() - t)
            if t - start > seconds and len(lat) >= min_count:
                break
        if not rt.flush_pushes(30):
            raise BenchError("the background pushes did not finish")
        wall = time.perf_counter() - start
        cpu = self_cpu() - cpu0
        servers = env.server_cpu_delta(servers0)
    finally:
        close_runtime(rt)
    return {
        "rate": rate(len(lat), wall),
        "cpu_ms_per_submit": cpu / len(lat) * 1000,
        "pg_cpu_ms_per_submit": servers["pg"] / len(lat) * 1000,
        "redis_cpu_ms_per_submit": servers["redis"] / len(lat) * 1000,
        **stats.latency_summary(lat),
    }


def bulk_submit(env: BenchEnv, *, calls: int, per_call: int = 500) -> dict[str, Any]:
    """``submit_many`` with ``per_call`` tasks per call (one INSERT + one Redis trip); the
    clock stops once every push is done."""
    env.flush_redis()
    rt = _submitter(env)
    tenant = "bench-bulk-" + uuid.uuid4().hex[:6]
    batches = [[request() for _ in range(per_call)] for _ in range(calls)]
    try:
        submit_many(rt, tenant, batches[0][:5])
        lat = []
        cpu0 = self_cpu()
        start = time.perf_counter()
        for b in batches:
            t = time.perf_counter()
            submit_many(rt, tenant, b)
            lat.append(time.perf_counter() - t)
        if not rt.flush_pushes(30):
            raise BenchError("the background pushes did not finish")
        wall = time.perf_counter() - start
        cpu = self_cpu() - cpu0
    finally:
        close_runtime(rt)
    n = calls * per_call
    return {
        "rate": rate(n, wall),
        "call_p50_ms": stats.percentile(lat, 50) * 1000,
        "cpu_s_per_1000": cpu / n * 1000,
    }


# --- drain -------------------------------------------------------------------------------


def start_workers(
    env: BenchEnv,
    count: int,
    *,
    argv: Sequence[str] = DRAIN_ARGV,
    sweeper: bool = True,
    extra_env: dict[str, str] | None = None,
) -> tuple[list[Proc], Proc | None]:
    child_env = env.child_env(**(extra_env or {}))
    drainers = [env.python(f"drain{i + 1}", *argv, env=child_env) for i in range(count)]
    sweep = env.python("sweep", *SWEEP_ARGV, env=child_env) if sweeper else None

    # The sweeper's first sweep must be over before the caller writes tasks: after a
    # flushed Redis it rebuilds the queue from PostgreSQL, and a rebuild that met a
    # pre-submit half-way would push its tasks before the release.
    swept = Keys(BENCH_REDIS_PREFIX).last_sweep

    def ready() -> bool:
        for p in [*drainers, *([sweep] if sweep else [])]:
            if not p.alive():
                raise BenchError(f"{p.name} exited early:\n{p.log_tail()}")
        if sweep is not None and not env.redis().exists(swept):
            return False
        return blocked_clients(env.redis(), BENCH_REDIS_DB, ("blpop",)) >= count

    wait_for(ready, timeout=90, interval=0.05, what=f"{count} idle drainers")
    return drainers, sweep


def stop_workers(env: BenchEnv, procs: Iterable[Proc | None]) -> None:
    for p in procs:
        if p is not None:
            p.stop()
            if p in env.procs:
                env.procs.remove(p)


def _wait_drained(env: BenchEnv, rt: Container, tenant: str, n: int, timeout: float) -> dict[str, Any]:
    """Wait until every task of ``tenant`` is COMPLETED; Redis's ready+lease sets going
    empty is the cheap signal, PostgreSQL the authority."""

    def redis_empty() -> bool:
        d = rt.queue.depths()
        return d["ready"] == 0 and d["leased"] == 0

    wait_for(redis_empty, timeout=timeout, interval=0.01, what="ready and lease sets to empty")
    q = """SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
                  extract(epoch FROM max(finished_at)), extract(epoch FROM min(started_at)),
                  count(*) FILTER (WHERE attempts > 1)
           FROM tasks WHERE tenant = %s"""
    with env.connect() as conn:

        def all_done() -> tuple[Any, ...] | None:
            row = conn.execute(q, (tenant,)).fetchone()
            assert row is not None
            return row if cast(int, row[0]) >= n else None

        try:
            row = wait_for(all_done, timeout=30, interval=0.05, what=f"{n} COMPLETED rows")
        except BenchError as exc:
            counts = conn.execute(
                "SELECT status, count(*) FROM tasks WHERE tenant = %s GROUP BY 1", (tenant,)
            ).fetchall()
            statuses = {status: count for status, count in counts}
            raise BenchError(f"{exc}; statuses {statuses}; redis {rt.queue.depths()}") from None
    return {"completed": row[0], "last_finish": float(row[1]), "first_start": float(row[2]), "retried": row[3]}


def drain_run(
    env: BenchEnv,
    *,
    drainers: int,
    n: int,
    timeout: float = 180.0,
    on_release: Any = None,
    truncate: bool = True,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """N pre-submitted noop tasks, ``drainers`` real drain subprocesses (+ a sweeper):
    tasks/s from release to the last COMPLETED row, CPU per 1,000 tasks, drainer RSS."""
    env.flush_redis()
    if truncate:
        env.truncate()
    # The sweeper sweeps every minute, as the AWS schedule does.  At the local default
    # (5 s) its reconcile pushed pre-submitted rows older than 5 s to Redis itself
    # whenever the pre-submit took that long (a loaded machine), and the drainers ran
    # them before the release: the clock then timed fewer tasks than it divided by.
    extra = {"TASKLANE_SWEEP_INTERVAL_SECONDS": "60"}
    if batch_size:  # a fixed batch size (smallest = largest) instead of the adaptive default
        extra |= {"TASKLANE_DRAIN_BATCH_SIZE": str(batch_size), "TASKLANE_DRAIN_BATCH_MIN": str(batch_size)}
    procs, sweep = start_workers(env, drainers, extra_env=extra)
    rt = runtime(env)
    try:
        tenant = "bench-drain-" + uuid.uuid4().hex[:6]
        reqs = [request() for _ in range(n)]
        deferred = DeferredQueue(rt.queue)
        rt_deferred = _with_queue(rt, deferred)
        cpu0 = self_cpu()
        for i in range(0, n, 500):
            submit_many(rt_deferred, tenant, reqs[i : i + 500])
        submit_cpu = self_cpu() - cpu0
        drain_cpu0 = [p.cpu_seconds() for p in procs]
        sweep_cpu0 = sweep.cpu_seconds() if sweep else 0.0
        if on_release is not None:
            on_release(procs)
        servers0 = env.server_cpu()
        busy0 = stats.system_cpu_busy()
        cpu0 = self_cpu()
        t_release = time.time()
        deferred.release()
        submit_cpu += self_cpu() - cpu0
        done = _wait_drained(env, rt, tenant, n, timeout)
        busy1 = stats.system_cpu_busy()
        servers = env.server_cpu_delta(servers0)
        drain_cpu = sum(p.cpu_seconds() - c for p, c in zip(procs, drain_cpu0, strict=True))
        sweep_cpu = (sweep.cpu_seconds() - sweep_cpu0) if sweep else 0.0
        rss = max(p.hwm_mb() for p in procs)
    finally:
        close_runtime(rt)
        stop_workers(env, [*procs, sweep])
    if done["first_start"] < t_release - 0.05:  # the database's clock and ours: one machine
        raise BenchError(
            f"a task started {t_release - done['first_start']:.2f} s before the release: "
            "something pushed the pre-submitted tasks early, and the rate would be wrong"
        )
    seconds = done["last_finish"] - t_release
    machine_busy = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) if busy1[1] > busy0[1] else math.nan
    return {
        "drainers": drainers,
        "n": n,
        "rate": rate(n, seconds),
        "seconds": seconds,
        "cpu_s_per_1000": (submit_cpu + drain_cpu + sweep_cpu) / n * 1000,
        "submit_cpu_s_per_1000": submit_cpu / n * 1000,
        "drain_cpu_s_per_1000": drain_cpu / n * 1000,
        "sweep_cpu_s_per_1000": sweep_cpu / n * 1000,
        "drainer_rss_mb": rss,
        "pg_cpu_s_per_1000": servers["pg"] / n * 1000,
        "redis_cpu_s_per_1000": servers["redis"] / n * 1000,
        # What 2 otherwise idle cores could sustain at this CPU cost per task
        # (drainers + sweeper + PostgreSQL backends + Redis; tasks pre-submitted).
        "ceiling_2_cores": 2.0 / ((drain_cpu + sweep_cpu + servers["pg"] + servers["redis"]) / n),
        "machine_busy": machine_busy,
        "retried": done["retried"],
    }


# --- end-to-end latency --------------------------------------------------------------------


class _Stamped:
    """Wraps ``rt.store`` or ``rt.queue`` for the latency split: records when one method
    returned, per call, in ``marks`` (the submits are sequential)."""

    def __init__(self, real: Any, method: str, marks: list[float]) -> None:
        self._real, self._method, self._marks = real, method, marks

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self._marks.append(time.time())
            return out

        return timed


# The split of the e2e latency, in order; each is the p50 of (end - start) per task,
# from stamps on one host clock (the bench's, the drainer's and PostgreSQL's now()).
# Since round 11 a lone task's push goes while its INSERT's commit is on its way
# (adapters/postgres/early_row.py): the push returns before the commit, and the chain
# runs call -> pushed -> wake -> ... with the commit beside it (a claim that gets there
# first waits for it, inside "claim committed").
SPLIT = (
    ("split_submit_push_p50_ms", "t0", "pushed"),  # the client's call -> row inserted, ZADD + wake token
    ("split_submit_commit_p50_ms", "t0", "committed"),  # the client's call -> INSERT committed (durable)
    ("split_wake_p50_ms", "pushed", "wake"),  # the drainer's BLPOP returns (or its next claim starts)
    ("split_loop_p50_ms", "wake", "script_start"),  # mark_alive, back to the claim
    ("split_claim_script_p50_ms", "script_start", "script"),  # the Redis claim script
    ("split_claim_commit_p50_ms", "script", "commit"),  # the claim UPDATE + events, committed
    ("split_handoff_p50_ms", "commit", "t1"),  # rows read -> the executor (on the reading lane after a dry claim)
    ("split_finish_p50_ms", "t1", "finished"),  # the executor's start -> the finish statement's now()
)


def _split(stamps: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key, a, b in SPLIT:
        deltas = [s[b] - s[a] for s in stamps if a in s and b in s]
        out[key] = stats.percentile(deltas, 50) * 1000
    return out


def _burst(env: BenchEnv, rt: Container, n: int) -> float:
    """Submit ``n`` noop tasks and wait until the drainer has finished them: the table
    now holds the dead row versions a burst leaves behind.  Returns the seconds taken."""
    tenant = "bench-burst-" + uuid.uuid4().hex[:6]
    start = time.perf_counter()
    for i in range(0, n, 500):
        submit_many(rt, tenant, [request() for _ in range(min(500, n - i))])
    _wait_drained(env, rt, tenant, n, 240)
    return time.perf_counter() - start


def latency_run(
    env: BenchEnv, *, per_second: float, count: int, on_start: Any = None, burst: int = 0
) -> dict[str, Any]:
    """Submit at a steady rate with one drainer alive; latency = executor start (stamped
    by the executor) minus the moment the client called ``submit``.  With ``burst``,
    that many tasks are submitted and drained first, and the steady run starts straight
    after (no vacuum in between: what a queue table looks like after a spike)."""
    env.flush_redis()
    env.truncate()
    procs, sweep = start_workers(env, 1, argv=STAMP_DRAIN_ARGV)
    rt = runtime(env)
    committed: list[float] = []
    pushed: list[float] = []
    stamped = _with_queue(rt, _Stamped(rt.queue, "push", pushed))
    stamped.store = _Stamped(rt.store, "insert_tasks", committed)  # type: ignore[assignment]
    tenant = "bench-lat-" + uuid.uuid4().hex[:6]
    client: dict[str, dict[str, float]] = {}
    try:
        submit(rt, tenant, request("bench_stamp", {"t0": time.time(), "warmup": True}))
        burst_seconds = _burst(env, rt, burst) if burst else 0.0
        if not burst:
            time.sleep(0.3)
        if on_start is not None:
            on_start(procs)
        cpu_before = [p.cpu_seconds() for p in [*procs, sweep] if p]
        cpu0 = self_cpu()

        def one(i: int) -> None:
            t0 = time.time()
            task = submit(stamped, tenant, request("bench_stamp", {"t0": t0})).task
            client[task.id] = {"committed": committed[-1], "pushed": pushed[-1]}

        sent, seconds = paced(per_second, count, count / per_second * 1.5 + 5, one)
        _wait_drained(env, rt, tenant, sent + 1, 60)
        cpu = self_cpu() - cpu0 + sum(p.cpu_seconds() for p in [*procs, sweep] if p) - sum(cpu_before)
        with env.connect() as conn:
            rows = conn.execute(
                """SELECT id::text, (result->>'t1')::float8 - (payload->>'t0')::float8,
                          extract(epoch FROM started_at - created_at),
                          (payload->>'t0')::float8, result,
                          extract(epoch FROM finished_at) - (payload->>'t0')::float8
                   FROM tasks WHERE tenant = %s AND NOT payload ? 'warmup'""",
                (tenant,),
            ).fetchall()
            dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'").fetchone()
    finally:
        close_runtime(rt)
        stop_workers(env, [*procs, sweep])
    # The columns' SQL types: text, float8, extract()'s numeric, float8, jsonb (the
    # executor's dict), numeric.
    exec_lat = [cast(float, r[1]) for r in rows]
    db_lat = [float(cast(SupportsFloat, r[2])) for r in rows]
    finish_lat = [float(cast(SupportsFloat, r[5])) for r in rows]
    stamps = [
        {
            **client.get(cast(str, r[0]), {}),
            "t0": cast(float, r[3]),
            "finished": cast(float, r[3]) + float(cast(SupportsFloat, r[5])),
            **{k: v for k, v in cast("dict[str, Any]", r[4]).items() if isinstance(v, float)},
        }
        for r in rows
    ]
    return {
        "achieved_rate": rate(sent, seconds),
        **stats.latency_summary(exec_lat),
        # submit -> started: PostgreSQL's own clock (created_at is the INSERT's
        # transaction start, started_at the claim's).
        "db_p50_ms": stats.percentile(db_lat, 50) * 1000,
        "db_p99_ms": stats.percentile(db_lat, 99) * 1000,
        # submit -> finished: the client's call to the outcome statement's now() (the
        # finish statement's start, on the same host clock; its commit comes after).
        "finish_p50_ms": stats.percentile(finish_lat, 50) * 1000,
        "finish_p99_ms": stats.percentile(finish_lat, 99) * 1000,
        **_split(stamps),
        "cpu_s_per_1000": cpu / sent * 1000,
        "burst": burst,
        "burst_seconds": burst_seconds,
        "dead_tuples_after": float(cast(int, dead[0])) if dead else math.nan,  # n_dead_tup: bigint
    }
