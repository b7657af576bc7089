"""boto3 clients, built lazily and once per process (a warm Lambda reuses them).

Importing this module imports nothing from boto3: cold starts only pay for the
clients a function actually uses, when it first uses them.

Where the clients point:

- ``TASKLANE_AWS_ENDPOINT`` (e.g. ``http://127.0.0.1:4566``) or ``LOCALSTACK_HOST``
  (e.g. ``127.0.0.1:4566``) set: an emulator (moto's server, which the local stack
  starts, or a real LocalStack).  The endpoint comes from ``localstack-client`` (a
  dev dependency) when it is installed, else from the variable itself; credentials
  are dummies, so nothing can reach a real account by accident.
- neither set (Lambda): the real regional endpoints with the function's role.

boto3's default session is not thread-safe while it creates clients, so creation
is serialised; the clients themselves are thread-safe and shared by the executor
threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[tuple[str, float, int], Any] = {}
_session: Any = None

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


def emulator_endpoint(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The emulator's URL when the environment asks for one, else None (real AWS)."""
    e = os.environ if env is None else env
    explicit = (e.get("TASKLANE_AWS_ENDPOINT") or "").strip()
    if explicit:
        return explicit.rstrip("/")
    host = (e.get("LOCALSTACK_HOST") or "").strip()
    if host:
        scheme = "https" if (e.get("USE_SSL") or "").lower() in {"1", "true"} else "http"
        return f"{scheme}://{host}" if "://" not in host else host
    return None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def client(service: str, *, read_timeout: float = READ_TIMEOUT, max_attempts: int = 3) -> Any:
    """A boto3 client for ``service`` (cached per service, read timeout and attempts).

    ``max_attempts`` counts the first call (botocore's standard retry mode); use 1
    for calls that must not be repeated behind the caller's back, such as a
    synchronous Lambda invoke that may already have run."""
    key = (service, round(read_timeout, 1), max_attempts)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = _build(service, read_timeout, max_attempts)
        return found


def _build(service: str, read_timeout: float, max_attempts: int) -> Any:
    global _session
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        user_agent_extra="tasklane",
    )
    endpoint = emulator_endpoint()
    if endpoint is None:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(service, region_name=region(), config=config)
    kwargs: dict[str, Any] = {
        "region_name": region(),
        "config": config,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",  # the emulator's dummy credentials
    }
    if not os.environ.get("TASKLANE_AWS_ENDPOINT"):
        try:
            from localstack_client.config import get_service_endpoint

            endpoint = get_service_endpoint(service) or endpoint
        except ImportError:  # localstack-client is a dev dependency; the variable is enough
            pass
    if _session is None:
        _session = boto3.session.Session()
    return _session.client(service, endpoint_url=endpoint, **kwargs)


def reset() -> None:
    """Forget every client (tests that switch endpoints or moto mocks)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None
