"""API key expiry over HTTP: an expired key is a 401 with a message that says so,
and a key that expires while in use stops working within the auth cache's bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.api import access
from chalicelib.container import Container
from chalicelib.services import apikeys
from tests.helpers import query, wait_for
from tests.integration.app_client import api_for, new_key

TENANT = "expiry"


def test_expired_key_is_refused_with_401(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        expired = new_key(rt, TENANT, expires_at=datetime.now(UTC) - timedelta(seconds=1))
        refused = api.get("/api/v1/tasks", key=expired)
        assert refused.status_code == 401
        assert "expired" in refused.json_body["error"]["message"]
        assert api.post("/api/v1/tasks", {"name": "noop"}, key=expired).status_code == 401
        assert query(rt.settings.database_url, "SELECT count(*) FROM tasks") == [(0,)]  # nothing accepted


def test_key_with_a_future_expiry_works_until_it_expires(rt: Container) -> None:
    with api_for(rt, TENANT) as api:
        key = new_key(rt, TENANT, expires_at=datetime.now(UTC) + timedelta(days=1))
        assert api.get("/api/v1/tasks", key=key).status_code == 200
        # It expires now (the database's clock decides): refused once the warm
        # process's cache of good keys lapses, never later than that.
        query(
            rt.settings.database_url,
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_hash = %s RETURNING id",
            apikeys.hash_key(key),
        )
        wait_for(
            lambda: api.get("/api/v1/tasks", key=key).status_code == 401,
            timeout=access._CACHE_SECONDS + 5,
            interval=0.2,
            message="the expired key to be refused",
        )
        assert api.get("/api/v1/tasks").status_code == 200  # other keys of the tenant are unaffected
