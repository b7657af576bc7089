"""Secrets: the database URL in AWS comes from Secrets Manager.

The infra stack's secret (``tasklane/<stage>/database``, attached to the RDS
instance) holds ``username``, ``password``, ``host``, ``port``, ``dbname`` and
``engine``.  ``database_url`` turns it into
``postgresql://user:pass@host:port/dbname?sslmode=require`` (RDS: TLS required).

Precedence: ``TASKLANE_DATABASE_URL`` wins (local runs, tests); else the secret
named by ``TASKLANE_DATABASE_SECRET_ARN``; else the local default.  The secret is
read through Powertools' parameters utility, which caches it for
``TASKLANE_SECRET_MAX_AGE_SECONDS`` (default 300); the ``Container`` is built once
per process anyway, so a warm Lambda reads it once and keeps its connections.

Plain-string secrets (no JSON): the ElastiCache AUTH token named by
``TASKLANE_REDIS_AUTH_SECRET_ARN`` (``redis_url`` puts it into the Redis URL as the
password) and the ``/metrics`` bearer token named by
``TASKLANE_METRICS_TOKEN_SECRET_ARN`` (``with_secrets`` puts it into ``metrics_token``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from chalicelib.config import DEFAULT_DATABASE_URL, ConfigError, Settings

_lock = threading.Lock()
_provider: Any = None

REQUIRED_KEYS = ("username", "host")  # RDS secrets always have a password; a local trust setup may not


def database_url(settings: Settings) -> str:
    """The PostgreSQL URL the store should use (see the module docstring)."""
    if settings.database_url:
        return settings.database_url
    if settings.database_secret_arn:
        secret = read_secret(settings.database_secret_arn, max_age=settings.secret_max_age_seconds)
        return url_from_secret(secret)
    return DEFAULT_DATABASE_URL


def redis_url(settings: Settings) -> str:
    """``settings.redis_url`` with the AUTH token from ``redis_auth_secret_arn`` as its
    password (``rediss://:token@host:port/0``); a URL that already has one is kept."""
    parts = urlsplit(settings.redis_url)
    if not settings.redis_auth_secret_arn or parts.password:
        return settings.redis_url
    token = read_secret_string(settings.redis_auth_secret_arn, max_age=settings.secret_max_age_seconds)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f":{quote(token, safe='')}@{host}"))


def with_secrets(settings: Settings) -> Settings:
    """``settings`` with every secret it names resolved: the Redis AUTH token and the
    ``/metrics`` token (a plain ``TASKLANE_METRICS_TOKEN`` wins).  The container
    applies it once per process; config itself does no I/O."""
    if settings.redis_auth_secret_arn:
        settings = replace(settings, redis_url=redis_url(settings))
    if settings.metrics_token is None and settings.metrics_token_secret_arn:
        token = read_secret_string(settings.metrics_token_secret_arn, max_age=settings.secret_max_age_seconds)
        settings = replace(settings, metrics_token=token)
    return settings


def url_from_secret(secret: dict[str, Any]) -> str:
    """``postgresql://user:pass@host:port/dbname?sslmode=require`` from an RDS secret."""
    missing = [k for k in REQUIRED_KEYS if not secret.get(k)]
    if missing:
        raise ConfigError(f"the database secret lacks {', '.join(missing)}")
    engine = str(secret.get("engine") or "postgres")
    if not engine.startswith("postgres"):
        raise ConfigError(f"the database secret is for engine {engine!r}, not PostgreSQL")
    user = quote(str(secret["username"]), safe="")
    password = quote(str(secret.get("password") or ""), safe="")
    credentials = f"{user}:{password}" if password else user
    host = str(secret["host"])
    port = int(secret.get("port") or 5432)
    dbname = quote(str(secret.get("dbname") or "tasklane"), safe="")
    return f"postgresql://{credentials}@{host}:{port}/{dbname}?sslmode=require"


def read_secret(secret_id: str, *, max_age: int = 300) -> dict[str, Any]:
    """A JSON secret from Secrets Manager, cached for ``max_age`` seconds (Powertools)."""
    value = _secrets_provider().get(secret_id, max_age=max_age, transform="json")
    if isinstance(value, (str, bytes)):  # transform="json" normally returns a dict
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ConfigError(f"secret {secret_id!r} is not a JSON object")
    return value


def read_secret_string(secret_id: str, *, max_age: int = 300) -> str:
    """A plain-string secret from Secrets Manager, cached for ``max_age`` seconds."""
    value = _secrets_provider().get(secret_id, max_age=max_age)
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value:
        raise ConfigError(f"secret {secret_id!r} is empty or not a string")
    return value


def _secrets_provider() -> Any:
    global _provider
    with _lock:
        if _provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            from chalicelib.adapters.aws import clients as awsclients

            _provider = SecretsProvider(boto3_client=awsclients.client("secretsmanager"))
        return _provider


def reset() -> None:
    """Forget the provider and its cache (tests)."""
    global _provider
    with _lock:
        _provider = None
