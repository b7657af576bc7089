"""``HeldConnection.pack``: hiredis packs what we send as redis-py would, and anything
else goes redis-py's way, with its errors (issue 14, round 20)."""

from __future__ import annotations

import math
import random

import pytest
import redis
from redis.exceptions import DataError

from chalicelib.adapters.redis.client import HeldConnection


def _held(**kwargs: object) -> HeldConnection:
    held = HeldConnection.of(redis.Redis(host="127.0.0.1", port=1, **kwargs))  # type: ignore[arg-type]
    assert held is not None  # nothing is connected: packing needs no server
    return held


def _redis_py(*args: object) -> bytes:
    return b"".join(redis.Redis(host="127.0.0.1", port=1).connection_pool.make_connection().pack_command(*args))


def test_the_commands_we_send_pack_to_redis_pys_bytes() -> None:
    held = _held()
    rng = random.Random(20)
    scores = [rng.random() * 1e13, rng.uniform(-1e6, 1e6), 0.1, 1 / 3, -0.0, 1e-7, 1e300, math.inf, float(2**53)]
    commands: list[tuple[object, ...]] = [
        ("EVALSHA", "a" * 40, 3, "{tasklane}:p0:ready:t", "{tasklane}:p0:active", "{tasklane}:wake", "t", *scores),
        ("BLPOP", "{tasklane}:wake", 0.25),
        ("SCRIPT", "LOAD", "return 1"),
        ("ZADD", "k", 10**30, "m\u00e9\u65e5", b"raw", memoryview(b"view")),
    ]
    for args in commands:
        packed = held.pack(*args)
        assert isinstance(packed, list) and b"".join(packed) == _redis_py(*args)


@pytest.mark.parametrize("bad", [True, None, [1], bytearray(b"x")])
def test_what_hiredis_refuses_takes_redis_pys_way(bad: object) -> None:
    held = _held()
    try:
        expected = _redis_py("SET", "k", bad)
    except DataError:
        with pytest.raises(DataError):
            held.pack("SET", "k", bad)
        return
    assert b"".join(held.pack("SET", "k", bad)) == expected


def test_a_lone_surrogate_is_refused_as_by_redis_py() -> None:
    with pytest.raises(UnicodeEncodeError):
        _held().pack("SET", "k", "\udcff")


def test_another_encoding_takes_redis_pys_way() -> None:
    held = _held(encoding="latin-1")
    assert b"".join(held.pack("SET", "k", "\u00e9")) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"
