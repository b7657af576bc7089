"""Declared targets without I/O: the HTTP target asks the address guard before any
connection (a stubbed resolver and a pool that fails the test if it is ever used,
so no packet can leave even if the guard broke), and the Lambda target takes the
one invoke path that executor mode ``lambda`` takes."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest

from chalicelib.adapters.outbound_http import AddressGuard, OutboundHttp, RefusedTarget
from chalicelib.core.errors import PermanentError
from chalicelib.execution import remote
from chalicelib.tasktypes import targets
from chalicelib.tasktypes.context import TaskContext, TaskPorts
from chalicelib.tasktypes.declarations import HttpTargetSpec, LambdaTargetSpec


class NoConnections:
    def connection_from_host(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a connection was attempted")


class Secrets:
    def webhook_secret(self, tenant: str) -> str:
        return "s3cret"


def _ctx(ports: TaskPorts | None = None) -> TaskContext:
    return TaskContext(
        task_id="t-1",
        name="crm",
        tenant="acme",
        attempt=1,
        max_retries=1,
        timeout_seconds=5,
        ports=ports or TaskPorts(),
    )


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "client", lambda: OutboundHttp(manager=NoConnections()))


@pytest.mark.parametrize(
    ("address", "allow_private"),
    [("169.254.169.254", True), ("fd00:ec2::254", True), ("10.1.2.3", False), ("127.0.0.1", False)],
)
def test_http_target_refuses_guarded_addresses_before_connecting(address: str, allow_private: bool) -> None:
    guard = AddressGuard(allow_private=allow_private, resolve=lambda host, port: [address])
    target = targets.HttpTarget("crm", HttpTargetSpec("http://crm.internal.test/x", allow_private), guard)
    with pytest.raises(RefusedTarget):
        target({}, _ctx(TaskPorts(webhook_secrets=Secrets())))


def test_http_target_allows_private_addresses_by_default_but_never_link_local() -> None:
    spec = HttpTargetSpec("http://crm.internal.test/x")
    assert spec.allow_private
    guard = targets.HttpTarget("crm", spec).guard
    assert guard.refusal(ip_address("10.0.0.7")) is None
    assert guard.refusal(ip_address("169.254.169.254")) is not None


def test_http_target_without_webhook_secrets_is_permanent() -> None:
    guard = AddressGuard(allow_private=True, resolve=lambda host, port: ["127.0.0.1"])
    target = targets.HttpTarget("crm", HttpTargetSpec("http://crm.internal.test/x"), guard)
    with pytest.raises(PermanentError, match="need the drainer's webhook secrets"):
        target({}, _ctx())


def test_lambda_target_and_executor_mode_share_one_invoke_path(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def fake_invoke(function_name: str, event: dict[str, Any], ctx: TaskContext, **kw: Any) -> Any:
        seen.append({"function": function_name, "event": event, **kw})
        return {"ok": True}

    monkeypatch.setattr(targets, "invoke_attempt", fake_invoke)
    monkeypatch.setattr(remote, "invoke_attempt", fake_invoke)
    spec = LambdaTargetSpec("resize", "live", frozenset({"ValueError"}))
    assert targets.LambdaTarget("resize", spec)({"k": 1}, _ctx()) == {"ok": True}
    assert remote.RemoteExecutor("tasklane-executor", "noop")({"k": 2}, _ctx()) == {"ok": True}
    team, own = seen
    assert (team["function"], team["qualifier"], team["permanent_types"]) == ("resize", "live", {"ValueError"})
    assert team["event"]["task"]["name"] == "resize" and team["event"]["payload"] == {"k": 1}
    assert own["function"] == "tasklane-executor" and own["event"]["task"]["name"] == "noop"
    assert own["permanent_types"] == remote.PERMANENT_TYPES
