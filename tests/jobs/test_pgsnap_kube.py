"""Snapshot sets of in-cluster instances against the fake Kubernetes API (real HTTP, the snapshot controller's
visible behaviour): a set taken in order, a snapshot that errors or never becomes ready, a step missing, a
failure half-way through a role's volumes, pruning by tiers, a forbidden delete, leftovers of failed runs, and a
PVC restored from a role's snapshot. The online backup itself is tested against real PostgreSQL
(test_pgsnap_online.py); here the snapshots are crash-consistent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs.destinations import open_destination
from jobs.kube import KubeClient, KubeConfig, volume_snapshots_path
from jobs.pgsnap import complete_snapshot_sets, prune, to_json
from jobs.pgsnap_volume import (
    BACKUP_LABEL,
    BACKUP_VALUE,
    MIGRATION_ID_LABEL,
    ROLE_LABEL,
    SET_ID_LABEL,
    TAKEN_AT_LABEL,
    KubeOptions,
    KubeVolumeSnapshotter,
    VolumeSnapshotProvider,
)
from jobs.snapshot_providers import SnapshotError
from rules.snapshot_sets import (
    CRASH_CONSISTENT,
    VOLUME_SNAPSHOT,
    RoleSnapshot,
    build_manifest,
    build_step,
    manifest_errors,
    snapshot_set_prefix,
)
from tests.jobs.fakes.kube import FakeKubeApi

NS = "sv"
CLASS = "sv-1-postgres-snapshot-class"
PVCS = {"apps": "data-apps-pg-0", "participant": "data-participant-pg-0", "sequencer": "data-sequencer-pg-0"}
MANAGED = {"app.kubernetes.io/managed-by": "sv-backups"}


@pytest.fixture
def api():
    with FakeKubeApi() as fake:
        fake.ready_after = 1
        for pvc in PVCS.values():
            fake.add_pvc(NS, pvc)
        yield fake


def events(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def step(jobs_cli, api, url, role, set_id="snap-set-1", *extra):
    return jobs_cli(
        "snapshot-step", "--role", role, "--dest", url, "--set-id", set_id, "--migration-id", "2",
        "--method", VOLUME_SNAPSHOT, "--namespace", NS, "--pvc", PVCS[role], "--snapshot-class", CLASS,
        "--kube-api", api.url, "--poll-interval", "0.02", *extra,
    )  # fmt: skip


def seal(jobs_cli, url, roles, set_id="snap-set-1"):
    return jobs_cli("snapshot-seal", "--dest", url, "--set-id", set_id, "--migration-id", "2", "--roles", roles)


def store_files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_set_is_taken_in_order_and_sealed(api, jobs_cli, tmp_path):
    url = f"file://{tmp_path}/store"
    for role in ("apps", "participant", "sequencer"):
        result = step(jobs_cli, api, url, role)
        assert result.returncode == 0, result.stderr + result.stdout
        (done,) = events(result)
        assert done["event"] == "backup.step_completed" and done["kind"] == "postgres-snapshots"
        assert done["consistency"] == CRASH_CONSISTENT and "no online backup" in done["consistency_reason"]
    result = seal(jobs_cli, url, "apps,participant,sequencer")
    assert result.returncode == 0, result.stderr + result.stdout
    (sealed,) = events(result)
    assert sealed["event"] == "backup.completed" and sealed["kind"] == "postgres-snapshots"
    dest = open_destination(url)
    manifest = json.loads(dest.read_bytes(f"{snapshot_set_prefix(2, 'snap-set-1')}/manifest.json"))
    assert not manifest_errors(manifest, "snap-set-1") and manifest["ordering"]["holds"] is True
    assert manifest["roles"] == ["apps", "participant", "sequencer"]
    records = {r["role"]: r for r in manifest["snapshots"]}
    # apps complete (monotonic, same kernel) before the participant was requested
    assert records["apps"]["completed_mono"] < records["participant"]["requested_mono"]
    for role, record in records.items():
        namespace, name = record["handle"].split("/")
        snapshot = api.get("volumesnapshots", namespace, name)
        labels = snapshot["metadata"]["labels"]
        assert labels[SET_ID_LABEL] == "snap-set-1" and labels[ROLE_LABEL] == role
        assert labels[MIGRATION_ID_LABEL] == "2" and labels[BACKUP_LABEL] == BACKUP_VALUE
        assert labels["app.kubernetes.io/managed-by"] == "sv-backups"
        assert snapshot["spec"] == {
            "volumeSnapshotClassName": CLASS,
            "source": {"persistentVolumeClaimName": PVCS[role]},
        }
        (volume,) = record["details"]["volume_snapshots"]
        assert volume["snapshot_handle"] in api.disk_snapshots and volume["restore_size"] == "2000Gi"
    # a retried step container after success takes nothing new
    before = len(api.created)
    assert step(jobs_cli, api, url, "apps").returncode == 0 and len(api.created) == before
    listed = jobs_cli("list-sets", url, "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["kind"], r["set_id"]) for r in rows] == [("snapshot", "snap-set-1")]
    verified = jobs_cli("verify-set", f"{url}/snapshot-sets/2/snap-set-1", "--deep", "--kube-api", api.url,
                        "--namespace", NS)  # fmt: skip
    assert verified.returncode == 0 and "ordering holds" in verified.stdout, verified.stderr
    # the history audit sees it (freshness), beside the dump sets it has none of here
    audit = jobs_cli("audit-history", url, "--json")
    report = json.loads(audit.stdout.splitlines()[0])
    assert report["kinds"] == {"dump": {"sets": 0, "newest_set_id": None},
                               "snapshot": {"sets": 1, "newest_set_id": "snap-set-1"}}  # fmt: skip
    # a snapshot gone from the cluster fails the deep check
    api.objects.pop(("volumesnapshots", NS, records["participant"]["handle"].split("/")[1]))
    gone = jobs_cli("verify-set", f"{url}/snapshot-sets/2/snap-set-1", "--deep", "--kube-api", api.url,
                    "--namespace", NS)  # fmt: skip
    assert gone.returncode == 1 and "no longer exists" in gone.stderr


@pytest.mark.parametrize("mode", ["error", "pending"])
def test_a_snapshot_that_fails_or_never_becomes_ready_leaves_no_set(api, jobs_cli, tmp_path, mode):
    url = f"file://{tmp_path}/store"
    assert step(jobs_cli, api, url, "apps").returncode == 0
    api.mode = mode
    result = step(jobs_cli, api, url, "participant", "snap-set-1", "--ready-timeout", "1s", "--error-grace", "0s")
    assert result.returncode == 1
    (failed,) = events(result)
    assert failed["event"] == "backup.failed" and failed["kind"] == "postgres-snapshots"
    assert failed["stage"] == "wait" and failed["role"] == "participant"
    assert ("quota exceeded" if mode == "error" else "not ready after") in failed["error"]
    # the failed snapshot was removed with its disk snapshot; apps' stays (the pruner judges it as a leftover)
    remaining = [n for n in api.names("volumesnapshots", NS)]
    assert len(remaining) == 1 and remaining[0].startswith("pg-apps-")
    assert len(api.disk_snapshots) == 1
    sealed = seal(jobs_cli, url, "apps,participant")
    assert sealed.returncode == 1
    (failed,) = events(sealed)
    assert failed["event"] == "backup.failed" and "steps/participant.json is missing" in failed["error"]
    assert not [f for f in store_files(tmp_path / "store") if f.endswith("manifest.json")]


def test_a_missing_or_invalid_step_record_is_refused(api, jobs_cli, tmp_path):
    url = f"file://{tmp_path}/store"
    assert step(jobs_cli, api, url, "apps").returncode == 0
    assert seal(jobs_cli, url, "apps,participant").returncode == 1
    # a step record that says it belongs to another set
    dest = open_destination(url)
    record = json.loads(dest.read_bytes(f"{snapshot_set_prefix(2, 'snap-set-1')}/steps/apps.json"))
    dest.put_bytes(f"{snapshot_set_prefix(2, 'snap-set-1')}/steps/participant.json",
                   to_json({**record, "role": "participant"}))  # fmt: skip
    result = seal(jobs_cli, url, "apps,participant")
    assert result.returncode == 1 and "records role 'apps'" in events(result)[0]["error"]
    assert dest.size(f"{snapshot_set_prefix(2, 'snap-set-1')}/manifest.json") is None


def test_a_failure_half_way_through_a_roles_volumes_removes_what_it_took(api, tmp_path):
    api.add_pvc(NS, "wal-apps-pg-0")
    client = KubeClient(KubeConfig(server=api.url), retry_wait=0.01)
    # Reading the WAL volume's snapshot fails through every retry (5 attempts): the step fails, and the data
    # snapshot, ready by then, is removed with it (the API answers again by the time of the cleanup).
    api.fail("GET", volume_snapshots_path(NS, "pg-apps-broken-wal"), *[500] * 5)
    options = KubeOptions(NS, PVCS["apps"], CLASS, wal_pvc="wal-apps-pg-0", ready_timeout=timedelta(seconds=5),
                          error_grace=timedelta(0), poll_interval=0.02)  # fmt: skip
    snapshotter = KubeVolumeSnapshotter(client, options, lambda *a, **k: None)
    with pytest.raises(SnapshotError) as caught:
        snapshotter.snapshot(role="apps", set_id="broken", migration_id=2)
    assert caught.value.stage == "wait"
    assert api.names("volumesnapshots", NS) == [] and api.disk_snapshots == set()
    assert [body["metadata"]["labels"]["sv-backups.canton.network/volume"] for _, body in api.created] == [
        "data",
        "wal",
    ]
    # and the provider refuses the WAL-volume layout without an online backup before taking anything
    provider = VolumeSnapshotProvider(snapshotter, lambda *a, **k: None, wal_separate=True)
    before = len(api.created)
    with pytest.raises(SnapshotError, match="not taken at one instant"):
        provider.take(role="apps", set_id="broken", migration_id=2)
    assert len(api.created) == before


# ------------------------------------------------------------------------------------------------ pruning

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def seed_set(api, dest, set_id: str, taken_at: datetime, migration_id: int = 2) -> dict:
    """A complete set as an earlier run left it: two ready snapshots and their records."""
    steps = []
    for offset, role in enumerate(("apps", "participant")):
        name = f"pg-{role}-{set_id}-data-abc123"
        api.add_snapshot(NS, name, pvc=PVCS[role], snapshot_class=CLASS, labels={
            **MANAGED, SET_ID_LABEL: set_id, ROLE_LABEL: role, MIGRATION_ID_LABEL: str(migration_id),
            TAKEN_AT_LABEL: str(int(taken_at.timestamp())), BACKUP_LABEL: BACKUP_VALUE})  # fmt: skip
        start = taken_at + timedelta(minutes=2 * offset)
        snap = RoleSnapshot(
            role=role, method=VOLUME_SNAPSHOT, handle=f"{NS}/{name}", consistency=CRASH_CONSISTENT,
            requested_at=start, cut_at=start, completed_at=start + timedelta(minutes=1), requested_mono=0.0,
            completed_mono=60.0, boot_id=f"boot-{set_id}-{role}", details={"namespace": NS},
        )  # fmt: skip
        steps.append(build_step(snap, set_id=set_id, migration_id=migration_id, code_version="t", host="h"))
    manifest = build_manifest(set_id=set_id, migration_id=migration_id, created_at=taken_at + timedelta(minutes=5),
                              code_version="t", steps=steps)  # fmt: skip
    assert not manifest_errors(manifest, set_id)
    dest.put_bytes(f"{snapshot_set_prefix(migration_id, set_id)}/manifest.json", to_json(manifest))
    return manifest


def provider_for(api) -> VolumeSnapshotProvider:
    client = KubeClient(KubeConfig(server=api.url), retry_wait=0.01)
    snapshotter = KubeVolumeSnapshotter(client, KubeOptions(NS, "", ""), lambda *a, **k: None)
    return VolumeSnapshotProvider(snapshotter, lambda *a, **k: None)


def test_pruning_keeps_whole_sets_by_tier_and_records_what_it_deleted(api, tmp_path):
    dest = open_destination(f"file://{tmp_path}/store")
    # every 4 hours for 12 days, migration id 2
    ids = []
    for index in range(72):
        set_id = f"s{index:03d}"
        seed_set(api, dest, set_id, NOW - timedelta(hours=4 * index + 1))
        ids.append(set_id)
    result = prune(dest, {VOLUME_SNAPSHOT: provider_for(api)}, now=NOW, keep_recent=timedelta(days=3),
                   historical_cadence=timedelta(days=4))  # fmt: skip
    assert not result.errors
    kept = {prefix.split("/")[-1] for prefix in result.kept}
    recent = {s for i, s in enumerate(ids) if 4 * i + 1 <= 72}
    assert recent <= kept and "s071" in kept  # the recent window, and the first set of the migration id
    older_kept = sorted(kept - recent)
    assert 1 <= len(older_kept) <= 4  # about one per 4 days over the 9 older days
    remaining = set(api.names("volumesnapshots", NS))
    for set_id in ids:
        names = {f"pg-{role}-{set_id}-data-abc123" for role in ("apps", "participant")}
        pruned = dest.size(f"{snapshot_set_prefix(2, set_id)}/pruned/apps.json") is not None
        if set_id in kept:
            assert names <= remaining and not pruned, set_id  # sets are kept whole
        else:
            assert not names & remaining and pruned, set_id  # and pruned whole, on record
    assert len(api.disk_snapshots) == 2 * len(kept)  # the Retain contents were switched to Delete first
    # the manifests outlive their snapshots; a second run prunes nothing more
    assert len(complete_snapshot_sets(dest)) == 72
    again = prune(dest, {VOLUME_SNAPSHOT: provider_for(api)}, now=NOW, keep_recent=timedelta(days=3),
                  historical_cadence=timedelta(days=4))  # fmt: skip
    assert again.pruned == [] and not again.errors


def test_without_a_historical_tier_only_the_recent_window_and_the_newest_set_stay(api, tmp_path):
    dest = open_destination(f"file://{tmp_path}/store")
    for index in range(6):
        seed_set(api, dest, f"d{index}", NOW - timedelta(days=index + 0.5))
    result = prune(dest, {VOLUME_SNAPSHOT: provider_for(api)}, now=NOW, keep_recent=timedelta(days=2))
    assert sorted(p.split("/")[-1] for p in result.kept) == ["d0", "d1"]
    assert len(result.pruned) == 8


def test_a_forbidden_delete_fails_the_run_unless_a_lock_explains_it(api, tmp_path, jobs_cli):
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    seed_set(api, dest, "old", datetime.now(UTC) - timedelta(days=10))
    seed_set(api, dest, "new", datetime.now(UTC) - timedelta(hours=1))
    api.forbid("DELETE", f"/apis/snapshot.storage.k8s.io/v1/namespaces/{NS}/volumesnapshots")
    args = ("prune-snapshots", "--dest", url, "--migration-id", "2", "--keep-recent", "3d", "--namespace", NS,
            "--kube-api", api.url)  # fmt: skip
    result = jobs_cli(*args)
    assert result.returncode == 1
    (failed,) = events(result)
    assert failed["event"] == "backup.failed" and failed["kind"] == "snapshot-prune"
    assert "forbidden" in failed["error"] and "old" in failed["error"]
    assert dest.size(f"{snapshot_set_prefix(2, 'old')}/pruned/apps.json") is None
    locked = jobs_cli(*args, "--lock-for", "30d")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    (done,) = events(locked)
    assert done["event"] == "backup.completed" and len(done["locked"]) == 2 and done["pruned"] == []
    assert len(api.names("volumesnapshots", NS)) == 4


def test_leftovers_of_failed_runs_are_removed_after_the_grace(api, tmp_path):
    dest = open_destination(f"file://{tmp_path}/store")
    seed_set(api, dest, "sealed", NOW - timedelta(hours=1))
    for name, age in (("pg-apps-failed-data-x", timedelta(days=1)), ("pg-apps-running-data-y", timedelta(minutes=10))):
        api.add_snapshot(NS, name, pvc=PVCS["apps"], ready=False, snapshot_class=CLASS, labels={
            **MANAGED, SET_ID_LABEL: name.split("-")[2], ROLE_LABEL: "apps", MIGRATION_ID_LABEL: "2",
            TAKEN_AT_LABEL: str(int((NOW - age).timestamp())), BACKUP_LABEL: BACKUP_VALUE})  # fmt: skip
    # a CometBFT snapshot in the same namespace is not ours to judge
    api.add_snapshot(NS, "cometbft-1", pvc="cometbft-data", labels={
        **MANAGED, SET_ID_LABEL: "c", MIGRATION_ID_LABEL: "2", TAKEN_AT_LABEL: "1"})  # fmt: skip
    result = prune(dest, {VOLUME_SNAPSHOT: provider_for(api)}, now=NOW, keep_recent=timedelta(days=3),
                   leftover_grace=timedelta(hours=2))  # fmt: skip
    assert result.leftovers == [f"{NS}/pg-apps-failed-data-x"] and not result.errors
    names = api.names("volumesnapshots", NS)
    assert "pg-apps-running-data-y" in names and "cometbft-1" in names
    assert "pg-apps-sealed-data-abc123" in names and "pg-participant-sealed-data-abc123" in names


# ------------------------------------------------------------------------------------------------ restore


def test_restore_snapshot_volume_creates_a_pvc_and_never_overwrites_one(api, tmp_path, jobs_cli):
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    manifest = seed_set(api, dest, "r1", datetime.now(UTC) - timedelta(hours=1))
    args = ("restore-snapshot-volume", "--dest", url, "--set", "r1", "--role", "participant", "--namespace", NS,
            "--pvc", "restored-participant", "--kube-api", api.url)  # fmt: skip
    result = jobs_cli(*args, "--storage-class", "premium-rwo")
    assert result.returncode == 0, result.stderr
    pvc = api.get("persistentvolumeclaims", NS, "restored-participant")
    handle = {r["role"]: r["handle"] for r in manifest["snapshots"]}["participant"]
    assert pvc["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                         "name": handle.split("/")[1]}  # fmt: skip
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2000Gi"
    assert pvc["spec"]["storageClassName"] == "premium-rwo"
    again = jobs_cli(*args)
    assert again.returncode == 1 and "exists: not overwriting it" in again.stderr
    replaced = jobs_cli(*args, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "storageClassName" not in api.get("persistentvolumeclaims", NS, "restored-participant")["spec"]
    wrong = jobs_cli(*args[:-2], "--namespace", "other", "--pvc", "x", "--kube-api", api.url)
    assert wrong.returncode == 1 and "only there" in wrong.stderr


def test_managed_methods_without_their_module_fail_clearly(jobs_cli, tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("jobs.pgsnap_rds") is not None:
        pytest.skip("the RDS provider is installed on this branch")
    result = jobs_cli(
        "snapshot-step", "--role", "apps", "--dest", f"file://{tmp_path}/s", "--set-id", "x", "--migration-id", "0",
        "--method", "rds-snapshot", "--region", "us-east-1", "--instance", "db",
    )  # fmt: skip
    assert result.returncode == 1
    assert "no jobs/pgsnap_rds.py" in events(result)[0]["error"]


def test_a_creator_that_cannot_delete_leaves_its_failed_snapshot_to_the_pruner(api, jobs_cli, tmp_path):
    """The snapshot job's ServiceAccount may not delete snapshots: a failed step's cleanup is refused, the
    failure reported is still the snapshot's own, and the pruner (its own identity) removes the leftover."""
    url = f"file://{tmp_path}/store"
    api.mode = "error"
    api.forbid("DELETE", "/apis/snapshot.storage.k8s.io/v1/namespaces/sv/volumesnapshots")
    api.forbid("PATCH", "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents")
    result = step(jobs_cli, api, url, "apps", "snap-set-1", "--error-grace", "0s")
    assert result.returncode == 1
    (failed,) = events(result)
    assert failed["stage"] == "wait" and "quota exceeded" in failed["error"]
    assert "snapshot.discard_failed" in result.stderr
    (left,) = api.names("volumesnapshots", NS)
    api.allow("DELETE", "/apis/snapshot.storage.k8s.io/v1/namespaces/sv/volumesnapshots")  # the pruner's identity
    api.allow("PATCH", "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents")
    later = datetime.now(UTC) + timedelta(hours=7)
    result = prune(
        open_destination(url), {VOLUME_SNAPSHOT: provider_for(api)}, now=later, keep_recent=timedelta(days=3)
    )
    assert result.leftovers == [f"{NS}/{left}"] and api.names("volumesnapshots", NS) == []
    assert api.disk_snapshots == set()
