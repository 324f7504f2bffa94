"""Retention math: durations, cadences, promotion and the CometBFT keep choice (with property tests)."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import retention
from rules.retention import Keepable, select_kept

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(days=14)),
        ("P30D", timedelta(days=30)),
        ("PT12H", timedelta(hours=12)),
        ("P1DT6H", timedelta(days=1, hours=6)),
        ("p2w", timedelta(days=14)),
    ],
)
def test_parse_duration(text, expected):
    assert retention.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "P", "PT", "P1Y", "P1M", "-3d", "3 days", "1.5h", "P1DT"])
def test_parse_duration_rejects_with_the_value_and_the_forms(text):
    with pytest.raises(ValueError) as error:
        retention.parse_duration(text)
    assert repr(text) in str(error.value)
    assert "30d" in str(error.value)


@given(st.integers(min_value=1, max_value=10**8))
def test_format_then_parse_round_trips(seconds):
    value = timedelta(seconds=seconds)
    assert retention.parse_duration(retention.format_duration(value)) == value


def test_postgres_cadence_defaults_to_two_weeks_without_pruning():
    assert retention.postgres_historical_cadence(None, None) == timedelta(days=14)


def test_postgres_cadence_is_the_window_minus_schedule_margin_and_outage_budget():
    # 30d - 8h - 2d
    assert retention.postgres_historical_cadence(timedelta(days=30), None) == timedelta(days=27, hours=16)
    # the smallest window binds
    assert retention.postgres_historical_cadence(timedelta(days=30), timedelta(days=20)) == timedelta(days=17, hours=16)
    # short windows split what the schedule leaves between the cadence and the budget: 12h - 8h = 2 x 2h
    assert retention.postgres_historical_cadence(None, timedelta(hours=12)) == timedelta(hours=2)
    assert retention.outage_budget(timedelta(hours=12)) == timedelta(hours=2)
    # long windows are not capped: the sets are as far apart as the gap rule allows
    assert retention.postgres_historical_cadence(timedelta(days=365), None) == timedelta(days=362, hours=16)


def test_schedule_margin_covers_every_schedule_settings_accepts():
    """retention.py ships without schedules.py in the job image, so the 4 h bound is written twice."""
    from rules import schedules

    assert retention.SCHEDULE_MARGIN == 2 * schedules.MAX_SCHEDULE_GAP


window_hours = st.integers(min_value=2, max_value=10_000).map(lambda h: timedelta(hours=h))


@given(st.one_of(st.none(), window_hours), st.one_of(st.none(), window_hours))
def test_cadence_is_strictly_inside_every_pruning_window(participant, sequencer):
    cadence = retention.postgres_historical_cadence(participant, sequencer)
    for window in (participant, sequencer):
        if window is not None:
            assert cadence < window
    if participant is None and sequencer is None:
        assert cadence == retention.DEFAULT_HISTORICAL_CADENCE


@given(window_hours.filter(lambda w: w > retention.SCHEDULE_MARGIN + timedelta(hours=2)))
def test_cadence_leaves_the_schedule_margin_and_the_outage_budget(window):
    """The safety argument: without failures two historical sets are at most cadence + SCHEDULE_MARGIN apart, so
    backups may fail for the outage budget before the window is reached; the budget is the whole OUTAGE_BUDGET
    once the window can spare it."""
    cadence = retention.postgres_historical_cadence(window, None)
    budget = retention.outage_budget(window)
    assert cadence + retention.SCHEDULE_MARGIN + budget <= window
    assert budget > timedelta(0)
    if window >= retention.SCHEDULE_MARGIN + 2 * retention.OUTAGE_BUDGET:
        assert budget == retention.OUTAGE_BUDGET
        # and nothing is wasted beyond the hour rounding
        assert window - (cadence + retention.SCHEDULE_MARGIN + budget) < retention.CADENCE_GRANULARITY


def test_cometbft_window_and_cadence_from_blocks():
    assert retention.cometbft_retention_window(5_040_000, 7000) == timedelta(days=30)
    assert retention.cometbft_historical_cadence(5_040_000, 7000) == timedelta(days=14)
    assert retention.cometbft_historical_cadence(700_000, 7000) == timedelta(hours=50)
    with pytest.raises(ValueError):
        retention.cometbft_retention_window(0, 7000)


def test_promotion_due():
    cadence = timedelta(days=14)
    assert retention.promotion_due(None, T0, cadence)
    assert not retention.promotion_due(T0, T0 + timedelta(days=13, hours=23), cadence)
    assert retention.promotion_due(T0, T0 + cadence, cadence)


@given(st.lists(st.integers(min_value=1, max_value=48), min_size=1, max_size=200))
@settings(max_examples=200)
def test_promotion_keeps_history_gapless_at_the_cadence(run_gaps_hours):
    """Simulate sets sealed at arbitrary intervals: consecutive historical sets are never further apart than
    the cadence plus the gap to the next run (the bound settings.py checks against the pruning windows)."""
    cadence = timedelta(days=3)
    now, last_historical, promoted = T0, None, []
    for hours in run_gaps_hours:
        now += timedelta(hours=hours)
        if retention.promotion_due(last_historical, now, cadence):
            promoted.append(now)
            last_historical = now
    assert promoted[0] == T0 + timedelta(hours=run_gaps_hours[0])
    largest_run_gap = timedelta(hours=max(run_gaps_hours))
    for earlier, later in itertools.pairwise(promoted):
        assert later - earlier <= cadence + largest_run_gap


def test_worst_case_history_gap():
    assert retention.worst_case_history_gap(timedelta(days=10), timedelta(hours=4), timedelta(hours=3)) == timedelta(
        days=10, hours=7
    )


snapshot_series = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2), st.integers(min_value=1, max_value=60 * 24)),
    min_size=1,
    max_size=120,
)


def _items(series):
    """Build snapshots: per migration id, times advance by the given minutes."""
    clocks, items = {}, []
    for index, (migration, minutes) in enumerate(series):
        clocks[migration] = clocks.get(migration, T0) + timedelta(minutes=minutes * 10)
        items.append(Keepable(key=index, taken_at=clocks[migration], migration_id=migration))
    return items


@given(snapshot_series, st.integers(min_value=1, max_value=30), st.integers(min_value=1, max_value=20))
@settings(max_examples=300)
def test_select_kept_properties(series, recent_days, cadence_days):
    items = _items(series)
    keep_recent, cadence = timedelta(days=recent_days), timedelta(days=cadence_days)
    now = max(i.taken_at for i in items) + timedelta(hours=1)
    kept = select_kept(items, now, keep_recent, cadence)

    for item in items:
        if now - item.taken_at <= keep_recent:
            assert item.key in kept, "everything recent is kept"
    for migration in {i.migration_id for i in items}:
        series_items = sorted((i for i in items if i.migration_id == migration), key=lambda i: (i.taken_at, i.key))
        assert series_items[0].key in kept, "the first backup of each migration id (genesis, upgrade) is kept"
        assert series_items[-1].key in kept, "the newest backup of each migration id is kept"
        kept_items = [i for i in series_items if i.key in kept]
        for earlier, later in itertools.pairwise(kept_items):
            between = [i for i in series_items if earlier.taken_at < i.taken_at < later.taken_at]
            if later.taken_at - earlier.taken_at > cadence:
                # only allowed when nothing in between could have closed the gap
                assert all(i.taken_at - earlier.taken_at > cadence for i in between) or not between


@given(
    snapshot_series,
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=30),
)
@settings(max_examples=200)
def test_select_kept_is_stable_over_time(series, recent_days, cadence_days, later_days):
    """Pruning later (with the same backups minus what was pruned) never removes a backup that an earlier run
    kept for history: only backups that age out of the recent window are dropped."""
    items = _items(series)
    keep_recent, cadence = timedelta(days=recent_days), timedelta(days=cadence_days)
    now = max(i.taken_at for i in items) + timedelta(hours=1)
    first = select_kept(items, now, keep_recent, cadence)
    survivors = [i for i in items if i.key in first]
    later = now + timedelta(days=later_days)
    second = select_kept(survivors, later, keep_recent, cadence)
    historical_first = {i.key for i in survivors if now - i.taken_at > keep_recent}
    assert historical_first <= second


def test_bucket_lifecycle_never_deletes_history():
    rules = retention.bucket_lifecycle("sv-1/", timedelta(days=3, hours=1), "COLDLINE")
    deletes = [r for r in rules if r.action == "Delete"]
    assert deletes == [retention.LifecycleRule("Delete", "sv-1/recent/", 4)]
    assert all(not r.prefix.startswith("sv-1/historical/") for r in deletes)
    assert retention.LifecycleRule("SetStorageClass", "sv-1/historical/", 30, "COLDLINE") in rules
    assert [r.action for r in retention.bucket_lifecycle("", timedelta(days=1), None)] == [
        "Delete",
        "AbortIncompleteMultipartUpload",
    ]
