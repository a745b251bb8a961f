"""Cron schedules: what is due, and a scheduler that outlives failing jobs."""

from __future__ import annotations

import datetime as dt

import pytest

from connector_core.sync.schedule import Scheduler, due_jobs, is_due, next_fire

UTC = dt.UTC


def at(hour: int, minute: int = 0, day: int = 22) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "last", "now", "due"),
    [
        ("0 * * * *", None, at(10, 5), True),  # never ran
        ("0 * * * *", at(10, 1), at(10, 59), False),  # ran after the 10:00 firing
        ("0 * * * *", at(9, 59), at(10, 0), True),  # exactly at the firing minute
        ("0 * * * *", at(9, 30), at(10, 5), True),
        ("30 2 * * *", at(2, 31, day=21), at(23, 0, day=21), False),
        ("30 2 * * *", at(2, 31, day=21), at(2, 30), True),
        (None, None, at(10), False),  # no schedule: only run by hand
    ],
    ids=[
        "never-ran",
        "already-ran",
        "firing-minute",
        "missed",
        "daily-not-yet",
        "daily-due",
        "unscheduled",
    ],
)
def test_is_due(
    schedule: str | None, last: dt.datetime | None, now: dt.datetime, due: bool
) -> None:
    assert is_due(schedule, last, now) is due


def test_due_jobs_keeps_order() -> None:
    schedules = {"b": "0 * * * *", "a": "*/5 * * * *", "c": None}
    assert due_jobs(schedules, {"b": at(10, 1)}, at(10, 7)) == ["a"]


def test_next_fire() -> None:
    assert next_fire("30 2 * * *", at(10)) == at(2, 30, day=23)


def test_scheduler_survives_a_failing_run_and_sleeps_until_next() -> None:
    now = [at(10, 0)]
    slept: list[float] = []
    calls: list[dt.datetime] = []

    def run_due(when: dt.datetime) -> list[str]:
        calls.append(when)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return ["job"]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += dt.timedelta(seconds=seconds)

    scheduler = Scheduler({"job": "*/15 * * * *"}, run_due, clock=lambda: now[0], sleep=sleep)
    scheduler.serve(max_ticks=3)
    assert len(calls) == 3
    assert slept[0] == pytest.approx(15 * 60 + 0.5)


def test_scheduler_without_schedules_returns() -> None:
    scheduler = Scheduler({"job": None}, lambda _now: [], clock=lambda: at(10))
    scheduler.serve()
