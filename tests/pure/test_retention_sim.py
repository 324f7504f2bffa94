"""The retention simulation (engines/retention_sim.py): its parsers, its minimum, and short replays of real stacks.

The replays run the real seal, lifecycle rules, CometBFT pruner and history audit; they are kept to a few
simulated weeks with short windows so that they stay fast (the 2-year figures come from the script itself)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from components.settings import load_settings
from engines import retention_sim, storage_prices
from engines.retention_sim import MemoryStore, Options, Outage, SizeModel, minimum_historical, simulate
from jobs.destinations import ObjectExists
from jobs.pgsets import complete_sets
from rules import retention
from rules.history import SetPoint
from rules.manifest import HISTORICAL, RECENT
from tests.stackfiles import dump_only_config, raw_config

T0 = datetime(2027, 1, 1, tzinfo=UTC)
SIZES = SizeModel({"apps": 2 * 10**9, "participant": 20 * 10**9, "sequencer": 30 * 10**9, "mediator": 10**9})


def short_prod(window: str = "3d", recent: str = "3d"):
    """prod with short windows: the same rules, a small store."""
    raw = dump_only_config("prod")  # today's dump-only prod: the dump sets' own rules
    raw["sv-backups:retention"].update(recent=recent, participantPruning=window, sequencerPruning=window)
    return load_settings(raw, stack="prod-short")


# ---------------------------------------------------------------------------------------------- parsing


def test_size_model_and_growth():
    assert retention_sim.parse_sizes("participant=200GB, apps=1.5GiB") == {
        "participant": 200 * 10**9,
        "apps": int(1.5 * 2**30),
    }
    assert retention_sim.parse_growth("5%/month") == pytest.approx(0.05)
    assert (1 + retention_sim.parse_growth("60%/year")) ** 12 == pytest.approx(1.6)
    model = SizeModel({"participant": 100}, 0.05)
    assert model.at("participant", timedelta(0)) == 100
    assert model.at("participant", 12 * retention_sim.AVERAGE_MONTH) == int(100 * 1.05**12)


@pytest.mark.parametrize("text", ["participant", "participant=200", "participant=200XB", "=1GB"])
def test_bad_sizes_name_the_item_and_the_form(text):
    with pytest.raises(ValueError, match=r"--size: .* is not ROLE=NUMBER UNIT"):
        retention_sim.parse_sizes(text)


def test_bad_growth():
    with pytest.raises(ValueError, match="--growth: '5' is not PERCENT%/month"):
        retention_sim.parse_growth("5")


def test_daily_block_growth():
    assert retention_sim.parse_daily("1GB/day") == 10**9
    assert retention_sim.parse_daily("2.5 GiB / day") == int(2.5 * 2**30)
    for text in ("1GB", "1GB/week", "GB/day", "1XB/day"):
        with pytest.raises(ValueError, match=r"--cometbft-blocks: .* is not NUMBER UNIT/day"):
            retention_sim.parse_daily(text)


def test_memory_store_is_create_only_like_the_buckets():
    store = MemoryStore(lambda: T0)
    store.put_bytes("a", b"x")
    with pytest.raises(ObjectExists):
        store.put_bytes("a", b"y")
    with pytest.raises(ObjectExists):
        store.copy("a", "a")
    assert store.read_bytes("a") == b"x" and store.size("a") == 1


# ------------------------------------------------------------------------------------------ the minimum


def point(set_id: str, at: datetime, mid: int = 0, took: timedelta = timedelta(minutes=1)) -> SetPoint:
    return SetPoint(RECENT, mid, set_id, at + took, {"apps": (at, at), "participant": (at, at + took)}, None)


def brute_force_minimum(points: list[SetPoint], window: timedelta, end: datetime) -> int | None:
    """The fewest kept sets by exhaustive search (small inputs only): first set kept, gaps below the window, open
    gap at `end` below the window. None when no choice meets the rule."""
    n = len(points)
    for size in range(1, n + 1):
        for rest in itertools.combinations(range(1, n), size - 1):
            chosen = [0, *rest]
            gaps = all(
                points[j].roles["participant"][1] - points[i].roles["participant"][0] < window
                for i, j in itertools.pairwise(chosen)
            )
            if gaps and end - points[chosen[-1]].roles["participant"][0] < window:
                return size
    return None


@given(
    st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=9), st.integers(min_value=20, max_value=60)
)
@hypothesis_settings(max_examples=150, deadline=None)
def test_the_greedy_minimum_is_the_true_minimum(gaps_hours, window_hours):
    window = timedelta(hours=window_hours)
    times = list(itertools.accumulate([timedelta(0)] + [timedelta(hours=h) for h in gaps_hours]))
    points = [point(f"s{i}", T0 + t) for i, t in enumerate(times)]
    end = points[-1].created_at + timedelta(hours=1)
    expected = brute_force_minimum(points, window, end)
    counts, _ = minimum_historical(points, {"participant": window}, end)
    if expected is not None:  # when no choice is gap-less the greedy still counts a (broken) history
        assert counts == {0: expected}


def test_an_earlier_migration_id_counts_its_last_set_and_pruning_off_counts_only_the_first():
    points = [point("a0", T0), point("a1", T0 + timedelta(hours=4)), point("b0", T0 + timedelta(hours=8), mid=1)]
    end = T0 + timedelta(hours=9)
    assert minimum_historical(points, {"participant": timedelta(days=30)}, end)[0] == {0: 2, 1: 1}
    assert minimum_historical(points, {}, end)[0] == {0: 2, 1: 1}


# ------------------------------------------------------------------------------------------------ replays


@pytest.fixture(scope="module")
def replay():
    settings = short_prod()
    return settings, simulate(settings, Options(years=30 / 365, start=T0, sizes=SIZES))


def test_a_replay_is_gapless_every_day_and_never_stores_fewer_than_the_minimum(replay):
    settings, result = replay
    assert result.audit_days == 30 and result.audit_problems == []
    assert result.minimum <= result.historical  # what the real rule kept is one gap-less choice
    # the recent tier is exactly the recent window of 4-hourly sets (the lifecycle deleted the rest)
    assert result.recent == 6 * 3
    cadence = settings.derived.postgres_historical_cadence
    assert result.cadence == cadence == retention.postgres_historical_cadence(timedelta(days=3), timedelta(days=3))
    assert result.historical <= 30 * timedelta(days=1) / cadence + 1


def test_the_seal_in_the_replay_promoted_with_the_programs_cadence(replay):
    """The manifests the real seal wrote record the windows and the cadence it computed: the program's."""
    settings, result = replay
    manifests = [m for _prefix, m in complete_sets(result.store)]
    assert manifests
    expected = retention.format_duration(settings.derived.postgres_historical_cadence)
    assert {m["windows"]["historical_cadence"] for m in manifests} == {expected}
    assert {m["windows"]["participant_pruning"] for m in manifests} == {"3d"}


