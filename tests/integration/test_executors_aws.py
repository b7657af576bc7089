"""The AWS executors against moto in-process (``moto.mock_aws``), real PostgreSQL
and Redis: drained like in production (inline mode), idempotency records in Redis."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from pypdf import PdfReader

from chalicelib.adapters.aws import clients as awsclients
from chalicelib.adapters.aws import secrets
from chalicelib.config import ConfigError, Settings
from chalicelib.container import Container
from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.services.drain import task_ports
from chalicelib.services.submit import submit
from chalicelib.tasktypes import TaskContext
from chalicelib.tasktypes.aws import once_per_task
from chalicelib.tasktypes.http_request import http_request
from tests.helpers import drain_and_sweep_until, request, wait_for
from tests.state import clean, fast_settings, redis_db_url

# A Redis db of its own: idempotency records must not be flushed by another test run's
# cleanup of the shared integration db (15) while a test here is in flight.
AWS_REDIS_DB = 7
SENDER = "sender@tasklane.test"
BUCKET = "tasklane-test-docs"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("TASKLANE_AWS_ENDPOINT", "LOCALSTACK_HOST", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    awsclients.reset()
    secrets.reset()
    with mock_aws():
        boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield
    awsclients.reset()
    secrets.reset()


@pytest.fixture
def make_aws_rt(database_url: str, redis_server: str) -> Iterator[Callable[..., Container]]:
    redis_url = redis_db_url(redis_server, AWS_REDIS_DB)
    clean(database_url, redis_url)
    made: list[Container] = []

    def factory(**overrides: object) -> Container:
        values: dict[str, object] = {"ses_sender": SENDER, "s3_bucket": BUCKET, "fault_injection": True}
        made.append(Container.build(fast_settings(database_url, redis_url, **{**values, **overrides})))
        return made[-1]

    yield factory
    for runtime in made:
        runtime.close()


@pytest.fixture
def aws_rt(aws: None, make_aws_rt: Callable[..., Container]) -> Container:
    return make_aws_rt()


@pytest.fixture
def rt(make_aws_rt: Callable[..., Container]) -> Container:
    return make_aws_rt()


def sent_emails() -> list[Any]:
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def run(rt: Container, name: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
    task = submit(rt, "t1", request(name, payload, **kw)).task
    drain_and_sweep_until(rt, lambda: rt.store.get_task("t1", task.id).status.value in ("COMPLETED", "FAILED"))  # type: ignore[union-attr]
    final = rt.store.get_task("t1", task.id)
    assert final is not None
    return {"id": task.id, "status": final.status.value, "attempts": final.attempts, "result": final.result}


def test_send_email_goes_through_ses(aws_rt: Container) -> None:
    done = run(aws_rt, "send-email", {"to": ["a@example.com", "b@example.com"], "subject": "Hi", "text": "Hello"})
    assert done["status"] == "COMPLETED" and done["attempts"] == 1
    [message] = sent_emails()
    assert message.source == SENDER and message.destinations["ToAddresses"] == ["a@example.com", "b@example.com"]
    assert done["result"]["message_id"] == message.id


def test_retried_email_after_the_send_is_sent_once(aws_rt: Container) -> None:
    payload = {"to": "a@example.com", "subject": "Once", "text": "x", "_fault": "fail-after-side-effect"}
    done = run(aws_rt, "send-email", payload)
    assert done["status"] == "COMPLETED" and done["attempts"] == 2
    assert len(sent_emails()) == 1


def test_rejected_sender_fails_permanently(aws_rt: Container) -> None:
    done = run(aws_rt, "send-email", {"to": "a@example.com", "from": "unverified@x.test", "subject": "s", "text": "t"})
    assert done["status"] == "FAILED" and done["attempts"] == 1
    assert sent_emails() == []


def test_send_sms_publishes_to_the_phone_number(aws_rt: Container) -> None:
    from moto.sns.models import sns_backends

    done = run(aws_rt, "send-sms", {"phone_number": "+447700900123", "message": "code 1234"})
    assert done["status"] == "COMPLETED"
    sms = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages
    assert list(sms.values()) == [("+447700900123", "code 1234")]


def test_generate_pdf_is_stored_and_readable(aws_rt: Container) -> None:
    done = run(aws_rt, "generate-pdf", {"title": "Report", "body": "Line one\nLine two: café"})
    assert done["status"] == "COMPLETED"
    result = done["result"]
    assert result["key"] == f"pdfs/{done['id']}.pdf"
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket=BUCKET, Key=result["key"])["Body"].read()
    assert len(body) == result["bytes"]
    text = PdfReader(io.BytesIO(body)).pages[0].extract_text()
    assert "Report" in text and "Line two: café" in text


def test_generate_pdf_without_a_bucket_fails_permanently(aws: None, make_aws_rt: Callable[..., Container]) -> None:
    done = run(make_aws_rt(s3_bucket=None), "generate-pdf", {"title": "x"})
    assert done["status"] == "FAILED" and done["attempts"] == 1


def _ctx(task_id: str = "7f0c6a86-1b1c-4c8e-9d43-0c7e6c1d3c11", attempt: int = 1, timeout: float = 5.0) -> TaskContext:
    ctx = TaskContext(task_id=task_id, name="x", tenant="t1", attempt=attempt, max_retries=3, timeout_seconds=timeout)
    ctx.started_monotonic = time.monotonic()
    return ctx


def test_once_per_task_reruns_failures_and_replays_successes(rt: Container) -> None:
    calls: list[int] = []

    def work(fail: bool) -> Callable[[], dict[str, int]]:
        def inner() -> dict[str, int]:
            calls.append(1)
            if fail:
                raise RetryableError("SES throttled us")
            return {"n": len(calls)}

        return inner

    ctx = _with(rt, _ctx())
    with pytest.raises(RetryableError):
        once_per_task("demo", ctx, {}, work(fail=True))
    assert once_per_task("demo", _with(rt, _ctx(attempt=2)), {}, work(fail=False)) == {"n": 2}
    # Attempt 3 (the outcome of attempt 2 was lost): the stored result, no third call.
    assert once_per_task("demo", _with(rt, _ctx(attempt=3)), {}, work(fail=False)) == {"n": 2}
    assert len(calls) == 2
    # Another task id is another key.
    assert once_per_task("demo", _with(rt, _ctx(task_id="other")), {}, work(fail=False)) == {"n": 3}


def _with(rt: Container, ctx: TaskContext) -> TaskContext:
    ctx.ports = task_ports(rt)
    return ctx


def test_a_duplicate_while_the_first_attempt_runs_is_retryable(rt: Container) -> None:
    started, release = threading.Event(), threading.Event()
    results: list[Any] = []

    def slow() -> str:
        started.set()
        release.wait(5)
        return "sent"

    first = threading.Thread(target=lambda: results.append(once_per_task("demo", _with(rt, _ctx()), {}, slow)))
    first.start()
    assert started.wait(5)
    with pytest.raises(RetryableError, match="still running"):
        once_per_task("demo", _with(rt, _ctx(attempt=2)), {}, lambda: "twice")
    release.set()
    first.join(5)
    assert results == ["sent"]
    assert once_per_task("demo", _with(rt, _ctx(attempt=3)), {}, lambda: "twice") == "sent"


def test_an_attempt_that_died_in_progress_blocks_only_until_its_timeout(rt: Container) -> None:
    # Simulate a worker killed mid-call: an INPROGRESS record whose lock is the attempt's timeout (1 s).
    ctx = _with(rt, _ctx(timeout=1.0))

    def die() -> str:
        raise SystemExit  # leaves no COMPLETED record; Powertools deletes the lock only for Exceptions

    with pytest.raises(SystemExit):
        once_per_task("demo", ctx, {}, die)
    with pytest.raises(RetryableError):
        once_per_task("demo", _with(rt, _ctx(attempt=2)), {}, lambda: "second")

    def later_attempt() -> str | None:
        try:
            return once_per_task("demo", _with(rt, _ctx(attempt=3)), {}, lambda: "third")
        except RetryableError:
            return None  # the dead attempt's lock still holds

    # Its lock lapses with the 1 s timeout, not with the record's hours-long expiry.
    assert wait_for(later_attempt, timeout=10, interval=0.1, message="the dead attempt's lock to lapse") == "third"


class _Server:
    def __init__(self, handler: Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, body = handler(self)
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("code", "error"),
    [(200, None), (404, PermanentError), (400, PermanentError), (503, RetryableError), (429, RetryableError)],
)
def test_http_request_classifies_statuses(rt: Container, code: int, error: type[Exception] | None) -> None:
    server = _Server(lambda h: (code, b'{"ok": true}'))
    try:
        if error is None:
            assert http_request({"url": server.url + "/x"}, _with(rt, _ctx()))["status"] == 200
        else:
            with pytest.raises(error, match=str(code)):
                http_request({"url": server.url + "/x"}, _with(rt, _ctx()))
    finally:
        server.close()


def test_http_request_timeout_and_connection_errors_are_retryable(rt: Container) -> None:
    server = _Server(lambda h: (time.sleep(1.0), (200, b""))[1])
    try:
        with pytest.raises(RetryableError, match="timed out"):
            http_request({"url": server.url, "timeout_seconds": 0.2}, _with(rt, _ctx()))
    finally:
        server.close()
    with pytest.raises(RetryableError):
        http_request({"url": "http://127.0.0.1:1/"}, _with(rt, _ctx(task_id="t-2")))


def test_http_request_refuses_metadata_endpoints(rt: Container) -> None:
    with pytest.raises(PermanentError, match="link-local"):
        http_request({"url": "http://169.254.169.254/latest/meta-data/"}, _with(rt, _ctx()))


# --- secrets -------------------------------------------------------------------------


def test_database_url_from_the_secret(aws: None) -> None:
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    secret = {"username": "tl", "password": "p@ss/w:rd", "host": "db.internal", "port": 5432, "dbname": "tasklane"}
    value = json.dumps({**secret, "engine": "postgres"})
    arn = sm.create_secret(Name="tasklane/dev/database", SecretString=value)["ARN"]
    settings = Settings.from_env({"TASKLANE_DATABASE_SECRET_ARN": arn})
    assert settings.database_url == ""
    url = secrets.database_url(settings)
    assert url == "postgresql://tl:p%40ss%2Fw%3Ard@db.internal:5432/tasklane?sslmode=require"
    # Cached (Powertools): a rotation shows up after TASKLANE_SECRET_MAX_AGE_SECONDS, not per call.
    sm.put_secret_value(SecretId=arn, SecretString=value.replace("db.internal", "db2.internal"))
    assert secrets.database_url(settings) == url
    # TASKLANE_DATABASE_URL wins over the secret.
    both = Settings.from_env({"TASKLANE_DATABASE_SECRET_ARN": arn, "TASKLANE_DATABASE_URL": "postgresql://x@h/d"})
    assert secrets.database_url(both) == "postgresql://x@h/d"


def test_a_secret_without_credentials_is_a_config_error(aws: None) -> None:
    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(Name="s", SecretString='{"host":"h"}')[
        "ARN"
    ]
    with pytest.raises(ConfigError, match="username"):
        secrets.database_url(Settings.from_env({"TASKLANE_DATABASE_SECRET_ARN": arn}))


def test_the_seeded_local_secret_gives_the_local_database(aws: None, database_url: str, redis_url: str) -> None:
    from urllib.parse import urlsplit

    from tools.devstack import emulator

    secret = emulator.database_secret(database_url)
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="tasklane/local/database", SecretString=json.dumps(secret))["ARN"]
    settings = Settings.from_env({"TASKLANE_DATABASE_SECRET_ARN": arn, "TASKLANE_REDIS_URL": redis_url})
    url = secrets.database_url(settings)
    parts = urlsplit(url)
    assert parts.hostname == secret["host"] and parts.port == secret["port"] and parts.path == f"/{secret['dbname']}"
    assert parts.username == secret["username"] and url.endswith("?sslmode=require")
