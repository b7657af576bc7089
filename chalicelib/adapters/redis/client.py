"""The Redis client the adapters share: its protocol, its factory, and the one place
where redis-py's errors become Tasklane's.

Every Redis call in ``chalicelib`` goes through an adapter of this package inside
``translate()``, which turns ``redis.exceptions.RedisError`` (connection refused,
timeouts, a script error, ...) and redis-py's cluster errors into ``QueueError``;
callers catch that, never a redis-py exception.

``connect(url, cluster=True)`` (``TASKLANE_REDIS_CLUSTER``) gives a Redis Cluster
client instead of a single-server one: ``ClusterClient``, built on first use.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from chalicelib.core.errors import QueueError

# A hung Redis must fail a request, not hang it.
_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 10}


def _cluster_retry() -> Retry:
    """No retry of a cluster command that failed on a connection error or a timeout:
    it costs at most one connect or read timeout, as on a single server.

    redis-py's default (10 retries, backoff up to 1 s) made every call that touched a
    dead master wait 2.4-4.6 s before failing (a submit's push 7-8 s with 4
    partitions, each claim and each sweep step as long, for as long as the master
    stayed down), and 11 read timeouts (110 s) on a hung one: 3 retries took 40 s
    there, 1 took 20.  With one retry a request that can meet a hung master twice
    (the rate limiter's refill, the push) would outlast API Gateway's 29 s after its
    task was committed, and its caller would submit it again.  The failed command
    asks for a slot-map refresh, so the next one finds a replica a failover promoted;
    what failed meanwhile is PostgreSQL's and the sweeper's to catch up (a submit is
    accepted at its commit, the reconciliation pushes it)."""
    return Retry(NoBackoff(), 0)


class ScriptLike(Protocol):
    """A registered Lua script (``redis.Redis.register_script``): runs by EVALSHA and
    reloads itself when the server answers NOSCRIPT."""

    def __call__(self, keys: Sequence[str] | None = None, args: Iterable[Any] | None = None) -> Any: ...


class RedisLike(Protocol):
    """The subset of ``redis.Redis`` the adapters use (``ClusterClient`` has it too; so
    can a fake in a unit test)."""

    def register_script(self, script: str) -> Any: ...
    def pipeline(self, transaction: bool = True) -> Any: ...
    def blpop(self, keys: Any, timeout: float | None = 0) -> Any: ...
    def ping(self) -> Any: ...
    def exists(self, *names: Any) -> Any: ...
    def set(self, name: Any, value: Any, ex: Any = None, px: Any = None, nx: bool = False) -> Any: ...
    def get(self, name: Any) -> Any: ...
    def zcard(self, name: Any) -> Any: ...


def connect(url: str, *, cluster: bool = False) -> redis.Redis | ClusterClient:
    """A client for ``url`` with bounded connect and read timeouts; with ``cluster``,
    a Redis Cluster client that discovers the other nodes from this one."""
    if cluster:
        return ClusterClient(url)
    return redis.Redis.from_url(url, health_check_interval=30, **_TIMEOUTS)


class ClusterScript:
    """A Lua script for a cluster: EVALSHA on the node that owns its keys' slot, and on
    NOSCRIPT (that node restarted empty, or never saw the script) one EVAL there,
    which also caches the script on it.  redis-py's own ``Script`` answers NOSCRIPT
    with a SCRIPT LOAD on every primary, which fails while any one of them is down,
    even one that holds none of the script's keys."""

    def __init__(self, client: ClusterClient, script: str) -> None:
        self.client = client
        self.script = script
        # EVALSHA's name for the script (SHA-1 is what Redis uses; not a security hash).
        self.sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[str] | None = None, args: Iterable[Any] | None = None) -> Any:
        keys, args = list(keys or []), list(args or [])
        cluster = self.client.cluster()
        try:
            return cluster.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return cluster.eval(self.script, len(keys), *keys, *args)


