"""The largest gap of a cron schedule, at every point of the day, week and year."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import schedules


@pytest.mark.parametrize(
    ("expression", "largest", "smallest"),
    [
        ("0 */4 * * *", timedelta(hours=4), timedelta(hours=4)),
        ("0 */2 * * *", timedelta(hours=2), timedelta(hours=2)),
        ("0 0-12/4 * * *", timedelta(hours=12), timedelta(hours=4)),  # holes at night
        ("0 */4 * * 1-5", timedelta(hours=52), timedelta(hours=4)),  # weekends off
        ("15 1,5,9,13,17,21 * * *", timedelta(hours=4), timedelta(hours=4)),
        ("0 */6 * * *", timedelta(hours=6), timedelta(hours=6)),
        ("*/30 * * * *", timedelta(minutes=30), timedelta(minutes=30)),
        ("0 0,3,4,8,12,16,20 * * *", timedelta(hours=4), timedelta(hours=1)),
        ("0 */4 1-31 * *", timedelta(hours=4), timedelta(hours=4)),  # scanned over years, not weeks
    ],
)
def test_gaps(expression, largest, smallest):
    assert schedules.largest_gap(expression) == largest
    assert schedules.smallest_gap(expression) == smallest


def test_day_of_month_schedules_are_checked_over_months():
    # fires every 4 hours except on the 31st: a 28-hour hole seven times a year
    assert schedules.largest_gap("0 */4 1-30 * *") == timedelta(hours=28)


def test_stop_above_returns_early_with_a_gap_over_the_limit():
    assert schedules.largest_gap("0 0 29 2 *", stop_above=timedelta(hours=4)) > timedelta(hours=4)


@pytest.mark.parametrize("expression", ["", "0 */4 * *", "0 */4 * * * *", "every 4 hours", "61 * * * *", "@hourly"])
def test_invalid_expressions_are_named(expression):
    with pytest.raises(schedules.InvalidCron) as error:
        schedules.largest_gap(expression)
    assert repr(expression) in str(error.value)


@given(st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=59))
def test_every_n_hours_has_gap_n_when_n_divides_24(hours, minute):
    expression = f"{minute} */{hours} * * *"
    largest = schedules.largest_gap(expression)
    # */n restarts at midnight: when n does not divide 24 the last gap of the day is shorter, never longer.
    assert largest == timedelta(hours=hours)


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("0 */4 * * 8", "the day-of-week field '8' is not valid (allowed: 0-6 or SUN-SAT)"),
        ("61 */4 * * *", "the minute field '61' is not valid (allowed: 0-59)"),
        ("0 24 * * *", "the hour field '24' is not valid (allowed: 0-23)"),
        ("0 0 32 * *", "the day-of-month field '32' is not valid (allowed: 1-31)"),
        ("0 */4 * 13 *", "the month field '13' is not valid (allowed: 1-12 or JAN-DEC)"),
    ],
)
def test_a_field_out_of_range_is_named_with_what_it_allows(expression, named):
    with pytest.raises(schedules.InvalidCron) as error:
        schedules.validate_cron(expression)
    assert str(error.value) == f"{expression!r}: {named}"


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_schedule_that_never_fires_is_refused(expression):
    """Valid syntax, no run ever: a CronJob with it would never back up (croniter raised its own error here)."""
    with pytest.raises(schedules.InvalidCron, match="never fires"):
        schedules.validate_cron(expression)


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 31 2 1", "*/5 1-3 * JAN-MAR MON-FRI"])
def test_rare_but_real_schedules_are_accepted(expression):
    schedules.validate_cron(expression)  # 29 February exists; a named weekday fires in any month
