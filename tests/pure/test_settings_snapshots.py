"""sv-backups:snapshots (ordered Postgres snapshot sets, issue 17): the section, the PVCs of in-cluster instances,
the dump schedule it relaxes, and one clear message per layout the snapshot job cannot take."""

from __future__ import annotations

from datetime import timedelta

import pytest

from components.settings import DUMP_SCHEDULES_WITH_SNAPSHOTS, default_pvc, load_settings
from rules import retention
from tests.stackfiles import dump_only_config, problems_of, raw_config


def _with_snapshots(stack: str, section: dict | None = None, *, dump_schedule: str | None = None) -> dict:
    """`stack`'s config with sv-backups:snapshots, and the dump schedule unset (its default) unless given."""
    raw = dump_only_config(stack)
    raw["sv-backups:snapshots"] = section or {}
    raw["sv-backups:schedule"].pop("postgres", None)
    if dump_schedule is not None:
        raw["sv-backups:schedule"]["postgres"] = dump_schedule
    return raw


def test_without_the_section_nothing_changes():
    settings = load_settings(dump_only_config("prod"), stack="prod")
    assert settings.snapshots is None
    assert settings.schedule.postgres == "0 */4 * * *"
    assert settings.derived.postgres_schedule_gap == timedelta(hours=4)
    # prod's 30-day windows: the cadence of every stack planned before sparse dump schedules existed.
    assert settings.derived.postgres_historical_cadence == timedelta(days=27, hours=16)
    assert settings.derived.snapshot_historical_cadence is None
    assert "postgres-snapshots" not in settings.derived.timing


def test_an_empty_section_declares_snapshot_sets_with_the_defaults():
    settings = load_settings(_with_snapshots("prod"), stack="prod")
    snapshots = settings.snapshots
    assert (snapshots.schedule, snapshots.historical, snapshots.online_backup) == ("0 */4 * * *", False, True)
    assert (snapshots.volume_snapshot_class, snapshots.driver) == (None, None)
    snapshot_timing = settings.derived.timing["postgres-snapshots"]
    assert (snapshot_timing.largest_gap, snapshot_timing.deadline) == (timedelta(hours=4), timedelta(hours=3.5))


@pytest.mark.parametrize(("stack", "schedule", "gap"), [("prod", "0 1 * * 0", 7), ("aws-prod", "0 1 * * 0,3", 4)])
def test_the_dump_sets_default_to_a_sparse_schedule_per_cloud(stack, schedule, gap):
    settings = load_settings(_with_snapshots(stack), stack=stack)
    assert settings.schedule.postgres == schedule == DUMP_SCHEDULES_WITH_SNAPSHOTS[settings.cloud]
    dumps = settings.derived.timing["postgres"]
    assert dumps.largest_gap == timedelta(days=gap)
    assert dumps.deadline == timedelta(hours=24)  # MAX_RUN_DEADLINE, not the week
    assert settings.derived.postgres_schedule_gap == timedelta(days=gap)
    # 30-day windows: 30d - (gap + the latest a run finishes: 15 min start window + 24 h deadline) - the 2-day
    # outage budget, rounded down to the hour.
    expected = timedelta(days=30) - timedelta(days=gap, hours=24, minutes=15) - timedelta(days=2)
    assert settings.derived.postgres_historical_cadence == expected - timedelta(minutes=45)


def test_a_dump_schedule_given_with_snapshots_is_kept():
    settings = load_settings(_with_snapshots("prod", dump_schedule="0 2 * * *"), stack="prod")
    assert settings.schedule.postgres == "0 2 * * *"
    assert settings.derived.postgres_schedule_gap == timedelta(days=1)


def test_four_hourly_dumps_beside_snapshots_keep_the_cadence():
    settings = load_settings(_with_snapshots("prod", dump_schedule="0 */4 * * *"), stack="prod")
    assert settings.derived.postgres_historical_cadence == timedelta(days=27, hours=16)
    assert settings.derived.postgres_schedule_gap == timedelta(hours=4)


def test_historical_snapshot_sets_use_the_cadence_of_a_four_hourly_schedule():
    settings = load_settings(_with_snapshots("prod", {"historical": True}), stack="prod")
    assert settings.derived.snapshot_historical_cadence == timedelta(days=27, hours=16)


