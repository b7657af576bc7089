"""``make run`` and a busy port: it waits briefly for the port to be freed (a stack
just stopped, or orphans of a killed supervisor on their way out), then gives up
with a message that says what to do."""

from __future__ import annotations

import socket
import threading

import pytest

from tools.devstack import supervisor


def _hold_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_port_freed_within_the_wait_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    holder = _hold_port()
    port = holder.getsockname()[1]
    release = threading.Timer(0.5, holder.close)
    release.start()
    try:
        supervisor._wait_for_port(port, timeout=10)
        # It returned after the release, not before (an order, not a stopwatch; a wait
        # that ran out would have raised).
        assert holder.fileno() == -1, "returned while the port was still held"
    finally:
        release.cancel()
        holder.close()
    assert f"port {port} is in use; waiting" in capsys.readouterr().out


def test_a_port_still_held_after_the_wait_is_a_clear_error() -> None:
    holder = _hold_port()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(SystemExit, match=f"port {port} is still in use after 1 s.*TASKLANE_PORT"):
            supervisor._wait_for_port(port, timeout=1)
    finally:
        holder.close()


def test_a_free_port_does_not_wait(capsys: pytest.CaptureFixture[str]) -> None:
    holder = _hold_port()
    port = holder.getsockname()[1]
    holder.close()
    supervisor._wait_for_port(port, timeout=10)
    assert capsys.readouterr().out == ""  # waiting starts by saying so
