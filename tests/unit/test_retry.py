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
