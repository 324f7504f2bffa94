"""The retention simulation bills what the program declares: the same lifecycle rules on every backup bucket,
the same soft delete (GCS) or noncurrent-version window (S3), and one billed copy per bucket or dual-region
location the plan holds."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engines import retention_sim, snapshot_sim
from engines.retention_stacks import load
from tests.stackfiles import raw_config, stack_names

PRIMARY_STACKS = [s for s in stack_names() if raw_config(s).get("sv-backups:role", "primary") != "dr"]


def _gcs_rules(bucket: dict) -> set[tuple]:
    rules = set()
    for rule in bucket["inputs"]["lifecycleRules"]:
        condition, action = rule["condition"], rule["action"]
        prefixes = condition.get("matchesPrefixes") or [""]
        for prefix in prefixes:
            rules.add((action["type"], prefix, condition["age"], action.get("storageClass")))
    return rules


def _s3_rules(configuration: dict) -> tuple[set[tuple], int | None]:
    rules, noncurrent = set(), None
    for rule in configuration["inputs"]["rules"]:
        prefix = (rule.get("filter") or {}).get("prefix", "")
        if (rule.get("expiration") or {}).get("days"):
            rules.add(("Delete", prefix, rule["expiration"]["days"], None))
        for transition in rule.get("transitions") or []:
            rules.add(("SetStorageClass", prefix, transition["days"], transition["storageClass"]))
        if rule.get("abortIncompleteMultipartUpload"):
            rules.add(
                (
                    "AbortIncompleteMultipartUpload",
                    prefix,
                    rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"],
                    None,
                )
            )
        if rule.get("noncurrentVersionExpiration"):
            noncurrent = rule["noncurrentVersionExpiration"]["noncurrentDays"]
    return rules, noncurrent


@pytest.mark.parametrize("stack", PRIMARY_STACKS)
def test_the_simulation_uses_the_lifecycle_the_program_declares(stack, shipped_plan):
    plan = shipped_plan(stack)
    settings = load(stack)
    model = retention_sim.bucket_model(settings)
    simulated = {(r.action, r.prefix, r.age_days, r.storage_class) for r in model.rules}
    if settings.cloud == "gcp":
        buckets = plan.of_type("gcp:storage/bucket:Bucket")
        assert buckets
        for bucket in buckets:
            assert _gcs_rules(bucket) == simulated, bucket["name"]
            kept = timedelta(seconds=int(bucket["inputs"]["softDeletePolicy"]["retentionDurationSeconds"]))
            assert kept == model.kept_after_delete
        locations = [
            loc.lower()
            for b in buckets
            for loc in (b["inputs"].get("customPlacementConfig") or {}).get("dataLocations", [b["inputs"]["location"]])
        ]
        assert sorted(locations) == sorted(c.region for c in model.copies)
        skus = {"dual-region" if b["inputs"].get("customPlacementConfig") else "regional" for b in buckets}
        assert skus == {c.sku for c in model.copies}
    else:
        configurations = [r for r in plan.resources if r["type"].endswith("BucketLifecycleConfiguration")]
        assert len(configurations) == len(model.copies) == 2  # the primary bucket and its replica
        for configuration in configurations:
            rules, noncurrent = _s3_rules(configuration)
            assert rules == simulated, configuration["name"]
            assert timedelta(days=noncurrent) == model.kept_after_delete


@pytest.mark.parametrize("stack", PRIMARY_STACKS)
def test_the_simulation_prices_cometbft_snapshots_where_the_snapshot_class_stores_them(stack, shipped_plan):
    plan = shipped_plan(stack)
    settings = load(stack)
    locations = retention_sim.snapshot_locations(settings)
    if settings.dabft:  # no CometBFT node: no snapshot class, nothing priced
        classes = plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
        assert not [c for c in classes if "cometbft" in c["name"]]
        assert locations == []
        return
    [snapshot_class] = [
        c
        for c in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
        if c["name"].endswith("cometbft-snapshot-class")
    ]
    if settings.cloud == "gcp":
        assert [snapshot_class["inputs"]["parameters"]["storage-locations"]] == locations
    else:  # EBS snapshots stay in the cluster's region; the snapshot job copies each to the DR region
        assert "storage-locations" not in (snapshot_class["inputs"].get("parameters") or {})
        [job] = [j for j in plan.of_type("kubernetes:batch/v1:CronJob") if j["name"].endswith("cometbft-snapshot")]
        args = json.dumps(job["inputs"]["spec"]["jobTemplate"])
        assert locations == [settings.aws.region, settings.dr.region]
        assert f'"--copy-to-region", "{settings.dr.region}"' in args


def _dump_cron_job(plan) -> dict:
    [job] = [j for j in plan.of_type("kubernetes:batch/v1:CronJob") if j["name"].endswith("postgres-backup")]
    return job["inputs"]


@pytest.mark.parametrize("stack", PRIMARY_STACKS)
def test_the_simulation_kills_dump_runs_at_the_deadline_the_program_declares(stack, shipped_plan):
    """A simulated dump run fails when its steps need longer than the CronJob's activeDeadlineSeconds."""
    settings = load(stack)
    schedule, timing, _cadence = retention_sim.dump_timing(settings, retention_sim.Options())
    job = _dump_cron_job(shipped_plan(stack))
    assert job["spec"]["schedule"] == schedule
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == int(timing.deadline.total_seconds())
    assert job["spec"]["startingDeadlineSeconds"] == int(timing.start_window.total_seconds())


