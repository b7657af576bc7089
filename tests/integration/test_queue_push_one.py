"""A single ready id is pushed by one script call (``Queue._pushed_one``), everything
else by the pipeline of ``Queue._add``: both must leave Redis in the same state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from chalicelib.adapters.redis.queue import Queue
from chalicelib.config import TypeLimit
from chalicelib.core.model import Priority, QueueEntry


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def _state(client: redis.Redis, prefix: str) -> dict[str, object]:
    """Every key under ``prefix`` (its name without the prefix) and its content."""
    out: dict[str, object] = {}
    for key in client.scan_iter(match="{" + prefix + "}*"):
        kind = client.type(key)
        if kind == "zset":
            value: object = dict(client.zrange(key, 0, -1, withscores=True))
        elif kind == "set":
            value = frozenset(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            value = client.get(key) if kind == "string" else kind
        out[key.removeprefix("{" + prefix + "}")] = value
    return out


def _entries() -> list[QueueEntry]:
    at = 1_780_000_000_123.25
    tenants = ["t1", "t two", "t1"]
    return [
        QueueEntry(str(uuid.uuid4()), tenants[i % 3], p, at + i, "noop")
        for i, p in enumerate([*Priority, *Priority, *Priority])
    ]


def test_single_pushes_leave_what_the_pipeline_leaves(client: redis.Redis, redis_url: str) -> None:
    one, piped = f"one-{uuid.uuid4().hex[:6]}", f"piped-{uuid.uuid4().hex[:6]}"
    q_one, q_piped = Queue.from_url(redis_url, prefix=one), Queue.from_url(redis_url, prefix=piped)
    for e in _entries():  # 12 pushes: also more than the 8 wake tokens the list may hold
        q_one.push([e])
        # The same entry twice is one ZADD member and one token, through the pipeline.
        q_piped.push([e, e])
    got, expected = _state(client, one), _state(client, piped)
    assert got == expected
    assert len(got[":wake"]) == 8  # type: ignore[arg-type]
    assert sum(len(v) for v in got.values() if isinstance(v, dict)) == 12  # every id, in its tenant's set
    assert frozenset({"t1", "t two"}) in got.values()  # the active tenants


def test_entries_the_script_does_not_take_go_by_the_pipeline(client: redis.Redis, redis_url: str) -> None:
    one, piped = f"one-{uuid.uuid4().hex[:6]}", f"piped-{uuid.uuid4().hex[:6]}"
    limits = {"limited": TypeLimit(concurrency=1)}
    q_one = Queue.from_url(redis_url, prefix=one, limits=limits)
    q_piped = Queue.from_url(redis_url, prefix=piped, limits=limits)
    delayed = QueueEntry(str(uuid.uuid4()), "t1", Priority.HIGH, 1_780_000_000_000, "noop", delayed=True)
    limited = QueueEntry(str(uuid.uuid4()), "t1", Priority.LOW, 1_780_000_000_000, "limited")
    for e in (delayed, limited):
        q_one.push([e])
        q_piped.push([e, e])
    got = _state(client, one)
    assert got == _state(client, piped)
    zsets = [v for v in got.values() if isinstance(v, dict)]
    assert any(delayed.id in m for z in zsets for m in z)  # in the delayed set, by its member
    assert sum(limited.id in z for z in zsets) == 1  # its type's ready set holds the bare id
