"""Cron schedules: the largest gap between two runs, at every point of the day, week and year.

The SV docs require a backup "at least every 4 hours"; an expression like `0 0-12/4 * * *` fires every
4 hours by day and leaves a 12-hour hole at night, so we measure the real largest gap over a full period of
the expression instead of trusting its step. CronJobs run with `timeZone: Etc/UTC` (see postgres/cometbft
components): in a zone with daylight saving time a "4-hourly" schedule has a 5-hour gap once a year.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

# A fixed origin keeps the result independent of today's date. Monday, so weekly schedules start aligned.
_ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
# When day-of-month and month are unrestricted the schedule repeats every week: 8 days cover every gap.
_WEEKLY_SPAN = timedelta(days=8)
# Otherwise it repeats at most every 4 years (29 February); the scan stops early once a gap exceeds the
# limit the caller cares about, so frequent schedules stay cheap.
_LEAP_CYCLE_SPAN = timedelta(days=4 * 366 + 1)


class InvalidCron(ValueError):
    pass


# The five fields of a Kubernetes CronJob schedule and what each takes (besides `*`, lists, ranges and steps).
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-6 or SUN-SAT"),
)


def validate_cron(expression: str) -> None:
    """Accept standard 5-field cron only (what a Kubernetes CronJob takes), and only one that ever fires.

    The message names what is wrong: the number of fields, the field out of range, or the day that no month
    of the expression has (`0 0 31 2 *` is valid syntax and never runs: its CronJob would never back up)."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidCron(
            f"{expression!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week)"
        )
    for index, (name, allowed) in enumerate(_FIELDS):
        alone = " ".join(field if position == index else "*" for position, field in enumerate(fields))
        if not croniter.is_valid(alone):
            raise InvalidCron(f"{expression!r}: the {name} field {fields[index]!r} is not valid (allowed: {allowed})")
    if not croniter.is_valid(expression):
        raise InvalidCron(f"{expression!r} is not a valid cron expression")
    try:
        croniter(expression, _ORIGIN, ret_type=datetime).get_next()
    except CroniterBadDateError:
        raise InvalidCron(
            f"{expression!r} never fires: no month it names has day {fields[2]} (and no day of the week is named)"
        ) from None


def _gaps(expression: str):
    """Yield the time between consecutive runs over one full period of the expression."""
    validate_cron(expression)
    _minute, _hour, day_of_month, month, _dow = expression.split()
    span = _WEEKLY_SPAN if day_of_month == "*" and month == "*" else _LEAP_CYCLE_SPAN
    runs = croniter(expression, _ORIGIN - timedelta(seconds=1), ret_type=datetime)
    previous = runs.get_next()
    while previous <= _ORIGIN + span:
        current = runs.get_next()
        yield current - previous
        previous = current


# The scans are pure and the costliest part of validating a config and of the policy pack's schedule rules, so
# they are cached: the stacks one offline plan plans (one per SV node) and the CronJobs of one stack share
# schedules. An invalid expression raises, and is not cached.
@functools.lru_cache(maxsize=512)
def largest_gap(expression: str, stop_above: timedelta | None = None) -> timedelta:
    """The longest time between two consecutive runs of `expression`.

    If `stop_above` is given, the scan may stop as soon as it finds a gap longer than that and returns it
    (the true largest gap is then at least the returned value)."""
    widest = timedelta(0)
    for gap in _gaps(expression):
        widest = max(widest, gap)
        if stop_above is not None and widest > stop_above:
            break
    return widest


@functools.lru_cache(maxsize=512)
def smallest_gap(expression: str) -> timedelta:
    """The shortest time between two consecutive runs (bounds how long one run may take)."""
    narrowest = timedelta.max
    for gap in _gaps(expression):
        narrowest = min(narrowest, gap)
        if narrowest <= timedelta(minutes=1):
            break
    return narrowest


