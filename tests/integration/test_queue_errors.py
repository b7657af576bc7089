"""Redis failures leave the Redis adapters as ``QueueError`` and nothing else."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.adapters.redis.queue import Queue
from chalicelib.adapters.redis.ratelimit import RateLimiter
from chalicelib.api.access import Access
from chalicelib.container import Container
from chalicelib.core.errors import QueueError, UnauthorizedError
from chalicelib.core.model import Priority, QueueEntry
from chalicelib.services.apikeys import create_key


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def dead_queue() -> Queue:
    client = redis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    return Queue(client)


def _wait_then_claim(q: Queue) -> None:
    """The drain loop's pair on its held connection: the wait is armed, sent with the claim."""
    held = q.hold_connection()
    q.wait_for_work(0.1, held=held)
    q.claim(10, 30, held=held)


CALLS: dict[str, Callable[[Queue], Any]] = {
    "push": lambda q: q.push([QueueEntry.ready("a", "t", Priority.NORMAL, 1.0, None)]),
    "remove": lambda q: q.remove([QueueEntry.ready("a", "t", Priority.NORMAL, 1.0, None)]),
    "claim": lambda q: q.claim(10, 30),
    "ack": lambda q: q.ack(["a"]),
    "extend": lambda q: q.extend(["a"], 30),
    "wait_for_work": lambda q: q.wait_for_work(0.1),
    "claim, held connection": lambda q: q.claim(10, 30, held=q.hold_connection()),
    "wait_for_work, held connection": lambda q: _wait_then_claim(q),
    "wake": lambda q: q.wake(),
    "expired_leases": lambda q: q.expired_leases(10),
    "needs_rebuild": lambda q: q.needs_rebuild(),
    "snapshot": lambda q: q.snapshot(),
    "mark_swept": lambda q: q.mark_swept(),
    "presence.mark_alive": lambda q: q.presence.mark_alive(5),
    "presence.any_alive": lambda q: q.presence.any_alive(),
    "presence.claim_waker": lambda q: q.presence.claim_waker(5),
}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_unreachable_redis_raises_queue_error_with_the_cause(dead_queue: Queue, call: str) -> None:
    with pytest.raises(QueueError) as info:
        CALLS[call](dead_queue)
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    assert info.value.status == 503 and info.value.code == "queue_unavailable"


def test_rate_limiter_outage_lets_an_authenticated_key_through_without_headers(rt: Container) -> None:
    secret, _ = create_key(rt.store, "acme", actor="cli:test")
    access = Access(rt)
    dead = redis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    access.limiter = RateLimiter(dead, keys=rt.queue.keys)
    key, headers = access.check(secret)
    assert key.tenant == "acme" and headers == {}
    with pytest.raises(UnauthorizedError):
        access.check("tl_not-a-key")  # an outage never opens the API to unknown keys
