"""The outbound address guard and the one-lookup-per-hop rule, with a stubbed resolver
and a stubbed pool manager: nothing here opens a socket, even if the guard is broken."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.adapters.outbound_http import AddressGuard, OutboundHttp, RefusedTarget
from chalicelib.core.errors import PayloadError, PermanentError, RetryableError
from chalicelib.core.urls import check_callback_url


class Resolver:
    """A stub resolver: a fixed answer per host, or a sequence of answers (rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        script = self.answers[host]
        return script.pop(0) if len(script) > 1 else script[0]


@dataclass
class FakeResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    closed: bool = True

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeManager:
    """Stands in for urllib3's PoolManager: records where each request would connect."""

    def __init__(self, responses: list[FakeResponse]) -> None:
        self.responses = responses
        self.connections: list[dict[str, Any]] = []

    def connection_from_host(self, host: str, port: int, scheme: str, pool_kwargs: Any = None) -> Any:
        manager = self

        class Pool:
            def urlopen(self, method: str, target: str, **kwargs: Any) -> FakeResponse:
                manager.connections.append(
                    {"address": host, "port": port, "scheme": scheme, "pool": pool_kwargs, "target": target, **kwargs}
                )
                return manager.responses.pop(0)

        return Pool()


PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # EC2 instance metadata
        "169.254.170.2",  # container credentials endpoint
        "fd00:ec2::254",  # metadata over IPv6
        "fe80::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "2002:a9fe:a9fe::1",  # 6to4 carrying 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 carrying 169.254.169.254
        "::169.254.169.254",  # IPv4-compatible (deprecated)
        "::ffff:0:a9fe:a9fe",  # IPv4-translated
    ],
)
def test_metadata_and_link_local_are_refused_even_when_private_is_allowed(address: str) -> None:
    assert AddressGuard(allow_private=True).refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fc00::1",
        "::127.0.0.1",  # IPv4-compatible loopback
        "64:ff9b:1::a00:1",  # local-use NAT64
        "fec0::1",  # site-local
    ],
)
def test_private_ranges_need_the_setting(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert AddressGuard(allow_private=False).refusal(ip) is not None
    assert AddressGuard(allow_private=True).refusal(ip) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "0.0.0.0", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_refused_inside_lambda_where_the_runtime_api_lives(address: str) -> None:
    assert AddressGuard(allow_private=True, in_lambda=True).refusal(ipaddress.ip_address(address)) is not None


def test_in_lambda_follows_the_runtime_api_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    assert AddressGuard.from_env(allow_private=True).in_lambda
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")
    assert not AddressGuard.from_env(allow_private=True).in_lambda


def test_public_addresses_pass() -> None:
    assert AddressGuard(allow_private=False).refusal(ipaddress.ip_address(PUBLIC)) is None
    assert AddressGuard(allow_private=False).refusal(ipaddress.ip_address("2606:4700::1111")) is None


def test_one_refused_address_among_many_refuses_the_host() -> None:
    guard = AddressGuard(allow_private=False, resolve=Resolver({"mixed.test": [[PUBLIC, "10.0.0.7"]]}))
    with pytest.raises(RefusedTarget, match=r"10\.0\.0\.7"):
        guard.check("mixed.test", 80)


def test_a_host_that_does_not_resolve_is_retryable() -> None:
    guard = AddressGuard(allow_private=False, resolve=Resolver({"empty.test": [[]]}))
    with pytest.raises(RetryableError):
        guard.check("empty.test", 80)


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    # A rebinding resolver: public for the check, metadata for any second lookup.
    resolver = Resolver({"rebind.test": [[PUBLIC], ["169.254.169.254"]]})
    manager = FakeManager([FakeResponse(200)])
    exchange = OutboundHttp(manager).request(
        "GET", "https://rebind.test/x?y=1", guard=AddressGuard(False, resolve=resolver), timeout=5
    )
    assert exchange.status == 200
    assert resolver.calls == ["rebind.test"]  # resolved once
    [conn] = manager.connections
    assert conn["address"] == PUBLIC and conn["target"] == "/x?y=1"
    # TLS is still checked against the name, and the server sees the name.
    assert conn["pool"] == {"assert_hostname": "rebind.test", "server_hostname": "rebind.test"}
    assert conn["headers"]["Host"] == "rebind.test"
    assert conn["redirect"] is False and conn["retries"] is False


def test_a_redirect_to_metadata_is_refused_before_connecting() -> None:
    resolver = Resolver({"public.test": [[PUBLIC]], "metadata.test": [["169.254.169.254"]]})
    manager = FakeManager([FakeResponse(302, {"location": "http://metadata.test/latest/meta-data/"})])
    with pytest.raises(RefusedTarget, match=r"169\.254\.169\.254"):
        OutboundHttp(manager).request(
            "GET", "http://public.test/", guard=AddressGuard(True, resolve=resolver), timeout=5, max_redirects=5
        )
    assert [c["address"] for c in manager.connections] == [PUBLIC]


def test_redirects_are_followed_up_to_the_limit_and_credentials_stay_at_their_origin() -> None:
    resolver = Resolver({"a.test": [[PUBLIC]], "b.test": [["93.184.216.35"]]})
    manager = FakeManager(
        [
            FakeResponse(301, {"location": "/moved"}),
            FakeResponse(307, {"location": "http://b.test/"}),
            FakeResponse(200),
        ]
    )
    headers = {"Authorization": "Bearer s3cret", "X-Trace": "1"}
    exchange = OutboundHttp(manager).request(
        "GET",
        "http://a.test/",
        guard=AddressGuard(False, resolve=resolver),
        headers=headers,
        timeout=5,
        max_redirects=5,
    )
    assert (exchange.status, exchange.url, exchange.redirects) == (200, "http://b.test/", 2)
    _, same_origin, other_origin = manager.connections
    assert same_origin["target"] == "/moved" and same_origin["headers"]["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in other_origin["headers"] and other_origin["headers"]["X-Trace"] == "1"
    assert other_origin["address"] == "93.184.216.35"


def test_too_many_redirects_fail_permanently() -> None:
    resolver = Resolver({"loop.test": [[PUBLIC]]})
    manager = FakeManager([FakeResponse(302, {"location": "/again"}) for _ in range(3)])
    with pytest.raises(PermanentError, match="more than 2"):
        OutboundHttp(manager).request(
            "GET", "http://loop.test/", guard=AddressGuard(True, resolve=resolver), timeout=5, max_redirects=2
        )
    assert len(manager.connections) == 3


def test_without_redirects_a_3xx_is_the_answer() -> None:
    manager = FakeManager([FakeResponse(302, {"location": "http://elsewhere.test/"})])
    resolver = Resolver({"a.test": [[PUBLIC]]})
    exchange = OutboundHttp(manager).request(
        "POST", "http://a.test/", guard=AddressGuard(True, resolve=resolver), timeout=5
    )
    assert exchange.status == 302 and resolver.calls == ["a.test"]


@pytest.mark.parametrize("url", ["ftp://a.test/", "http://user:pw@a.test/", "http:///nohost"])
def test_only_http_urls_with_a_host_and_no_credentials(url: str) -> None:
    with pytest.raises(PermanentError):
        OutboundHttp(FakeManager([])).request("GET", url, guard=AddressGuard(True, resolve=Resolver({})), timeout=5)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/x",
        "http://api.localhost/x",
        "http://127.0.0.1/x",
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        # IPv4 in the other forms resolvers accept
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
    ],
)
def test_callback_urls_naming_private_hosts_are_refused_at_submit(url: str) -> None:
    with pytest.raises(PayloadError):
        check_callback_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://93.184.216.34:8080/x?y=1", "https://a.b-c.io"])
def test_public_callback_urls_pass_without_any_lookup(url: str) -> None:
    check_callback_url(url, allow_private=False)  # core is pure: no resolver involved


def test_private_callback_urls_pass_when_allowed() -> None:
    check_callback_url("http://127.0.0.1:9/x", allow_private=True)