def test_soft_delete_is_billed_after_the_recent_window(replay):
    """Every recent object is billed `softDelete` (30d) after its deletion at the recent window (3d here)."""
    _settings, result = replay
    assert result.bucket.kept_after_delete == timedelta(days=30)
    assert result.bytes_kept_after_delete["STANDARD"] > 5 * result.bytes_by_class["STANDARD"] // 2
    assert 0 < result.monthly_overhead_cost["STANDARD"] < result.monthly_cost["STANDARD"]


def test_an_outage_shorter_than_the_budget_keeps_the_history_gapless_a_longer_one_does_not():
    settings = short_prod()
    budget = retention.outage_budget(timedelta(days=3))
    cadence = settings.derived.postgres_historical_cadence
    for offset_hours in (0, 8, 16, 24):  # wherever it starts relative to the promotions
        start = T0 + cadence + timedelta(hours=offset_hours)
        ok = simulate(
            settings,
            Options(
                years=10 / 365,
                start=T0,
                sizes=SIZES,
                timing="worst",
                outages=[Outage(start, budget - timedelta(hours=4))],
            ),
        )
        assert ok.audit_problems == [], (offset_hours, ok.audit_problems[:1])
    broken = simulate(
        settings, Options(years=10 / 365, start=T0, sizes=SIZES, outages=[Outage(T0 + cadence, timedelta(days=3))])
    )
    assert any("not less than the pruning window" in p for _, p in broken.audit_problems)


