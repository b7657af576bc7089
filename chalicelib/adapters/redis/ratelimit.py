"""Per-API-key rate limiting backed by Redis, using GCRA.

Each API key (the *subject*) gets ``limit`` requests per ``window_seconds``
(the API uses one minute). The algorithm is GCRA, the generic cell rate
algorithm: a single Redis key per subject holds the subject's *theoretical
arrival time* (TAT), and a Lua script reads and advances it in one atomic
step. A fresh subject can spend its whole limit at once (burst = ``limit``);
after that, requests are admitted at a steady ``window_seconds / limit``
interval. Unlike fixed ``INCR``/``EXPIRE`` windows, there is no window edge
at which a client can spend one window's allowance just before the boundary
and the next one just after it, getting twice the limit in an instant. Over
any interval of length ``t``, GCRA admits at most ``limit + t / interval``
requests.

The script reads the time from Redis (``TIME``), not from the calling
process, so API processes with skewed clocks still share one timeline.
Every key gets a TTL that ends when its bucket would be full again, so the
keys of idle subjects expire. Keys are named by ``Keys.api_rate`` (``keys.py``:
``{prefix}:rl:{subject}``, under the cluster hash tag), and the script only
touches the one key it is given.

Redis being down is not decided here. :meth:`RateLimiter.check` raises
``QueueError`` (redis-py's errors translated, as everywhere in this package)
and the API layer chooses what to do with it. The plan there
is to *fail open for authenticated keys only*: an authenticated request is
let through and a warning is logged, because PostgreSQL, not Redis, is the
source of truth for tasks, and submitting a task must keep working while
Redis is unavailable. Unauthenticated requests are rejected before they
reach the limiter, so failing open cannot help an anonymous flood.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chalicelib.adapters.redis.client import RedisLike, translate
from chalicelib.adapters.redis.keys import Keys

__all__ = [
    "DEFAULT_LIMIT",
    "PrepaidRateLimiter",
    "RateLimitDecision",
    "RateLimiter",
    "prepay_batch",
]

#: Default number of requests allowed per window (per minute in the API).
DEFAULT_LIMIT: Final = 100

_MICROS_PER_SECOND: Final = 1_000_000

# The GCRA script. Times are whole microseconds. The current epoch in
# microseconds (about 1.7e15) is below 2**53, so Lua's double-precision
# numbers hold every value exactly and no rounding can creep in.
_GCRA_LUA: Final = """
-- KEYS[1]: rate-limit key for one subject, holding its theoretical arrival
--          time (TAT) in whole microseconds since the Unix epoch, as a
--          decimal string. A missing key means the bucket is full.
-- ARGV[1]: emission interval, in whole microseconds: the cost of one
--          request, i.e. ceil(window / limit).
-- ARGV[2]: burst tolerance, in whole microseconds: limit * interval. This
--          is how far the TAT may run ahead of now, so a full bucket holds
--          exactly `limit` requests.
-- ARGV[3]: cost, the number of requests this call spends (>= 0).
-- Returns {allowed (1/0), remaining, reset_us, retry_after_us}.
--
-- Needs Redis >= 5. The script writes after calling TIME, which is
-- non-deterministic. That is only allowed when scripts are replicated by
-- their effects, which is the default since Redis 5 and the only mode
-- since Redis 7.

local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

-- Read the clock from Redis, not from the caller, so that every API process
-- uses the same clock whatever their own clocks say.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A TAT in the past means the bucket has been full since then. Credit for
-- idle time must not build up beyond a full bucket, so clamp it to now.
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end

local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance

if now < allow_at then
  -- Denied. Leave the key alone: denied requests cost nothing, so a client
  -- retrying in a tight loop does not push its own recovery further away.
  local remaining = math.floor((tolerance - (tat - now)) / interval)
  return {0, remaining, tat - now, allow_at - now}
end

if new_tat > now then
  -- The TTL ends when the bucket would be full again. A missing key then
  -- means the same as a full bucket, so idle subjects leave nothing behind.
  -- Format with %.0f: tostring() would keep only 14 significant digits.
  -- PX rounds up to whole milliseconds so the key never expires early.
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
             'PX', math.ceil((new_tat - now) / 1000))
