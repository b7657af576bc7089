"""Cron schedules against the real store: exactly once per tick, catch-up policies."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.container import Container
from chalicelib.core.errors import ValidationError
from chalicelib.core.records import Schedule, ScheduleSpec
from chalicelib.core.schedules import parse_schedule
from chalicelib.services import schedules
from chalicelib.services.submit import submit
from chalicelib.services.sweep import sweep
from tests.helpers import query, request, wait_for

TENANT = "cron"
ACTOR = "key:test"


def create(rt: Container, body: dict[str, Any]) -> Schedule:
    return schedules.create(rt, TENANT, parse_schedule(body, rt.settings, rt.registry), actor=ACTOR).schedule


def patch(rt: Container, schedule_id: str, body: dict[str, Any]) -> Schedule:
    def revise(current: ScheduleSpec) -> ScheduleSpec:
        return parse_schedule(body, rt.settings, rt.registry, current=current)

    return schedules.update(rt, TENANT, schedule_id, revise, actor=ACTOR).schedule


def test_five_racing_sweepers_fire_each_tick_exactly_once(make_rt: Callable[..., Container]) -> None:
    rts = [make_rt() for _ in range(5)]
    created = create(
        rts[0], {"name": "every-second", "cron": "* * * * * *", "task": {"name": "noop", "payload": {"k": 1}}}
    )
    stop = threading.Event()
    errors: list[BaseException] = []
    db = rts[0].settings.database_url
    runs_sql = "SELECT fire_at, task_id FROM schedule_runs WHERE schedule_id = %s ORDER BY fire_at"

    def sweeper(rt: Container) -> None:
        try:
            while not stop.is_set():
                sweep(rt)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=sweeper, args=(rt,)) for rt in rts]
    for t in threads:
        t.start()
    try:
        # Until three ticks have fired, not for a fixed 4 s: a loaded machine's sweepers
        # may fire fewer in that time (a slow sweep fires the latest due tick only).
        wait_for(lambda: len(query(db, runs_sql, created.id)) >= 3, timeout=60, message="three ticks to fire")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    runs = query(db, runs_sql, created.id)
    tasks = query(db, "SELECT id, schedule_id, payload FROM tasks WHERE schedule_id = %s", created.id)
    assert len(runs) >= 3
    assert len(tasks) == len(runs)  # one task per tick, never two
    fire_times = [r[0] for r in runs]
    assert len(set(fire_times)) == len(fire_times)
    # Ticks are whole seconds apart (a slow sweep catches up once, never twice; how many
    # seconds it skips depends on how slow it was).
    assert all((b - a).total_seconds() in range(1, 61) for a, b in itertools.pairwise(fire_times))
    assert all(t[2] == {"k": 1} for t in tasks)


def _stale_hourly(rt: Container, name: str, catch_up: str) -> Schedule:
    """An hourly schedule whose latest tick is half an hour old and whose due tick is
    hours old: the sweeper was down meanwhile."""
    minute = (datetime.now(UTC).minute + 30) % 60
    s = create(rt, {"name": name, "cron": f"{minute} * * * *", "catch_up": catch_up, "task": {"name": "noop"}})
    query(
        rt.settings.database_url,
        "UPDATE schedules SET next_fire_at = next_fire_at - interval '5 hours' WHERE id = %s RETURNING id",
        s.id,
    )
    return s


def test_catch_up_once_fires_a_single_task_after_downtime(rt: Container) -> None:
    s = _stale_hourly(rt, "hourly-once", "once")
    sweep(rt)
    sweep(rt)
    assert len(rt.store.schedule_runs(s.id, limit=100)) == 1
    after = schedules.get(rt, TENANT, s.id).schedule
    assert after.last_fired_at is not None and after.next_fire_at > after.last_fired_at


def test_catch_up_skip_fires_nothing_for_stale_ticks(rt: Container) -> None:
    s = _stale_hourly(rt, "hourly-skip", "skip")
    sweep(rt)
    assert rt.store.schedule_runs(s.id, limit=100) == []
    after = schedules.get(rt, TENANT, s.id).schedule
    assert after.last_fired_at is None and after.next_fire_at > datetime.now(UTC)


def test_disabled_schedule_does_not_fire_and_patch_re_enables(rt: Container) -> None:
    db = rt.settings.database_url
    s = create(rt, {"name": "off", "cron": "* * * * * *", "enabled": False, "task": {"name": "noop"}})
    # Its tick is overdue (as if seconds passed while disabled): still nothing fires.
    query(db, "UPDATE schedules SET next_fire_at = now() - interval '5 seconds' WHERE id = %s RETURNING id", s.id)
    sweep(rt)
    sweep(rt)
    assert rt.store.schedule_runs(s.id) == []
    assert query(db, "SELECT count(*) FROM tasks WHERE schedule_id = %s", s.id) == [(0,)]

    [(enabled_at,)] = query(db, "SELECT now()")
    on = patch(rt, s.id, {"enabled": True})
    assert on.spec.enabled is True

    def fired() -> list[tuple[object, ...]]:
        sweep(rt)
        return query(db, "SELECT fire_at, task_id FROM schedule_runs WHERE schedule_id = %s", s.id)

    runs = wait_for(fired, timeout=10, interval=0.1, message="the re-enabled schedule to fire")
    # It fires again, and only for ticks after it was enabled: none of the missed ones.
    assert all(fire_at > enabled_at for fire_at, _ in runs)
    tasks = query(db, "SELECT id FROM tasks WHERE schedule_id = %s", s.id)
    assert sorted(t[0] for t in tasks) == sorted(r[1] for r in runs)


def test_a_schedule_left_enabled_by_a_test(rt: Container) -> None:
    s = create(rt, {"name": "leftover", "cron": "* * * * * *", "task": {"name": "noop"}})
    assert s.spec.enabled is True  # deliberately not deleted: the fixture's teardown must


def test_is_gone_before_the_next_test_cleans_anything(database_url: str) -> None:
    """Runs after the test above without the cleaning fixtures: the teardown of ``rt``
    removed its every-second schedule, which would otherwise fire in every later
    test's sweeps."""
    assert query(database_url, "SELECT count(*) FROM schedules WHERE enabled") == [(0,)]


