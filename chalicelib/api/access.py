"""Who may call the API, and how often: API key → tenant, plus per-key rate limiting,
in one check per request, and the ``authed`` decorator that applies it.

Keys are looked up by hash (``chalicelib.services.apikeys`` creates them) with a short
in-process cache, so a warm API does not query PostgreSQL on every request.

When Redis is unreachable the limiter cannot count, and the request of an
*authenticated* key is let through with a logged warning (fail open): PostgreSQL
is the source of truth and submit must keep working through a Redis outage.
A request without a valid key never reaches the limiter, so an outage never
opens the API to anonymous callers.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice.app import Request, Response

from chalicelib.api.responses import guarded, mark_guarded
from chalicelib.core.errors import QueueError, RateLimitedError, UnauthorizedError, ValidationError
from chalicelib.observability.log import logger
from chalicelib.services.apikeys import ApiKey, hash_key

if TYPE_CHECKING:
    # Annotations only: every route module imports this one, so at import (each Lambda
    # cold start, drain and sweep included) it must not pull in psycopg or redis.
    from chalicelib.adapters.postgres.store import Store
    from chalicelib.adapters.redis.ratelimit import RateLimiter
    from chalicelib.container import Container

_CACHE_SECONDS = 5.0  # a revoked key stops working within this long on a warm process
_MISS_SECONDS = 2.0  # unknown keys are remembered briefly so a flood of them cannot hammer PostgreSQL
_CACHED_KEYS = 10_000  # per cache (known, unknown); a full one starts over


class Authenticator:
    """Resolves ``X-API-Key`` to an ``ApiKey``; the final comparison is constant time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Known and unknown keys apart, each bounded: a flood of random keys fills (and
        # empties) only the second, and the tenants' own keys stay cached through it.
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._misses: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, presented: str | None) -> ApiKey:
        if not presented:
            raise UnauthorizedError("missing API key: send it in the X-API-Key header")
        digest = hash_key(presented)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest) or self._misses.get(digest)
        if hit and hit[0] > now:
            if hit[1] is None:
                raise UnauthorizedError("unknown API key")
            return hit[1]
        stored = self.store.api_key_by_hash(digest)
        if stored is None or not hmac.compare_digest(stored.key_hash, digest):
            self._remember(digest, now + _MISS_SECONDS, None)
            raise UnauthorizedError("unknown API key")
        if not stored.active:
            raise UnauthorizedError("this API key is disabled or expired")
        record = stored.key
        key = ApiKey(
            id=record.id,
            tenant=record.tenant,
            name=record.name,
            key_prefix=record.key_prefix,
            rate_limit_per_minute=record.rate_limit_per_minute,
        )
        self._remember(digest, now + _CACHE_SECONDS, key)
        return key

    def _remember(self, digest: str, until: float, key: ApiKey | None) -> None:
        with self._lock:
            cache, other = (self._cache, self._misses) if key is not None else (self._misses, self._cache)
            other.pop(digest, None)  # a key created or revoked meanwhile
            if len(cache) >= _CACHED_KEYS:
                cache.clear()
            cache[digest] = (until, key)


class Access:
    def __init__(self, rt: Container) -> None:
        from chalicelib.adapters.redis.ratelimit import PrepaidRateLimiter

        self.default_limit = rt.settings.rate_limit_per_minute
        self.auth = Authenticator(rt.store)
        self.limiter: RateLimiter = PrepaidRateLimiter(rt.queue.client, keys=rt.queue.keys)

    def check(self, presented_key: str | None) -> tuple[ApiKey, dict[str, str]]:
        """The caller's key and the rate-limit headers for the response.

        Raises ``UnauthorizedError`` (401) or ``RateLimitedError`` (429)."""
        key = self.auth.authenticate(presented_key)
        limit = key.rate_limit_per_minute or self.default_limit
        try:
            decision = self.limiter.check(key.id, limit)
        except QueueError as exc:
            logger.warning("rate limiter unavailable; allowing authenticated request", extra={"error": str(exc)})
            return key, {}
        if not decision.allowed:
            raise RateLimitedError(
                f"rate limit of {limit} requests per minute exceeded; retry after {decision.retry_after_seconds} s",
                details={"limit_per_minute": limit, "retry_after_seconds": decision.retry_after_seconds},
                headers=decision.headers(),
            )
        return key, decision.headers()


_access: Access | None = None
_access_lock = threading.Lock()


def get_access() -> Access:
    """The process's ``Access``, built on first use (its key cache lives as long)."""
    if _access is not None:  # every request but the first: no lock, no import
        return _access
    return _first_access()


def _first_access() -> Access:
    global _access
    from chalicelib.container import get_container  # lazily: built on the first request

    with _access_lock:
        if _access is None:
            _access = Access(get_container())
        return _access


def single_header(request: Request, name: str) -> str | None:
    """The value of header ``name`` (lower case), refused (400) when the request sends it
    twice with different values: API Gateway hands the app the last one, a proxy in
    front may have judged the first (the local server refuses such a request itself:
    ``tools/devstack/http_request.py``)."""
    event = request.to_original_event()
    for sent, values in (event.get("multiValueHeaders") or {}).items():
        if len(values) > 1 and sent.lower() == name and len(set(values)) > 1:
            raise ValidationError(
                f"the request has {len(values)} {sent} headers with different values; send one",
                details={"header": name},
            )
    return request.headers.get(name)


def requires_key(
    access: Callable[[], Access], request: Callable[[], Request]
) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """A decorator: authenticate and rate-limit, run the handler with the caller's key
    inside the one error boundary (``responses.guarded``), and put the rate-limit
    headers on whatever it answers, errors included."""

    def authed(fn: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            rate_headers: dict[str, str] = {}

            def call() -> Response:
                key, headers = access().check(single_header(request(), "x-api-key"))
                rate_headers.update(headers)
                return fn(key, *args, **kwargs)

            response = guarded(call)
            response.headers.update(rate_headers)
            return response

        return mark_guarded(wrapper)

    return authed
