"""Ready ids of one tenant (a single submit's, or a few the pusher coalesced) are pushed
by one script call (``Queue._pushed_ready``, ``PUSH_READY``), everything else by the
pipeline of ``Queue._add``: both must leave Redis in the same state."""

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


def _piped(q: Queue, entries: list[QueueEntry]) -> None:
    """What ``push`` sends for entries the script does not take: ``_add``'s pipeline."""
    pipe = q.client.pipeline(transaction=False)
    if q._add(pipe, entries):
        pipe.execute()


def _no_pipeline(q: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pushed through a pipeline")

    monkeypatch.setattr(q.client, "pipeline", refuse)


def _entries() -> list[QueueEntry]:
    at = 1_780_000_000_123.25
    tenants = ["t1", "t two", "t1"]
    return [
        QueueEntry(str(uuid.uuid4()), tenants[i % 3], p, at + i, "noop")
        for i, p in enumerate([*Priority, *Priority, *Priority])
    ]


def test_single_pushes_leave_what_the_pipeline_leaves(
    client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, piped = f"one-{uuid.uuid4().hex[:6]}", f"piped-{uuid.uuid4().hex[:6]}"
    q_one, q_piped = Queue.from_url(redis_url, prefix=one), Queue.from_url(redis_url, prefix=piped)
    _no_pipeline(q_one, monkeypatch)
    for e in _entries():  # 12 pushes: also more than the 8 wake tokens the list may hold
        q_one.push([e])
        # The same entry twice is one ZADD member and one token, through the pipeline.
        _piped(q_piped, [e, e])
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
        _piped(q_piped, [e, e])
    got = _state(client, one)
    assert got == _state(client, piped)
    zsets = [v for v in got.values() if isinstance(v, dict)]
    assert any(delayed.id in m for z in zsets for m in z)  # in the delayed set, by its member
    assert sum(limited.id in z for z in zsets) == 1  # its type's ready set holds the bare id


@pytest.mark.parametrize("size", [2, 3, 9])
def test_a_few_coalesced_pushes_of_one_tenant_are_one_script_call(
    client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The pusher thread's coalesced pushes (issue 14 round 14): one tenant's ready ids,
    as many tokens as ids (at most 8), the same entry twice counted once."""
    script, piped = f"some-{uuid.uuid4().hex[:6]}", f"piped-{uuid.uuid4().hex[:6]}"
    q_script, q_piped = Queue.from_url(redis_url, prefix=script), Queue.from_url(redis_url, prefix=piped)
    _no_pipeline(q_script, monkeypatch)
    at = 1_780_000_000_123.25
    entries = [QueueEntry(str(uuid.uuid4()), "t1", [*Priority][i % 3], at + i, "noop") for i in range(size)]
    q_script.push([*entries, entries[0]])
    _piped(q_piped, [*entries, entries[0]])
    got = _state(client, script)
    assert got == _state(client, piped)
    assert len(got[":wake"]) == min(size, 8)  # type: ignore[arg-type]
    assert sum(len(v) for v in got.values() if isinstance(v, dict)) == size


def test_other_tenants_or_too_many_go_by_the_pipeline(client: redis.Redis, redis_url: str) -> None:
    mixed, many = f"mixed-{uuid.uuid4().hex[:6]}", f"many-{uuid.uuid4().hex[:6]}"
    q_mixed, q_many = Queue.from_url(redis_url, prefix=mixed), Queue.from_url(redis_url, prefix=many)
    calls: list[str] = []
    for q, name in ((q_mixed, "mixed"), (q_many, "many")):
        real = q.client.pipeline

        def counted(*args: object, _real: object = real, _name: str = name, **kwargs: object) -> object:
            calls.append(_name)
            return _real(*args, **kwargs)  # type: ignore[operator]

        q.client.pipeline = counted  # type: ignore[method-assign]
    at = 1_780_000_000_000.0
    q_mixed.push([QueueEntry(str(uuid.uuid4()), t, Priority.NORMAL, at, "noop") for t in ("t1", "t2")])
    q_many.push([QueueEntry(str(uuid.uuid4()), "t1", Priority.NORMAL, at + i, "noop") for i in range(65)])
    assert calls == ["mixed", "many"]
    assert sum(len(v) for v in _state(client, mixed).values() if isinstance(v, dict)) == 2
    assert sum(len(v) for v in _state(client, many).values() if isinstance(v, dict)) == 65
