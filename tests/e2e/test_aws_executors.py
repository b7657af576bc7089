"""The AWS executors end to end: tasks submitted over HTTP to a live local stack,
whose own moto server (on a free port) stands in for SES, SNS and S3.

The stack runs with ``TASKLANE_FAULT_INJECTION=1`` so a payload can ask for a
failure (or a killed drainer) right after the side effect, which is how the
"a retried email is sent once" guarantee is checked.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import redis
from pypdf import PdfReader

from tests.helpers import wait_for
from tests.stack import ROOT, Stack, start_stack
from tools.devstack import emulator
from tools.devstack import services as devservices

AWS_REDIS_DB = 5  # free: 6-7 are the AWS integration tests, 8 the benchmark, 9-15 other suites
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def aws_stack(pg_server: str, redis_server: str) -> Iterator[Stack]:
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{AWS_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {"TASKLANE_FAULT_INJECTION": "1", "TASKLANE_LOG_LEVEL": "INFO"}  # INFO: replays are logged
    s = start_stack(pg_server, redis_url, ROOT / "test-artifacts", env=env, aws=True)
    try:
        yield s
    finally:
        s.stop()
        devservices.drop_database(pg_server, s.database_url.rsplit("/", 1)[-1])


def wait_final(stack: Stack, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        task = stack.task(task_id)
        return task if task["status"] in FINAL else None

    try:
        return wait_for(final, timeout=timeout, interval=0.1)
    except AssertionError as exc:
        task = stack.task(task_id)
        log = stack.log()[-3000:]
        raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s: {task}\n{log}") from exc


def emails_with(stack: Stack, subject: str) -> list[dict[str, Any]]:
    return [m for m in emulator.sent_emails(stack.aws_endpoint) if m.get("subject") == subject]


def test_the_stack_runs_its_own_emulator_not_port_4566(aws_stack: Stack) -> None:
    assert not aws_stack.aws_endpoint.endswith(":4566")
    assert emulator.is_moto(aws_stack.aws_endpoint)


def test_send_email_is_delivered_to_ses(aws_stack: Stack) -> None:
    subject = f"welcome {uuid.uuid4().hex[:8]}"
    task = aws_stack.submit(
        "send-email", {"to": "ada@example.com", "subject": subject, "text": "Hello Ada", "html": "<p>Hello</p>"}
    )
    done = wait_final(aws_stack, task["id"])
    assert done["status"] == "COMPLETED", done
    assert done["result"]["from"] == "no-reply@tasklane.local"  # TASKLANE_SES_SENDER default, seeded as verified
    [message] = emails_with(aws_stack, subject)
    assert message["destinations"]["ToAddresses"] == ["ada@example.com"]
    assert message["source"] == "no-reply@tasklane.local"


def test_send_sms_is_published_by_sns(aws_stack: Stack) -> None:
    text = f"your code is {uuid.uuid4().hex[:6]}"
    task = aws_stack.submit("send-sms", {"phone_number": "+15555550100", "message": text})
    done = wait_final(aws_stack, task["id"])
    assert done["status"] == "COMPLETED", done
    sent = [m for m in emulator.sms_messages(aws_stack.aws_endpoint) if m["message"] == text]
    assert [m["phone_number"] for m in sent] == ["+15555550100"]


def test_generate_pdf_stores_a_readable_pdf_in_s3(aws_stack: Stack) -> None:
    title = f"Invoice {uuid.uuid4().hex[:6]}"
    task = aws_stack.submit("generate-pdf", {"title": title, "body": "Total: 42 EUR\nThank you.", "author": "Tasklane"})
    done = wait_final(aws_stack, task["id"])
    assert done["status"] == "COMPLETED", done
    result = done["result"]
    assert result["bucket"] == "tasklane-local" and result["key"] == f"pdfs/{task['id']}.pdf"
    s3 = boto3.client(
        "s3",
        endpoint_url=aws_stack.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    body = s3.get_object(Bucket=result["bucket"], Key=result["key"])["Body"].read()
    assert len(body) == result["bytes"] and body.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(body))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert title in text and "Total: 42 EUR" in text
    assert reader.metadata is not None and reader.metadata.title == title


def test_email_failing_after_the_send_is_retried_but_sent_once(aws_stack: Stack) -> None:
    subject = f"retried {uuid.uuid4().hex[:8]}"
    payload = {"to": "bob@example.com", "subject": subject, "text": "once", "_fault": "fail-after-side-effect"}
    task = aws_stack.submit("send-email", payload)
    done = wait_final(aws_stack, task["id"])
    assert done["status"] == "COMPLETED" and done["attempts"] == 2, done
    assert len(emails_with(aws_stack, subject)) == 1


def test_email_whose_drainer_dies_after_the_send_is_sent_once(aws_stack: Stack) -> None:
    subject = f"killed {uuid.uuid4().hex[:8]}"
    payload = {"to": "eve@example.com", "subject": subject, "text": "once", "_fault": "crash-after-side-effect"}
    task = aws_stack.submit("send-email", payload)
    # The drainer exits mid-batch; its lease expires (2 s) and the sweeper hands the task out again.
    done = wait_final(aws_stack, task["id"], timeout=45)
    assert done["status"] == "COMPLETED" and done["attempts"] == 2, done
    assert len(emails_with(aws_stack, subject)) == 1
    assert "restarting" in aws_stack.log()


def test_invalid_payloads_are_refused_at_submit(aws_stack: Stack) -> None:
    bad = [
        ("send-email", {"to": "not-an-address", "subject": "x", "text": "y"}),
        ("send-email", {"to": "a@example.com", "subject": "no body"}),
        ("send-sms", {"phone_number": "555-0100", "message": "x"}),
        ("generate-pdf", {"title": ""}),
        ("http-request", {"url": "file:///etc/passwd"}),
        ("http-request", {"url": "ftp://example.com/x"}),
    ]
    for name, payload in bad:
        r = aws_stack.post("/api/v1/tasks", {"name": name, "payload": payload})
        assert r.status_code == 400, (name, payload, r.text)


class _Target:
    """A tiny HTTP server: /ok answers JSON, /flaky 503 then 200, /missing 404."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target.calls.append((self.command, self.path, body))
                if self.path == "/flaky" and sum(1 for c in target.calls if c[1] == "/flaky") == 1:
                    code, out = 503, b"try later"
                elif self.path in ("/ok", "/flaky"):
                    code, out = 200, json.dumps({"echo": body.decode() or None}).encode()
                else:
                    code, out = 404, b"nope"
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_http_request_outcomes(aws_stack: Stack) -> None:
    target = _Target()
    try:
        ok = aws_stack.submit("http-request", {"url": target.url + "/ok", "method": "POST", "json": {"n": 1}})
        flaky = aws_stack.submit("http-request", {"url": target.url + "/flaky"})
        missing = aws_stack.submit("http-request", {"url": target.url + "/missing"})
        done = wait_final(aws_stack, ok["id"])
        assert done["status"] == "COMPLETED" and done["result"]["status"] == 200, done
        assert done["result"]["json"] == {"echo": '{"n":1}'}
        done = wait_final(aws_stack, flaky["id"])
        assert done["status"] == "COMPLETED" and done["attempts"] == 2, done
        done = wait_final(aws_stack, missing["id"])
        assert done["status"] == "FAILED" and done["attempts"] == 1, done
        assert "404" in done["errors"][-1]["error"]
    finally:
        target.server.shutdown()
        target.server.server_close()
