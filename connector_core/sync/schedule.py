"""When jobs are due: cron expressions read with croniter, in the machine's local time.

A job is due when its schedule fired at least once since its last run (or it never ran).
`connector run --due` (from cron or a systemd timer) runs what is due and exits;
`connector schedule` stays up, sleeping until the next job is due.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from croniter import croniter

log = logging.getLogger("connector.schedule")


def local_now() -> dt.datetime:
    """The current time, aware, in the machine's time zone (cron's convention)."""
    return dt.datetime.now().astimezone()


def previous_fire(schedule: str, now: dt.datetime) -> dt.datetime:
    """The last time at or before `now` that `schedule` fired."""
    fired: dt.datetime = croniter(schedule, now).get_prev(dt.datetime)
    if croniter.match(schedule, now.replace(second=0, microsecond=0)):
        fired = max(fired, now.replace(second=0, microsecond=0))
    return fired


def next_fire(schedule: str, now: dt.datetime) -> dt.datetime:
    """The first time after `now` that `schedule` fires."""
    fired: dt.datetime = croniter(schedule, now).get_next(dt.datetime)
    return fired


def is_due(schedule: str | None, last_run_at: dt.datetime | None, now: dt.datetime) -> bool:
    """True when `schedule` fired since `last_run_at` (a job that never ran is due)."""
    if schedule is None:
        return False
    if last_run_at is None:
        return True
    return previous_fire(schedule, now) > last_run_at


def due_jobs(
    schedules: Mapping[str, str | None],
    last_runs: Mapping[str, dt.datetime | None],
    now: dt.datetime,
) -> list[str]:
    """The names of the jobs that are due, in the order given."""
    return [job for job, schedule in schedules.items() if is_due(schedule, last_runs.get(job), now)]


@dataclasses.dataclass
class Scheduler:
    """Run due jobs forever; a failing job is logged and never stops the others.

    ``run_due`` runs what is due now and returns; ``schedules`` maps job to cron expression.
    The clock and sleep are parameters so that tests can drive time.
    """

    schedules: Mapping[str, str | None]
    run_due: Callable[[dt.datetime], Iterable[str]]
    clock: Callable[[], dt.datetime] = local_now
    sleep: Callable[[float], object] = time.sleep
    stop_requested: bool = False

    def seconds_until_next(self, now: dt.datetime) -> float | None:
        """How long until some job is due next; None when no job has a schedule."""
        fires = [next_fire(s, now) for s in self.schedules.values() if s]
        return None if not fires else max(0.0, (min(fires) - now).total_seconds())

    def tick(self) -> None:
        """Run what is due now, surviving any failure."""
        try:
            ran = list(self.run_due(self.clock()))
        except Exception:
            log.exception("running due jobs failed; the scheduler carries on")
            return
        if ran:
            log.info("ran %s", ", ".join(ran))

    def serve(self, *, max_ticks: int | None = None) -> None:
        """Tick, then sleep until the next job is due; stop when asked (or after max_ticks)."""
        ticks = 0
        while not self.stop_requested and (max_ticks is None or ticks < max_ticks):
            self.tick()
            ticks += 1
            wait = self.seconds_until_next(self.clock())
            if wait is None:
                log.warning("no job has a schedule; nothing to wait for")
                return
            self.sleep(min(wait + 0.5, 3600.0))