end
-- A zero-cost call on an untouched subject has nothing to store. A SET
-- with PX 0 would be an error anyway.

local remaining = math.floor((tolerance - (new_tat - now)) / interval)
return {1, remaining, new_tat - now, 0}
"""


@dataclass(frozen=True)
class RateLimitDecision:
    """The result of one :meth:`RateLimiter.check` call.

    Attributes:
        allowed: Whether the request may go ahead. If it is True, its cost has
            already been taken from the subject's allowance.
        limit: Requests allowed per window, which is also the burst size.
        remaining: Requests the subject could make right now (>= 0).
        reset_seconds: Whole seconds, rounded up, until the allowance is full
            again. This is the meaning ``RateLimit-Reset`` has in the IETF
            draft: a delay, not a timestamp.
        retry_after_seconds: 0 when ``allowed``. Otherwise the whole seconds,
            rounded up, until a request of the same cost would be allowed.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def headers(self) -> dict[str, str]:
        """Return the rate-limit HTTP headers for this decision.

        The dict always has ``RateLimit-Limit``, ``RateLimit-Remaining`` and
        ``RateLimit-Reset``. ``Retry-After`` (in seconds) is added only when
        the request was denied.
        """
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


def _ceil_seconds(micros: int) -> int:
    """Round a duration in microseconds up to whole seconds, never below 0."""
    # Integer ceil division: no float rounding, so 1_000_000 µs gives 1, not 2.
    return max(0, -(-micros // _MICROS_PER_SECOND))


def _emission_interval_us(window_seconds: int, limit: int) -> int:
    """Return the time one request costs, in whole microseconds (at least 1).

    Rounding up keeps the script in integer arithmetic, and ``limit``
    intervals then span at least one window. This errs towards a rate that
    is slightly too strict (by under 1 µs per request), never too loose.
    """
    return max(1, -(-window_seconds * _MICROS_PER_SECOND // limit))


def _decision_from_reply(reply: Sequence[Any], limit: int) -> RateLimitDecision:
    """Build a decision from the script's reply.

    The reply is ``{allowed, remaining, reset_us, retry_us}``. ``limit`` is
    copied into the decision as it is.
    """
    allowed, remaining, reset_us, retry_us = (int(v) for v in reply)
    return RateLimitDecision(
        allowed=allowed == 1,
        limit=limit,
        # The script cannot give a negative value for cost <= limit. The
        # clamp is there so the headers cannot contradict the >= 0 contract.
        remaining=max(0, remaining),
        reset_seconds=_ceil_seconds(reset_us),
        retry_after_seconds=0 if allowed == 1 else max(1, _ceil_seconds(retry_us)),
    )


class RateLimiter:
    """Per-subject GCRA rate limiter. Each check is one atomic Redis script call.

    Create one per process and share it. The Lua script is registered once
    per instance. ``redis.Redis`` is thread-safe, so one instance can serve
    many threads.
    """

    def __init__(
        self,
        client: RedisLike,
        *,
        keys: Keys | None = None,
        window_seconds: int = 60,
    ) -> None:
        """Set up a limiter that works through ``client``.

        Args:
            client: A Redis client, normally ``redis.Redis``.
            keys: The key names (``Keys("tasklane")`` when not given).
            window_seconds: Length of the window that ``limit`` counts over.

        Raises:
            ValueError: If ``window_seconds`` is less than 1.
        """
        if window_seconds < 1:
            raise ValueError(f"window_seconds must be >= 1, got {window_seconds}")
        self._keys = keys or Keys()
        self._window_seconds = window_seconds
        # Only the SHA1 is sent on each call. redis-py's Script reloads the
        # script by itself when the server answers NOSCRIPT.
        self._script = client.register_script(_GCRA_LUA)

    @property
    def window_seconds(self) -> int:
        """The length of the window that limits count over, in seconds."""
        return self._window_seconds

    def key_for(self, subject: str) -> str:
        """Return the Redis key that holds ``subject``'s rate-limit state."""
        return self._keys.api_rate(subject)

    def check(self, subject: str, limit: int = DEFAULT_LIMIT, cost: int = 1) -> RateLimitDecision:
        """Try to spend ``cost`` requests of ``subject``'s allowance.

        Args:
            subject: Who is being limited, normally the API key's id.
            limit: Requests allowed per window, which is also the burst size.
                Changing it for a subject between calls takes effect at once.
            cost: How many requests this call counts as. ``cost=0`` reads the
                current state without spending anything. It is always
                allowed.

        Returns:
            The decision. If it is allowed, the cost has already been spent.
            Denied calls spend nothing.

        Raises:
            ValueError: If ``limit < 1``, ``cost < 0`` or ``cost > limit``. A
                cost larger than the burst could never be allowed.
            QueueError: Redis is unreachable, timed out or failed; see the
                module docstring.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if cost < 0 or cost > limit:
            raise ValueError(f"cost must be between 0 and limit ({limit}), got {cost}")
        interval = _emission_interval_us(self._window_seconds, limit)
        with translate():
            reply = self._script(
                keys=[self.key_for(subject)],
                args=[interval, interval * limit, cost],
            )
        return _decision_from_reply(reply, limit)


#: A subject whose limit is at least ``2 * PREPAY_DIVISOR`` per window is charged
#: ``limit // PREPAY_DIVISOR`` requests at a time (at most ``PREPAY_MAX``), and the
#: process admits the prepaid ones without asking Redis; what it has not spent after
#: ``PREPAY_SECONDS`` is dropped.  Lower limits are checked one request at a time.
PREPAY_DIVISOR: Final = 1000
PREPAY_MAX: Final = 50
PREPAY_SECONDS: Final = 1.0


def prepay_batch(limit: int) -> int:
    """How many requests one Redis call prepays for a subject with ``limit``."""
    return min(PREPAY_MAX, limit // PREPAY_DIVISOR)


def _with_remaining(decision: RateLimitDecision, remaining: int) -> RateLimitDecision:
    """``dataclasses.replace(decision, remaining=remaining)`` without its generic field
    walk (a prepaid request, nearly every request of a busy key, makes one)."""
    return RateLimitDecision(
        decision.allowed, decision.limit, remaining, decision.reset_seconds, decision.retry_after_seconds
    )


@dataclass
class _Prepaid:
    left: int
    until: float
    limit: int
    decision: RateLimitDecision  # the Redis decision that paid for them (headers)


class PrepaidRateLimiter(RateLimiter):
    """``RateLimiter`` that takes a high-limit subject's allowance from Redis in small
    batches, so most requests of a busy key cost no Redis round trip.

    It never admits more than GCRA would: every admitted request was paid for in
    Redis first.  It may refuse slightly early: a process holds at most
    ``prepay_batch(limit)`` (<= limit / 1000) unspent requests for up to
    ``PREPAY_SECONDS``.  When a batch is refused (the subject is near its limit),
    the subject is checked one request at a time, exactly, for ``PREPAY_SECONDS``.
    ``RateLimit-Remaining`` counts what Redis has left plus this process's prepaid
    ones.  One instance per process, shared by its threads.
    """

    def __init__(self, *args: Any, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._lock = threading.Lock()
        self._prepaid: dict[str, _Prepaid] = {}

    def check(self, subject: str, limit: int = DEFAULT_LIMIT, cost: int = 1) -> RateLimitDecision:
        batch = prepay_batch(limit)
        if cost != 1 or batch < 2:
            return super().check(subject, limit, cost)
        now = self._clock()
        with self._lock:
            held = self._prepaid.get(subject)
            if held is not None and now < held.until and held.limit == limit:
                if held.left > 0:
                    held.left -= 1
                    return _with_remaining(held.decision, held.decision.remaining + held.left)
                if not held.decision.allowed:  # near the limit: exact checks until it expires
                    return super().check(subject, limit)
        decision = super().check(subject, limit, batch)
        with self._lock:
            if len(self._prepaid) > 10_000:
                self._prepaid.clear()
            self._prepaid[subject] = _Prepaid(
                batch - 1 if decision.allowed else 0, now + PREPAY_SECONDS, limit, decision
            )
        if decision.allowed:
            return _with_remaining(decision, decision.remaining + batch - 1)
        return super().check(subject, limit)
