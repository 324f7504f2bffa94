"""The history audit's rules (rules/history.py), on set records alone: examples at every boundary, and properties
(hypothesis) that tie the audit to the seal's own promotion rule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.history import UNKNOWN, audit, history_record, human, set_point, table
from rules.manifest import HISTORICAL, RECENT, format_time, windows_record
from rules.retention import postgres_historical_cadence, promotion_due

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = timedelta(days=30)
SECOND = timedelta(seconds=1)
LONG = timedelta(days=10_000)  # freshness out of the way where a test is about something else


def manifest(
    set_id: str,
    at: datetime,
    *,
    mid: int = 0,
    roles=("apps", "participant"),
    participant=W,
    sequencer=None,
    history=None,
    windows=True,
    took=timedelta(0),
    serial=None,
    lsu_from=None,
) -> dict:
    """The fields of a manifest the audit reads: each role's snapshot requested at `at`, acquired `took` later."""
    record = {
        "set_id": set_id,
        "migration_id": mid,
        "created_at": format_time(at + took),
        "databases": [
            {
                "role": role,
                "database": f"{role}_db",
                "snapshot_requested_at": format_time(at),
                "snapshot_acquired_at": format_time(at + took),
            }
            for role in roles
        ],
        "history": history or {},
    }
    if serial is not None:  # a node that runs logical synchronizer upgrades (manifest v3): filed under the serial
        record["migration_id"] = record["serial_id"] = serial
        record["lsu_from"] = serial if lsu_from is None else lsu_from
    if windows:
        record["windows"] = windows_record(participant, sequencer, postgres_historical_cadence(participant, sequencer))
    return record


def historical(*args, **kwargs):
    return set_point(HISTORICAL, manifest(*args, **kwargs))


def recent(*args, **kwargs):
    return set_point(RECENT, manifest(*args, **kwargs))


def row(report, role="participant", mid=0):
    (found,) = [s for s in report.series if s.role == role and s.migration_id == mid]
    return found


# --------------------------------------------------------------------------------------------- gaps


@pytest.mark.parametrize(
    "gap, ok", [(W - SECOND, True), (W - timedelta(microseconds=1), True), (W, False), (W + SECOND, False)]
)
def test_a_gap_must_be_strictly_smaller_than_the_window(gap, ok):
    points = [historical("a", T0), historical("b", T0 + gap)]
    report = audit(points, now=T0 + gap, max_age=LONG)
    assert report.ok is ok, report.problems
    assert row(report).largest_gap.seconds == gap.total_seconds()
    assert row(report).verdict == ("ok" if ok else "gap")
    if not ok:
        assert any("historical sets a and b" in p and "30d" in p for p in report.problems)


def test_the_gap_is_measured_conservatively_across_the_snapshot_times():
    """From the earliest request in the earlier set to the latest acquisition in the later one."""
    took = timedelta(minutes=3)
    points = [historical("a", T0, took=took), historical("b", T0 + W - took, took=took)]
    report = audit(points, now=T0 + W, max_age=LONG)
    assert row(report).largest_gap.seconds == W.total_seconds() and not report.ok


def test_apps_and_mediator_are_reported_not_judged():
    gap = timedelta(days=400)
    roles = ("apps", "participant", "mediator")
    points = [
        historical("a", T0, roles=roles, participant=None),
        historical("b", T0 + gap, roles=roles, participant=None),
    ]
    report = audit(points, now=T0 + gap, max_age=LONG)
    assert report.ok, report.problems
    for role in ("apps", "mediator", "participant"):  # participant too: pruning was off in both sets
        assert row(report, role).largest_gap.seconds == gap.total_seconds()
    assert not row(report, "apps").pruned and row(report).pruned


def test_each_gap_is_bound_by_the_smaller_window_of_its_two_sets():
    short = timedelta(days=10)
    points = [historical("a", T0, participant=W), historical("b", T0 + short, participant=short)]
    assert not audit(points, now=T0 + short, max_age=LONG).ok  # shortened: the gap must beat the new window
    points = [historical("a", T0, participant=None), historical("b", T0 + short - SECOND, participant=short)]
    assert audit(points, now=T0 + short, max_age=LONG).ok  # pruning turned on: bound by the one window there is


def test_sequencer_has_its_own_window():
    roles = ("apps", "participant", "sequencer")
    short = timedelta(days=7)
    points = [
        historical("a", T0, roles=roles, sequencer=short),
        historical("b", T0 + short + SECOND, roles=roles, sequencer=short),
    ]
    report = audit(points, now=T0 + short + SECOND, max_age=LONG)
    assert row(report, "sequencer").verdict == "gap" and row(report).verdict == "ok"


