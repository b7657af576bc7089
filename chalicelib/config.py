"""Settings, read once from the environment.

Every knob is an environment variable prefixed ``TASKLANE_`` so the same code runs
in Lambda (variables from ``.chalice/config.json``) and locally (the shell).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tasklane"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# TASKLANE_QUEUE_PARTITIONS at most: one hash tag each; more spreads no further over
# the shards a deployment has, and every claim reads each partition's head.
MAX_QUEUE_PARTITIONS = 64
AWS_SWEEP_PERIOD_SECONDS = 60.0  # app.py schedules sweep at Rate(1 minute)


class ConfigError(ValueError):
    """An environment variable holds a value Tasklane cannot use."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower() or default
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan", which no comparison refuses, and "inf"
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _positive(env: dict[str, str], name: str) -> float | None:
    """An optional number > 0 (None when unset)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    value = _float(env, name, 0.0, 0.0)
    if not value > 0:  # NaN included
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class TypeLimit:
    """Per-task-type limits enforced at claim time: concurrency (tasks of the type
    leased at once across all drainers) and a token-bucket rate with a burst."""

    concurrency: int = 0  # 0: unlimited
    rate_per_second: float = 0.0  # 0: unlimited
    burst: int = 1


_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str, *, bare_unit: str = "s") -> float:
    """A rate in **events per second**, from ``"10/s"``, ``"600/min"``, ``"100/h"`` or a
    bare number (counted per ``bare_unit``: ``"s"``, ``"min"`` or ``"h"``).  The one
    rate parser: task-type limits and the CLI's API-key limits both use it."""
    count, _, unit = str(text).strip().lower().partition("/")
    try:
        value = float(count) / _PER[unit.strip() or bare_unit]
    except (ValueError, KeyError):
        raise ConfigError(f"rate must look like 10/s, 600/min or 100/h, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:  # "nan/s" passed `<= 0`, "inf" any bound
        raise ConfigError(f"rate must be a positive, finite number, got {text!r}")
    return value


def parse_task_limits(raw: str | None) -> dict[str, TypeLimit]:
    """``TASKLANE_TASK_LIMITS``: ``{"send-email": {"concurrency": 2, "rate": "10/s", "burst": 5}}``."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"TASKLANE_TASK_LIMITS is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("TASKLANE_TASK_LIMITS must be a JSON object of task name -> limits")
    return {name: parse_type_limit(spec, f"TASKLANE_TASK_LIMITS[{name!r}]") for name, spec in data.items()}


def parse_type_limit(spec: object, where: str) -> TypeLimit:
    """One type's limits, ``{"concurrency": 2, "rate": "10/s", "burst": 5}`` (each optional);
    ``where`` names the setting in error messages."""
    if not isinstance(spec, dict) or set(spec) - {"concurrency", "rate", "burst"}:
        raise ConfigError(f"{where} takes concurrency, rate and burst")
    concurrency = spec.get("concurrency", 0)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 0:
        raise ConfigError(f"{where}.concurrency must be a non-negative integer")
    try:
        rate = parse_rate(spec["rate"]) if spec.get("rate") else 0.0
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    burst = spec.get("burst", max(1, math.ceil(rate)))
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise ConfigError(f"{where}.burst must be a positive integer")
    return TypeLimit(concurrency, rate, burst)


_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_task_modules(raw: str | None) -> tuple[str, ...]:
    """``TASKLANE_TASK_MODULES``: importable module names, comma-separated."""
    names = tuple(part.strip() for part in (raw or "").split(",") if part.strip())
    bad = [n for n in names if not _MODULE_NAME.fullmatch(n)]
    if bad:
        raise ConfigError(
            f"TASKLANE_TASK_MODULES must list importable module names separated by commas"
            f" (e.g. acme_tasks,acme.billing.tasks); not a module name: {', '.join(map(repr, bad))}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"TASKLANE_TASK_MODULES names a module twice: {raw!r}")
    return names


@dataclass(frozen=True)
class Settings:
    """All of Tasklane's configuration; see the README's configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "tasklane"
    # The URL names any one node of a Redis Cluster; the client finds the others.
    redis_cluster: bool = False
    # Ready/delayed/lease sets split over this many hash tags (1 = one tag, as before).
    queue_partitions: int = 1
    port: int = 8000
    bootstrap_api_key: str | None = None
    lease_seconds: float = 30.0
    sweep_interval_seconds: float = 5.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    retry_jitter: float = 0.25
    max_snoozes: int = 100
    default_max_retries: int = 3
    default_timeout_seconds: int = 300
    drain_batch_size: int = 500  # the largest claim; chalicelib/core/batchsize.py adapts below it
    drain_batch_min: int = 10
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
    # False behind RDS Proxy (or PgBouncer in transaction mode): no server-side
    # prepared statements, which would pin a proxied connection (infra/deploy.md).
    db_prepared_statements: bool = True
    # How long a PostgreSQL connection may go without an answer from the server's host
    # (TCP: unacknowledged data, or keepalive probes) before it is given up
    # (sessions.connection_options): a host that vanished without a reset.
    db_tcp_timeout_seconds: float = 20.0
    # inline: a submit returns after its Redis push; background: after its commit, the
    # push made on a thread of its own (adapters/redis/pusher.py).  from_env picks
    # default_submit_push(); constructed directly (tests, tools) it is inline.
    submit_push: str = "inline"
    rate_limit_per_minute: int = 100
    schedule_grace_seconds: float = 120.0
    webhook_allow_private: bool = True
    webhook_max_retries: int = 5
    webhook_timeout_seconds: int = 10
    max_result_bytes: int = 262144
    # http-request may call loopback/private addresses (link-local and metadata never).
    http_request_allow_private: bool = True
    bootstrap_rate_limit_per_minute: int = 10000
    task_limits: dict[str, TypeLimit] = field(default_factory=dict)
    # Team task types (chalicelib/tasktypes/loading.py): Python modules to import, and the
    # declarations file of Lambda and HTTP targets (None: the default location, if present).
    task_modules: tuple[str, ...] = ()
    task_types_file: str | None = None
    # --- AWS (see chalicelib/awsclients.py, secrets.py, executors/aws.py) ---------------
    # Empty database_url + a secret ARN: the URL is built from the Secrets Manager secret.
    database_secret_arn: str | None = None
    # A Secrets Manager secret holding the ElastiCache AUTH token (a plain string); when
    # set, adapters.aws.secrets.with_secrets() puts it into redis_url as the password.
    redis_auth_secret_arn: str | None = None
    secret_max_age_seconds: int = 300
    aws_region: str = "us-east-1"
    s3_bucket: str | None = None
    ses_sender: str | None = None
    executor_mode: str = "inline"  # inline | lambda
    executor_function: str = "tasklane-executor"
    executor_idempotency_hours: float = 24.0
    wake_drain: str = "off"  # off | lambda
    drain_function: str = "tasklane-drain"
    drain_fanout: int = 1
    drainer_alive_seconds: float = 10.0
    fault_injection: bool = False
    # --- observability -----------------------------------------------------------------
    metrics_token: str | None = None  # the bearer token /metrics requires; unset: /metrics answers 403
    # AWS: a Secrets Manager secret holding the token instead (a plain string); when set
    # and metrics_token is not, adapters.aws.secrets.with_secrets() reads it into metrics_token.
    metrics_token_secret_arn: str | None = None
    sweep_stale_seconds: float | None = None  # None: see sweeper_stale_after

    @property
    def sweeper_stale_after(self) -> float:
        """``/health`` reports the sweeper DOWN when no sweep finished for this long:
        ``TASKLANE_SWEEP_STALE_SECONDS``, else 3 * max(sweep interval, 60 s), since in
        AWS the sweep runs once a minute whatever the local interval says."""
        if self.sweep_stale_seconds is not None:
            return self.sweep_stale_seconds
        return 3 * max(self.sweep_interval_seconds, AWS_SWEEP_PERIOD_SECONDS)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        e = dict(os.environ if env is None else env)
        secret_arn = e.get("TASKLANE_DATABASE_SECRET_ARN") or None
        return cls(
            **_connections(e, secret_arn),
            port=_int(e, "TASKLANE_PORT", 8000, 1),
            bootstrap_api_key=e.get("TASKLANE_BOOTSTRAP_API_KEY") or None,
            lease_seconds=_float(e, "TASKLANE_LEASE_SECONDS", 30.0, 0.5),
            sweep_interval_seconds=_float(e, "TASKLANE_SWEEP_INTERVAL_SECONDS", 5.0, 0.05),
            retry_base_seconds=_float(e, "TASKLANE_RETRY_BASE_SECONDS", 2.0, 0.0),
            retry_max_seconds=_float(e, "TASKLANE_RETRY_MAX_SECONDS", 300.0, 0.0),
            retry_jitter=_float(e, "TASKLANE_RETRY_JITTER", 0.25, 0.0),
            max_snoozes=_int(e, "TASKLANE_MAX_SNOOZES", 100, 0),
            default_max_retries=_int(e, "TASKLANE_DEFAULT_MAX_RETRIES", 3, 0),
            default_timeout_seconds=_int(e, "TASKLANE_DEFAULT_TIMEOUT_SECONDS", 300, 1),
            drain_batch_size=_int(e, "TASKLANE_DRAIN_BATCH_SIZE", 500, 1),
            drain_batch_min=_int(e, "TASKLANE_DRAIN_BATCH_MIN", 10, 1),
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
            rate_limit_per_minute=_int(e, "TASKLANE_RATE_LIMIT_PER_MINUTE", 100, 1),
            schedule_grace_seconds=_float(e, "TASKLANE_SCHEDULE_GRACE_SECONDS", 120.0, 0.0),
            webhook_allow_private=_bool(e, "TASKLANE_WEBHOOK_ALLOW_PRIVATE", True),
            webhook_max_retries=_int(e, "TASKLANE_WEBHOOK_MAX_RETRIES", 5, 0),
            webhook_timeout_seconds=_int(e, "TASKLANE_WEBHOOK_TIMEOUT_SECONDS", 10, 1),
            max_result_bytes=_int(e, "TASKLANE_MAX_RESULT_BYTES", 262144, 1),
            http_request_allow_private=_bool(e, "TASKLANE_HTTP_REQUEST_ALLOW_PRIVATE", True),
            bootstrap_rate_limit_per_minute=_int(e, "TASKLANE_BOOTSTRAP_RATE_LIMIT_PER_MINUTE", 10000, 1),
            task_limits=parse_task_limits(e.get("TASKLANE_TASK_LIMITS")),
            task_modules=parse_task_modules(e.get("TASKLANE_TASK_MODULES")),
            task_types_file=(e.get("TASKLANE_TASK_TYPES_FILE") or "").strip() or None,
            database_secret_arn=secret_arn,
            redis_auth_secret_arn=e.get("TASKLANE_REDIS_AUTH_SECRET_ARN") or None,
            secret_max_age_seconds=_int(e, "TASKLANE_SECRET_MAX_AGE_SECONDS", 300, 0),
            aws_region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
            s3_bucket=e.get("TASKLANE_S3_BUCKET") or None,
            ses_sender=e.get("TASKLANE_SES_SENDER") or None,
            executor_mode=_choice(e, "TASKLANE_EXECUTOR_MODE", "inline", ("inline", "lambda")),
            executor_function=e.get("TASKLANE_EXECUTOR_FUNCTION") or "tasklane-executor",
            executor_idempotency_hours=_float(e, "TASKLANE_EXECUTOR_IDEMPOTENCY_HOURS", 24.0, 0.01),
            wake_drain=_choice(e, "TASKLANE_WAKE_DRAIN", "off", ("off", "lambda")),
            drain_function=e.get("TASKLANE_DRAIN_FUNCTION") or "tasklane-drain",
            drain_fanout=_int(e, "TASKLANE_DRAIN_FANOUT", 1, 1),
            drainer_alive_seconds=_float(e, "TASKLANE_DRAINER_ALIVE_SECONDS", 10.0, 0.5),
            fault_injection=_bool(e, "TASKLANE_FAULT_INJECTION", False),
            metrics_token=e.get("TASKLANE_METRICS_TOKEN") or None,
            metrics_token_secret_arn=e.get("TASKLANE_METRICS_TOKEN_SECRET_ARN") or None,
            sweep_stale_seconds=_positive(e, "TASKLANE_SWEEP_STALE_SECONDS"),
        )


def _connections(e: dict[str, str], secret_arn: str | None) -> dict[str, Any]:
    """The PostgreSQL and Redis settings of ``Settings.from_env``."""
    return {
        # TASKLANE_DATABASE_URL wins; else the secret (adapters.aws.secrets resolves it); else the default.
        "database_url": e.get("TASKLANE_DATABASE_URL") or ("" if secret_arn else DEFAULT_DATABASE_URL),
        "pool_max_size": _int(e, "TASKLANE_POOL_MAX_SIZE", 4, 1),
        "db_prepared_statements": _bool(e, "TASKLANE_DB_PREPARED_STATEMENTS", True),
        "db_tcp_timeout_seconds": _float(e, "TASKLANE_DB_TCP_TIMEOUT_SECONDS", 20.0, 1.0),
        "redis_url": e.get("TASKLANE_REDIS_URL") or DEFAULT_REDIS_URL,
        "redis_prefix": e.get("TASKLANE_REDIS_PREFIX") or "tasklane",
        "redis_cluster": _bool(e, "TASKLANE_REDIS_CLUSTER", False),
        "queue_partitions": _int(e, "TASKLANE_QUEUE_PARTITIONS", 1, 1, MAX_QUEUE_PARTITIONS),
        "submit_push": _choice(e, "TASKLANE_SUBMIT_PUSH", default_submit_push(e), ("inline", "background")),
    }


def default_submit_push(env: Mapping[str, str]) -> str:
    """``background`` in a long-running process; ``inline`` in Lambda (it sets
    ``AWS_LAMBDA_FUNCTION_NAME``), whose execution environment is frozen once the
    handler returns, background thread and all."""
    return "inline" if env.get("AWS_LAMBDA_FUNCTION_NAME") else "background"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached: a warm Lambda reads the environment once)."""
    return Settings.from_env()
