"""``send-email``: one email through Amazon SES (``SendEmail``), once per task."""

from __future__ import annotations

import re
from typing import Any

from chalicelib.tasktypes.aws import aws_call, check_keys, need_setting, once_per_task, settings_of
from chalicelib.tasktypes.catalog import registry, require
from chalicelib.tasktypes.context import TaskContext

# One rule for the validator and the JSON Schema (both use Python's re.search).
# ASCII only, and no \s: Python's and JSON Schema's (ECMA) regex dialects disagree on
# what whitespace is, and this pattern is published in /openapi.json as well.
EMAIL_PATTERN = r"^[A-Za-z0-9._%+'!#$&*/=?^`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}$"
MAX_RECIPIENTS = 50
MAX_SUBJECT = 998
MAX_BODY = 200_000
FIELDS = {"to", "cc", "bcc", "reply_to", "from", "subject", "text", "html"}

_ADDRESS = {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": 320}
_ADDRESSES = {"anyOf": [_ADDRESS, {"type": "array", "items": _ADDRESS, "minItems": 1, "maxItems": MAX_RECIPIENTS}]}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Needs to, subject and text and/or html; from defaults to TASKLANE_SES_SENDER.",
    "required": ["to", "subject"],
    "properties": {
        "to": _ADDRESSES,
        "cc": _ADDRESSES,
        "bcc": _ADDRESSES,
        "reply_to": _ADDRESSES,
        "from": _ADDRESS,
        "subject": {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT},
        "text": {"type": "string", "maxLength": MAX_BODY},
        "html": {"type": "string", "maxLength": MAX_BODY},
    },
    "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
    "patternProperties": {"^_": {}},
    "additionalProperties": False,
}


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 320 and re.search(EMAIL_PATTERN, value) is not None


def _addresses_ok(value: Any) -> bool:
    if isinstance(value, list):
        return 1 <= len(value) <= MAX_RECIPIENTS and all(_is_address(v) for v in value)
    return _is_address(value)


def _addresses(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).strip() for v in values]


def validate(payload: Any) -> None:
    check_keys(payload, FIELDS, "send-email")
    for key in ("to", "cc", "bcc", "reply_to"):
        if key in payload or key == "to":
            require(
                key in payload and _addresses_ok(payload[key]),
                f'send-email: "{key}" must be an address or a list of 1..{MAX_RECIPIENTS}',
            )
    if "from" in payload:
        require(_is_address(payload["from"]), 'send-email: "from" must be an email address')
    subject = payload.get("subject")
    require(
        isinstance(subject, str) and 1 <= len(subject) <= MAX_SUBJECT,
        f'send-email: "subject" must be a string of 1..{MAX_SUBJECT} characters',
    )
    for key in ("text", "html"):
        if key in payload:
            value = payload[key]
            require(isinstance(value, str) and len(value) <= MAX_BODY, f'send-email: "{key}" must be a string')
    require("text" in payload or "html" in payload, 'send-email: needs "text" and/or "html"')


@registry.task("send-email", validate=validate, payload_schema=SCHEMA)
def send_email(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sends one email with Amazon SES (from defaults to TASKLANE_SES_SENDER); once per task."""
    settings = settings_of(ctx)
    sender = str(payload.get("from") or need_setting(settings.ses_sender, "TASKLANE_SES_SENDER")).strip()
    destination: dict[str, list[str]] = {"ToAddresses": _addresses(payload["to"])}
    if "cc" in payload:
        destination["CcAddresses"] = _addresses(payload["cc"])
    if "bcc" in payload:
        destination["BccAddresses"] = _addresses(payload["bcc"])
    body: dict[str, Any] = {}
    if "text" in payload:
        body["Text"] = {"Data": payload["text"], "Charset": "UTF-8"}
    if "html" in payload:
        body["Html"] = {"Data": payload["html"], "Charset": "UTF-8"}
    request: dict[str, Any] = {
        "Source": sender,
        "Destination": destination,
        "Message": {"Subject": {"Data": payload["subject"], "Charset": "UTF-8"}, "Body": body},
    }
    if "reply_to" in payload:
        request["ReplyToAddresses"] = _addresses(payload["reply_to"])

    def send() -> dict[str, Any]:
        from chalicelib.adapters.aws import clients as awsclients

        response = aws_call("SES SendEmail", lambda: awsclients.client("ses").send_email(**request))
        return {"message_id": response["MessageId"], "from": sender, "to": destination["ToAddresses"]}

    return once_per_task("send-email", ctx, payload, send)