def describe(value: timedelta) -> str:
    hours, rest = divmod(int(value.total_seconds()), 3600)
    minutes = rest // 60
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# The SV docs: every Postgres instance and CometBFT "at least every 4 hours"; we hold the identities dump to
# the same bound so that a rotated key is never more than 4 hours from being backed up.
MAX_SCHEDULE_GAP = timedelta(hours=4)
# A run may start up to its start window late (CronJob startingDeadlineSeconds) and must then finish a margin
# before the next one is due: start window + run deadline + margin = the smallest gap between two runs. Both
# scale with the schedule (an eighth of the smallest gap each), capped at 15 minutes for 4-hourly schedules.
MAX_START_WINDOW = timedelta(minutes=15)
MIN_START_WINDOW = timedelta(minutes=1)
START_WINDOW_SHARE = 8
# The shortest run deadline each kind of job can meet. A dump set streams every database of the node (hundreds
# of GB for a participant at ~5 s/GB on 2 cores, plus connection, seal and promotion): under 45 minutes a
# healthy run could be killed. A CSI snapshot is copy-on-write: the job creates it and waits until it is
# ready, minutes on PD and EBS. The identities dump is one HTTPS call and one secret version.
MIN_RUN_DEADLINE = {
    "postgres": timedelta(minutes=45),
    "cometbft": timedelta(minutes=10),
    "identities": timedelta(minutes=5),
    # A snapshot set (sv-backups:snapshots): per role a storage snapshot requested and waited for until the provider
    # reports it complete (PD/EBS snapshots are incremental, minutes; a Cloud SQL backup run or an RDS snapshot of
    # a large instance can take tens of minutes), then the DR copy where the job makes one (EBS, RDS).
    "postgres-snapshots": timedelta(minutes=30),
}
BACKUP_KINDS = ("postgres", "cometbft", "identities")
# The backup kind of snapshot sets (sv-backups:snapshots): its schedule is sv-backups:snapshots.schedule, its events
# and alerts carry this kind (jobs/events.py KINDS).
SNAPSHOT_KIND = "postgres-snapshots"
# The longest a run may take whatever its schedule leaves. Only dump sets have one: with snapshot sets on, the dumps
# may be weekly, and a run as long as the week would hold one transaction open on the production database for days
# (vacuum cannot remove what died after it began) and push the stale alert past what CloudWatch can watch (7 days).
# A day holds ~5 TB at the measured 16.8 s/GB (docs/jobs.md); a 4-hourly schedule's runs (3.5 h) are unchanged.
MAX_RUN_DEADLINE = {"postgres": timedelta(hours=24)}
# How long a check may run (its Job deadline), whatever its schedule leaves: the history audit reads the manifests,
# the DR replica check lists both stores, minutes each; longer is a hung run, and a bound keeps their stale alerts
# one gap (plus this) away instead of two gaps on a sparse schedule.
MAX_CHECK_RUN = timedelta(hours=2)


@dataclass(frozen=True)
class Timing:
    """When one backup kind runs and how long a run may take, derived from its schedule."""

    smallest_gap: timedelta  # shortest time between two runs
    largest_gap: timedelta  # longest time between two runs (the RPO of this kind)
    start_window: timedelta  # CronJob startingDeadlineSeconds
    deadline: timedelta  # Job activeDeadlineSeconds: start window + deadline + margin = smallest gap

    @property
    def latest_finish(self) -> timedelta:
        """How long after its scheduled time a run may still finish."""
        return self.start_window + self.deadline

    def stale_after(self, slack: timedelta) -> timedelta:
        """The longest a healthy schedule goes without a finished run (the largest gap, then a run that starts and
        finishes as late as allowed), plus `slack`: the age past which the newest run's outcome is overdue."""
        return self.largest_gap + self.latest_finish + slack


def schedule_timing(
    expression: str, *, max_gap: timedelta | None = MAX_SCHEDULE_GAP, max_run: timedelta | None = None
) -> Timing:
    """Start window and margin are each an eighth of the smallest gap (1 to 15 minutes); the rest is the run's, up
    to `max_run` when given (MAX_RUN_DEADLINE).

    The largest gap is scanned until it exceeds `max_gap` (the 4-hour bound a backup schedule must meet: a
    schedule over it is refused, its exact gap does not matter); `max_gap=None` scans the whole period, for a
    schedule allowed to be sparser (the dump sets beside snapshot sets), whose largest gap enters the historical
    cadence (rules/retention.py postgres_historical_cadence)."""
    largest = largest_gap(expression, stop_above=max_gap)
    smallest = smallest_gap(expression)
    start_window = _start_window(smallest)
    deadline = smallest - 2 * start_window
    return Timing(smallest, largest, start_window, deadline if max_run is None else min(max_run, deadline))


def check_timing(expression: str, max_run: timedelta) -> Timing:
    """The timing of a job that checks the backups (the history audit, the DR replica check, a drill: no 4-hour
    bound, may be weekly or irregular, e.g. weekdays only): the exact largest gap over a full period (an alert's
    staleness bound; schedule_timing stops at the first gap over 4 hours), and a run of at most `max_run`."""
    smallest = smallest_gap(expression)
    start_window = _start_window(smallest)
    return Timing(smallest, largest_gap(expression), start_window, min(max_run, smallest - 2 * start_window))


def _start_window(gap: timedelta) -> timedelta:
    share = timedelta(minutes=int(gap.total_seconds() // 60 // START_WINDOW_SHARE))
    return min(MAX_START_WINDOW, max(MIN_START_WINDOW, share))


def shortest_gap_for(kind: str) -> timedelta:
    """The shortest time between runs that still leaves a `kind` run its minimum deadline."""
    gap = MIN_RUN_DEADLINE[kind]
    while gap - 2 * _start_window(gap) < MIN_RUN_DEADLINE[kind]:
        gap += timedelta(minutes=1)
    return gap
