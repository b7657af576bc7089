"""``generate-pdf``: renders a PDF (fpdf2) and stores it in S3 under ``pdfs/<task_id>.pdf``."""

from __future__ import annotations

from typing import Any

from chalicelib.tasktypes.aws import aws_call, check_keys, need_setting, once_per_task, settings_of
from chalicelib.tasktypes.catalog import registry, require
from chalicelib.tasktypes.context import TaskContext

MAX_TITLE = 200
MAX_BODY = 100_000
FIELDS = {"title", "body", "author"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Needs title; body is plain text (paragraphs split on newlines). "
    "Characters outside Latin-1 are rendered as '?'.",
    "required": ["title"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE},
        "body": {"type": "string", "maxLength": MAX_BODY},
        "author": {"type": "string", "maxLength": MAX_TITLE},
    },
    "patternProperties": {"^_": {}},
    "additionalProperties": False,
}


def validate(payload: Any) -> None:
    check_keys(payload, FIELDS, "generate-pdf")
    title = payload.get("title")
    require(
        isinstance(title, str) and 1 <= len(title) <= MAX_TITLE,
        f'generate-pdf: "title" must be a string of 1..{MAX_TITLE} characters',
    )
    body = payload.get("body", "")
    require(isinstance(body, str) and len(body) <= MAX_BODY, f'generate-pdf: "body" is a string of at most {MAX_BODY}')
    author = payload.get("author", "")
    require(isinstance(author, str) and len(author) <= MAX_TITLE, f'generate-pdf: "author" is at most {MAX_TITLE}')


def _latin1(text: str) -> str:
    """What the PDF core fonts can draw: Latin-1, control characters as spaces."""
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    text = "".join(c if c == "\n" or ord(c) >= 32 else " " for c in text)
    return text.encode("latin-1", "replace").decode("latin-1")


def render(title: str, body: str = "", author: str = "", *, task_id: str = "") -> bytes:
    """The PDF document's bytes: the title as a heading, then the body's paragraphs."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(title))
    if author:
        pdf.set_author(_latin1(author))
    pdf.set_creator("Tasklane")
    if task_id:
        pdf.set_subject(f"task {task_id}")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=18)
    pdf.multi_cell(0, 9, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", size=11)
    for paragraph in _latin1(body).split("\n"):
        pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


@registry.task("generate-pdf", validate=validate, payload_schema=SCHEMA)
def generate_pdf(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Renders a PDF from the payload and stores it in TASKLANE_S3_BUCKET at pdfs/<task_id>.pdf."""
    settings = settings_of(ctx)
    bucket = need_setting(settings.s3_bucket, "TASKLANE_S3_BUCKET")
    key = f"pdfs/{ctx.task_id}.pdf"

    def store() -> dict[str, Any]:
        from chalicelib.adapters.aws import clients as awsclients

        document = render(payload["title"], payload.get("body", ""), payload.get("author", ""), task_id=ctx.task_id)
        aws_call(
            "S3 PutObject",
            lambda: awsclients.client("s3").put_object(
                Bucket=bucket,
                Key=key,
                Body=document,
                ContentType="application/pdf",
                Metadata={"task-id": ctx.task_id, "attempt": str(ctx.attempt)},
            ),
        )
        return {"bucket": bucket, "key": key, "bytes": len(document)}

    return once_per_task("generate-pdf", ctx, payload, store)