def test_a_migration_change_keeps_the_old_ids_last_set_and_thins_its_snapshots():
    settings = short_prod()
    change = T0 + timedelta(days=5, hours=2)
    result = simulate(settings, Options(years=12 / 365, start=T0, sizes=SIZES, migration_changes=[change]))
    assert result.audit_problems == []
    old, new = settings.node.migration_id, settings.node.migration_id + 1
    last_old = max((p for p in result.sealed if p.migration_id == old), key=lambda p: p.created_at)
    assert result.sets_by_tier[(HISTORICAL, old)] >= 2 and result.sets_by_tier[(HISTORICAL, new)] >= 1
    assert (RECENT, old) not in result.sets_by_tier  # its recent sets expired, its history stays
    assert result.minimum_historical[old] <= result.sets_by_tier[(HISTORICAL, old)]
    assert result.store.size(f"historical/{old}/{last_old.set_id}/manifest.json")  # history up to the upgrade
    # the old id's snapshots (of its own PVC) were thinned once past the recent window: 5 days of 4-hourly
    # snapshots, down to the first, the newest and one per cadence
    old_snapshots = sum(n for (_tier, mid), n in result.snapshots_by_tier.items() if mid == old)
    assert 2 <= old_snapshots <= 4
    assert retention_sim.pvc_for(settings, new) == "global-domain-5-cometbft-cometbft-data"


def test_the_historical_tier_holds_every_object_of_each_promoted_set(replay):
    _settings, result = replay
    historical = complete_sets(result.store, tiers=(HISTORICAL,))
    assert len(historical) == result.historical
    for prefix, manifest in historical:
        assert manifest["promoted_from"] == prefix.replace(HISTORICAL, RECENT, 1)
        for db in manifest["databases"]:
            for obj in db["objects"]:
                assert result.store.size(f"{prefix}/{obj['key']}") == obj["size"] > 0
    assert set(result.bytes_by_class) <= {"STANDARD", "COLDLINE"}


def test_a_size_model_that_does_not_fit_the_deadline_fails_every_run():
    """No run fits: none is sealed (tests/pure/test_snapshot_sim.py has the day runs start failing)."""
    settings = short_prod()
    huge = SizeModel({"apps": 10**12, "participant": 10**13, "sequencer": 10**13, "mediator": 10**9})
    result = simulate(settings, Options(years=1 / 365, start=T0, sizes=huge))
    assert len(result.failed_runs) == 6 and result.sealed == []
    assert all(run.needed > run.deadline == timedelta(hours=3, minutes=30) for run in result.failed_runs)


def test_a_missing_role_size_is_named():
    with pytest.raises(ValueError, match="no size for role"):
        simulate(short_prod(), Options(years=1 / 365, start=T0, sizes=SizeModel({"apps": 1})))


# ---------------------------------------------------------------------------------------------- CometBFT


