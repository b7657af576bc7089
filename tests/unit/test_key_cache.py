"""The API key cache (``chalicelib.api.access.Authenticator``): a flood of unknown keys
never evicts the tenants' own, and a key revoked or created meanwhile is looked up
again, not answered from the other cache."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from chalicelib.api import access
from chalicelib.core.errors import UnauthorizedError
from chalicelib.core.records import ApiKeyRecord, StoredKey
from chalicelib.services.apikeys import hash_key


class Keys:
    """A store that knows some keys and counts its look-ups."""

    def __init__(self, *known: str) -> None:
        self.known = {hash_key(k): k for k in known}
        self.lookups = 0

    def api_key_by_hash(self, digest: str) -> StoredKey | None:
        self.lookups += 1
        if digest not in self.known:
            return None
        record = ApiKeyRecord("id-1", "t", "n", "tl_x", None, datetime.now(UTC), None, None)
        return StoredKey(record, digest, True)


def test_a_flood_of_unknown_keys_leaves_a_known_key_cached() -> None:
    store = Keys("good-key")
    auth = access.Authenticator(store)  # type: ignore[arg-type]
    assert auth.authenticate("good-key").tenant == "t"
    for i in range(25_000):  # past 10,000 the one cache started over, the known key with it
        with pytest.raises(UnauthorizedError):
            auth.authenticate(f"random-{i}")
    before = store.lookups
    assert auth.authenticate("good-key").tenant == "t"
    assert store.lookups == before  # still cached: no look-up


def test_a_key_revoked_after_it_was_cached_is_remembered_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(access, "time", SimpleNamespace(monotonic=lambda: now[0]))
    store = Keys("good-key")
    auth = access.Authenticator(store)  # type: ignore[arg-type]
    auth.authenticate("good-key")
    store.known.clear()  # revoked
    now[0] += access._CACHE_SECONDS + 0.1  # the cached key has expired
    lookups = []
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            auth.authenticate("good-key")
        lookups.append(store.lookups)
    assert lookups == [2, 2, 2]  # one look-up finds it gone; the miss is then remembered