class HeldConnection:
    """A redis-py connection held by the one thread that uses it: single pushes (the
    pusher's, and inline ones: ``pusher.HeldPush``), the drain loop's wake waits and
    claims.

    ``redis.Redis`` takes a connection from its pool and returns it on every command
    (a lock, a readiness poll, metrics hooks): about 60 % of a single push's client
    CPU (issue 14, round 8), and as much of a claim script's or a BLPOP's (round 9).
    This keeps what that path gives a command: the connection's own ``Retry`` (with
    the client's settings it makes no retries: a connection error or timeout
    disconnects and reaches the caller at once, as through the client), its health
    check before a send, the check-out's reconnect of a socket the server closed, and
    the reconnect of a dropped connection on the next send.  Errors are redis-py's;
    callers translate them as for any client call.  Not thread-safe: one thread only."""

    @classmethod
    def of(cls, client: RedisLike, *, timeout: float | None = None) -> HeldConnection | None:
        """One on ``client``'s settings; None for a cluster client or a fake, which keep
        the client's own path."""
        return cls(client, timeout=timeout) if isinstance(client, redis.Redis) else None

    def __init__(self, client: redis.Redis, *, timeout: float | None = None) -> None:
        pool = client.connection_pool
        # The pool's class and settings (URL, timeouts, health check, retry), but not
        # one of its connections: the pool neither counts nor hands out this one.
        kwargs = dict(pool.connection_kwargs)
        if timeout is not None:  # its own connect and read timeouts instead of the client's
            kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
            # redis-py versions that keep the configured ones apart (orig_*) restore those.
            kwargs.update({k: timeout for k in ("orig_socket_timeout", "orig_socket_connect_timeout") if k in kwargs})
        self._conn = pool.connection_class(**kwargs)
        encoder = self._conn.encoder
        self._native = (encoder.encoding, encoder.encoding_errors) == ("utf-8", "strict")
        self._scripts: dict[str, HeldScript] = {}
        self._armed: list[Any] = []  # a blocking command sent ahead of the next one (``arm``)

    def command(self, *args: Any) -> Any:
        """One command and its raw reply (no response callback: BLPOP's is a list or None)."""
        return self.round_trip(self.pack(*args))

    def script(self, script: str) -> HeldScript:
        """``script`` run on this connection (one object per script, kept)."""
        held = self._scripts.get(script)
        if held is None:
            held = self._scripts[script] = HeldScript(self, script)
        return held

    def arm(self, *args: Any) -> None:
        """Send the blocking command ``args`` (the drain loop's BLPOP on the wake list)
        in one write with the next command, ahead of it.  Redis keeps a blocked client's
        later commands until the block ends, then runs them at once: the claim after a
        wake starts in Redis without a reply to this process and a request back (issue
        14, round 10).  Its reply (a token, or nil at the timeout) is read and dropped."""
        self._armed = self.pack(*args)

    def round_trip(self, packed: Any) -> Any:
        conn = self._conn
        if conn._sock is not None:
            # No reply is due between round trips, so a readable socket was closed by the
            # server (a restart, an idle timeout while a Lambda was frozen) or is out of
            # step: reconnect first, as the pool's check-out does.  Without this the first
            # command after a restart failed (the connection's Retry makes no retries).
            try:
                if conn.can_read():
                    conn.disconnect()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                conn.disconnect()
        # A retry after a connection error sends the command alone: it does not wait again.
        lead, self._armed = self._armed, []

        def once() -> Any:
            nonlocal lead
            ahead, lead = lead, []
            conn.send_packed_command(ahead + packed if ahead else packed)  # connects first if need be
            if ahead:
                try:
                    conn.read_response()
                except ResponseError:
                    pass  # read like any reply: the command's follows; a failed wait is no wait
            return conn.read_response()  # raises a ResponseError reply (NOSCRIPT, a script error)

        return conn.retry.call_with_retry(once, lambda _error: conn.disconnect())

    def pack(self, *args: Any) -> list[Any]:
        """``args`` as one command on the wire.  hiredis packs the str, int, float and
        bytes arguments we send itself, the bytes redis-py's packer makes of them (which
        checks and encodes each argument in Python first: ~5 of a single push's ~6 us
        of packing, on the path of every submit's push and every claim, issue 14 round
        20); anything else takes redis-py's way, and its errors."""
        first = args[0]
        if self._native and type(first) is str and " " not in first:
            try:
                return [hiredis.pack_command(args)]
            except (TypeError, UnicodeError):
                pass
        return self._conn.pack_command(*args)  # type: ignore[no-any-return]

    def write(self, packed: Any) -> None:
        """Send ``packed`` and leave its reply on the wire (``readable``, ``read``); no
        health check, whose PING would read a reply owed to the caller.  Connects first
        if need be."""
        self._conn.send_packed_command(packed, check_health=False)

    def readable(self, timeout: float = 0) -> bool:
        """Whether a reply is in (or comes within ``timeout``)."""
        return bool(self._conn.can_read(timeout))

    def read(self) -> Any:
        """The next reply (a ``ResponseError`` reply is raised)."""
        return self._conn.read_response()

    def close(self) -> None:
        self._armed = []
        self._conn.disconnect()