def test_with_snapshot_sets_the_simulated_dump_schedule_and_deadline_are_the_programs(offline_plan):
    """prod with sv-backups:snapshots: weekly dump sets, runs bounded by a day (rules.schedules.MAX_RUN_DEADLINE)."""
    from components.settings import load_settings

    raw = raw_config("prod")
    raw["sv-backups:snapshots"] = {}
    raw["sv-backups:schedule"].pop("postgres")
    settings = load_settings(raw, stack="prod-snap")
    schedule, timing, cadence = retention_sim.dump_timing(settings, retention_sim.Options())
    assert (schedule, timing.deadline, cadence) == ("0 1 * * 0", timedelta(days=1), timedelta(days=19, hours=23))
    job = _dump_cron_job(offline_plan(raw, stack="prod-snap"))
    assert job["spec"]["schedule"] == schedule
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == int(timing.deadline.total_seconds())


@pytest.mark.parametrize("stack", ["prod", "aws-prod"])
def test_postgres_snapshots_are_priced_where_the_program_keeps_them(stack, offline_plan):
    """The snapshot class's storage-locations and the Cloud SQL backups' --location (GCP), the copy to the DR region
    (AWS): where engines/snapshot_sim.py bills each role's chain."""
    from components.settings import load_settings

    raw = raw_config(stack)
    raw["sv-backups:snapshots"] = {}
    raw["sv-backups:schedule"].pop("postgres")
    settings = load_settings(raw, stack=stack)
    plan = offline_plan(raw, stack=stack)
    jobs = [j for j in plan.of_type("kubernetes:batch/v1:CronJob") if j["name"].endswith("postgres-snapshot")]
    if not jobs:
        pytest.skip("the program declares no snapshot-set CronJob yet (components/pg_snapshots.py)")
    args = json.dumps(jobs[0]["inputs"]["spec"]["jobTemplate"])
    where = snapshot_sim.placements(settings)
    for role, placement in where.items():
        if settings.cloud == "gcp" and placement.method == "volume-snapshot":
            [snapshot_class] = [
                c
                for c in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
                if c["name"].endswith("postgres-snapshot-class")
            ]
            location = snapshot_class["inputs"]["parameters"]["storage-locations"]
            assert placement.price_classes == (f"pd-snapshot:{location}",), role
        elif settings.cloud == "gcp":
            location = placement.price_classes[0].split(":", 1)[1]
            assert f'"--location", "{location}"' in args, role
        else:
            assert placement.price_classes[1:] == (f"{placement.price_classes[0].split(':')[0]}:{settings.dr.region}",)
            assert f'"--copy-to-region", "{settings.dr.region}"' in args, role
