"""Run inside a network namespace of its own (``unshare -n``), never on the host.

``test_outbound_http.py`` starts it as ``unshare -n sh -c "ip ... && exec python
<this file>"`` after giving the namespace's loopback the metadata addresses
(169.254.169.254, fd00:ec2::254).  Stand-in servers there count every request
that reaches them, so a broken guard shows up as a count, and no packet can leave
the machine: the namespace has no interface but ``lo``.  Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chalicelib.adapters.outbound_http import AddressGuard, RefusedTarget
from chalicelib.adapters.webhooks import deliver
from chalicelib.core.errors import ExecutionError
from chalicelib.tasktypes.context import TaskContext
from chalicelib.tasktypes.http_request import call

hits: dict[str, int] = {}
lock = threading.Lock()


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve(name: str, address: str, port: int, redirect_to: str | None = None) -> int:
    """A stand-in that counts requests (and answers 302 to ``redirect_to``, if given)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                hits[name] = hits.get(name, 0) + 1
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", redirect_to + self.path.lstrip("/"))
            else:
                self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    cls = V6Server if ":" in address else ThreadingHTTPServer
    server = cls((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def outcome(fn: Any) -> str:
    try:
        fn()
    except RefusedTarget:
        return "refused"
    except ExecutionError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "completed"


def ctx() -> TaskContext:
    return TaskContext(task_id="t", name="http-request", tenant="t", attempt=1, max_retries=0, timeout_seconds=5)


class BrokenGuard(AddressGuard):
    """What a regression would look like: everything allowed (``--broken``)."""

    def refusal(self, address: Any) -> str | None:
        return None


def main(broken: bool) -> None:
    serve("metadata-v4", "169.254.169.254", 80)
    serve("metadata-v6", "fd00:ec2::254", 80)
    runtime_port = serve("runtime-api", "127.0.0.1", 9001)
    relay_v4 = serve("relay", "127.0.0.1", 0, redirect_to="http://169.254.169.254/")
    relay_v6 = serve("relay6", "127.0.0.1", 0, redirect_to="http://[fd00:ec2::254]/")
    guard_class = BrokenGuard if broken else AddressGuard
    guard = guard_class(allow_private=True)  # even with private ranges allowed
    results = {
        "direct": outcome(lambda: call({"url": "http://169.254.169.254/latest/meta-data/"}, ctx(), guard)),
        "direct_v6": outcome(lambda: call({"url": "http://[fd00:ec2::254]/"}, ctx(), guard)),
        "mapped": outcome(lambda: call({"url": "http://[::ffff:169.254.169.254]/"}, ctx(), guard)),
        "redirect": outcome(lambda: call({"url": f"http://127.0.0.1:{relay_v4}/latest/"}, ctx(), guard)),
        "redirect_v6": outcome(lambda: call({"url": f"http://127.0.0.1:{relay_v6}/x"}, ctx(), guard)),
        "webhook_redirect": outcome(
            lambda: deliver(
                {"url": f"http://127.0.0.1:{relay_v4}/hook", "event": "task.completed", "task": {}},
                "secret",
                timeout=5,
                allow_private=True,
                delivery_id="d",
                guard=guard,
            )
        ),
    }
    os.environ["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{runtime_port}"
    lambda_guard = guard_class.from_env(allow_private=True)
    results["runtime_api"] = outcome(
        lambda: call(
            {"url": f"http://127.0.0.1:{runtime_port}/2018-06-01/runtime/invocation/next"}, ctx(), lambda_guard
        )
    )
    del os.environ["AWS_LAMBDA_RUNTIME_API"]
    before_control = dict(hits)
    # The control: the stand-ins do answer, so a zero count above means "refused", not "unreachable".
    import urllib3

    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", f"http://127.0.0.1:{runtime_port}/"):
        urllib3.request("GET", url, timeout=5, retries=False)
    print(json.dumps({"results": results, "hits_before_control": before_control, "hits": hits}))


if __name__ == "__main__":
    main(broken="--broken" in sys.argv)
