"""Unit tests for chalicelib.adapters.redis.ratelimit that need no Redis.

They cover the headers, the conversion of the script's reply, argument
checking, and what gets sent to the script. A fake client stands in for
Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.adapters.redis.ratelimit import (
    RateLimitDecision,
    RateLimiter,
    _ceil_seconds,
    _decision_from_reply,
    _emission_interval_us,
)


class FakeScript:
    """Records each call and returns a canned reply."""

    def __init__(self, reply: list[int]) -> None:
        self.reply = reply
        self.calls: list[tuple[list[str], list[int | str]]] = []

    def __call__(
        self,
        keys: Sequence[str] | None = None,
        args: Iterable[int | str] | None = None,
    ) -> Any:
        self.calls.append((list(keys or []), list(args or [])))
        return self.reply


class FakeRedis:
    def __init__(self, reply: list[int]) -> None:
        self.script = FakeScript(reply)
        self.registered: list[str] = []

    def register_script(self, script: str) -> FakeScript:
        self.registered.append(script)
        return self.script


def test_headers_when_allowed() -> None:
    d = RateLimitDecision(allowed=True, limit=100, remaining=99, reset_seconds=1, retry_after_seconds=0)
    assert d.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "99",
        "RateLimit-Reset": "1",
    }


def test_headers_when_denied_include_retry_after() -> None:
    d = RateLimitDecision(allowed=False, limit=100, remaining=0, reset_seconds=60, retry_after_seconds=1)
    assert d.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": "1",
    }


@given(
    allowed=st.booleans(),
    limit=st.integers(1, 10_000),
    remaining=st.integers(-5, 10_000),
    reset_us=st.integers(0, 10**9),
    retry_us=st.integers(1, 10**9),
)
def test_reply_conversion_invariants(allowed: bool, limit: int, remaining: int, reset_us: int, retry_us: int) -> None:
    reply = [int(allowed), remaining, reset_us, 0 if allowed else retry_us]
    d = _decision_from_reply(reply, limit)
    h = d.headers()

    assert d.allowed is allowed
    assert d.remaining >= 0
    assert d.reset_seconds * 1_000_000 >= reset_us  # rounded up, never down
    assert d.reset_seconds * 1_000_000 < reset_us + 1_000_000
    if allowed:
        assert d.retry_after_seconds == 0
        assert "Retry-After" not in h
    else:
        assert d.retry_after_seconds >= 1
        assert d.retry_after_seconds * 1_000_000 >= retry_us
        assert h["Retry-After"] == str(d.retry_after_seconds)
    assert set(h) >= {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}


@pytest.mark.parametrize(
    ("micros", "seconds"),
    [(0, 0), (1, 1), (999_999, 1), (1_000_000, 1), (1_000_001, 2), (-5, 0)],
)
def test_ceil_seconds(micros: int, seconds: int) -> None:
    assert _ceil_seconds(micros) == seconds


@pytest.mark.parametrize(
    ("window", "limit", "interval"),
    [
        (60, 100, 600_000),
        (2, 4, 500_000),
        (60, 7, 8_571_429),  # rounded up: a little too strict, never too loose
        (1, 10_000_000, 1),  # never rounds down to zero
    ],
)
def test_emission_interval(window: int, limit: int, interval: int) -> None:
    assert _emission_interval_us(window, limit) == interval
    assert _emission_interval_us(window, limit) * limit >= window * 1_000_000


def test_check_sends_key_and_integer_arguments() -> None:
    fake = FakeRedis([1, 99, 600_000, 0])
    limiter = RateLimiter(fake, window_seconds=60)

    d = limiter.check("key-123", 100)

    assert d == RateLimitDecision(allowed=True, limit=100, remaining=99, reset_seconds=1, retry_after_seconds=0)
    assert fake.script.calls == [(["{tasklane}:rl:key-123"], [600_000, 60_000_000, 1])]


def test_script_registered_once_per_limiter() -> None:
    fake = FakeRedis([1, 0, 0, 0])
    limiter = RateLimiter(fake)
    for _ in range(3):
        limiter.check("a", 10)
    assert len(fake.registered) == 1
    # The script has to document its interface up front.
    assert fake.registered[0].lstrip().startswith("-- KEYS[1]")


@pytest.mark.parametrize(("limit", "cost"), [(0, 1), (-1, 1), (5, -1), (5, 6)])
def test_check_rejects_bad_arguments(limit: int, cost: int) -> None:
    fake = FakeRedis([1, 0, 0, 0])
    with pytest.raises(ValueError):
        RateLimiter(fake).check("a", limit, cost)
    assert fake.script.calls == []


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(FakeRedis([1, 0, 0, 0]), window_seconds=0)
