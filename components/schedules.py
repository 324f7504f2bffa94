"""Cron schedules: the largest gap between two runs, at every point of the day, week and year.

The SV docs require a backup "at least every 4 hours"; an expression like `0 0-12/4 * * *` fires every
4 hours by day and leaves a 12-hour hole at night, so we measure the real largest gap over a full period of
the expression instead of trusting its step. CronJobs run with `timeZone: Etc/UTC` (see postgres/cometbft
components): in a zone with daylight saving time a "4-hourly" schedule has a 5-hour gap once a year.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter

# A fixed origin keeps the result independent of today's date. Monday, so weekly schedules start aligned.
_ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
# When day-of-month and month are unrestricted the schedule repeats every week: 8 days cover every gap.
_WEEKLY_SPAN = timedelta(days=8)
# Otherwise it repeats at most every 4 years (29 February); the scan stops early once a gap exceeds the
# limit the caller cares about, so frequent schedules stay cheap.
_LEAP_CYCLE_SPAN = timedelta(days=4 * 366 + 1)


class InvalidCron(ValueError):
    pass


def validate_cron(expression: str) -> None:
    """Accept standard 5-field cron only (what a Kubernetes CronJob takes)."""
    fields = expression.split()
    if len(fields) != 5 or not croniter.is_valid(expression):
        raise InvalidCron(
            f"{expression!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week)"
        )


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
