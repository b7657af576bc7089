"""The Redis client the adapters share: its protocol, its factory, and the one place
where redis-py's errors become Tasklane's.

Every Redis call in ``chalicelib`` goes through an adapter of this package inside
``translate()``, which turns ``redis.exceptions.RedisError`` (connection refused,
timeouts, a script error, ...) into ``QueueError``; callers catch that, never a
redis-py exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import redis
from redis.exceptions import RedisError

from chalicelib.core.errors import QueueError


class ScriptLike(Protocol):
    """A registered Lua script (``redis.Redis.register_script``): runs by EVALSHA and
    reloads itself when the server answers NOSCRIPT."""

    def __call__(self, keys: Sequence[str] | None = None, args: Iterable[Any] | None = None) -> Any: ...


class RedisLike(Protocol):
    """The subset of ``redis.Redis`` the adapters use (``redis.cluster.RedisCluster``
    has it too; so can a fake in a unit test)."""

    def register_script(self, script: str) -> Any: ...
    def pipeline(self, transaction: bool = True) -> Any: ...
    def blpop(self, keys: Any, timeout: float | None = 0) -> Any: ...
    def ping(self) -> Any: ...
    def exists(self, *names: Any) -> Any: ...
    def set(self, name: Any, value: Any, ex: Any = None, px: Any = None, nx: bool = False) -> Any: ...
    def get(self, name: Any) -> Any: ...
    def zcard(self, name: Any) -> Any: ...


def connect(url: str) -> redis.Redis:
    """A client for ``url`` with bounded connect and read timeouts (a hung Redis must
    fail a request, not hang it)."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)


class translate:
    """``with translate():`` turns redis-py errors into ``QueueError`` (the cause kept)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None and isinstance(exc, RedisError):
            raise QueueError(f"Redis is unreachable or failed: {exc}") from exc
        return False
