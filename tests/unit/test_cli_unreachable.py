"""The ops CLI against an API that is not running: it says so within a second of
backoff (``tools.cli.ops.CLI_RETRIES``), not after a producer's long retry schedule."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from tasklane_client import Client

from tools.cli import main as cli


def _closed_port() -> int:
    """A local port nothing listens on (bound, then closed: refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_api_is_reported_after_two_short_retries(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    waits: list[float] = []
    original = Client.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._sleep = waits.append  # the backoff is recorded, not slept

    monkeypatch.setattr(Client, "__init__", recording)
    monkeypatch.setenv("TASKLANE_API_KEY", "k" * 20)
    url = f"http://127.0.0.1:{_closed_port()}"
    assert cli.main(["stats", "--api-url", url]) == 1
    assert "cannot reach" in capsys.readouterr().err
    assert len(waits) == 2 and sum(waits) <= 0.75