class HeldScript:
    """A Lua script run by EVALSHA on a ``HeldConnection``; on NOSCRIPT (a restarted
    server) a SCRIPT LOAD and one more EVALSHA, as ``redis.commands.core.Script`` does."""

    @classmethod
    def of(cls, client: RedisLike, script: str) -> HeldScript | None:
        """One on a connection of its own on ``client``'s settings; None for a cluster
        client or a fake, which keep the client's own path."""
        held = HeldConnection.of(client)
        return None if held is None else held.script(script)

    def __init__(self, held: HeldConnection, script: str) -> None:
        self._held = held
        self._script = script
        self._sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[str] | None = None, args: Iterable[Any] | None = None) -> Any:
        held = self._held
        keys = list(keys or [])
        packed = held.pack("EVALSHA", self._sha, len(keys), *keys, *(args or []))
        try:
            return held.round_trip(packed)
        except NoScriptError:
            held.round_trip(held.pack("SCRIPT", "LOAD", self._script))
            return held.round_trip(packed)

    def write(self, keys: Sequence[str] | None = None, args: Iterable[Any] | None = None) -> None:
        """EVALSHA sent, its reply left to the caller (``HeldConnection.read``); a NOSCRIPT
        reply is the caller's to answer (``write_load``)."""
        keys = list(keys or [])
        self._held.write(self._held.pack("EVALSHA", self._sha, len(keys), *keys, *(args or [])))

    def write_load(self) -> None:
        """SCRIPT LOAD sent, its reply left to the caller."""
        self._held.write(self._held.pack("SCRIPT", "LOAD", self._script))

    def close(self) -> None:
        self._held.close()


class ClusterClient:
    """``redis.cluster.RedisCluster``, built on first use and rebuilt after a failed
    build.  RedisCluster contacts the cluster in its constructor; building it lazily
    lets a process start (and submit keep persisting to PostgreSQL) while the
    cluster is unreachable, as a single-server client allows.

    Every Tasklane key carries the ``{prefix}`` hash tag (``keys.py``), so each
    script, pipeline and BLPOP touches one slot, hence one node.  Pipelines are never
    transactional (``transaction=False`` everywhere): a cluster pipeline sends each
    node its share."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._cluster: RedisCluster | None = None

    def cluster(self) -> RedisCluster:
        found = self._cluster
        if found is None:
            with self._lock:
                found = self._cluster
                if found is None:
                    found = self._cluster = RedisCluster.from_url(self.url, retry=_cluster_retry(), **_TIMEOUTS)
        return found

    def register_script(self, script: str) -> ClusterScript:
        return ClusterScript(self, script)

    def pipeline(self, transaction: bool = True) -> Any:
        if transaction:
            raise ValueError("a cluster pipeline cannot be a transaction across slots; pass transaction=False")
        return self.cluster().pipeline(transaction=False)  # type: ignore[no-untyped-call]

    def blpop(self, keys: Any, timeout: float | None = 0) -> Any:
        return self.cluster().blpop(keys, timeout=timeout)

    def ping(self) -> Any:
        return self.cluster().ping()

    def exists(self, *names: Any) -> Any:
        return self.cluster().exists(*names)

    def set(self, name: Any, value: Any, ex: Any = None, px: Any = None, nx: bool = False) -> Any:
        return self.cluster().set(name, value, ex=ex, px=px, nx=nx)

    def get(self, name: Any) -> Any:
        return self.cluster().get(name)

    def delete(self, *names: Any) -> Any:
        """Powertools' idempotency store deletes its records."""
        return self.cluster().delete(*names)

    def zcard(self, name: Any) -> Any:
        return self.cluster().zcard(name)

    def close(self) -> None:
        with self._lock:
            found, self._cluster = self._cluster, None
        if found is not None:
            found.close()


def as_text(raw: Any) -> str:
    """A reply item as str (clients may or may not decode responses)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class translate:
    """``with translate():`` turns redis-py errors into ``QueueError`` (the cause kept).
    ``RedisClusterException`` (no node reachable, a slot not covered) is not a
    ``RedisError`` in redis-py, hence the second class."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None and isinstance(exc, (RedisError, RedisClusterException)):
            raise QueueError(f"Redis is unreachable or failed: {exc}") from exc
        return False
