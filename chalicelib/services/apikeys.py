"""API keys: random, shown once, stored as a SHA-256 hash, scoped to a tenant.

A key is ``tl_`` plus 32 random bytes (URL-safe base64), so hashing it without a
salt is safe: nobody can brute-force 256 bits.  Lookups go by hash (an index
probe); the API layer (``chalicelib.api.access``) resolves a presented key.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from chalicelib.core.audit import key_actor
from chalicelib.core.errors import ValidationError

if TYPE_CHECKING:
    # Annotations only: the route modules import this module (ApiKey) at every cold
    # start; the store and its records come with the first request that needs them.
    from chalicelib.adapters.postgres.store import Store
    from chalicelib.core.records import ApiKeyRecord

KEY_PREFIX = "tl_"
_DISPLAY_CHARS = 11  # "tl_" + 8 characters: enough to recognise a key in a list


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    name: str
    key_prefix: str
    rate_limit_per_minute: int | None

    @property
    def actor(self) -> str:
        """Who this key's changes are recorded as (task events, the audit log)."""
        return key_actor(self.id)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(
    store: Store,
    tenant: str,
    *,
    actor: str,
    name: str = "",
    rate_limit_per_minute: int | None = None,
    expires_at: datetime | None = None,
    key: str | None = None,
) -> tuple[str, ApiKeyRecord]:
    """Create a key for ``tenant``; returns ``(secret, record)``.  The secret is not
    stored and cannot be shown again.  ``key`` imports a chosen secret (bootstrap).
    The key and its audit row (by ``actor``) are written together."""
    if not tenant or len(tenant) > 100:
        raise ValidationError("tenant must be 1 to 100 characters")
    secret = key or new_key()
    if len(secret) < 16:
        raise ValidationError("an API key must be at least 16 characters long")
    from chalicelib.core.records import NewApiKey

    new = NewApiKey(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name=name,
        key_prefix=secret[:_DISPLAY_CHARS],
        key_hash=hash_key(secret),
        rate_limit_per_minute=rate_limit_per_minute,
        expires_at=expires_at,
    )
    record = store.insert_api_key(new, actor=actor)
    if record is None:
        raise ValidationError("that key already exists")
    return secret, record


def ensure_key(store: Store, key: str, tenant: str = "default", *, rate_limit_per_minute: int | None = None) -> None:
    """Make sure ``key`` exists (the local stack's ``TASKLANE_BOOTSTRAP_API_KEY``)."""
    if store.api_key_by_hash(hash_key(key)) is None:
        try:
            create_key(
                store, tenant, actor="bootstrap", name="bootstrap", key=key, rate_limit_per_minute=rate_limit_per_minute
            )
        except ValidationError:
            pass  # created concurrently by another process
