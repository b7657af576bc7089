"""Outbound HTTP for completion webhooks and the ``http-request`` task type.

One urllib3 pool manager per process and one address guard, so both callers
follow the same rules (README, "Outbound HTTP"):

- Every hop's host is resolved once; every address it resolves to must pass the
  guard, and the connection goes to the first of them: the checked address, with
  no second lookup, so DNS cannot change the answer between check and connect
  (rebinding).  TLS still verifies the certificate against the host name.
- Always refused: link-local addresses (169.254.0.0/16 and fe80::/10: the EC2
  metadata service 169.254.169.254, the container credentials endpoint
  169.254.170.2), the metadata service's IPv6 range fd00:ec2::/64, and inside a
  Lambda function (``AWS_LAMBDA_RUNTIME_API`` set) every loopback address: all
  loopback serves there is the runtime and extensions APIs.
- Refused unless ``allow_private``: any address that is not globally routable
  (loopback, RFC 1918, CGNAT, unique-local, unspecified, ...).
- IPv6 addresses that carry an IPv4 address (mapped, compatible, translated, 6to4,
  NAT64) are judged by it.
- Redirects are followed only when the caller asks (``max_redirects``), each hop
  through the same guard; credentials headers are dropped when the origin changes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from chalicelib.adapters.exchange_deadline import Deadline, connection_classes
from chalicelib.core.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses, in preference order

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Dropped when a redirect leaves the origin the caller addressed.
ORIGIN_BOUND_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "host"})
_METADATA_V6 = ipaddress.ip_network("fd00:ec2::/64")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IPv6 forms that carry an IPv4 address in their last 32 bits besides mapped, 6to4 and
# NAT64: IPv4-compatible (::a.b.c.d, deprecated) and IPv4-translated (::ffff:0:a.b.c.d).
_LOW_32 = (ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))
# Not global, whatever this Python's ipaddress says of them (older releases call them
# global): local-use NAT64 (RFC 8215) and site-local (deprecated, RFC 3879).
_NOT_GLOBAL = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("fec0::/10"))


class RefusedTarget(PermanentError):
    """The URL's host resolves to an address outbound calls may not reach."""


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RetryableError(f"cannot resolve {host!r}: {exc}") from None
    found: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 zone index is not part of the address
        if address not in found:
            found.append(address)
    return found


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64 or (any(address in n for n in _LOW_32) and int(address) > 1):  # not :: or ::1
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class AddressGuard:
    """Which addresses an outbound call may connect to."""

    allow_private: bool
    in_lambda: bool = False
    resolve: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_env(cls, *, allow_private: bool, resolve: Resolver = system_resolver) -> AddressGuard:
        return cls(allow_private, in_lambda=bool(os.environ.get("AWS_LAMBDA_RUNTIME_API")), resolve=resolve)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None when it may be reached."""
        inner = _embedded_ipv4(address)
        if inner.is_link_local or inner in _METADATA_V6:
            return "a link-local or metadata address (instance and container credentials live there)"
        if self.in_lambda and (inner.is_loopback or inner.is_unspecified):
            return "loopback inside Lambda (the runtime and extensions APIs)"
        if not self.allow_private and (not inner.is_global or any(inner in n for n in _NOT_GLOBAL)):
            return "not a public address (set the allow-private setting to reach private ranges)"
        return None

    def check(self, host: str, port: int) -> str:
        """Resolve ``host`` once and return the address to connect to; raise
        ``RefusedTarget`` if any of its addresses is refused."""
        addresses = self.resolve(host, port)
        if not addresses:
            raise RetryableError(f"{host!r} resolves to no address")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise RefusedTarget(f"refusing {host!r}: the resolver returned {text!r}") from None
            why = self.refusal(address)
            if why is not None:
                raise RefusedTarget(f"refusing to call {host!r}: it resolves to {address}, {why}")
        return addresses[0]


@dataclass(frozen=True)
class Hop:
    """One request of an exchange: where it goes and which checked address it connects to."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # the request target: path and query
    address: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host.lower(), self.port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def plan_hop(url: str, guard: AddressGuard) -> Hop:
    """Parse ``url`` (http or https, a host, no credentials) and check its address."""
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        parsed = parse_url(url.strip())
    except LocationParseError as exc:
        raise PermanentError(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise PermanentError(f"only http:// and https:// URLs with a host are allowed, not {url[:200]!r}")
    if parsed.auth:
        raise PermanentError("URLs must not carry credentials")
    host = parsed.host.strip("[]")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = guard.check(host, port)
    return Hop(url, parsed.scheme, host, port, parsed.request_uri, address)


@dataclass
class Exchange:
    """The final response (body not read yet: read it, then ``release()``) and how it was reached."""

    response: BaseHTTPResponse
    url: str
    redirects: int
    deadline: Deadline  # the exchange's; ended by release

    @property
    def status(self) -> int:
        return int(self.response.status)

    def release(self) -> None:
        """Give the connection back: to the pool when the body was read to its end,
        else closed (an unread rest must not be taken for the next answer)."""
        release(self.response)
        self.deadline.end()

    def discard(self, limit: int = 65536) -> None:
        """Read and drop up to ``limit`` bytes of the body (so the connection can be
        reused), then release."""
        try:
            discard(self.response, limit)
        finally:
            self.deadline.end()

    def read_body(self, limit: int, where: str) -> bytes:
        """Up to ``limit + 1`` bytes of the body (one more than kept, so the caller can
        tell it was cut), then release.  A body that breaks off mid-read, or that the
        exchange's deadline cut short, is a ``RetryableError``: the far side may answer
        whole, and in time, next time."""
        from urllib3.exceptions import HTTPError

        late = RetryableError(f"{where}: the answer did not arrive within the call's time")
        try:
            data = self.response.read(limit + 1, decode_content=True) or b""
        except (HTTPError, OSError) as exc:
            if self.deadline.expired:
                raise late from exc
            raise RetryableError(f"{where}: reading the answer failed: {exc}") from exc
        finally:
            self.release()
        if self.deadline.expired:
            raise late
        return data


def release(response: BaseHTTPResponse) -> None:
    if not response.closed:
        response.close()
    response.release_conn()


def discard(response: BaseHTTPResponse, limit: int = 65536) -> None:
    from urllib3.exceptions import HTTPError

    try:
        response.read(limit)
    except (HTTPError, OSError):
        pass  # the connection is closed below
    release(response)


def with_trace(headers: Mapping[str, str], trace: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` plus the trace headers it does not name already (case-insensitively)."""
    sent = dict(headers)
    if trace:
        named = {k.lower() for k in sent}
        sent.update({k: v for k, v in trace.items() if k.lower() not in named})
    return sent


class OutboundHttp:
    """One connection pool manager for every outbound call, built on first use."""

    def __init__(self, manager: Any = None) -> None:
        self._manager = manager
        self._lock = threading.Lock()

    def manager(self) -> Any:
        with self._lock:
            if self._manager is None:
                import urllib3

                self._manager = urllib3.PoolManager(num_pools=50, maxsize=8, retries=False)
                http_pool, https_pool = connection_classes()  # each exchange's deadline holds
                self._manager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}
            return self._manager

    def request(
        self,
        method: str,
        url: str,
        *,
        guard: AddressGuard,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
        max_redirects: int = 0,
        trace: Mapping[str, str] | None = None,
    ) -> Exchange:
        """Send ``method url``, following up to ``max_redirects`` redirects (GET/HEAD only);
        ``timeout`` bounds the whole exchange.  A 3xx beyond the limit raises ``PermanentError``;
        with ``max_redirects=0`` a 3xx is returned like any answer.

        ``trace``: the task's trace headers (``X-Amzn-Trace-Id``, ``traceparent``: see
        ``TaskContext.trace_headers``), sent on every hop so the callee joins the task's
        trace; a header of the same name in ``headers`` (the caller's choice) wins."""
        deadline = time.monotonic() + timeout
        sent = with_trace(headers or {}, trace)
        hop = plan_hop(url, guard)
        watch = Deadline(deadline)  # a server that drips its answer cannot hold the call longer
        try:
            for redirects in range(max_redirects + 1):
                with watch.serving():
                    response = self._send(method, hop, sent, body, deadline, watch)
                location = response.headers.get("location")
                if max_redirects == 0 or response.status not in REDIRECT_STATUSES or not location:
                    return Exchange(response, hop.url, redirects, watch)
                with watch.serving():
                    discard(response)
                if redirects == max_redirects:
                    break
                following = plan_hop(urljoin(hop.url, location), guard)
                if following.origin != hop.origin:
                    sent = {k: v for k, v in sent.items() if k.lower() not in ORIGIN_BOUND_HEADERS}
                hop = following
            raise PermanentError(f"{method} {url} redirected more than {max_redirects} times")
        except BaseException:
            watch.end()  # no Exchange to end it
            raise

    def _send(
        self, method: str, hop: Hop, headers: dict[str, str], body: bytes | None, deadline: float, watch: Deadline
    ) -> BaseHTTPResponse:
        import urllib3
        from urllib3.exceptions import HTTPError, LocationParseError, ProtocolError, TimeoutError

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RetryableError(f"{method} {hop.url} timed out (redirects used up the time)")
        pool_kwargs = {"assert_hostname": hop.host, "server_hostname": hop.host} if hop.scheme == "https" else None
        pool = self.manager().connection_from_host(hop.address, hop.port, hop.scheme, pool_kwargs=pool_kwargs)
        if not any(k.lower() == "host" for k in headers):
            headers = {**headers, "Host": hop.host_header}
        try:
            response: BaseHTTPResponse = pool.urlopen(
                method,
                hop.target,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=min(remaining, 10.0), read=remaining),
            )
        except (ValueError, LocationParseError) as exc:  # e.g. a header value with a newline
            raise PermanentError(f"invalid request: {exc}") from None
        except TimeoutError as exc:
            raise RetryableError(f"{method} {hop.url} timed out: {exc}") from None
        except (ProtocolError, HTTPError, OSError) as exc:
            if watch.expired:
                raise RetryableError(f"{method} {hop.url} timed out: no whole answer in the call's time") from None
            raise RetryableError(f"{method} {hop.url} failed: {exc}") from None
        return response


_client = OutboundHttp()


def client() -> OutboundHttp:
    """The process's outbound HTTP client (one pool, reused by warm Lambdas)."""
    return _client