def test_the_default_pvc_is_the_bitnami_charts():
    settings = load_settings(raw_config("prod"), stack="prod")
    assert settings.postgres["apps"].pvc == "data-apps-pg-0"
    assert settings.postgres["mediator"].pvc == "data-mediator-pg-0"
    assert default_pvc("apps-pg.sv.svc.cluster.local") == "data-apps-pg-0"


def test_a_given_pvc_and_wal_pvc_are_kept():
    raw = _with_snapshots("prod")
    raw["sv-backups:postgres"]["apps"].update(pvc="pg-data-apps-pg-0", walPvc="pg-wal-apps-pg-0")
    apps = load_settings(raw, stack="prod").postgres["apps"]
    assert (apps.pvc, apps.wal_pvc) == ("pg-data-apps-pg-0", "pg-wal-apps-pg-0")


def test_wal_on_its_own_volume_needs_an_online_backup():
    raw = _with_snapshots("prod", {"onlineBackup": False})
    raw["sv-backups:postgres"]["apps"]["walPvc"] = "wal-apps-pg-0"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.apps.walPvc: pg_wal is on its own volume ('wal-apps-pg-0')")
    assert "sv-backups:snapshots.onlineBackup true" in problem and "remove walPvc" in problem


def test_wal_pvc_must_be_another_volume():
    raw = _with_snapshots("prod")
    raw["sv-backups:postgres"]["apps"]["walPvc"] = "data-apps-pg-0"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.apps.walPvc: 'data-apps-pg-0' is the data directory's PVC (pvc)")


def test_a_pvc_must_be_a_kubernetes_name():
    raw = raw_config("prod")
    raw["sv-backups:postgres"]["apps"]["pvc"] = "Data_Apps"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.apps.pvc: 'Data_Apps' must be a Kubernetes object name")


def test_volume_snapshot_keys_need_an_in_cluster_instance():
    raw = _with_snapshots("prod", {"onlineBackup": True, "driver": "pd.csi.storage.gke.io"})
    for role in ("apps", "mediator"):
        raw["sv-backups:postgres"][role] = {
            "kind": "cloudsql",
            "instance": f"sv-1-{role}-pg",
            "passwordSecret": f"{role}-pg-secret",
            "databases": raw["sv-backups:postgres"][role]["databases"],
        }
    problems = problems_of(raw)
    assert [p.split(":", 2)[1] for p in problems] == ["snapshots.onlineBackup", "snapshots.driver"]
    assert "no role is in-cluster" in problems[0] and "remove the key" in problems[0]


def test_an_instance_outside_the_node_namespace_needs_its_pvc():
    raw = _with_snapshots("prod")
    raw["sv-backups:postgres"]["apps"]["host"] = "apps-pg.databases.svc.cluster.local"
    [problem] = problems_of(raw)
    assert problem.startswith(
        "sv-backups:postgres.apps.host: 'apps-pg.databases.svc.cluster.local' is in namespace 'databases', not a "
        "Service of the node's namespace 'sv'"
    )
    assert "set sv-backups:postgres.apps.pvc" in problem
    raw["sv-backups:postgres"]["apps"]["pvc"] = "data-apps-pg-0"
    assert load_settings(raw, stack="prod").postgres["apps"].pvc == "data-apps-pg-0"


def test_an_external_host_cannot_be_volume_snapshotted():
    raw = _with_snapshots("prod")
    raw["sv-backups:postgres"]["mediator"]["host"] = "10.0.0.7"
    [problem] = problems_of(raw)
    assert "'10.0.0.7' is outside the cluster's Services" in problem
    # Without snapshot sets the host is only dumped over the network: fine.
    plain = dump_only_config("prod")
    plain["sv-backups:postgres"]["mediator"]["host"] = "10.0.0.7"
    load_settings(plain, stack="prod")


def test_a_service_of_the_node_namespace_by_its_full_name_is_fine():
    raw = _with_snapshots("prod")
    raw["sv-backups:postgres"]["apps"]["host"] = "apps-pg.sv.svc.cluster.local"
    assert load_settings(raw, stack="prod").postgres["apps"].pvc == "data-apps-pg-0"


