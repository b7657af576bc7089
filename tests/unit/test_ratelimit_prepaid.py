"""``PrepaidRateLimiter``: high limits are charged in batches and admitted locally,
never beyond what Redis granted; low limits and subjects near their limit are
checked one request at a time.  Redis is a fake script with a fixed allowance (no
refill), so every count is exact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.adapters.redis.ratelimit import PREPAY_SECONDS, PrepaidRateLimiter, prepay_batch


class FakeScript:
    """The GCRA script's reply shape over a plain allowance per key."""

    def __init__(self, allowance: int) -> None:
        self.allowance = allowance
        self.spent: dict[str, int] = {}
        self.calls: list[int] = []  # the cost of each call

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> list[int]:
        cost = int(args[2])
        self.calls.append(cost)
        spent = self.spent.get(keys[0], 0)
        if spent + cost > self.allowance:
            return [0, self.allowance - spent, 60_000_000, 1_000_000]
        self.spent[keys[0]] = spent + cost
        return [1, self.allowance - spent - cost, 60_000_000, 0]


class FakeClient:
    def __init__(self, script: FakeScript) -> None:
        self.script = script

    def register_script(self, text: str) -> FakeScript:
        return self.script


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _limiter(allowance: int) -> tuple[PrepaidRateLimiter, FakeScript, Clock]:
    script, clock = FakeScript(allowance), Clock()
    return PrepaidRateLimiter(FakeClient(script), clock=clock), script, clock  # type: ignore[arg-type]


def test_batch_sizes() -> None:
    assert prepay_batch(100) == 0 and prepay_batch(1_999) == 1
    assert prepay_batch(10_000) == 10 and prepay_batch(10_000_000) == 50


def test_a_low_limit_is_checked_one_request_at_a_time() -> None:
    limiter, script, _ = _limiter(allowance=5)
    answers = [limiter.check("k", 100) for _ in range(7)]
    assert [a.allowed for a in answers] == [True] * 5 + [False] * 2
    assert [a.remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert script.calls == [1] * 7


def test_a_high_limit_costs_one_redis_call_per_batch_and_counts_down_honestly() -> None:
    limiter, script, _ = _limiter(allowance=10_000)
    answers = [limiter.check("k", 10_000) for _ in range(25)]
    assert all(a.allowed for a in answers)
    assert script.calls == [10, 10, 10]  # 25 requests, three batches of 10
    assert [a.remaining for a in answers] == list(range(9_999, 9_974, -1))


def test_never_admits_more_than_redis_granted_and_turns_exact_near_the_limit() -> None:
    limiter, script, clock = _limiter(allowance=25)  # Redis has 25 left of a 10,000 limit
    answers = [limiter.check("k", 10_000) for _ in range(40)]
    assert sum(a.allowed for a in answers) == 25 == sum(script.spent.values())
    # Two batches of 10, then the third batch is refused and the last 5 go one by one.
    assert script.calls[:3] == [10, 10, 10] and set(script.calls[3:]) == {1}
    assert all(not a.allowed for a in answers[25:])
    clock.now += PREPAY_SECONDS + 0.1  # after a while, batches are tried again
    limiter.check("k", 10_000)
    assert script.calls[-2:] == [10, 1]


def test_unspent_prepaid_requests_expire() -> None:
    limiter, script, clock = _limiter(allowance=10_000)
    limiter.check("k", 10_000)
    clock.now += PREPAY_SECONDS + 0.1
    limiter.check("k", 10_000)
    assert script.calls == [10, 10]  # the 9 left of the first batch were dropped


def test_subjects_and_limits_are_separate() -> None:
    limiter, script, _ = _limiter(allowance=10_000)
    limiter.check("a", 10_000)
    limiter.check("b", 10_000)
    limiter.check("a", 20_000)  # the key's limit changed: a fresh batch at the new size
    assert script.calls == [10, 10, 20]
    assert limiter.check("a", 10_000, cost=3).allowed and script.calls[-1] == 3  # explicit costs go to Redis