def test_flags_override_every_recorded_window_and_are_needed_for_v1_sets():
    points = [historical("a", T0, windows=False), historical("b", T0 + W - SECOND, windows=False)]
    report = audit(points, now=T0 + W - SECOND, max_age=LONG)
    assert not report.ok and row(report).verdict == "unknown-window"
    assert any("record no pruning window" in p and "--participant-pruning" in p for p in report.problems)
    assert audit(points, now=T0 + W - SECOND, max_age=LONG, overrides={"participant": W}).ok
    assert not audit(points, now=T0 + W - SECOND, max_age=LONG, overrides={"participant": W - SECOND}).ok
    assert audit(points, now=T0 + W - SECOND, max_age=LONG, overrides={"participant": None}).ok  # "off"


def test_only_historical_sets_count_for_the_gaps():
    points = [historical("a", T0), recent("r", T0 + W / 2), historical("b", T0 + W)]
    report = audit(points, now=T0 + W, max_age=LONG)
    assert not report.ok and row(report).count == 2  # the recent set in between will expire


def test_the_open_gap_of_the_current_migration_id():
    points = [historical("a", T0), recent("r", T0 + W)]
    report = audit(points, now=T0 + W - SECOND, max_age=LONG)
    assert report.ok and row(report).open_gap.seconds == (W - SECOND).total_seconds()
    report = audit(points, now=T0 + W, max_age=LONG)
    assert not report.ok and any("no later promotion can close" in p for p in report.problems)
    later = [*points, historical("n", T0 + W + timedelta(days=40), mid=1)]  # id 0 closed: no open gap there
    report = audit(later, now=T0 + W + timedelta(days=40), max_age=LONG)
    assert report.ok and row(report, mid=0).open_gap is None and row(report, mid=1).open_gap.seconds == 0


def test_a_migration_id_without_historical_sets():
    pending = [historical("a", T0), recent("n", T0 + timedelta(days=1), mid=1)]
    assert audit(pending, now=T0 + timedelta(days=1, hours=1), max_age=LONG).ok  # the current id, just begun
    assert not audit(pending, now=T0 + timedelta(days=31), max_age=LONG).ok  # ... for a whole window
    closed = [historical("a", T0), recent("n", T0 + timedelta(days=1), mid=1), historical("m", T0 + W, mid=2)]
    report = audit(closed, now=T0 + W, max_age=LONG)
    assert row(report, mid=1).verdict == "no-history"
    assert any("migration id 1, participant: no historical set" in p for p in report.problems)


# ------------------------------------------------------------------ logical synchronizer upgrades (LSU)

ALL_ROLES = ("apps", "participant", "sequencer", "mediator")


def lsu(set_id, at, serial, tier=HISTORICAL, roles=ALL_ROLES, since=4):
    return set_point(tier, manifest(set_id, at, serial=serial, roles=roles, sequencer=W, lsu_from=since))


@pytest.mark.parametrize("gap, ok", [(W - SECOND, True), (W, False)])
def test_under_lsu_the_participant_series_continues_across_a_serial_change(gap, ok):
    """Serial 4's last historical set, then serial 5's first: one participant series, its gap judged across the
    upgrade; the sequencer and mediator restart (two series each, nothing judged between them)."""
    points = [lsu("s4", T0, 4), lsu("s5", T0 + gap, 5)]
    report = audit(points, now=T0 + gap, max_age=LONG)
    assert report.ok is ok
    participant = row(report, mid=4)
    assert (participant.through, participant.count, participant.id_text) == (5, 2, "4..5")
    assert participant.largest_gap.seconds == gap.total_seconds()
    assert participant.verdict == ("ok" if ok else "gap")
    assert [s.migration_id for s in report.series if s.role == "participant"] == [4]
    assert [s.migration_id for s in report.series if s.role == "apps"] == [4]
    for role in ("sequencer", "mediator"):
        old, new = row(report, role, mid=4), row(report, role, mid=5)
        assert (old.count, new.count, old.largest_gap, old.through, new.through) == (1, 1, None, None, None)
        assert old.open_gap is None and new.open_gap.seconds == 0  # only the current serial has an open gap
    if not ok:
        assert report.problems == [
            f"serial ids 4..5, participant: historical sets s4 and s5 are {human(gap)} apart, not less than the "
            "pruning window 30d: the data in between is lost"
        ]
    assert row(report, mid=4).as_json()["through_serial_id"] == 5
    assert any(line.split()[:2] == ["4..5", "participant"] for line in table(report).splitlines())


