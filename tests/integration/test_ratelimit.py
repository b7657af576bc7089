"""Integration tests for chalicelib.adapters.redis.ratelimit against a real Redis.

They use database 13 of the test Redis (tests/conftest.py) and only that database. The
fixture runs FLUSHDB on it before each test. Nothing here calls FLUSHALL.
One test runs SCRIPT FLUSH, which clears the script cache for the whole
server; redis-py reloads scripts on NOSCRIPT, so other clients are unharmed.

Timing-sensitive tests use window_seconds=2 and limit=4, so one request
costs 0.5 s. They poll against deadlines instead of sleeping blindly.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.adapters.redis.keys import Keys
from chalicelib.adapters.redis.ratelimit import RateLimitDecision, RateLimiter
from chalicelib.core.errors import QueueError
from tests.helpers import wait_for

TEST_DB = 13

# The fast configuration: 4 requests per 2 s, so one request costs 0.5 s.
FAST_WINDOW = 2
FAST_LIMIT = 4
FAST_INTERVAL = FAST_WINDOW / FAST_LIMIT

# Allowance for the gap between the client's clock readings and the moment
# the script reads TIME inside Redis. Same host: well under a millisecond
# normally, so this is generous for a loaded CI box.
TIMING_SLACK = 0.05


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A client on database 13. It is flushed before and after each test."""
    client = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + f"/{TEST_DB}")
    client.ping()
    # Guard: never flush a database other than the one we own.
    assert client.connection_pool.connection_kwargs["db"] == TEST_DB
    client.flushdb()
    try:
        yield client
    finally:
        # Flush afterwards too: the 600 s-window test would otherwise leave
        # a key behind for ten minutes.
        client.flushdb()
        client.close()


def _drain(limiter: RateLimiter, subject: str, limit: int) -> list[RateLimitDecision]:
    return [limiter.check(subject, limit) for _ in range(limit)]


def _gcra_violations(
    allowed_at: Sequence[float], limit: int, interval: float, slack: float
) -> list[tuple[int, int, float]]:
    """Find stretches of time that held more requests than GCRA allows.

    GCRA with burst ``limit`` admits at most ``limit + floor(t / interval)``
    requests in any stretch of length ``t``. ``allowed_at`` is sorted.
    Returns ``(i, j, t)`` for every pair of indices whose stretch breaks
    that bound.
    """
    bad = []
    for i in range(len(allowed_at)):
        for j in range(i, len(allowed_at)):
            span = allowed_at[j] - allowed_at[i]
            if j - i + 1 > limit + math.floor((span + slack) / interval):
                bad.append((i, j, span))
    return bad


def _unjustified_refusals(
    checks: Sequence[tuple[float, float, bool]], limit: int, interval: float, slack: float
) -> list[int]:
    """Find refusals GCRA would not have made.

    ``checks`` are one caller's checks in the order it made them: (clock before,
    clock after, allowed).  After admissions at ``a_1..a_n`` the theoretical arrival
    time is ``max_k(a_k + (n - k + 1) * interval)``, and a check at ``t`` is refused
    only if it runs more than ``(limit - 1) * interval`` ahead of ``t``: some stretch
    ``[a_k, t]`` already holds more than ``limit - 1 + (t - a_k) / interval``
    admissions.  Each stretch is measured at its shortest (from when ``a_k``'s call
    returned to when the refused one was asked, less ``slack``), which only lowers
    that bar: a refusal flagged here was wrong whenever inside those calls Redis read
    its clock.  Returns the indices of the refusals no stretch justifies.
    """
    bad = []
    allowed_until: list[float] = []  # when each admission's call returned, in order
    for i, (before, after, allowed) in enumerate(checks):
        if allowed:
            allowed_until.append(after)
            continue
        n = len(allowed_until)
        if not any(n - k > limit - 1 + (before - allowed_until[k] - slack) / interval for k in range(n)):
            bad.append(i)
    return bad


