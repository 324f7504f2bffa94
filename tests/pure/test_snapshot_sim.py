"""The simulator's Postgres snapshot sets (engines/snapshot_sim.py) and dump runs that miss their deadline.

Short replays of real stack configs (the real seal, lifecycle, pruner rule and history audit); the 2-year figures
come from scripts/simulate_retention.py itself (docs/cost.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from components.settings import load_settings
from engines import retention_sim, snapshot_sim, storage_prices
from engines.retention_sim import Options, SizeModel, simulate
from rules.manifest import HISTORICAL
from scripts import simulate_retention
from tests.stackfiles import raw_config

T0 = datetime(2027, 1, 1, tzinfo=UTC)
GB = 10**9
SIZES = SizeModel({"apps": 2 * GB, "participant": 20 * GB, "sequencer": 30 * GB, "mediator": GB})
CHURN = snapshot_sim.parse_churn("participant=2GB/day,sequencer=3GB/day,apps=200MB/day,mediator=100MB/day")


def with_snapshots(stack: str = "prod", section: dict | None = None, dump_schedule: str | None = None, **retention):
    raw = raw_config(stack)
    raw["sv-backups:snapshots"] = section or {}
    raw["sv-backups:schedule"].pop("postgres", None)  # the weekly default beside snapshot sets
    if dump_schedule:
        raw["sv-backups:schedule"]["postgres"] = dump_schedule
    raw["sv-backups:retention"].update(retention)
    return load_settings(raw, stack=f"{stack}-snap")


# ----------------------------------------------------------------------------------------------- parsing


def test_churn_and_prices_parse_and_name_the_form():
    assert snapshot_sim.parse_churn("participant=15GB/day, apps=1.5 GiB / day") == {
        "participant": 15 * GB,
        "apps": int(1.5 * 2**30),
    }
    for text in ("participant=15GB", "participant=15XB/day", "=1GB/day"):
        with pytest.raises(ValueError, match=r"--churn: .* is not ROLE=NUMBER UNIT/day"):
            snapshot_sim.parse_churn(text)
    assert storage_prices.parse_price("rds-snapshot:eu-central-1=0.095") == ("rds-snapshot:eu-central-1", 0.095)
    assert storage_prices.parse_price("s3:eu-central-1:STANDARD=0.0245") == ("s3:eu-central-1:STANDARD", 0.0245)
    for text in ("rds-snapshot=0.1", "nfs:us=0.1", "pd-snapshot:us=cheap", "pd-snapshot:us=-1"):
        with pytest.raises(ValueError, match=r"--price: .* is not CLASS=USD"):
            storage_prices.parse_price(text)


def test_a_missing_price_names_the_class_and_the_override():
    book = storage_prices.PriceBook()
    with pytest.raises(storage_prices.MissingPrice) as error:
        book.get("ebs-snapshot:eu-central-1")
    assert "ebs-snapshot:eu-central-1" in str(error.value)
    assert "--price ebs-snapshot:eu-central-1=USD/GB-month" in str(error.value)
    assert storage_prices.PriceBook({"ebs-snapshot:eu-central-1": 0.06}).get("ebs-snapshot:eu-central-1") == 0.06


# ------------------------------------------------------------------------------------------------ chains


def test_a_chain_stores_the_volume_once_and_the_changes_between_kept_snapshots():
    growth = snapshot_sim.Growth(T0, {"participant": 100 * GB}, {"participant": 10 * GB}, 0.0)
    chain = snapshot_sim.Chain("participant", growth)
    times = [T0 + i * timedelta(hours=4) for i in range(7)]  # one day of 4-hourly snapshots
    for at in times:
        chain.add(at)
    assert chain.stored == pytest.approx(100 * GB + 10 * GB)  # the base + a day of changes
    chain.remove(times[3])  # a middle one: its changes merge into the next, nothing is freed
    assert chain.stored == pytest.approx(110 * GB)
    chain.remove(times[0])  # the oldest: the next one becomes whole, its first 4 hours' changes are freed
    assert chain.stored == pytest.approx(100 * GB + 10 * GB * 5 / 6)
    assert [t for t, _ in chain.kept] == [times[1], times[2], times[4], times[5], times[6]]


def test_changes_between_two_kept_snapshots_never_exceed_the_volume():
    growth = snapshot_sim.Growth(T0, {"participant": 100 * GB}, {"participant": 30 * GB}, 0.0)
    chain = snapshot_sim.Chain("participant", growth)
    chain.add(T0)
    assert chain.add(T0 + timedelta(days=10)) == pytest.approx(100 * GB)  # 300 GB written, 100 GB of blocks


def test_the_change_rate_grows_with_the_sizes():
    growth = snapshot_sim.Growth(T0, {"participant": 100 * GB}, {"participant": 10 * GB}, 0.05)
    month = snapshot_sim.AVERAGE_MONTH
    first = growth.changed("participant", T0, T0 + timedelta(days=1))
    later = growth.changed("participant", T0 + 12 * month, T0 + 12 * month + timedelta(days=1))
    assert first == pytest.approx(10 * GB, rel=1e-3)
    assert later / first == pytest.approx(1.05**12, rel=1e-3)
    assert growth.size("participant", T0 + 12 * month) == pytest.approx(100 * GB * 1.05**12)


# ------------------------------------------------------------------------------------------- deadlines


def test_a_dump_run_past_its_deadline_fails_and_the_audit_sees_the_gap():
    """Today's 4-hourly dumps (deadline 3 h 30 m) with sizes growing 40 % a month: from the run whose steps, one
    after another, need more than the deadline, no set is sealed; the open gap reaches the window."""
    raw = raw_config("prod")
    raw.pop("sv-backups:snapshots", None)  # today's dump-only prod (the shipped one may run snapshot sets)
    raw["sv-backups:schedule"]["postgres"] = "0 */4 * * *"
    raw["sv-backups:retention"].update(recent="3d", participantPruning="5d", sequencerPruning="5d")
    settings = load_settings(raw, stack="prod-short")
    sizes = SizeModel({"apps": 50 * GB, "participant": 250 * GB, "sequencer": 300 * GB, "mediator": 10 * GB}, 0.4)
    result = simulate(settings, Options(years=30 / 365, start=T0, sizes=sizes))
    deadline = settings.derived.timing["postgres"].deadline
    assert result.dump_deadline == deadline == timedelta(hours=3, minutes=30)
    first = result.failed_runs[0]
    # the first failing run is the first whose summed size x 16.8 s/GB (+ 15 s of steps and seal) is past it
    total = sum(sizes.sizes.values())
    growth_needed = (deadline.total_seconds() - 15) / (total / GB * retention_sim.DEFAULT_DUMP_SECONDS_PER_GB)
    months = (first.at - T0) / retention_sim.AVERAGE_MONTH
    assert 1.4**months >= growth_needed > 1.4 ** (months - 4 / 730)
    assert all(p.taken_at < first.at for p in result.sealed)  # growing sizes: every later run fails too
    assert result.failed_runs[-1].at > first.at and not result.gapless
    assert any("not less than the pruning window" in p for _, p in result.audit_problems)
    assert min(at for at, _ in result.audit_problems) > first.at
    assert "FAILED RUNS" in retention_sim.report(result)


# --------------------------------------------------------------------------------------- snapshot sets


@pytest.fixture(scope="module")
def snapshot_replay():
    settings = with_snapshots(recent="3d", participantPruning="30d", sequencerPruning="30d")
    options = Options(years=40 / 365, start=T0, sizes=SIZES, churn=CHURN)
    return settings, simulate(settings, options)


def test_snapshot_sets_keep_the_recent_window_and_weekly_dumps_the_history(snapshot_replay):
    settings, result = snapshot_replay
    assert settings.schedule.postgres == "0 1 * * 0" and result.dump_schedule == "0 1 * * 0"
    assert result.gapless and result.audit_days == 40 and not result.failed_runs
    pg = result.postgres_snapshots
    assert pg.schedule == "0 */4 * * *" and not pg.historical and pg.taken == 40 * 6
    assert 18 <= pg.kept <= 19  # the recent window (3 d) of 4-hourly sets
    # weekly dumps promoted at the cadence their 7-day gap allows: 30d - (7d + 24h 15m) - 2d, down to the hour
    assert result.cadence == settings.derived.postgres_historical_cadence == timedelta(days=19, hours=23)
    assert result.dump_history_gap < timedelta(days=30)
    assert result.fewest_dump_sets_per_interval >= 1


def test_snapshot_storage_is_the_volume_once_plus_the_recent_changes(snapshot_replay):
    _settings, result = snapshot_replay
    pg = result.postgres_snapshots
    end, recent = result.end, timedelta(days=3)
    growth = snapshot_sim.Growth(T0, SIZES.sizes, CHURN, 0.0)
    for role, stored in pg.stored.items():
        # kept: the sets of the last 3 days (the newest one 4 h before the end at the latest)
        assert growth.size(role, end) + growth.changed(role, end - recent - timedelta(hours=4), end) >= stored
        lower = growth.size(role, end) + growth.changed(role, end - recent, end - timedelta(hours=4))
        assert stored >= lower * (1 - 1e-9)  # float sums
    assert pg.placements["apps"].price_classes == ("pd-snapshot:us",)  # in-cluster: the snapshot class's location
    assert pg.placements["participant"].price_classes == ("cloudsql-backup:us",)
    assert pg.placements["participant"].method == "cloudsql-backup"
    assert set(pg.monthly_cost) == {"pd-snapshot:us", "cloudsql-backup:us"}
    assert result.total_monthly_cost == pytest.approx(
        sum(result.monthly_cost.values())
        + result.monthly_replication_cost
        + result.snapshot_monthly_cost
        + sum(pg.monthly_cost.values())
    )


def test_a_historical_snapshot_tier_is_kept_at_the_cadence_and_audited():
    settings = with_snapshots(
        section={"historical": True},
        dump_schedule="0 1 * * *",
        recent="2d",
        participantPruning="10d",
        sequencerPruning="10d",
    )
    cadence = settings.derived.snapshot_historical_cadence
    assert cadence == timedelta(days=7, hours=16)  # 10d - 8h - 2d: a 4-hourly schedule's
    result = simulate(settings, Options(years=30 / 365, start=T0, sizes=SIZES, churn=CHURN))
    pg = result.postgres_snapshots
    assert pg.historical and pg.cadence == cadence
    assert pg.kept_historical >= 2 and result.gapless
    assert (HISTORICAL, settings.node.migration_id) in result.sets_by_tier


def test_aws_copies_each_snapshot_to_the_dr_region_and_pays_the_transfer():
    settings = with_snapshots("aws-prod", recent="3d")
    result = simulate(settings, Options(years=10 / 365, start=T0, sizes=SIZES, churn=CHURN))
    pg = result.postgres_snapshots
    region, dr = settings.aws.region, settings.dr.region
    assert pg.placements["participant"].price_classes == (f"rds-snapshot:{region}", f"rds-snapshot:{dr}")
    assert pg.placements["apps"].price_classes == (f"ebs-snapshot:{region}", f"ebs-snapshot:{dr}")
    assert pg.monthly_cost[f"transfer:{region}>{dr}"] > 0
    # both copies store the same bytes: the DR copy costs what the primary does at equal prices
    assert pg.monthly_cost[f"ebs-snapshot:{region}"] == pytest.approx(pg.monthly_cost[f"ebs-snapshot:{dr}"])


def test_a_region_without_a_price_is_refused_before_simulating():
    settings = with_snapshots("aws-dev")
    with pytest.raises(storage_prices.MissingPrice, match=r"--price ebs-snapshot:eu-central-1=USD/GB-month"):
        simulate(settings, Options(years=1 / 365, start=T0, sizes=SIZES, churn=CHURN))


def test_a_missing_change_rate_is_named():
    with pytest.raises(ValueError, match="--churn: no change rate for role"):
        simulate(with_snapshots(), Options(years=1 / 365, start=T0, sizes=SIZES, churn={"apps": GB}))


# ------------------------------------------------------------------------------------------------- CLI


def stack_file(tmp_path, stack: str) -> str:
    """`stack` with sv-backups:snapshots, written as a stack file named `<stack>-snap`."""
    import yaml

    raw = raw_config(stack)
    raw["sv-backups:snapshots"] = {}
    raw["sv-backups:schedule"].pop("postgres")
    raw["sv-backups:identities"]["clientSecret"] = {"secure": "v1:c2VjcmV0"}
    path = tmp_path / f"Pulumi.{stack}-snap.yaml"
    path.write_text(yaml.safe_dump({"config": raw}))
    return str(path)


def test_the_command_takes_a_stack_file_and_prints_json(tmp_path, capsys):
    path = stack_file(tmp_path, "prod")
    code = simulate_retention.main(
        [
            "--config-file",
            path,
            "--years",
            str(15 / 365),
            "--size",
            "participant=20GB,sequencer=30GB,apps=2GB,mediator=1GB",
            "--json",
        ]
    )
    document = json.loads(capsys.readouterr().out)
    assert document["stack"] == "prod-snap"
    assert document["gapless"] is True and document["monthly_cost_usd"] > 0
    assert document["failed_runs"] == 0 and document["postgres_snapshots"]["schedule"] == "0 */4 * * *"
    assert code in (0, 1)  # 1: 15 days keep more historical sets than the 2-year minimum ratio allows


def test_the_command_refuses_a_missing_price_with_the_override(tmp_path, capsys):
    path = stack_file(tmp_path, "aws-dev")
    assert simulate_retention.main(["--config-file", path, "--years", "0.01"]) == 2
    assert "--price ebs-snapshot:eu-central-1=USD/GB-month" in capsys.readouterr().err


def test_cometbft_snapshots_in_an_unpriced_region_are_refused_until_priced():
    settings = load_settings(raw_config("aws-dev"), stack="aws-dev")
    options = Options(years=2 / 365, start=T0, sizes=SIZES)
    with pytest.raises(storage_prices.MissingPrice, match=r"--price ebs-snapshot:eu-central-1=USD/GB-month"):
        simulate(settings, options)
    region, dr = settings.aws.region, settings.dr.region
    prices = {f"ebs-snapshot:{region}": 0.05, f"ebs-snapshot:{dr}": 0.05, f"transfer:{region}>{dr}": 0.02}
    with pytest.raises(storage_prices.MissingPrice, match=rf"--price s3:{region}:STANDARD=USD/GB-month"):
        simulate(settings, Options(years=2 / 365, start=T0, sizes=SIZES, prices=storage_prices.PriceBook(prices)))
    classes = ("STANDARD", settings.storage.historical_class("aws"))
    prices |= {f"s3:{r}:{c}": 0.02 for r in (region, dr) for c in classes}
    result = simulate(settings, Options(years=2 / 365, start=T0, sizes=SIZES, prices=storage_prices.PriceBook(prices)))
    assert result.snapshot_monthly_cost > 0