def test_incremental_snapshot_bytes_depend_on_the_spacing_only_beyond_the_window():
    """A snapshot at t holds the blocks of (t - window, t]; storage keeps each block once, so any selection spaced
    under the window stores the blocks from the first snapshot's window to the last snapshot, and a wider one
    stores less (and leaves a gap the block rule refuses)."""
    settings = short_prod()
    snapshots = retention_sim._Snapshots(settings)
    window, day = snapshots.window, timedelta(days=1)
    base, other = settings.node.migration_id, settings.node.migration_id + 1
    every_4h = [T0 + i * timedelta(hours=4) for i in range(6 * 60)]
    thinned = every_4h[:: int((window - timedelta(hours=4)) / timedelta(hours=4))]  # spaced just under the window
    span = every_4h[-1] - every_4h[0]
    for selection in (every_4h, [*thinned, every_4h[-1]]):
        assert snapshots.stored_bytes({base: selection}, 10**9) == int((span + window) / day * 10**9)
        # a later id's volume starts empty at its first snapshot
        assert snapshots.stored_bytes({other: selection}, 10**9) == int(span / day * 10**9)
    sparse = every_4h[:: int(2 * window / timedelta(hours=4))]
    assert snapshots.stored_bytes({base: sparse}, 10**9) == int(len(sparse) * window / day * 10**9)


def test_the_replay_keeps_cometbfts_history_gapless_at_the_cost_of_the_minimum(replay):
    _settings, result = replay
    assert result.snapshot_days == 30 and result.snapshot_problems == []
    # the bare minimum needs fewer snapshots than the minimum with Splice's 2x margin, which the pruner keeps...
    assert sum(result.minimum_snapshots.values()) <= sum(result.minimum_snapshots_margin.values())
    assert sum(result.minimum_snapshots_margin.values()) <= result.snapshot_historical
    # ...and, as incremental snapshots, the same bytes as the minimum's
    assert result.snapshot_bytes_ratio == pytest.approx(1.0)
    assert result.snapshot_monthly_cost > 0 and result.snapshot_locations


def test_a_cometbft_outage_longer_than_its_window_is_a_reported_gap():
    raw = raw_config("prod")
    # 2 days of blocks: snapshots are kept a day apart (half the window), and 3 failed days break the history.
    raw["sv-backups:retention"].update(recent="3d", cometbftRetainBlocks=2 * 24 * 7000, cometbftBlocksPerHour=7000)
    settings = load_settings(raw, stack="prod-short-cometbft")
    outage = Outage(T0 + timedelta(days=4), timedelta(days=3))
    result = simulate(settings, Options(years=9 / 365, start=T0, sizes=SIZES, outages=[outage]))
    assert result.snapshot_problems
    first_at, first = result.snapshot_problems[0]
    assert T0 + timedelta(days=6) <= first_at <= T0 + timedelta(days=7)
    assert "not less than the 2d CometBFT keeps" in first


def test_snapshots_are_priced_by_where_they_are_stored():
    assert storage_prices.snapshot_per_gib("gcp", "us") == storage_prices.SNAPSHOT[("gcp", "multi-regional")]
    assert storage_prices.snapshot_per_gib("gcp", "europe-west3") == storage_prices.SNAPSHOT[("gcp", "regional")]
    assert storage_prices.snapshot_per_gib("aws", "us-west-2") == storage_prices.SNAPSHOT[("aws", "regional")]
    assert storage_prices.SNAPSHOT[("gcp", "multi-regional")] > storage_prices.SNAPSHOT[("gcp", "regional")]


def test_the_memoized_listing_reports_what_the_jobs_listing_does():
    """engines/retention_sim.py reads each manifest once (_Listing); a replay with it and one with the jobs' own
    listing on every run must report the same (benchmarks/retention_sim.py raises otherwise)."""
    from benchmarks import retention_sim as bench

    settings = short_prod()
    outage = Outage(T0 + timedelta(days=5), timedelta(days=1))
    options = Options(
        years=12 / 365, start=T0, sizes=SIZES, outages=[outage], migration_changes=[T0 + timedelta(days=8)]
    )
    bench.run(settings, options, log=lambda *_: None)
    assert retention_sim.pgsets.complete_sets is retention_sim._complete_sets  # restored after the replay
