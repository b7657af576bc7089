"""``send-sms``: one text message through Amazon SNS (``Publish`` to a phone number), once per task."""

from __future__ import annotations

import re
from typing import Any

from chalicelib.tasktypes.aws import aws_call, check_keys, once_per_task
from chalicelib.tasktypes.catalog import registry, require
from chalicelib.tasktypes.context import TaskContext

PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"  # E.164
SENDER_ID_PATTERN = r"^[A-Za-z0-9]{1,11}$"
# SNS takes 1600 bytes; 400 characters stay under it even at 4 bytes a character.
MAX_MESSAGE = 400
SMS_TYPES = ["Transactional", "Promotional"]
FIELDS = {"phone_number", "message", "sender_id", "sms_type"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Needs phone_number (E.164, e.g. +15555550100) and message.",
    "required": ["phone_number", "message"],
    "properties": {
        "phone_number": {"type": "string", "pattern": PHONE_PATTERN},
        "message": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE},
        "sender_id": {"type": "string", "pattern": SENDER_ID_PATTERN},
        "sms_type": {"enum": SMS_TYPES},
    },
    "patternProperties": {"^_": {}},
    "additionalProperties": False,
}


def _matches(value: Any, pattern: str) -> bool:
    return isinstance(value, str) and re.search(pattern, value) is not None


def validate(payload: Any) -> None:
    check_keys(payload, FIELDS, "send-sms")
    require(
        _matches(payload.get("phone_number"), PHONE_PATTERN),
        'send-sms: "phone_number" must be E.164, e.g. "+15555550100"',
    )
    message = payload.get("message")
    require(
        isinstance(message, str) and 1 <= len(message) <= MAX_MESSAGE,
        f'send-sms: "message" must be a string of 1..{MAX_MESSAGE} characters',
    )
    if "sender_id" in payload:
        require(_matches(payload["sender_id"], SENDER_ID_PATTERN), 'send-sms: "sender_id" is 1..11 letters or digits')
    if "sms_type" in payload:
        require(payload["sms_type"] in SMS_TYPES, f'send-sms: "sms_type" is one of {", ".join(SMS_TYPES)}')


@registry.task("send-sms", validate=validate, payload_schema=SCHEMA)
def send_sms(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sends one SMS with Amazon SNS to an E.164 phone number; once per task."""
    phone = payload["phone_number"].strip()
    attributes: dict[str, Any] = {
        "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": payload.get("sms_type", "Transactional")}
    }
    if "sender_id" in payload:
        attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": payload["sender_id"]}

    def send() -> dict[str, Any]:
        from chalicelib.adapters.aws import clients as awsclients

        response = aws_call(
            "SNS Publish",
            lambda: awsclients.client("sns").publish(
                PhoneNumber=phone, Message=payload["message"], MessageAttributes=attributes
            ),
        )
        return {"message_id": response["MessageId"], "phone_number": phone}

    return once_per_task("send-sms", ctx, payload, send)
