"""Where the boto3 clients point, how the database URL is built from the RDS secret,
and the per-task log keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from chalicelib.adapters.aws import clients as awsclients
from chalicelib.adapters.aws.secrets import database_url, url_from_secret
from chalicelib.config import ConfigError, Settings
from chalicelib.observability.log import logger
from chalicelib.observability.powertools import task_log_context
from tools.devstack import emulator


def test_the_emulator_endpoint_comes_from_the_environment() -> None:
    assert awsclients.emulator_endpoint({}) is None  # Lambda: the real endpoints
    assert awsclients.emulator_endpoint({"LOCALSTACK_HOST": "127.0.0.1:4566"}) == "http://127.0.0.1:4566"
    both = {"LOCALSTACK_HOST": "127.0.0.1:4566", "TASKLANE_AWS_ENDPOINT": "http://h:1/"}
    assert awsclients.emulator_endpoint(both) == "http://h:1"


def test_clients_are_built_once_and_point_at_localstack_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLANE_AWS_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.1:45999")
    awsclients.reset()
    try:
        s3 = awsclients.client("s3")
        assert awsclients.client("s3") is s3
        assert s3.meta.endpoint_url == "http://127.0.0.1:45999"  # via localstack-client
        assert awsclients.client("lambda", read_timeout=60, max_attempts=1) is not awsclients.client("lambda")
        assert awsclients.client("lambda", read_timeout=60, max_attempts=1).meta.config.read_timeout == 60
    finally:
        awsclients.reset()


def test_url_from_the_rds_secret() -> None:
    secret: dict[str, Any] = {
        "username": "tasklane",
        "password": "a b@c:d/e",
        "host": "tasklane-dev.abc.eu-west-1.rds.amazonaws.com",
        "port": 5432,
        "dbname": "tasklane",
        "engine": "postgres",
    }
    assert url_from_secret(secret) == (
        "postgresql://tasklane:a%20b%40c%3Ad%2Fe@tasklane-dev.abc.eu-west-1.rds.amazonaws.com:5432/tasklane"
        "?sslmode=require"
    )
    with pytest.raises(ConfigError, match="host"):
        url_from_secret({"username": "u", "password": "p"})
    with pytest.raises(ConfigError, match="mysql"):
        url_from_secret({**secret, "engine": "mysql"})


def test_the_environment_url_wins_and_the_default_remains() -> None:
    assert database_url(Settings(database_url="postgresql://x@h/d", database_secret_arn="arn")) == "postgresql://x@h/d"
    assert database_url(Settings.from_env({})) == Settings().database_url


def test_the_seeded_secret_mirrors_a_database_url() -> None:
    assert emulator.database_secret("postgresql://u:p%40w@db:6543/tl") == {
        "username": "u",
        "password": "p@w",
        "host": "db",
        "port": 6543,
        "dbname": "tl",
        "engine": "postgres",
    }


def test_task_log_context_puts_the_task_on_every_line() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logger.registered_formatter.format(record))

    handler = Collect()
    logger._logger.addHandler(handler)
    try:
        with task_log_context("t-9", "send-email", "acme", 3):
            logger.info("sending")
        logger.info("between tasks")
    finally:
        logger._logger.removeHandler(handler)
    assert '"task_id":"t-9"' in lines[0] and '"tenant":"acme"' in lines[0] and '"attempt":3' in lines[0]
    assert "task_id" not in lines[1]


class _FakeSecrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str, max_age: int = 300, transform: str | None = None) -> str:
        return self.values[name]


def test_the_redis_auth_token_becomes_the_urls_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.adapters.aws import secrets

    monkeypatch.setattr(secrets, "_secrets_provider", lambda: _FakeSecrets({"arn:redis": "t0k/en"}))
    url = "rediss://master.x.cache.amazonaws.com:6379/0"
    with_arn = Settings(redis_url=url, redis_auth_secret_arn="arn:redis")
    assert secrets.redis_url(with_arn) == "rediss://:t0k%2Fen@master.x.cache.amazonaws.com:6379/0"
    assert secrets.redis_url(Settings(redis_url=url)) == url  # no secret: unchanged
    has_password = Settings(redis_url="redis://:p@h:6379/0", redis_auth_secret_arn="arn:redis")
    assert secrets.redis_url(has_password) == "redis://:p@h:6379/0"
    env = {"TASKLANE_REDIS_URL": url, "TASKLANE_REDIS_AUTH_SECRET_ARN": "arn:redis"}
    assert Settings.from_env(env).redis_auth_secret_arn == "arn:redis"


def test_the_metrics_token_can_come_from_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.adapters.aws import secrets

    monkeypatch.setattr(secrets, "_secrets_provider", lambda: _FakeSecrets({"arn:metrics": "s3cret"}))
    named = Settings.from_env({"TASKLANE_METRICS_TOKEN_SECRET_ARN": "arn:metrics"})
    assert named.metrics_token is None  # config reads the environment only; the secret is I/O
    assert secrets.with_secrets(named).metrics_token == "s3cret"
    both = {"TASKLANE_METRICS_TOKEN": "plain", "TASKLANE_METRICS_TOKEN_SECRET_ARN": "arn:metrics"}
    assert secrets.with_secrets(Settings.from_env(both)).metrics_token == "plain"
    assert secrets.with_secrets(Settings()).metrics_token is None