def test_under_hard_migrations_the_same_sets_restart_the_participant_series():
    """The contrast: without serial ids the participant restarts per migration id, and the gap is not judged."""
    points = [historical("m4", T0, mid=4), historical("m5", T0 + W, mid=5)]
    report = audit(points, now=T0 + W, max_age=LONG)
    assert report.ok and row(report, mid=4).count == row(report, mid=5).count == 1
    assert row(report, mid=4).through is None and "through_serial_id" not in row(report, mid=4).as_json()


@pytest.mark.parametrize("pending, ok", [(W - SECOND, True), (W, False)])
def test_the_continuing_participant_has_an_open_gap_and_a_new_sequencer_may_wait_its_window(pending, ok):
    """After the upgrade only recent sets of serial 5 so far: the participant's open gap runs from serial 4's last
    historical set; serial 5's sequencer has no historical set yet, which is fine within its window."""
    points = [lsu("s4", T0, 4), lsu("r5", T0 + pending - SECOND, 5, tier=RECENT)]
    report = audit(points, now=T0 + pending, max_age=LONG)
    assert report.ok is ok
    assert row(report, mid=4).open_gap.seconds == pending.total_seconds()
    assert row(report, "sequencer", mid=5).verdict == "ok" if ok else "no-history"
    assert row(report, "sequencer", mid=4).open_gap is None


def test_a_node_switching_to_lsu_continues_the_participant_of_its_last_migration_id():
    """Sets of migration id 4 (v2, no serial), then the node runs LSU from serial 4 on: one participant series
    from the migration-id sets through serial 5; migration id 3 stays a series of its own."""
    points = [
        historical("m3", T0 - W, mid=3),
        historical("m4", T0, mid=4, roles=ALL_ROLES, sequencer=W),
        lsu("s4", T0 + W / 2, 4),
        lsu("s5", T0 + W, 5),
    ]
    report = audit(points, now=T0 + W, max_age=LONG)
    assert report.ok
    assert [(s.id_text, s.count) for s in report.series if s.role == "participant"] == [("3", 1), ("4..5", 3)]
    assert row(report, "sequencer", mid=4).count == 2 and row(report, "sequencer", mid=5).count == 1
    # a set lost in the middle of the continuing series shows as a gap across the upgrade
    report = audit(drop(points, HISTORICAL, {"s4"}), now=T0 + W, max_age=LONG)
    assert [p.split(":")[0] for p in report.problems] == ["serial ids 4..5, participant"]  # m4 -> s5: W apart


# --------------------------------------------------------------------------------------- freshness


@pytest.mark.parametrize("age, ok", [(timedelta(hours=5) - SECOND, True), (timedelta(hours=5), False)])
def test_the_newest_set_must_be_younger_than_the_interval_plus_slack(age, ok):
    points = [historical("a", T0), recent("b", T0 + timedelta(hours=4))]
    report = audit(points, now=T0 + timedelta(hours=4) + age, max_age=timedelta(hours=5))
    assert report.ok is ok
    assert report.newest.set_id == "b" and report.as_json()["newest"]["fresh"] is ok
    assert ok or "newest complete set b" in report.problems[0]


def test_an_empty_store_fails():
    report = audit([], now=T0, max_age=LONG)
    assert not report.ok and report.problems == ["the store holds no complete set"]


# --------------------------------------------------------------------------------------- deletions


def sealed_history(
    times: list[datetime], mids: list[int] | None = None, window: timedelta = W, store=(), name: str = "s"
):
    """Sets sealed as seal_set does, into `store` (the complete sets already there): each records
    history_record(every complete set), and is promoted when promotion_due says so (the first of each migration id
    always)."""
    mids = mids or [0] * len(times)
    cadence = postgres_historical_cadence(window, None)
    points = list(store)
    for index, (at, mid) in enumerate(zip(times, mids, strict=True)):
        record = manifest(f"{name}{index:04d}", at, mid=mid, participant=window, history=history_record(points))
        last = max((p.taken_at for p in points if p.migration_id == mid and p.tier == HISTORICAL), default=None)
        points.append(set_point(RECENT, record))
        if promotion_due(last, at, cadence):
            points.append(set_point(HISTORICAL, record))
    return points


def drop(points, tier, set_ids):
    return [p for p in points if not (p.tier == tier and p.set_id in set_ids)]


