"""The local AWS emulator: moto's server on the LocalStack port, seeded with what
the executors need.

``python -m tools.devstack.emulator serve --port 4566`` runs moto's server (SES, SNS,
S3, Secrets Manager, SSM, ...) until SIGTERM/SIGINT.  The local stack
(``tools.devstack.supervisor``) starts it as a supervised child unless something already
answers on the port (a real LocalStack from ``infra/docker-compose.yml``, or a
moto you started yourself), then ``seed`` creates, idempotently:

- the S3 bucket ``TASKLANE_S3_BUCKET`` (``tasklane-local``),
- a verified SES identity for ``TASKLANE_SES_SENDER`` (``no-reply@tasklane.local``),
- the SNS topic ``tasklane-local-notifications``,
- the secret ``tasklane/local/database`` (the keys the RDS secret has) and the SSM
  parameters under ``/tasklane/local/`` that mirror what ``infra/template.yaml``
  writes in AWS.

The app reaches the emulator through localstack-client (``LOCALSTACK_HOST``).
``sent_emails`` and ``sms_messages`` read what moto captured (its
``/moto-api/data.json``), which the end-to-end tests use.  moto is a dev
dependency (requirements-dev.txt): nothing here is imported by the Lambda code.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 4566
DEFAULT_BUCKET = "tasklane-local"
DEFAULT_SENDER = "no-reply@tasklane.local"
DEFAULT_REGION = "us-east-1"


def endpoint_for(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}"


def answers(endpoint: str, timeout: float = 1.0) -> bool:
    """Something speaks HTTP at ``endpoint`` (any status counts)."""
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            pass
    except OSError:
        return False
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=timeout):  # noqa: S310 - a local http URL
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def is_moto(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=timeout) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def wait_ready(endpoint: str, timeout: float = 30.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the AWS emulator exited with code {proc.returncode}")
        if answers(endpoint, timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the AWS emulator did not answer at {endpoint} within {timeout:.0f} s")


def serve(host: str, port: int) -> int:
    """Run moto's server until SIGTERM/SIGINT."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from tools.devstack.orphans import stop_with_parent

    stop_with_parent(stop)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    print(f"AWS emulator (moto) listening on http://{host}:{port}", flush=True)
    stop.wait()
    server.stop()
    return 0


def _client(service: str, endpoint: str, region: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - the emulator's dummy credentials
    )


def database_secret(database_url: str) -> dict[str, Any]:
    """The RDS-style secret (username, password, host, port, dbname, engine) for a URL."""
    parts = urlsplit(database_url)
    return {
        "username": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "dbname": parts.path.lstrip("/") or "tasklane",
        "engine": "postgres",
    }


def seed(
    endpoint: str,
    *,
    region: str = DEFAULT_REGION,
    bucket: str = DEFAULT_BUCKET,
    sender: str = DEFAULT_SENDER,
    stage: str = "local",
    database_url: str | None = None,
    redis_url: str | None = None,
) -> dict[str, str]:
    """Create (or keep) what the executors and the secrets code expect; idempotent."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    s3 = _client("s3", endpoint, region)
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    _client("ses", endpoint, region).verify_email_identity(EmailAddress=sender)
    topic = _client("sns", endpoint, region).create_topic(Name=f"tasklane-{stage}-notifications")["TopicArn"]
    seeded = {"bucket": bucket, "sender": sender, "topic_arn": topic}
    ssm = _client("ssm", endpoint, region)
    params = {f"/tasklane/{stage}/s3/bucket": bucket, f"/tasklane/{stage}/ses/sender": sender}
    if redis_url:
        params[f"/tasklane/{stage}/redis/url"] = redis_url
    if database_url:
        sm = _client("secretsmanager", endpoint, region)
        name = f"tasklane/{stage}/database"
        value = json.dumps(database_secret(database_url))
        try:
            arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise
            arn = sm.put_secret_value(SecretId=name, SecretString=value)["ARN"]
        params[f"/tasklane/{stage}/database/secret-arn"] = arn
        seeded["database_secret_arn"] = arn
    for name, value in params.items():
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    return seeded


def _model_data(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=10) as r:  # noqa: S310
        data: dict[str, Any] = json.load(r)
    return data


def sent_emails(endpoint: str) -> list[dict[str, Any]]:
    """Messages moto's SES accepted: ``source``, ``destinations``, ``subject``, ``body``, ``id``."""
    messages: list[dict[str, Any]] = _model_data(endpoint).get("ses", {}).get("Message", [])
    return messages


def sms_messages(endpoint: str) -> list[dict[str, Any]]:
    """SMS moto's SNS published: ``phone_number``, ``message``, ``message_id``."""
    messages: list[dict[str, Any]] = _model_data(endpoint).get("sns", {}).get("SMS", [])
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.devstack.emulator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run moto's server")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    p_seed = sub.add_parser("seed", help="create the bucket, SES identity, topic, secret and parameters")
    p_seed.add_argument("--endpoint", default=endpoint_for(DEFAULT_PORT))
    p_seed.add_argument("--bucket", default=DEFAULT_BUCKET)
    p_seed.add_argument("--sender", default=DEFAULT_SENDER)
    p_seed.add_argument("--database-url")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port)
    print(json.dumps(seed(args.endpoint, bucket=args.bucket, sender=args.sender, database_url=args.database_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
