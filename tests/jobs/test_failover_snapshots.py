"""scripts/failover.py with snapshot sets in the DR copy: the choice between a dump set and a snapshot set (the
newest that verifies of either kind, `--kind`, `--before` at the boundary for both), the plan for a snapshot set
(restore-snapshot-set from the DR copies, in today's order with the scale steps), its refusals, and `--execute`
running restore-snapshot-set for real against the fake Kubernetes API."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs.destinations import open_destination
from jobs.failover import choose_set
from jobs.failover_plan import resolve_facts
from jobs.pgsnap import to_json
from rules.manifest import data_taken_by as dump_taken_by
from rules.manifest import format_time
from rules.snapshot_sets import (
    CLOUDSQL_BACKUP,
    CRASH_CONSISTENT,
    ONLINE,
    PROVIDER,
    VOLUME_SNAPSHOT,
    RoleSnapshot,
    build_manifest,
    build_step,
    data_taken_by,
    manifest_errors,
    snapshot_set_prefix,
)
from scripts import failover
from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.replica_helpers import write_set

NOW = datetime.now(UTC)
IMAGE = "europe-docker.pkg.dev/sv/jobs/sv-backups-jobs@sha256:" + "b" * 64
PVCS = {"apps": "data-apps-pg-0", "participant": "data-participant-pg-0"}


def volume_record(role: str, at: datetime, *, online: bool = False, wal: bytes = b"") -> RoleSnapshot:
    details = {
        "volume_snapshots": [{"volume": "data", "pvc": PVCS[role], "name": f"pg-{role}-x-data",
                              "snapshot_handle": f"projects/sv-prod/global/snapshots/pg-{role}-{at:%H%M%S}",
                              "restore_size": "50Gi"}],
    }  # fmt: skip
    if online:
        digest = hashlib.sha256(wal).hexdigest()
        details.update(backup_label="START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
                       wal={"objects": [{"key": f"wal/{role}/000000010000000000000002.zst", "size": len(wal),
                                         "sha256": digest, "segment": "000000010000000000000002",
                                         "segment_size": 16, "segment_sha256": "0" * 64}]})  # fmt: skip
    return RoleSnapshot(
        role=role, method=VOLUME_SNAPSHOT, handle=f"sv/pg-{role}-x-data", consistency=ONLINE if online else
        CRASH_CONSISTENT, requested_at=at, cut_at=at + timedelta(seconds=5), completed_at=at + timedelta(minutes=1),
        requested_mono=at.timestamp(), completed_mono=at.timestamp() + 60, boot_id="boot-1", details=details,
    )  # fmt: skip


def cloudsql_record(role: str, at: datetime) -> RoleSnapshot:
    return RoleSnapshot(
        role=role, method=CLOUDSQL_BACKUP, handle=f"sv-prod/{role}-pg/1700000000{len(role)}", consistency=PROVIDER,
        requested_at=at, cut_at=at + timedelta(seconds=5), completed_at=at + timedelta(minutes=1),
        requested_mono=at.timestamp(), completed_mono=at.timestamp() + 60, boot_id="boot-1",
        details={"location": "us"},
    )  # fmt: skip


def write_snapshot_set(dest, set_id: str, at: datetime, *, migration_id: int = 4, participant=None, online=False):
    wal = b"wal bytes of apps"
    snaps = [volume_record("apps", at, online=online, wal=wal),
             (participant or volume_record)("participant", at + timedelta(minutes=2))]  # fmt: skip
    steps = [build_step(s, set_id=set_id, migration_id=migration_id, code_version="t", host="h") for s in snaps]
    manifest = build_manifest(set_id=set_id, migration_id=migration_id, created_at=at + timedelta(minutes=4),
                              code_version="t", steps=steps)  # fmt: skip
    assert not manifest_errors(manifest, set_id)
    prefix = snapshot_set_prefix(migration_id, set_id)
    if online:
        dest.put_bytes(f"{prefix}/wal/apps/000000010000000000000002.zst", wal)
    dest.put_bytes(f"{prefix}/manifest.json", to_json(manifest))
    return manifest


@pytest.fixture
def dr(tmp_path):
    """A GCP DR copy: dump sets 8 h and 4 h old, a snapshot set 2 h old (migration id 4)."""
    url = f"file://{tmp_path}/dr"
    dest = open_destination(url)
    write_set(dest, "s-older", NOW - timedelta(hours=8), migration_id=4)
    write_set(dest, "s-newest", NOW - timedelta(hours=4), migration_id=4)
    write_snapshot_set(dest, "snap-2h", NOW - timedelta(hours=2))
    outputs = {
        "node": {"name": "sv-1", "namespace": "sv", "migrationId": 4},
        "backupUrl": url,
        "cloud": "gcp",
        "cometbft": {"snapshotProject": "sv-prod"},
        "identitiesSecretUrl": "gcpsm://projects/sv-prod/secrets/sv-1-identities",
        "stack": "org/sv-backups/prod-dr",
        "kubeContext": "gke_sv-dr_us-east4_sv",
        "restoreServiceAccount": "sv-1-restore",
        "jobImage": IMAGE,
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return url, dest, outputs, path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = failover.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def headers(out: str) -> list[str]:
    return [line.split(". ", 1)[1] for line in out.splitlines() if line.startswith("# ") and line[2:3].isdigit()]


def test_a_newer_snapshot_set_is_chosen_over_a_dump_set_and_restored_from_the_dr_copies(dr, capsys):
    url, _, _, outputs = dr
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs))
    assert code == 0, err
    steps = headers(out)
    assert steps[0].startswith("Check the set") and steps[1].startswith("Scale every SV component to 0")
    assert steps[2].startswith("Restore every database from snapshot set snap-2h (2 roles, from PD snapshots in")
    assert steps[3].startswith("Restore the CometBFT volume") and steps[5].startswith("Scale every SV component back")
    set_url = f"{url}/snapshot-sets/4/snap-2h"
    assert f"python -m jobs verify-set {set_url}" in out
    assert "newer than the newest dump set (s-newest" in out and "--kind dump picks the other kind" in out
    assert (
        f"python -m jobs restore-snapshot-set {set_url} --from-dr-copy --namespace sv --replace --image {IMAGE} "
        "--kube-api http://127.0.0.1:8001 --service-account sv-1-restore --execute"
    ) in out
    assert "kubectl --context gke_sv-dr_us-east4_sv proxy --port 8001 &" in out
    # the in-cluster servers of the volume roles stop before their claims are replaced, and start before the apps
    kubectl = "kubectl --context gke_sv-dr_us-east4_sv -n sv"
    down = out.index(f"{kubectl} scale statefulset --replicas=0 apps-pg participant-pg")
    up = out.index(f"{kubectl} scale statefulset --replicas=1 apps-pg participant-pg")
    assert down < out.index("restore-snapshot-set") < up < out.index(f"{kubectl} scale deployment --replicas=1")
    assert "python -m jobs restore-set " not in out


def test_kind_and_before_choose_between_the_kinds_at_the_boundary(dr, capsys):
    url, dest, outputs, outputs_file = dr
    facts = resolve_facts(outputs, {})
    assert choose_set(facts, None).set_id == "snap-2h"
    dump = choose_set(facts, None, kind="dump")
    assert (dump.set_id, dump.kind) == ("s-newest", "dump") and "--kind dump" in dump.why
    # an older snapshot set is still the one --kind snapshot takes
    write_snapshot_set(dest, "snap-6h", NOW - timedelta(hours=6))
    assert choose_set(facts, None, kind="snapshot").set_id == "snap-2h"

    snap = json.loads(dest.read_bytes(f"{snapshot_set_prefix(4, 'snap-2h')}/manifest.json"))
    cut = data_taken_by(snap)
    assert choose_set(facts, None, before=cut + timedelta(microseconds=1)).set_id == "snap-2h"
    assert choose_set(facts, None, before=cut).set_id == "s-newest"  # the snapshot's last cut is not before T
    newest_dump = dump_taken_by(json.loads(dest.read_bytes("recent/4/s-newest/manifest.json")))
    assert choose_set(facts, None, before=newest_dump).set_id == "snap-6h"  # of either kind, strictly before
    assert choose_set(facts, None, before=newest_dump, kind="dump").set_id == "s-older"

    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--kind", "dump")
    assert code == 0, err
    assert f"python -m jobs restore-set {url}/recent/4/s-newest" in out and "restore-snapshot-set" not in out
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--before", format_time(cut))
    assert code == 0 and f"{url}/recent/4/s-newest" in out and "snap-2h" not in out
    code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--kind", "tape")
    assert code == 2 and "invalid choice: 'tape'" in err


def test_a_snapshot_set_that_does_not_verify_is_skipped_for_the_dump_set(dr, capsys):
    url, dest, _, outputs_file = dr
    write_snapshot_set(dest, "snap-1h", NOW - timedelta(hours=1), online=True)
    # the WAL object damaged in the DR copy (same size, other bytes): the set must not be chosen
    wal = open_destination(url).root / snapshot_set_prefix(4, "snap-1h") / "wal/apps/000000010000000000000002.zst"
    wal.write_bytes(b"wal bytes of appX")
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file))
    assert code == 0, err
    assert "snap-1h does not verify: apps: WAL object" in err and "sha256 differs" in err
    assert "snapshot-sets/4/snap-2h" in out and "snap-1h" not in out


def test_managed_roles_need_their_targets_and_volume_roles_the_image(dr, capsys, tmp_path):
    _, dest, outputs, _ = dr
    write_snapshot_set(dest, "snap-sql", NOW - timedelta(hours=1), participant=cloudsql_record)
    code, _, err = run(capsys, "--dr-stack-outputs", str(dr[3]))
    assert code == 2 and "every managed role needs its target: --target participant=<the DR Cloud SQL instance>" in err
    code, out, err = run(capsys, "--dr-stack-outputs", str(dr[3]), "--target", "participant=participant-pg-dr")
    assert code == 0, err
    assert "--target participant=participant-pg-dr" in out and "multi-region location" in out
    no_image = tmp_path / "no-image.json"
    no_image.write_text(json.dumps({k: v for k, v in outputs.items() if k != "jobImage"}))
    code, _, err = run(capsys, "--dr-stack-outputs", str(no_image), "--target", "participant=participant-pg-dr")
    assert code == 2 and "the job image pinned by digest" in err and "apps" in err
    code, _, err = run(capsys, "--dr-stack-outputs", str(dr[3]), "--target", "participant=bad name")
    assert code == 2 and "expected ROLE=NAME" in err


def test_execute_runs_restore_snapshot_set_against_the_dr_cluster(dr, capsys):
    url, _, _, outputs_file = dr
    with FakeKubeApi() as api:
        api.ready_after = 1
        api.add_pvc("sv", PVCS["apps"])  # the chart's claim in the DR cluster: replaced
        code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--execute")
        assert code == 2 and "--kube-api http://127.0.0.1:8001" in err and not api.created
        code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--execute", "--kube-api", api.url)
        assert code == 0, err
        assert "running step 3: Restore every database from snapshot set snap-2h" in err
        contents = [body for plural, body in api.created if plural == "volumesnapshotcontents"]
        manifest = json.loads(open_destination(url).read_bytes(f"{snapshot_set_prefix(4, 'snap-2h')}/manifest.json"))
        recorded = [r["details"]["volume_snapshots"][0]["snapshot_handle"] for r in manifest["snapshots"]]
        assert [c["spec"]["source"]["snapshotHandle"] for c in contents] == recorded  # the PD snapshots, in order
        assert all(c["spec"]["deletionPolicy"] == "Retain" for c in contents)
        assert all(c["spec"]["driver"] == "pd.csi.storage.gke.io" for c in contents)
        claims = [body for plural, body in api.created if plural == "persistentvolumeclaims"]
        assert [c["metadata"]["name"] for c in claims] == [PVCS["apps"], PVCS["participant"]]
        pods = [body for plural, body in api.created if plural == "pods"]
        assert [p["spec"]["serviceAccountName"] for p in pods] == ["sv-1-restore"] * 2
        assert pods[0]["spec"]["containers"][0]["args"][:3] == ["prepare-datadir", "--dest", url]


def test_the_restore_manifests_are_valid_against_the_official_schemas(dr):
    """The plan's VolumeSnapshotContent, VolumeSnapshot, PVC and prepare pod, from a GCP PD snapshot and from an
    EBS copy in the DR region; a broken content fails the same schema (the check can fail)."""
    import jsonschema
    import kubernetes_validate

    from jobs.pgsnap_restore import SetRestoreOptions, restore_snapshot_set
    from tests.jobs.test_failover import CRD_SCHEMAS

    url, dest, _, _ = dr

    def ebs(role, at):
        record = volume_record(role, at)
        return dataclasses.replace(
            record, dr_copy={"region": "us-west-2", "snapshot_ids": {"data": "snap-0a1b2c3d4e5f60718"}}
        )

    write_snapshot_set(dest, "snap-ebs", NOW - timedelta(hours=3), participant=ebs)
    options = SetRestoreOptions(from_dr_copy=True, namespace="dr", image=IMAGE, service_account="sv-1-restore")
    result = restore_snapshot_set(f"{url}/{snapshot_set_prefix(4, 'snap-ebs')}", options)
    apps, participant = result.plans
    assert apps.content["spec"]["driver"] == "pd.csi.storage.gke.io"
    assert participant.content["spec"]["driver"] == "ebs.csi.aws.com"
    assert participant.content["spec"]["source"] == {"snapshotHandle": "snap-0a1b2c3d4e5f60718"}
    for plan in result.plans:
        assert [m["kind"] for m in plan.manifests] == ["VolumeSnapshotContent", "VolumeSnapshot",
                                                       "PersistentVolumeClaim", "Pod"]  # fmt: skip
        for manifest in (plan.content, plan.snapshot):
            jsonschema.validate(manifest, json.loads(CRD_SCHEMAS[manifest["kind"]].read_text()))
        for manifest in (plan.claim, plan.pod):
            kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
        assert plan.content["spec"]["volumeSnapshotRef"] == {
            "name": plan.snapshot["metadata"]["name"],
            "namespace": "dr",
        }
        assert plan.claim["spec"]["dataSource"]["name"] == plan.snapshot["metadata"]["name"]
        assert plan.claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    broken = {**apps.content, "spec": {**apps.content["spec"], "deletionPolicy": "Keep"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(CRD_SCHEMAS["VolumeSnapshotContent"].read_text()))
