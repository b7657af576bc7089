"""The tenant's webhook signing secret: read (created on first use) or rotate."""

from __future__ import annotations

from chalicelib.container import Container


def webhook_secret(rt: Container, tenant: str, *, rotate: bool = False) -> str:
    """The secret that signs this tenant's completion webhooks; ``rotate`` replaces it
    (receivers must switch to the new one: the old one stops verifying at once)."""
    return rt.store.rotate_webhook_secret(tenant) if rotate else rt.store.webhook_secret(tenant)
