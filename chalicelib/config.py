"""Settings, read once from the environment.

Every knob is an environment variable prefixed ``TASKLANE_`` so the same code runs
in Lambda (variables from ``.chalice/config.json``) and locally (the shell).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tasklane"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """An environment variable holds a value Tasklane cannot use."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """All of Tasklane's configuration; see the README's configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "tasklane"
    port: int = 8000
    bootstrap_api_key: str | None = None
    lease_seconds: float = 30.0
    sweep_interval_seconds: float = 5.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    retry_jitter: float = 0.25
    default_max_retries: int = 3
    default_timeout_seconds: int = 300
    drain_batch_size: int = 100
    drainers: int = 2
    executor_concurrency: int = 8
    drain_idle_wait_seconds: float = 1.0
    drain_margin_seconds: float = 5.0
    drain_idle_exit_seconds: float = 20.0
    priority_aging_seconds: int = 300
    retention_days: float = 7.0
    idempotency_window_hours: float = 24.0
    max_payload_bytes: int = 262144
    max_batch_items: int = 500
    pool_max_size: int = 4
    rate_limit_per_minute: int = 100
    schedule_grace_seconds: float = 120.0
    bootstrap_rate_limit_per_minute: int = 10000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        e = dict(os.environ if env is None else env)
        return cls(
            database_url=e.get("TASKLANE_DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=e.get("TASKLANE_REDIS_URL") or DEFAULT_REDIS_URL,
            redis_prefix=e.get("TASKLANE_REDIS_PREFIX") or "tasklane",
            port=_int(e, "TASKLANE_PORT", 8000, 1),
            bootstrap_api_key=e.get("TASKLANE_BOOTSTRAP_API_KEY") or None,
            lease_seconds=_float(e, "TASKLANE_LEASE_SECONDS", 30.0, 0.5),
            sweep_interval_seconds=_float(e, "TASKLANE_SWEEP_INTERVAL_SECONDS", 5.0, 0.05),
            retry_base_seconds=_float(e, "TASKLANE_RETRY_BASE_SECONDS", 2.0, 0.0),
            retry_max_seconds=_float(e, "TASKLANE_RETRY_MAX_SECONDS", 300.0, 0.0),
            retry_jitter=_float(e, "TASKLANE_RETRY_JITTER", 0.25, 0.0),
            default_max_retries=_int(e, "TASKLANE_DEFAULT_MAX_RETRIES", 3, 0),
            default_timeout_seconds=_int(e, "TASKLANE_DEFAULT_TIMEOUT_SECONDS", 300, 1),
            drain_batch_size=_int(e, "TASKLANE_DRAIN_BATCH_SIZE", 100, 1),
            drainers=_int(e, "TASKLANE_DRAINERS", 2, 0),
            executor_concurrency=_int(e, "TASKLANE_EXECUTOR_CONCURRENCY", 8, 1),
            drain_idle_wait_seconds=_float(e, "TASKLANE_DRAIN_IDLE_WAIT_SECONDS", 1.0, 0.01),
            drain_margin_seconds=_float(e, "TASKLANE_DRAIN_MARGIN_SECONDS", 5.0, 0.0),
            drain_idle_exit_seconds=_float(e, "TASKLANE_DRAIN_IDLE_EXIT_SECONDS", 20.0, 0.0),
            priority_aging_seconds=_int(e, "TASKLANE_PRIORITY_AGING_SECONDS", 300, 0),
            retention_days=_float(e, "TASKLANE_RETENTION_DAYS", 7.0, 0.0),
            idempotency_window_hours=_float(e, "TASKLANE_IDEMPOTENCY_WINDOW_HOURS", 24.0, 0.0),
            max_payload_bytes=_int(e, "TASKLANE_MAX_PAYLOAD_BYTES", 262144, 1),
            max_batch_items=_int(e, "TASKLANE_MAX_BATCH_ITEMS", 500, 1),
            pool_max_size=_int(e, "TASKLANE_POOL_MAX_SIZE", 4, 1),
            rate_limit_per_minute=_int(e, "TASKLANE_RATE_LIMIT_PER_MINUTE", 100, 1),
            schedule_grace_seconds=_float(e, "TASKLANE_SCHEDULE_GRACE_SECONDS", 120.0, 0.0),
            bootstrap_rate_limit_per_minute=_int(e, "TASKLANE_BOOTSTRAP_RATE_LIMIT_PER_MINUTE", 10000, 1),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached: a warm Lambda reads the environment once)."""
    return Settings.from_env()
