"""Who may call the API, and how often: API-key authentication plus per-key rate
limiting, in one check per request.

When Redis is unreachable the limiter cannot count, and the request of an
*authenticated* key is let through with a logged warning (fail open): PostgreSQL
is the source of truth and submit must keep working through a Redis outage.
A request without a valid key never reaches the limiter, so an outage never
opens the API to anonymous callers.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from chalicelib.adapters.redis.ratelimit import RateLimiter
from chalicelib.container import Container
from chalicelib.core.errors import RateLimitedError
from chalicelib.observability.log import logger
from chalicelib.services.apikeys import ApiKey, Authenticator


class Access:
    def __init__(self, rt: Container) -> None:
        self.default_limit = rt.settings.rate_limit_per_minute
        self.auth = Authenticator(rt.store)
        self.limiter = RateLimiter(rt.queue.client, key_prefix="{" + rt.settings.redis_prefix + "}")

    def check(self, presented_key: str | None) -> tuple[ApiKey, dict[str, str]]:
        """The caller's key and the rate-limit headers for the response.

        Raises ``UnauthorizedError`` (401) or ``RateLimitedError`` (429)."""
        key = self.auth.authenticate(presented_key)
        limit = key.rate_limit_per_minute or self.default_limit
        try:
            decision = self.limiter.check(key.id, limit)
        except RedisError as exc:
            logger.warning("rate limiter unavailable; allowing authenticated request", extra={"error": str(exc)})
            return key, {}
        if not decision.allowed:
            raise RateLimitedError(
                f"rate limit of {limit} requests per minute exceeded; retry after {decision.retry_after_seconds} s",
                details={"limit_per_minute": limit, "retry_after_seconds": decision.retry_after_seconds},
                headers=decision.headers(),
            )
        return key, decision.headers()