def test_without_snapshots_the_dumps_keep_the_four_hour_rule_and_the_message_says_what_relaxes_it():
    raw = dump_only_config("prod")
    raw["sv-backups:schedule"]["postgres"] = "0 1 * * 0"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:schedule.postgres: '0 1 * * 0' leaves a gap of 168 h between two runs")
    assert problem.endswith("with sv-backups:snapshots the snapshot sets meet it and the dump sets may be sparser")


def test_snapshot_sets_must_meet_the_four_hour_duty():
    [problem] = problems_of(_with_snapshots("prod", {"schedule": "0 */6 * * *"}))
    assert problem.startswith("sv-backups:snapshots.schedule: '0 */6 * * *' leaves a gap of 6 h between two runs")


def test_a_dump_schedule_too_sparse_for_the_pruning_window_is_refused():
    [problem] = problems_of(_with_snapshots("prod", dump_schedule="0 1 1 * *"))
    assert problem.startswith(
        "sv-backups:schedule.postgres: '0 1 1 * *' leaves 744 h between two dump sets, too sparse for a gap-less "
        "history under retention.participantPruning 30d"
    )
    assert "e.g. daily '0 1 * * *'" in problem


def test_a_dump_schedule_sparser_than_the_historical_cadence_is_refused():
    # dev has no pruning: historical sets every 14 days, and each interval needs a verified dump set.
    [problem] = problems_of(_with_snapshots("dev", dump_schedule="0 1 1 * *"))
    assert problem == (
        "sv-backups:schedule.postgres: '0 1 1 * *' leaves 744 h between two dump sets, more than the historical "
        "cadence of 14d: a historical interval would have no verified dump set; allowed: dump sets at most 14d "
        "apart, e.g. weekly '0 1 * * 0'"
    )


def test_weekly_dumps_on_aws_are_too_sparse_for_cloudwatch():
    [problem] = problems_of(_with_snapshots("aws-prod", dump_schedule="0 1 * * 0"))
    assert problem.startswith("sv-backups:schedule.postgres: '0 1 * * 0' leaves 168 h between two dump sets")
    assert "'0 1 * * 0,3' (the aws default with snapshots)" in problem


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("onlineBakup", "sv-backups:snapshots.onlineBakup: unknown key; did you mean onlineBackup?"),
        (
            "volumeSnapshotClas",
            "sv-backups:snapshots.volumeSnapshotClas: unknown key; did you mean volumeSnapshotClass?",
        ),
    ],
)
def test_unknown_keys_in_the_section_get_a_suggestion(key, expected):
    assert problems_of(_with_snapshots("prod", {key: True})) == [expected]


def test_a_misspelt_section_gets_a_suggestion():
    raw = raw_config("prod")
    raw["sv-backups:snapshot"] = {}
    assert problems_of(raw) == ["sv-backups:snapshot: unknown key; did you mean sv-backups:snapshots?"]


def test_an_unknown_pvc_key_gets_a_suggestion():
    raw = raw_config("prod")
    raw["sv-backups:postgres"]["apps"]["walPVC"] = "wal-apps-pg-0"
    assert problems_of(raw) == ["sv-backups:postgres.apps.walPVC: unknown key; did you mean walPvc?"]


def test_the_cadence_takes_the_schedule_gap_only_above_four_hours():
    month = timedelta(days=30)
    base = retention.postgres_historical_cadence(month, None)
    assert retention.postgres_historical_cadence(month, None, schedule_gap=timedelta(hours=1)) == base
    assert retention.postgres_historical_cadence(month, None, schedule_gap=timedelta(hours=4)) == base
    # weekly: 30d - (7d + 24h 15m, the latest a dump run finishes) - 2d, rounded down to the hour
    assert retention.postgres_historical_cadence(month, None, schedule_gap=timedelta(days=7)) == timedelta(
        days=19, hours=23
    )
    # daily: the gap bounds the run's finish before its deadline does (30d - 2 * 1d - 2d)
    assert retention.postgres_historical_cadence(month, None, schedule_gap=timedelta(days=1)) == timedelta(days=26)
    assert retention.postgres_historical_cadence(None, None, schedule_gap=timedelta(days=7)) == timedelta(days=14)
