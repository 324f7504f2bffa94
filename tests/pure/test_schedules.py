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
