"""The tenant's webhook signing secret: read (created on first use) or rotate."""

from __future__ import annotations

from chalicelib.container import Container


def webhook_secret(rt: Container, tenant: str) -> str:
    """The secret that signs this tenant's completion webhooks."""
    return rt.store.webhook_secret(tenant)


def rotate_webhook_secret(rt: Container, tenant: str, *, actor: str) -> str:
    """Replace the secret (receivers must switch to the new one: the old one stops
    verifying at once); the audit row names ``actor``, never the secret."""
    return rt.store.rotate_webhook_secret(tenant, actor=actor)