def test_an_edit_that_keeps_the_timing_keeps_the_next_tick(rt: Container) -> None:
    s = create(rt, {"name": "daily", "cron": "0 9 * * *", "timezone": "Europe/Paris", "task": {"name": "noop"}})
    renamed = patch(rt, s.id, {"name": "daily-9", "task": {"name": "noop", "priority": "high"}})
    assert renamed.next_fire_at == s.next_fire_at and renamed.spec.priority == "high"
    assert renamed.spec.cron == "0 9 * * *" and renamed.spec.timezone == "Europe/Paris"
    moved = patch(rt, s.id, {"cron": "0 10 * * *"})
    assert moved.next_fire_at != s.next_fire_at
    detail = schedules.get(rt, TENANT, s.id)
    assert len(detail.upcoming) == 5 and detail.upcoming[0] == moved.next_fire_at and detail.runs == []
    assert s.id in [x.id for x in schedules.list_all(rt, TENANT)]
    assert schedules.list_all(rt, "another-tenant") == []


def test_a_second_schedule_with_the_same_name_is_a_conflict(rt: Container) -> None:
    import pytest

    from chalicelib.core.errors import ConflictError, NotFoundError

    create(rt, {"name": "twice", "cron": "0 9 * * *", "task": {"name": "noop"}})
    with pytest.raises(ConflictError):
        create(rt, {"name": "twice", "cron": "0 10 * * *", "task": {"name": "noop"}})
    with pytest.raises(NotFoundError):
        schedules.delete(
            rt,
            "another-tenant",
            create(rt, {"name": "x", "cron": "0 9 * * *", "task": {"name": "noop"}}).id,
            actor=ACTOR,
        )


def test_one_sweep_fires_every_schedule_due_not_only_a_page_of_them(
    rt: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule left for the next sweep has a newer tick due by then, and catch-up
    "once" fires only that: the tick it was due for was lost (250 every-minute
    schedules fired 100 a sweep).  Pages of 10 here, 25 schedules."""
    monkeypatch.setattr(schedules, "SCHEDULE_PAGE", 10)
    made = [create(rt, {"name": f"s{i}", "cron": "* * * * *", "task": {"name": "noop"}}) for i in range(25)]
    query(
        rt.settings.database_url,
        "UPDATE schedules SET next_fire_at = now() - interval '1 second' WHERE id = ANY(%s::uuid[]) RETURNING id",
        [s.id for s in made],
    )
    assert sweep(rt).scheduled == 25
    [(due,)] = query(rt.settings.database_url, "SELECT count(*) FROM schedules WHERE next_fire_at <= now()")
    assert due == 0


def test_a_sweep_step_that_fails_unexpectedly_does_not_skip_the_steps_after_it(
    rt: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only outages (UnavailableError) were caught: any other error of one step, such
    as a value the database refused, skipped every step after it, on every sweep."""

    def refused(*args: object, **kwargs: object) -> list[object]:
        raise ValidationError("invalid value: refused by the database")

    monkeypatch.setattr(schedules, "fire_due", refused)
    due = submit(rt, TENANT, request(delay_seconds=3600)).task
    query(rt.settings.database_url, "UPDATE tasks SET run_at = now() WHERE id = %s RETURNING id", due.id)
    report = sweep(rt)
    assert report.errors == ["fire_schedules: ValidationError: invalid value: refused by the database"]
    assert report.promoted == 1  # a step after the one that failed
