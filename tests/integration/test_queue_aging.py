"""One aging rule: Python's ``ready_score`` and the claim script's Lua agree, and the
queue serves ids in that order whether they were pushed ready or promoted from delayed."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.adapters.redis.queue import READY_SCORE_LUA, Queue, head_starts
from chalicelib.config import TypeLimit
from chalicelib.core.model import Priority, QueueEntry, ready_score

# Runs the claim script's own ready_score text; '%.17g' returns the double exactly
# (an integer reply would truncate it).
_EVAL = (
    READY_SCORE_LUA
    + """
local head = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
return string.format('%.17g', ready_score(tonumber(ARGV[1]), tonumber(ARGV[2]), head))
"""
)


@pytest.fixture(scope="module")
def server(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    at_ms=st.floats(min_value=0, max_value=2**44, allow_nan=False, allow_infinity=False),
    priority=st.sampled_from(list(Priority)),
    aging_seconds=st.integers(min_value=0, max_value=7 * 86400),
)
def test_lua_ready_score_equals_python_definition(
    server: redis.Redis, at_ms: float, priority: Priority, aging_seconds: int
) -> None:
    # ARGV as redis-py sends them: floats by repr, so Lua parses the same double.
    raw = server.eval(_EVAL, 0, at_ms, priority.rank, *head_starts(aging_seconds))
    assert float(raw) == ready_score(at_ms, priority, aging_seconds)


@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "limited-type"])
def test_claim_order_is_ready_score_order_for_pushed_and_promoted_ids(redis_url: str, limited: bool) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    limits = {"typed": TypeLimit(concurrency=1000)} if limited else {}
    queue = Queue(client, aging_seconds=5, limits=limits)
    rnd = random.Random(1234)
    now_ms = time.time() * 1000
    entries = []
    for i in range(120):
        priority = rnd.choice(list(Priority))
        at = now_ms - rnd.uniform(1_000, 30_000)  # all due, spread over several aging bounds
        name = "typed" if limited and i % 2 else "other"
        make = QueueEntry.due_at if i % 3 == 0 else QueueEntry.ready
        entries.append(make(str(uuid.uuid4()), "acme", priority, at, name))
    queue.push(entries)
    claimed = list(queue.claim(len(entries), 30))
    expected = sorted(entries, key=lambda e: ready_score(e.at_ms, e.priority, 5))
    assert claimed == [e.id for e in expected]
    client.flushdb()
    client.close()