def test_deleting_genesis_is_caught_forever():
    points = sealed_history([T0 + timedelta(days=d) for d in range(0, 60, 1)])
    now = T0 + timedelta(days=59, hours=1)
    assert audit(points, now=now, max_age=LONG).ok
    assert audit(points, now=now, max_age=LONG).as_json()["genesis"]["present"]
    report = audit(drop(points, HISTORICAL, {"s0000"}), now=now, max_age=LONG)
    assert any("first historical set s0000" in p and "is gone" in p for p in report.problems), report.problems
    assert report.as_json()["genesis"] == {"set_id": "s0000", "created_at": format_time(T0), "present": False}
    assert "genesis: s0000, sealed 2026-01-01T00:00:00Z, GONE" in table(report)
    # even once the recent sets that knew it directly have expired: later manifests carry the first set forward
    only_late = [p for p in drop(points, HISTORICAL, {"s0000"}) if p.tier == HISTORICAL or p.set_id >= "s0050"]
    assert any("first historical set s0000" in p for p in audit(only_late, now=now, max_age=LONG).problems)


def test_a_wiped_history_stays_on_record_after_the_sets_that_saw_it_expire():
    """historical/0/ deleted; later seals start the id again (their first set is promoted as if genesis); once the
    recent sets of before the deletion have expired, only the carried-forward record still knows."""
    before = sealed_history([T0 + timedelta(days=d) for d in range(30)])
    wiped = [p for p in before if p.tier != HISTORICAL]
    after = sealed_history([T0 + timedelta(days=d) for d in range(30, 60)], store=wiped, name="t")
    expired = [p for p in after if p.set_id.startswith("t")]  # the recent tier's lifecycle rule ran
    now = T0 + timedelta(days=59, hours=1)
    report = audit(expired, now=now, max_age=LONG)
    assert any("first historical set s0000" in p and "is gone" in p for p in report.problems), report.problems
    # and the restarted first set lost as well: every later record still names the true genesis
    report = audit([p for p in expired if p.set_id != "t0000"], now=now, max_age=LONG)
    assert any("first historical set s0000" in p for p in report.problems), report.problems


def test_deleting_a_middle_set_is_caught_even_without_a_gap():
    points = sealed_history([T0 + timedelta(days=d) for d in range(0, 120, 1)])
    kept = sorted(p.set_id for p in points if p.tier == HISTORICAL)
    assert len(kept) >= 4
    report = audit(drop(points, HISTORICAL, {kept[2]}), now=T0 + timedelta(days=119, hours=1), max_age=LONG)
    assert any("1 of them are gone" in p for p in report.problems), report.problems


def test_a_migration_id_whose_history_was_deleted():
    times = [T0 + timedelta(days=d) for d in range(0, 40, 2)]
    mids = [0] * 10 + [1] * 10
    points = sealed_history(times, mids)
    now = times[-1] + timedelta(hours=1)
    assert audit(points, now=now, max_age=LONG).ok
    gone = [p for p in points if p.migration_id != 0]  # every set of id 0, both tiers, deleted
    report = audit(gone, now=now, max_age=LONG)
    assert not report.ok
    assert any(p.startswith("migration id 0:") and "none is left" in p for p in report.problems), report.problems
    assert row(report, role="*", mid=0).verdict == "no-history"
    # the next seal keeps the loss on record
    assert "0" in history_record([p for p in gone if p.tier == HISTORICAL])


# -------------------------------------------------------------------------------------------- output


def test_human_durations_are_exact_to_the_second():
    assert human(W + SECOND) == "30d 1s" and human(W - SECOND) == "29d 23h 59m 59s"
    assert human(timedelta(0)) == "0s" and human(timedelta(hours=5)) == "5h"


def test_table_and_json_name_every_series():
    points = sealed_history([T0, T0 + timedelta(days=28)])
    report = audit(points, now=T0 + timedelta(days=28, hours=1), max_age=timedelta(hours=5))
    text = table(report)
    assert "participant" in text and "apps" in text and "history is gap-less" in text
    data = report.as_json()
    assert data["ok"] and {(s["migration_id"], s["role"]) for s in data["series"]} == {(0, "apps"), (0, "participant")}
    assert data["series"][1]["largest_gap"]["window"] == "30d"


# ------------------------------------------------------------------------------------------ properties

gaps = st.lists(st.integers(min_value=0, max_value=int(2 * W.total_seconds())), min_size=1, max_size=12)


@given(gaps)
def test_verdict_is_exactly_every_gap_below_the_window(seconds):
    times = [T0]
    for s in seconds:
        times.append(times[-1] + timedelta(seconds=s))
    points = [historical(f"s{i:03d}", t) for i, t in enumerate(times)]
    report = audit(points, now=times[-1], max_age=LONG)
    assert report.ok == all(s < W.total_seconds() for s in seconds)
    assert row(report).largest_gap.seconds == max(seconds)
    assert row(report).count == len(times)


