import random

import pytest

from chalicelib.core.errors import PayloadError, PermanentError, RetryableError
from chalicelib.core.model import Status
from chalicelib.core.retry import RetryPolicy, describe, is_permanent


def test_backoff_follows_seed_schedule_without_jitter() -> None:
    policy = RetryPolicy(base_seconds=2, max_seconds=300, jitter=0)
    assert [policy.backoff(a) for a in (1, 2, 3)] == [2, 4, 8]


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 10])
def test_backoff_jitter_stays_within_bounds(attempt: int) -> None:
    policy = RetryPolicy(base_seconds=2, max_seconds=30, jitter=0.25)
    rand = random.Random(attempt)
    nominal = min(30, 2 * 2 ** (attempt - 1))
    for _ in range(200):
        delay = policy.backoff(attempt, rand)
        assert nominal * 0.75 <= delay <= nominal


class _Fixed(random.Random):
    """A ``random()`` that always returns ``value``: the jitter's two extremes."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize("policy", [RetryPolicy(), "settings"], ids=["RetryPolicy()", "Settings.from_env({})"])
def test_default_backoff_is_2_4_8_seconds_less_up_to_a_quarter(policy: RetryPolicy | str) -> None:
    """The documented defaults (README: 2 s, 4 s, 8 s, shortened by up to 25 % jitter),
    both for the bare policy and for the one the settings of an empty environment give."""
    if policy == "settings":
        from chalicelib.config import Settings

        s = Settings.from_env({})
        policy = RetryPolicy(base_seconds=s.retry_base_seconds, max_seconds=s.retry_max_seconds, jitter=s.retry_jitter)
    assert isinstance(policy, RetryPolicy)
    nominal = [2.0, 4.0, 8.0]
    assert [policy.backoff(a, _Fixed(0.0)) for a in (1, 2, 3)] == nominal
    almost_one = 1.0 - 2**-53  # random() is in [0, 1)
    longest_cut = [policy.backoff(a, _Fixed(almost_one)) for a in (1, 2, 3)]
    assert longest_cut == pytest.approx([1.5, 3.0, 6.0])
    rand = random.Random(7)
    for attempt, n in zip((1, 2, 3), nominal, strict=True):
        delays = [policy.backoff(attempt, rand) for _ in range(500)]
        assert all(0.75 * n < d <= n for d in delays)
        assert max(delays) - min(delays) > 0.2 * n  # jitter really spreads them


def test_backoff_is_capped_even_for_huge_attempts() -> None:
    policy = RetryPolicy(base_seconds=2, max_seconds=60, jitter=0)
    assert policy.backoff(10_000) == 60


def test_next_status_retries_while_budget_lasts() -> None:
    policy = RetryPolicy()
    assert policy.next_status(attempts=1, max_retries=3, permanent=False) is Status.PENDING
    assert policy.next_status(attempts=3, max_retries=3, permanent=False) is Status.PENDING
    assert policy.next_status(attempts=4, max_retries=3, permanent=False) is Status.FAILED
    assert policy.next_status(attempts=1, max_retries=0, permanent=False) is Status.FAILED


def test_permanent_errors_skip_retries() -> None:
    policy = RetryPolicy()
    assert policy.next_status(attempts=1, max_retries=3, permanent=True) is Status.FAILED
    assert is_permanent(PermanentError("x")) and is_permanent(PayloadError("x"))
    assert not is_permanent(RetryableError("x"))
    assert not is_permanent(KeyError("unknown bugs retry"))


def test_describe_bounds_message_and_names_type() -> None:
    message, kind = describe(ValueError("x" * 5000))
    assert len(message) == 2000 and kind == "ValueError"
    assert describe(TimeoutError()) == ("TimeoutError", "TimeoutError")


def test_a_retry_after_replaces_the_backoff_within_bounds() -> None:
    policy = RetryPolicy(base_seconds=2, max_seconds=300, jitter=0, max_retry_after_seconds=3600)
    assert policy.delay(1, RetryableError("x", retry_after=30)) == 30
    assert policy.delay(1, RetryableError("x", retry_after=900)) == 900  # beyond max_seconds: the server knows
    assert policy.delay(1, RetryableError("x", retry_after=10**9)) == 3600
    assert policy.delay(1, RetryableError("x", retry_after=-5)) == 0
    assert policy.delay(3, RetryableError("x", retry_after=float("nan"))) == 8  # unreadable: the backoff
    assert policy.delay(3, RetryableError("x")) == 8
    assert policy.delay(3, KeyError("bug")) == 8
