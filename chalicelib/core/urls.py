"""What an outbound URL may look like (callback URLs, ``http-request``): pure syntax checks.

Only what can be decided from the text lives here.  Where a host name actually
points is decided when the call is made (``chalicelib.adapters.outbound_http``
resolves every hop once, checks the address and connects to it), since DNS can
change between submit and delivery.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from chalicelib.core.errors import PayloadError

MAX_CALLBACK_URL = 2000
# http(s), a host name or IPv4 address, a valid port, and only RFC 3986 characters
# after it (percent-encode anything else).  No \s or \S: Python's and JSON Schema's
# (ECMA) regex dialects disagree on what whitespace is, and /openapi.json publishes
# this same pattern, so clients and the API agree.
# A host is dot-separated labels of letters, digits and inner hyphens (RFC 1123), with an
# optional final dot; a port is 1 to 65535 (0 cannot be connected to).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = _LABEL + r"(?:\." + _LABEL + r")*\.?"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
HTTP_URL_PATTERN = r"^https?://" + _HOST + r"(:" + _PORT + r")?(/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*)?$"
MAX_HOST = 253
CALLBACK_URL_PATTERN = HTTP_URL_PATTERN
# A last label of digits (or 0x...) makes the host an IPv4 literal in one of the
# forms resolvers accept (127.1, 0177.0.0.1, 2130706433); no top-level domain is numeric.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Raise ``PayloadError`` unless ``url`` is an absolute http(s) URL without credentials;
    with ``allow_private`` False, also unless its host can be public (``localhost``
    and loopback, private or link-local IP literals are refused here, at submit)."""
    if len(url) > MAX_CALLBACK_URL:
        raise PayloadError(f"must be at most {MAX_CALLBACK_URL} characters")
    if not re.fullmatch(CALLBACK_URL_PATTERN, url):
        raise PayloadError(
            "must be an http:// or https:// URL with a host name (letters, digits, inner hyphens, dots), a port"
            " from 1 to 65535 and only RFC 3986 characters"
            " (percent-encode others)"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on an invalid port
    except ValueError as exc:
        raise PayloadError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise PayloadError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise PayloadError("has no host")
    if len(parts.hostname.rstrip(".")) > MAX_HOST:
        raise PayloadError(f"has a host name longer than {MAX_HOST} characters")
    if parts.username or parts.password:
        raise PayloadError("must not carry credentials; sign with the webhook secret instead")
    if not allow_private:
        refuse_non_public_literal(parts.hostname)


def refuse_non_public_literal(host: str) -> None:
    """Raise ``PayloadError`` when ``host`` is written as a non-public address or ``localhost``."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise PayloadError(f"host {host!r} is this machine; refused here")
    if not _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        return
    try:
        address = ipaddress.IPv4Address(name)
    except ValueError:
        raise PayloadError(f"host {host!r}: write IPv4 addresses as four decimal numbers") from None
    if not address.is_global:
        raise PayloadError(f"host {host!r} is a non-public address; refused here")
