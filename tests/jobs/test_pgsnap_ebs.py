"""Snapshot sets on EBS: each role's snapshot copied to the DR region under the DR key and waited for, against
moto server EC2 in two regions and the fake Kubernetes API (its snapshot controller stands for the EBS CSI
driver, as in test_cometbft_ebs.py); a failed copy leaves no step and no snapshot; pruning deletes the copies
with their snapshots."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs import ebs_copies
from jobs.destinations import open_destination
from jobs.pgsnap import prune
from jobs.pgsnap_cli import ConfigError, volume_provider
from rules.snapshot_sets import VOLUME_SNAPSHOT, snapshot_set_prefix
from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.test_cometbft_ebs import DR, Ebs

pytestmark = pytest.mark.slow
NS, PVC, CLASS = "sv", "data-apps-pg-0", "sv-1-postgres-snapshot-class"


@pytest.fixture
def ebs(aws_env):
    return Ebs()


@pytest.fixture
def api(ebs):
    with FakeKubeApi() as fake:
        fake.driver = "ebs.csi.aws.com"
        fake.ready_after = 1
        fake.take_disk_snapshot = ebs.take
        fake.delete_disk_snapshot = ebs.delete
        fake.add_pvc(NS, PVC)
        yield fake


def step(jobs_cli, api, ebs, url, *extra):
    return jobs_cli(
        "snapshot-step", "--role", "apps", "--dest", url, "--set-id", "ebs-set", "--migration-id", "1",
        "--method", VOLUME_SNAPSHOT, "--namespace", NS, "--pvc", PVC, "--snapshot-class", CLASS,
        "--kube-api", api.url, "--poll-interval", "0.05", "--copy-to-region", DR, "--copy-kms-key", ebs.key["Arn"],
        *extra,
    )  # fmt: skip


def events(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_a_step_copies_its_snapshot_to_the_dr_region_and_pruning_deletes_both(api, ebs, jobs_cli, tmp_path):
    url = f"file://{tmp_path}/store"
    result = step(jobs_cli, api, ebs, url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert jobs_cli("snapshot-seal", "--dest", url, "--set-id", "ebs-set", "--migration-id", "1",
                    "--roles", "apps").returncode == 0  # fmt: skip
    dest = open_destination(url)
    manifest = json.loads(dest.read_bytes(f"{snapshot_set_prefix(1, 'ebs-set')}/manifest.json"))
    (record,) = manifest["snapshots"]
    assert record["dr_copy"]["region"] == DR
    copy_id = record["dr_copy"]["snapshot_ids"]["data"]
    (copy,) = ebs.copies()
    tags = {t["Key"]: t["Value"] for t in copy["Tags"]}
    assert copy["SnapshotId"] == copy_id and copy["State"] == "completed" and copy["KmsKeyId"] == ebs.key["Arn"]
    assert tags[ebs_copies.VOLUME_SNAPSHOT_TAG] == record["handle"] and tags[ebs_copies.SET_ID_TAG] == "ebs-set"
    # pruned: the VolumeSnapshot, its EBS snapshot and the DR copy go together
    args = type("Args", (), {"namespace": NS, "kube_api": api.url, "ready_timeout": timedelta(seconds=5),
                             "error_grace": timedelta(0), "poll_interval": 0.05, "copy_to_region": DR})()  # fmt: skip
    provider = volume_provider(args)
    later = datetime.now(UTC) + timedelta(days=10)
    kept = prune(dest, {VOLUME_SNAPSHOT: provider}, now=later, keep_recent=timedelta(days=3))
    assert kept.pruned == [] and len(kept.kept) == 1  # the newest set stays without a historical tier
    # a second, newer set makes the first one prunable
    assert step(jobs_cli, api, ebs, url, "--set-id", "ebs-set-2").returncode == 0
    assert jobs_cli("snapshot-seal", "--dest", url, "--set-id", "ebs-set-2", "--migration-id", "1",
                    "--roles", "apps").returncode == 0  # fmt: skip
    result = prune(dest, {VOLUME_SNAPSHOT: provider}, now=later, keep_recent=timedelta(days=3))
    assert result.pruned == [record["handle"]] and not result.errors
    assert copy_id not in {c["SnapshotId"] for c in ebs.copies()} and len(ebs.copies()) == 1
    assert len(api.names("volumesnapshots", NS)) == 1


def test_a_failed_copy_fails_the_step_and_leaves_nothing(api, ebs, jobs_cli, tmp_path):
    url = f"file://{tmp_path}/store"
    ebs.node_tag = None  # the class did not tag the snapshot with the node: its copy could never be pruned
    before = ebs.primary_snapshot_ids()
    result = step(jobs_cli, api, ebs, url)
    assert result.returncode == 1
    (failed,) = events(result)
    assert (
        failed["event"] == "backup.failed" and failed["stage"] == "copy" and "no svbackups-node tag" in failed["error"]
    )
    assert api.names("volumesnapshots", NS) == [] and ebs.primary_snapshot_ids() == before
    assert ebs.copies() == []
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.json"))


def test_copy_options_are_checked(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    args = type("Args", (), {"namespace": NS, "pvc": PVC, "snapshot_class": CLASS, "kube_api": "http://127.0.0.1:1",
                             "ready_timeout": timedelta(seconds=5), "error_grace": timedelta(0), "poll_interval": 0.05,
                             "copy_to_region": "us-east-1", "copy_kms_key": "arn:aws:kms:us-east-1:123456789012:key/k",
                             "online": False, "pg": None, "lock_for": None})()  # fmt: skip
    with pytest.raises(ConfigError, match="is the primary region"):
        volume_provider(args, dest=object())
    args.lock_for, args.copy_to_region, args.copy_kms_key = timedelta(days=3), None, None
    with pytest.raises(ConfigError, match="--lock-for"):
        volume_provider(args, dest=object())


def test_snapshots_and_copies_are_locked_and_a_locked_set_is_kept_not_failed(api, ebs, tmp_path, monkeypatch):
    from jobs.pgsnap import run_step, seal
    from tests.jobs.fakes.ebs_lock import EbsLocks

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    locks = EbsLocks()
    uninstall = locks.install()
    try:
        dest = open_destination(f"file://{tmp_path}/store")
        fields = {"namespace": NS, "pvc": PVC, "snapshot_class": CLASS, "kube_api": api.url, "online": False,
                  "pg": None, "ready_timeout": timedelta(seconds=10), "error_grace": timedelta(0),
                  "poll_interval": 0.05, "copy_to_region": DR, "copy_kms_key": ebs.key["Arn"],
                  "lock_for": timedelta(days=30)}  # fmt: skip
        args = type("Args", (), fields)()
        for set_id in ("locked-1", "locked-2"):
            run_step(dest, volume_provider(args, dest=dest), role="apps", set_id=set_id, migration_id=1)
            seal(dest, set_id=set_id, migration_id=1, roles=["apps"])
        locked = [params for op, params in locks.calls if op == "LockSnapshot"]
        assert len(locked) == 4 and {p["LockMode"] for p in locked} == {"governance"}
        assert {p["LockDuration"] for p in locked} == {"30"}
        manifest = json.loads(dest.read_bytes(f"{snapshot_set_prefix(1, 'locked-1')}/manifest.json"))
        (record,) = manifest["snapshots"]
        assert record["dr_copy"]["lock_until"] > manifest["created_at"]
        # ten days on, the first set is out of the 3-day window but its lock holds: kept and reported, no failure
        pruner = volume_provider(type("Args", (), {**fields, "copy_kms_key": None})())
        later = datetime.now(UTC) + timedelta(days=10)
        result = prune(dest, {VOLUME_SNAPSHOT: pruner}, now=later, keep_recent=timedelta(days=3))
        assert result.locked == [record["handle"]] and result.pruned == [] and not result.errors
        assert len(api.names("volumesnapshots", NS)) == 2 and len(ebs.copies()) == 2
        # the locks expired: pruned with its copy
        for snapshot_id in locks.locks:
            locks.locks[snapshot_id] = datetime.now(UTC) - timedelta(seconds=1)
        result = prune(dest, {VOLUME_SNAPSHOT: pruner}, now=later + timedelta(days=30), keep_recent=timedelta(days=3))
        assert result.pruned == [record["handle"]] and not result.errors
        assert len(api.names("volumesnapshots", NS)) == 1 and len(ebs.copies()) == 1
    finally:
        uninstall()