def test_violation_checker_catches_fixed_window_edge_burst() -> None:
    """Check the checker: a fixed window's 2x burst at its edge must be flagged."""
    # INCR/EXPIRE with a 2 s window: 4 requests just before the boundary
    # and 4 just after it, all within 20 ms.
    fixed_window = [1.99] * FAST_LIMIT + [2.01] * FAST_LIMIT
    assert _gcra_violations(fixed_window, FAST_LIMIT, FAST_INTERVAL, TIMING_SLACK)
    # The schedule GCRA produces (full burst, then one per interval) passes.
    gcra = [0.0] * FAST_LIMIT + [FAST_INTERVAL * k for k in range(1, 7)]
    assert not _gcra_violations(gcra, FAST_LIMIT, FAST_INTERVAL, TIMING_SLACK)


def test_refusal_checker_catches_a_limiter_that_never_refills() -> None:
    """Check the other checker: refusals after an interval has refilled must be flagged,
    refusals while the burst and the refills are spent must not."""
    burst = [(0.0, 0.001, True)] * FAST_LIMIT
    # Too strict: the burst and then nothing, though a request refilled every 0.5 s.
    never_refills = [*burst, *((t / 10, t / 10 + 0.001, False) for t in range(1, 20))]
    assert _unjustified_refusals(never_refills, FAST_LIMIT, FAST_INTERVAL, TIMING_SLACK) == list(
        range(FAST_LIMIT + 5, FAST_LIMIT + 19)
    )
    # GCRA: refused until 0.5 s, let in, refused again until 1.0 s.
    gcra = [*burst, (0.2, 0.201, False), (0.5, 0.501, True), (0.7, 0.701, False), (1.0, 1.001, True)]
    assert _unjustified_refusals(gcra, FAST_LIMIT, FAST_INTERVAL, TIMING_SLACK) == []


