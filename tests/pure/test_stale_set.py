"""rules.manifest.stale_set_problem: a set at least as old as the sequencer pruning window in its manifest cannot
bring a node back (Splice: a participant more than the window behind cannot catch up)."""

from datetime import UTC, datetime, timedelta

import pytest

from rules.manifest import format_time, stale_set_problem

CREATED = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)


def manifest(sequencer_pruning: str | None, windows: bool = True) -> dict:
    record = {"set_id": "20261101T040000Z-a1b2c3", "created_at": format_time(CREATED)}
    if windows:
        record["windows"] = {"participant_pruning": "30d", "sequencer_pruning": sequencer_pruning}
    return record


@pytest.mark.parametrize(
    ("age", "stale"),
    [
        (timedelta(0), False),
        (timedelta(days=30) - timedelta(microseconds=1), False),
        (timedelta(days=30), True),  # Splice asks for a backup *less* than the window old
        (timedelta(days=30, seconds=1), True),
        (timedelta(days=400), True),
    ],
)
def test_the_boundary_is_the_window_itself(age, stale):
    assert (stale_set_problem(manifest("30d"), CREATED + age) is not None) is stale


def test_the_message_names_the_set_its_age_and_the_window():
    problem = stale_set_problem(manifest("30d"), CREATED + timedelta(days=31, hours=4, minutes=5))
    assert problem == (
        "set 20261101T040000Z-a1b2c3 is 31d 4h old (created 2026-11-01T04:00:00.000000Z), not less than the "
        "sequencer pruning window of 30d recorded in its manifest: the synchronizer has pruned what a participant "
        "restored from it needs to catch up"
    )


def test_the_window_recorded_in_the_set_is_the_bound():
    # a shorter window recorded when the set was taken is the one that applies to it
    assert stale_set_problem(manifest("7d"), CREATED + timedelta(days=8)) is not None
    assert stale_set_problem(manifest("P60D"), CREATED + timedelta(days=45)) is None


@pytest.mark.parametrize("record", [manifest(None), manifest(None, windows=False)])
def test_no_window_recorded_means_no_limit(record):
    # pruning off (null), or a v1 set that records no windows
    assert stale_set_problem(record, CREATED + timedelta(days=3650)) is None
