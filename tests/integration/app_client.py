"""Chalice's test client (``chalice.test.Client``) on the real app, wired to a test
runtime: the HTTP layer exactly as Lambda runs it, without a server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from chalice.test import Client

from chalicelib import container
from chalicelib.api import access
from chalicelib.container import Container
from chalicelib.services.apikeys import create_key


class Api:
    """A few calls over Chalice's test client with one API key."""

    def __init__(self, client: Client, key: str) -> None:
        self.client = client
        self.key = key

    def _headers(self, key: str | None) -> dict[str, str]:
        return {"X-API-Key": key or self.key, "Content-Type": "application/json"}

    def get(self, path: str, *, key: str | None = None) -> Any:
        return self.client.http.get(path, headers=self._headers(key))

    def post(self, path: str, body: Any, *, key: str | None = None) -> Any:
        return self.client.http.post(path, headers=self._headers(key), body=json.dumps(body))


def new_key(rt: Container, tenant: str, *, expires_at: datetime | None = None) -> str:
    secret, _ = create_key(rt.store, tenant, actor="cli:test", name="test", expires_at=expires_at)
    return secret


@contextmanager
def api_for(rt: Container, tenant: str) -> Iterator[Api]:
    """The app serving ``rt`` (as the process's container), with a fresh key of
    ``tenant``; the module-level state the routes cache is reset on both sides."""
    container._runtime = rt
    access._access = None  # its key cache must not carry over from another test
    try:
        with Client(_app(), stage_name="local") as client:
            yield Api(client, new_key(rt, tenant))
    finally:
        container._runtime = None
        access._access = None


def _app() -> Any:
    import app as tasklane_app

    return tasklane_app.app
