"""The API's presenters without I/O: cursors (round trip; anything forged is a 400,
never a 500), and the status codes chosen from use-case results (batch, cancel)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.api import presenters
from chalicelib.core.errors import ConflictError, ValidationError
from chalicelib.core.model import Priority, Status, Task
from chalicelib.services.lifecycle import CancelOutcome, CancelResult
from chalicelib.services.reads import Page, Position
from chalicelib.services.submit import BatchItem, BatchResult, Submitted

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def make_task(**changes: object) -> Task:
    task = Task(
        id=str(uuid.uuid4()),
        tenant="t",
        name="noop",
        status=Status.QUEUED,
        priority=Priority.NORMAL,
        payload={"k": 1},
        result=None,
        attempts=0,
        max_retries=3,
        timeout_seconds=300,
        run_at=AT,
        last_error=None,
        last_error_type=None,
        cancel_requested=False,
        idempotency_key=None,
        created_at=AT,
        updated_at=AT,
        enqueued_at=AT,
        started_at=None,
        finished_at=None,
    )
    return replace(task, **changes)  # type: ignore[arg-type]


# --- cursors ----------------------------------------------------------------------------


@given(
    at=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)),
    task_id=st.uuids(),
)
def test_a_cursor_round_trips(at: datetime, task_id: uuid.UUID) -> None:
    position = Position(at, str(task_id))
    cursor = presenters.encode_cursor(position)
    assert presenters.decode_cursor(cursor) == position
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # safe in a query string


def test_a_cursor_with_an_offset_decodes_to_the_same_instant_in_utc() -> None:
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    decoded = presenters.decode_cursor(presenters.encode_cursor(Position(paris, str(uuid.uuid4()))))
    assert decoded.at == AT and decoded.at.utcoffset() == timedelta(0)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED = [
    "",
    "x",
    "!!!!",
    "é",
    "a" * 300,
    _b64(b"garbage"),
    _b64(b"\xff\xfe\xfd"),
    _b64(b"2026-01-02T03:04:05+00:00"),  # no id
    _b64(b"2026-01-02T03:04:05+00:00|not-a-uuid"),
    _b64(b"yesterday|" + str(uuid.uuid4()).encode()),
    _b64(b"2026-01-02T03:04:05|" + str(uuid.uuid4()).encode()),  # no offset
    _b64(b"0001-01-01T00:00:00+23:59|" + str(uuid.uuid4()).encode()),  # before year 1 in UTC
    _b64(b"9999-12-31T23:59:59-23:59|" + str(uuid.uuid4()).encode()),  # after year 9999 in UTC
    _b64(("2026-01-02T03:04:05+00:00|" + str(uuid.uuid4()) + "\x00").encode()),
]


@pytest.mark.parametrize("cursor", FORGED, ids=[f"forged{i}" for i in range(len(FORGED))])
def test_a_forged_cursor_is_a_400_naming_the_field(cursor: str) -> None:
    with pytest.raises(ValidationError) as caught:
        presenters.decode_cursor(cursor)
    assert caught.value.status == 400 and caught.value.details == {"field": "cursor"}


@given(st.text(max_size=300))
def test_any_text_as_a_cursor_decodes_or_is_a_400(cursor: str) -> None:
    try:
        position = presenters.decode_cursor(cursor)
    except ValidationError:
        return
    assert position.at.tzinfo is not None and uuid.UUID(position.task_id)


def test_a_page_links_to_the_next_one_only_when_there_is_one() -> None:
    task = make_task()
    last = presenters.page(Page([task], None))
    assert last["next_cursor"] is None and last["items"][0]["id"] == task.id
    more = presenters.page(Page([task], Position(task.created_at, task.id)))
    assert presenters.decode_cursor(more["next_cursor"]) == Position(task.created_at, task.id)


# --- tasks, batches, cancel ---------------------------------------------------------------


def test_a_task_is_shown_with_iso_timestamps_and_every_field() -> None:
    body = presenters.task(make_task(schedule_id="s", progress=50))
    assert body["created_at"] == AT.isoformat() and body["finished_at"] is None
    assert body["status"] == "QUEUED" and body["priority"] == "normal"
    assert body["schedule_id"] == "s" and body["progress"] == 50
    assert len(body) == 30 and body["waiting_on"] is None and body["trace_id"] is None and body["batch_id"] is None
    assert body["unique_key"] is None and body["expires_at"] is None and body["snoozes"] == 0


def test_a_batch_of_new_tasks_is_201() -> None:
    result = BatchResult([BatchItem(0, Submitted(make_task())), BatchItem(1, Submitted(make_task()))])
    status, body = presenters.batch(result)
    assert status == 201 and body["created"] == 2 and body["failed"] == 0
    assert [r["status"] for r in body["results"]] == [201, 201]


def test_a_batch_with_a_replay_or_a_refusal_is_200_with_per_item_statuses() -> None:
    items = [
        BatchItem(0, Submitted(make_task())),
        BatchItem(1, Submitted(make_task(), replayed=True)),
        BatchItem(2, error=ValidationError("tasks[2]: name is required")),
        BatchItem(3, error=ConflictError("idempotency key 'k' was already used with a different request")),
    ]
    status, body = presenters.batch(BatchResult(items))
    assert status == 200 and body["created"] == 1 and body["failed"] == 2
    assert [r["status"] for r in body["results"]] == [201, 200, 400, 409]
    assert body["results"][1]["replayed"] is True
    assert body["results"][2] == {
        "index": 2,
        "status": 400,
        "error": {"code": "validation_error", "message": "tasks[2]: name is required"},
    }
    replays_only = BatchResult([BatchItem(0, Submitted(make_task(), replayed=True))])
    assert presenters.batch(replays_only)[0] == 200


def test_cancel_is_200_when_cancelled_202_when_requested_and_409_when_final() -> None:
    task = make_task(status=Status.CANCELLED)
    assert presenters.cancelled(CancelResult(CancelOutcome.CANCELLED, task, Status.QUEUED))[0] == 200
    running = make_task(status=Status.PROCESSING, cancel_requested=True)
    status, body = presenters.cancelled(CancelResult(CancelOutcome.REQUESTED, running, Status.PROCESSING))
    assert status == 202 and body["cancel_requested"] is True
    done = make_task(status=Status.COMPLETED)
    with pytest.raises(ConflictError) as caught:
        presenters.cancelled(CancelResult(CancelOutcome.ALREADY_FINAL, done, Status.COMPLETED))
    assert caught.value.details == {"status": "COMPLETED"} and "already COMPLETED" in caught.value.message


# --- a task's timestamps ------------------------------------------------------------------


def test_a_task_formats_each_timestamp_as_its_own_isoformat() -> None:
    # The presenter formats created_at once and reuses the text for the timestamps
    # equal to it; equal instants in another zone, or in the other fold of a zone's
    # repeated hour, read differently and must keep their own text.
    paris = ZoneInfo("Europe/Paris")
    first = datetime(2026, 10, 25, 2, 30, tzinfo=paris)  # the repeated hour: +02:00, then (fold=1) +01:00
    task = make_task(
        created_at=first,
        updated_at=first.replace(fold=1),
        run_at=first.astimezone(UTC),
        enqueued_at=datetime(2026, 10, 25, 2, 30, tzinfo=paris),  # equal, another object
    )
    body = presenters.task(task)
    assert body["created_at"] == "2026-10-25T02:30:00+02:00"
    assert body["updated_at"] == "2026-10-25T02:30:00+01:00"
    assert body["run_at"] == "2026-10-25T00:30:00+00:00"
    assert body["enqueued_at"] == "2026-10-25T02:30:00+02:00"


@given(
    stamps=st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), ZoneInfo("Europe/Paris")]),
        ),
        min_size=4,
        max_size=4,
    ),
    same=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_a_task_shows_what_isoformat_shows(stamps: list[datetime], same: list[bool]) -> None:
    created = stamps[0]
    run_at, updated_at, enqueued_at = (created if s else other for s, other in zip(same, stamps[1:], strict=True))
    body = presenters.task(make_task(created_at=created, run_at=run_at, updated_at=updated_at, enqueued_at=enqueued_at))
    shown = [body[k] for k in ("created_at", "run_at", "updated_at", "enqueued_at")]
    assert shown == [d.isoformat() for d in (created, run_at, updated_at, enqueued_at)]
    assert (body["status"], body["priority"]) == ("QUEUED", "normal")