def test_burst_of_exactly_limit_then_denied(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = 10

    burst = _drain(limiter, "alice", limit)
    denied = limiter.check("alice", limit)

    assert all(d.allowed for d in burst)
    assert not denied.allowed
    assert denied.remaining == 0
    # One request costs 60 s / 10 = 6 s, so the wait is between 1 and 6 s.
    assert 0 < denied.retry_after_seconds <= 6


def test_denied_requests_do_not_consume(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    _drain(limiter, "alice", 3)
    key = limiter.key_for("alice")
    before = redis_client.get(key)

    for _ in range(5):
        assert not limiter.check("alice", 3).allowed

    assert redis_client.get(key) == before


def test_headers_are_honest(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = 5

    decisions = _drain(limiter, "alice", limit)
    denied = limiter.check("alice", limit)

    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    for d in decisions:
        h = d.headers()
        assert h["RateLimit-Limit"] == "5"
        assert h["RateLimit-Remaining"] == str(d.remaining)
        assert 0 < int(h["RateLimit-Reset"]) <= 60
        assert "Retry-After" not in h
    # The debt grows by 12 s (60 s / 5) per request, and so does the reset.
    assert [d.reset_seconds for d in decisions] == [12, 24, 36, 48, 60]

    h = denied.headers()
    assert h["RateLimit-Limit"] == "5"
    assert h["RateLimit-Remaining"] == "0"
    assert h["RateLimit-Reset"] == "60"
    assert h["Retry-After"] == str(denied.retry_after_seconds)
    assert 0 < denied.retry_after_seconds <= 12


def test_subjects_are_independent(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    _drain(limiter, "alice", 3)
    assert not limiter.check("alice", 3).allowed

    bob = _drain(limiter, "bob", 3)

    assert [d.remaining for d in bob] == [2, 1, 0]
    assert all(d.allowed for d in bob)


def test_key_name_and_ttl(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, window_seconds=FAST_WINDOW)
    limiter.check("alice", FAST_LIMIT)

    assert limiter.key_for("alice") == "{tasklane}:rl:alice"
    pttl = redis_client.pttl("{tasklane}:rl:alice")
    # One request's debt is 0.5 s, so the key expires when it is paid off.
    assert 0 < pttl <= FAST_INTERVAL * 1000

    other = RateLimiter(redis_client, keys=Keys("other"))
    other.check("alice", FAST_LIMIT)
    assert redis_client.exists("{other}:rl:alice") == 1


def test_idle_key_expires_when_bucket_is_full(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, window_seconds=FAST_WINDOW)
    limiter.check("alice", FAST_LIMIT)
    key = limiter.key_for("alice")

    # Its TTL is the debt (0.5 s); the deadline is only there so a key that never expires fails.
    wait_for(lambda: redis_client.exists(key) == 0, timeout=10, message="the idle key to expire")
    # A missing key is a full bucket.
    assert limiter.check("alice", FAST_LIMIT).remaining == FAST_LIMIT - 1


def test_allowed_again_after_retry_after(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, window_seconds=FAST_WINDOW)
    _drain(limiter, "alice", FAST_LIMIT)
    denied = limiter.check("alice", FAST_LIMIT)
    denied_at = time.monotonic()
    assert not denied.allowed
    assert denied.retry_after_seconds == 1  # 0.5 s, rounded up

    # Denied checks cost nothing, so polling does not delay recovery.
    last_denied_asked = 0.0

    def check() -> RateLimitDecision | None:
        nonlocal last_denied_asked
        asked = time.monotonic()
        decision = limiter.check("alice", FAST_LIMIT)
        if decision.allowed:
            return decision
        last_denied_asked = asked - denied_at
        return None

    decision = wait_for(check, timeout=10, interval=0.01, message="alice to be allowed again")
    waited = time.monotonic() - denied_at

    # It reopens after about one interval (0.5 s), no earlier ...
    assert waited >= FAST_INTERVAL - 2 * TIMING_SLACK
    # ... and within Retry-After: no check asked after it was still refused.  Judged by
    # when each check was asked, not by when the poll got round to it, so a stalled
    # (loaded) test process cannot fail this.
    assert last_denied_asked < denied.retry_after_seconds, "still refused after Retry-After"
    assert decision.remaining == 0


def test_no_double_burst_at_window_edge(redis_client: redis.Redis) -> None:
    """Hammer one subject for 1.5 windows and check when requests got in.

    With fixed INCR/EXPIRE windows, a client can spend a full window's limit
    just before a boundary and another just after it: 2x the limit within a
    few milliseconds. GCRA admits at most ``limit + floor(t / interval)`` in
    any stretch of length ``t``, so any stretch shorter than one interval
    holds at most ``limit``, wherever the stretch falls.

    GCRA does not promise "at most ``limit`` per sliding window" when the
    burst equals the limit. A window that starts with a full burst also
    catches the ``limit - 1`` requests refilled during it. The bound checked
    here is the exact GCRA bound, with only timing slack added.
    """
    limiter = RateLimiter(redis_client, window_seconds=FAST_WINDOW)
    duration = 1.5 * FAST_WINDOW
    checks: list[tuple[float, float, bool]] = []

    start = time.monotonic()
    while (now := time.monotonic()) - start < duration:
        allowed = limiter.check("alice", FAST_LIMIT).allowed
        checks.append((now - start, time.monotonic() - start, allowed))
        time.sleep(0.002)
    # Average the clock before and after, to land close to TIME.
    allowed_at = [(before + after) / 2 for before, after, allowed in checks if allowed]

    assert not _gcra_violations(allowed_at, FAST_LIMIT, FAST_INTERVAL, TIMING_SLACK)
    # Nothing past the burst gets in before the first interval has passed: no 2x at any
    # edge.  At most, not exactly: a loaded machine may stall the loop past that point
    # before it has spent the burst (the count below still sees every request).
    assert sum(t < FAST_INTERVAL - TIMING_SLACK for t in allowed_at) <= FAST_LIMIT
    assert len(allowed_at) <= FAST_LIMIT + math.floor(duration / FAST_INTERVAL)
    # Not too strict either: every refusal came when the requests already let in filled
    # the GCRA bound.  Judged refusal by refusal, not by the total: a total short of the
    # bound only says the loop stalled somewhere (a token that refills while it stalls
    # past the burst, or after its last check, is never asked for).
    refused = [i for i, (_, _, allowed) in enumerate(checks) if not allowed]
    assert refused, "the hammer was never refused: it did not hammer"
    assert not _unjustified_refusals(checks, FAST_LIMIT, FAST_INTERVAL, TIMING_SLACK)


def test_concurrent_callers_never_exceed_limit(redis_client: redis.Redis) -> None:
    """8 threads, each standing in for an API process with its own client."""
    limit = 50
    threads_n = 8
    calls_per_thread = 20  # 160 attempts against a limit of 50
    # A 600 s window makes one request cost 12 s, far longer than the test,
    # so nothing refills while it runs and the total must be exactly `limit`.
    window = 600
    barrier = threading.Barrier(threads_n)

    def worker() -> list[RateLimitDecision]:
        client = redis.Redis(connection_pool=redis.ConnectionPool(**redis_client.connection_pool.connection_kwargs))
        try:
            limiter = RateLimiter(client, window_seconds=window)
            barrier.wait(timeout=5)  # all threads hit Redis at the same moment
            return [limiter.check("shared", limit) for _ in range(calls_per_thread)]
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=threads_n) as pool:
        futures = [pool.submit(worker) for _ in range(threads_n)]
        # result() re-raises a worker's exception here, in the test thread.
        results = [d for f in futures for d in f.result(timeout=10)]

    assert len(results) == threads_n * calls_per_thread
    allowed = [d for d in results if d.allowed]
    assert len(allowed) == limit
    # Each admitted request saw a different state: none was admitted twice.
    assert sorted(d.remaining for d in allowed) == list(range(limit))


def test_cost_and_zero_cost_peek(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)

    peek = limiter.check("alice", 4, cost=0)
    assert peek.allowed and peek.remaining == 4 and peek.reset_seconds == 0
    assert redis_client.exists(limiter.key_for("alice")) == 0

    first = limiter.check("alice", 4, cost=3)
    assert first.allowed and first.remaining == 1
    second = limiter.check("alice", 4, cost=3)
    assert not second.allowed
    assert second.remaining == 1
    assert second.retry_after_seconds > 0
    assert limiter.check("alice", 4, cost=0).remaining == 1
    assert limiter.check("alice", 4, cost=1).allowed


def test_survives_script_flush_and_flushdb(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    assert limiter.check("alice", 10).remaining == 9

    # A restart or failover loses the script cache. The state stays, and
    # redis-py must reload the script on NOSCRIPT.
    redis_client.script_flush()
    assert limiter.check("alice", 10).remaining == 8

    # Losing the data as well (a restart without persistence) gives a full
    # bucket again, and nothing raises.
    redis_client.script_flush()
    redis_client.flushdb()
    assert limiter.check("alice", 10).remaining == 9


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_connection_error_becomes_queue_error() -> None:
    # No retries, so the test is fast. The real client's retry and timeout
    # settings belong to the API layer.
    client = redis.Redis(
        host="127.0.0.1",
        port=_unused_port(),
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    limiter = RateLimiter(client)
    with pytest.raises(QueueError) as info:
        limiter.check("alice", 10)
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)


def test_timeout_error_becomes_queue_error() -> None:
    # The listener never accepts or answers. The kernel completes the
    # handshake from the backlog, so the connection succeeds and the read
    # times out.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        client = redis.Redis(
            host="127.0.0.1",
            port=server.getsockname()[1],
            socket_connect_timeout=0.5,
            socket_timeout=0.2,
            retry=Retry(NoBackoff(), 0),
        )
        limiter = RateLimiter(client)
        with pytest.raises(QueueError) as info:
            limiter.check("alice", 10)
        assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
        client.close()
