"""The drainer's INFO summary of finished batches (``observability.batchlog``)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.observability.batchlog import FinishedSummary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "event", None) == "batches"]


def test_summary_writes_one_line_per_period_with_the_sums(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    summary = FinishedSummary("w1", every=10.0, clock=clock)
    with caplog.at_level("INFO", logger="tasklane"):
        summary.add({"completed": 1}, 1, 0, 2.0)
        clock.now += 4
        summary.add({"retry": 1}, 2, 1, 7.5)
        summary.flush_due()
        assert lines(caplog) == []  # the period is not over
        clock.now += 6
        summary.add({"completed": 1, "dead_letter": 1}, 2, 0, 3.0)
    (line,) = lines(caplog)
    assert line.levelname == "INFO" and line.getMessage() == "batches finished"
    assert (line.batches, line.count, line.lease_lost) == (3, 5, 1)
    assert (line.completed, line.retry, line.dead_letter, line.cancelled) == (2, 1, 1, 0)
    assert (line.duration_ms_max, line.seconds, line.worker) == (7.5, 10.0, "w1")


def test_summary_flushes_what_it_holds_and_nothing_when_empty(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    summary = FinishedSummary("w1", every=10.0, clock=clock)
    with caplog.at_level("INFO", logger="tasklane"):
        summary.flush()
        summary.add({"cancelled": 1}, 1, 0, 1.0)
        summary.flush()
        summary.flush()
    (line,) = lines(caplog)
    assert (line.batches, line.cancelled) == (1, 1)


def test_an_idle_drainer_writes_the_held_line_once_its_period_is_over(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    summary = FinishedSummary("w1", every=10.0, clock=clock)
    with caplog.at_level("INFO", logger="tasklane"):
        summary.add({"completed": 1}, 1, 0, 1.0)
        clock.now += 9.9
        summary.flush_due()
        assert lines(caplog) == []
        clock.now += 0.1
        summary.flush_due()
        summary.flush_due()
    assert len(lines(caplog)) == 1
