"""The retention simulation bills what the program declares: the same lifecycle rules on every backup bucket,
the same soft delete (GCS) or noncurrent-version window (S3), and one billed copy per bucket or dual-region
location the plan holds."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engines import retention_sim
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
        assert not plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
        assert locations == []
        return
    [snapshot_class] = [
        c for c in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass") if "cometbft" in c["name"]
    ]
    if settings.cloud == "gcp":
        assert [snapshot_class["inputs"]["parameters"]["storage-locations"]] == locations
    else:  # EBS snapshots stay in the cluster's region; the snapshot job copies each to the DR region
        assert "storage-locations" not in (snapshot_class["inputs"].get("parameters") or {})
        [job] = [j for j in plan.of_type("kubernetes:batch/v1:CronJob") if j["name"].endswith("cometbft-snapshot")]
        args = json.dumps(job["inputs"]["spec"]["jobTemplate"])
        assert locations == [settings.aws.region, settings.dr.region]
        assert f'"--copy-to-region", "{settings.dr.region}"' in args
