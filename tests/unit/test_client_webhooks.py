"""tasklane_client.verify_webhook against the server's own signing (chalicelib.adapters.webhooks)."""

from __future__ import annotations

import json
import time

import pytest
from tasklane_client import WebhookVerificationError, sign_webhook, verify_webhook

from chalicelib.adapters import webhooks as server

SECRET = "whsec_0123456789abcdef"
BODY = json.dumps(
    {"event": "task.completed", "task": {"id": "7b6f", "name": "noop", "status": "COMPLETED", "result": {"a": 1}}},
    separators=(",", ":"),
).encode()


def signed(body: bytes = BODY, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if at is None else at
    return {
        "Content-Type": "application/json",
        "Tasklane-Event": "task.completed",
        "Tasklane-Delivery": "d-1",
        "Tasklane-Timestamp": str(ts),
        "Tasklane-Signature": server.sign(secret, ts, body),  # what the server sends
    }


def test_a_webhook_signed_by_the_server_is_accepted_and_parsed() -> None:
    event = verify_webhook(SECRET, signed(), BODY)
    assert event.event == "task.completed" and event.task["result"] == {"a": 1} and event.delivery_id == "d-1"
    # headers are case-insensitive (WSGI/ASGI frameworks lower-case them), str bodies work
    lowered = {k.lower(): v for k, v in signed().items()}
    assert verify_webhook(SECRET, lowered, BODY.decode()).task["id"] == "7b6f"


def test_client_and_server_sign_identically() -> None:
    assert sign_webhook(SECRET, 1767225600, BODY) == server.sign(SECRET, 1767225600, BODY)
    assert server.verify(SECRET, "1767225600", BODY, sign_webhook(SECRET, 1767225600, BODY), tolerance=10**10)


def test_a_tampered_body_is_rejected() -> None:
    headers = signed()
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, headers, BODY.replace(b"COMPLETED", b"FAILED"))


def test_an_old_timestamp_is_rejected_even_when_correctly_signed() -> None:
    old = int(time.time()) - 301
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify_webhook(SECRET, signed(at=old), BODY)
    assert verify_webhook(SECRET, signed(at=old), BODY, tolerance=600).event == "task.completed"
    with pytest.raises(WebhookVerificationError):  # far future too
        verify_webhook(SECRET, signed(at=int(time.time()) + 3600), BODY)


def test_a_timestamp_changed_after_signing_is_rejected() -> None:
    headers = signed()
    headers["Tasklane-Timestamp"] = str(int(headers["Tasklane-Timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, headers, BODY)


def test_a_wrong_secret_is_rejected_and_rotation_accepts_either() -> None:
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook("another-secret", signed(), BODY)
    assert verify_webhook(["new-secret", SECRET], signed(), BODY).event == "task.completed"


@pytest.mark.parametrize("missing", ["Tasklane-Timestamp", "Tasklane-Signature"])
def test_missing_headers_are_rejected(missing: str) -> None:
    headers = signed()
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(SECRET, headers, BODY)


def test_garbage_is_rejected() -> None:
    headers = signed()
    headers["Tasklane-Timestamp"] = "soon"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, headers, BODY)
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify_webhook(SECRET, signed(b"not json"), b"not json")
    with pytest.raises(WebhookVerificationError, match="no secret"):
        verify_webhook([], signed(), BODY)


@pytest.mark.parametrize("bad", ["v1=é", "v1=\udc80", "é"])
def test_a_signature_with_non_ascii_characters_is_rejected_not_a_type_error(bad: str) -> None:
    """Frameworks decode header bytes as latin-1; hmac.compare_digest raised TypeError on
    such a str, which the documented ``except WebhookVerificationError`` did not catch."""
    headers = signed()
    headers["Tasklane-Signature"] = bad
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, headers, BODY)


def test_the_delivery_id_is_the_signed_bodys_not_the_headers() -> None:
    """A replay with another Tasklane-Delivery header must not pass a receiver's
    deduplication: the id it gets is the one the signature covers."""
    body = json.dumps({"event": "task.completed", "delivery": "d-signed", "task": {"id": "7b6f"}}).encode()
    headers = {**signed(body), "Tasklane-Delivery": "d-forged"}
    assert verify_webhook(SECRET, headers, body).delivery_id == "d-signed"
    batch = json.dumps({"event": "batch.completed", "delivery": "d-b", "batch": {"id": "b"}}).encode()
    assert verify_webhook(SECRET, {**signed(batch), "Tasklane-Delivery": "x"}, batch).delivery_id == "d-b"