@given(gaps, st.randoms(use_true_random=False))
def test_the_order_sets_are_listed_in_does_not_matter(seconds, rnd):
    times = [T0]
    for s in seconds:
        times.append(times[-1] + timedelta(seconds=s))
    points = [historical(f"s{i:03d}", t) for i, t in enumerate(times)] + [recent("r", times[-1])]
    shuffled = list(points)
    rnd.shuffle(shuffled)
    now = times[-1] + timedelta(hours=1)
    assert audit(points, now=now, max_age=LONG).as_json() == audit(shuffled, now=now, max_age=LONG).as_json()


@given(gaps, st.integers(min_value=1, max_value=int(W.total_seconds())), st.integers(min_value=0, max_value=10**7))
def test_a_longer_window_never_fails_what_a_shorter_one_passes(seconds, window, more):
    times = [T0]
    for s in seconds:
        times.append(times[-1] + timedelta(seconds=s))
    points = [historical(f"s{i:03d}", t, windows=False) for i, t in enumerate(times)]
    shorter = timedelta(seconds=window)
    if audit(points, now=times[-1], max_age=LONG, overrides={"participant": shorter}).ok:
        longer = shorter + timedelta(seconds=more)
        assert audit(points, now=times[-1], max_age=LONG, overrides={"participant": longer}).ok


@given(gaps, st.integers(min_value=0, max_value=100), st.floats(min_value=0, max_value=1))
def test_adding_a_historical_set_never_breaks_a_history(seconds, where, fraction):
    times = [T0]
    for s in seconds:
        times.append(times[-1] + timedelta(seconds=s))
    points = [historical(f"s{i:03d}", t) for i, t in enumerate(times)]
    now = times[-1]
    if not audit(points, now=now, max_age=LONG).ok:
        return
    at = times[0] + (times[-1] - times[0]) * fraction
    assert audit([*points, historical("extra", at)], now=now, max_age=LONG).ok


@settings(max_examples=60, deadline=None)
@given(
    window_days=st.integers(min_value=2, max_value=60),
    schedule=st.lists(st.integers(min_value=60, max_value=4 * 3600), min_size=2, max_size=300),
    upgrade_at=st.integers(min_value=0, max_value=299),
    victim=st.integers(min_value=0, max_value=10**6),
)
def test_sets_taken_on_schedule_and_promoted_by_the_seal_are_gapless_and_every_deletion_shows(
    window_days, schedule, upgrade_at, victim
):
    """The settings' rule (cadence + largest schedule gap + run time < window) makes the seal's promotion keep
    a gap-less history, across a synchronizer upgrade; deleting any historical set that a later set was sealed
    after is then always reported."""
    window = timedelta(days=window_days)
    cadence = postgres_historical_cadence(window, None)
    largest = timedelta(seconds=max(schedule))
    if cadence + largest >= window:
        return  # settings refuse such a configuration
    times = [T0]
    for s in schedule:
        times.append(times[-1] + timedelta(seconds=s))
    mids = [0 if i < upgrade_at else 1 for i in range(len(times))]
    points = sealed_history(times, mids, window)
    now = times[-1] + timedelta(minutes=1)
    report = audit(points, now=now, max_age=largest + timedelta(minutes=2))
    assert report.ok, report.problems
    kept = sorted((p for p in points if p.tier == HISTORICAL), key=lambda p: p.created_at)
    target = kept[victim % len(kept)]
    if target.created_at == max(p.created_at for p in points):
        return  # nothing was sealed after it: no record of it exists yet
    damaged = drop(points, HISTORICAL, {target.set_id})
    assert not audit(damaged, now=now, max_age=largest + timedelta(minutes=2)).ok


def test_window_text_of_unknown():
    from rules.history import window_text

    assert window_text(UNKNOWN) == "unknown" and window_text(None) is None and window_text(W) == "30d"


def test_sealed_history_helper_promotes_like_the_seal():
    points = sealed_history([T0 + timedelta(hours=4 * i) for i in range(400)])
    kept = sorted(p.created_at for p in points if p.tier == HISTORICAL)
    # 27d16h (30d - 8h - 2d) is a whole number of 4-hourly runs: one set in 166 is kept
    assert kept[0] == T0 and all(b - a == timedelta(days=27, hours=16) for a, b in itertools.pairwise(kept))
