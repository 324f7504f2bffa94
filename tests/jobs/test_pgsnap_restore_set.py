"""`restore-snapshot-set`: a whole snapshot set restored role by role, in the set's order.

- In-cluster volumes: a set taken through the fake Kubernetes API (tests/jobs/fakes/kube.py) with online backups
  against real PostgreSQL; the fake's disk snapshot is a copy of the running data directory made while the
  backup is open (so only the label and WAL make it restorable), and a test kubelet runs the prepare pod's own
  command (`python -m jobs prepare-datadir ...`) on the copy behind the claim. The restored servers start, hold
  the data, and the apps data is not newer than the participant's.
- Cloud SQL on the Admin API fake, RDS on moto (from the DR copy into a new instance).
- Refusals before anything is created: the source instance without --in-place, an existing RDS id, a snapshot
  gone, a set whose ordering fails, an image not pinned by digest.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from jobs.destinations import open_destination
from jobs.pgsnap import run_step, seal, to_json
from jobs.pgsnap_cloudsql import CloudSqlBackups, Poll
from jobs.pgsnap_rds import RdsSnapshots
from jobs.pgsnap_restore import (
    RestoreAccess,
    SetRestoreError,
    SetRestoreOptions,
    restore_snapshot_set,
)
from rules.snapshot_sets import MANIFEST, snapshot_set_prefix
from tests.jobs.conftest import REPO, job_env
from tests.jobs.fakes.cloudsql_admin import CloudSqlAdmin
from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, Writer, make_sources, max_seq, static_digests
from tests.jobs.pgsnap_helpers import DataDirCopy, start_copy

NS = "sv"
IMAGE = "ghcr.io/example/sv-backups-jobs@sha256:" + "a" * 64
PVCS = {"apps": "data-apps-pg-0", "participant": "data-participant-pg-0"}


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------ volumes, real PostgreSQL


class ClusterWithKubelet(FakeKubeApi):
    """The fake API whose disk snapshots are copies of the live data directories, and whose kubelet runs a pod's
    container (the job image's `python -m jobs ARGS`) with the claim's mount pointing at the copy behind it."""

    def __init__(self, copiers: dict[str, DataDirCopy]):
        super().__init__()
        self.copiers = copiers
        self.disks: dict[str, Path] = {}  # disk snapshot handle -> the copy's root (the volume)
        self.ran: list[dict] = []
        self.take_disk_snapshot = self._disk_snapshot

    def _disk_snapshot(self, snapshot: dict) -> str:
        source = snapshot["spec"]["source"]
        if "volumeSnapshotContentName" in source:  # pre-provisioned (a DR copy imported): the handle it names
            content = self.objects[("volumesnapshotcontents", "", source["volumeSnapshotContentName"])]
            return content["spec"]["source"]["snapshotHandle"]
        cut = self.copiers[source["persistentVolumeClaimName"]].snapshot(role="x", set_id="x", migration_id=0)
        handle = f"projects/p/global/snapshots/{Path(cut.handle).name}"
        self.disks[handle] = Path(cut.handle)
        return handle

    def volume_of(self, namespace: str, claim: str) -> Path:
        pvc = self.objects[("persistentvolumeclaims", namespace, claim)]
        snapshot = self.objects[("volumesnapshots", namespace, pvc["spec"]["dataSource"]["name"])]
        content = self.objects[("volumesnapshotcontents", "", snapshot["status"]["boundVolumeSnapshotContentName"])]
        return self.disks[content["status"]["snapshotHandle"]]

    def _advance_pod(self, pod: dict) -> None:
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and not status.get("containerStatuses"):
            (volume,) = pod["spec"]["volumes"]
            root = self.volume_of(pod["metadata"]["namespace"], volume["persistentVolumeClaim"]["claimName"])
            (container,) = pod["spec"]["containers"]
            mount = container["volumeMounts"][0]["mountPath"]
            args = [a.replace(mount, str(root), 1) if a.startswith(mount) else a for a in container["args"]]
            done = subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=job_env(),
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            self.ran.append({"args": args, "code": done.returncode, "out": done.stdout + done.stderr})
            self.pod_mode = "succeeded" if done.returncode == 0 else "failed"
            self.pod_message = (done.stdout + done.stderr)[-400:]
        super()._advance_pod(pod)


@pytest.fixture(scope="module")
def sources(pg_factory):
    return make_sources(pg_factory, size_mb=4)


def take_volume_set(jobs_cli, api, url, sources, set_id, writer=None):
    for role, cluster in (("apps", sources.apps), ("participant", sources.participant)):
        result = jobs_cli(
            "snapshot-step", "--role", role, "--dest", url, "--set-id", set_id, "--migration-id", "4",
            "--method", "volume-snapshot", "--namespace", NS, "--pvc", PVCS[role], "--snapshot-class", "c",
            "--kube-api", api.url, "--poll-interval", "0.02", "--online", "--pg", cluster.dsn("postgres"),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    sealed = jobs_cli("snapshot-seal", "--dest", url, "--set-id", set_id, "--migration-id", "4",
                      "--roles", "apps,participant")  # fmt: skip
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("from_dr_copy", [False, True])
def test_a_volume_set_restores_in_order_and_the_servers_start_with_the_data(
    sources, pg_factory, pg_env, jobs_cli, tmp_path, from_dr_copy
):
    url = f"file://{tmp_path}/store"
    copiers = {PVCS["apps"]: DataDirCopy(sources.apps, pg_factory.base),
               PVCS["participant"]: DataDirCopy(sources.participant, pg_factory.base)}  # fmt: skip
    with ClusterWithKubelet(copiers) as api:
        api.ready_after = 1
        for pvc in PVCS.values():
            api.add_pvc(NS, pvc)
        start = 1 + max(max_seq(sources.apps, APPS_DB), max_seq(sources.participant, PARTICIPANT_DB))
        with Writer(sources, start=start) as writer:
            take_volume_set(jobs_cli, api, url, sources, "vol-set-1")
        set_url = f"{url}/{snapshot_set_prefix(4, 'vol-set-1')}"
        targets = ["--target", "apps=restored-apps", "--target", "participant=restored-participant"]
        dr_copy = ["--from-dr-copy", "--namespace", "dr"] if from_dr_copy else []
        common = [set_url, *targets, "--image", IMAGE, "--datadir-subpath", "data", "--kube-api", api.url,
                  "--poll-interval", "0.01", "--ready-timeout", "3m", *dr_copy]  # fmt: skip

        plan = jobs_cli("restore-snapshot-set", *common)
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.index("# 1. apps") < plan.stdout.index("# 2. participant")
        assert "plan only: nothing was done" in plan.stdout
        assert not api.names("persistentvolumeclaims", "dr" if from_dr_copy else NS) or not from_dr_copy
        assert "restored-apps" not in api.names("persistentvolumeclaims", NS)

        done = jobs_cli("restore-snapshot-set", *common, "--execute")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK restored 2 roles of vol-set-1; RTO" in done.stdout
        ns = "dr" if from_dr_copy else NS
        pvcs = [body for plural, body in api.created if plural == "persistentvolumeclaims"]
        assert [p["metadata"]["name"] for p in pvcs] == ["restored-apps", "restored-participant"]  # the set's order
        pods = [body for plural, body in api.created if plural == "pods"]
        assert len(pods) == 2 and all(run["code"] == 0 for run in api.ran), api.ran
        spec = pods[0]["spec"]
        assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
        assert spec["containers"][0]["image"] == IMAGE
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]] == ["restored-apps"]
        assert not api.names("pods", ns)  # the prepare pods are removed once they succeeded
        if from_dr_copy:
            contents = [b for plural, b in api.created if plural == "volumesnapshotcontents"]
            assert [c["spec"]["deletionPolicy"] for c in contents] == ["Retain", "Retain"]
            assert all(c["spec"]["source"]["snapshotHandle"] in api.disks for c in contents)
        roots = {name: api.volume_of(ns, name) for name in ("restored-apps", "restored-participant")}

    restored = {}
    for name, root in roots.items():
        assert (root / "data" / "backup_label").exists()
        restored[name] = pg_factory.clusters.append(start_copy(root)) or pg_factory.clusters[-1]
    apps, participant = restored["restored-apps"], restored["restored-participant"]
    for cluster in (apps, participant):
        assert "consistent recovery state reached" in (cluster.root / "log").read_text()
        assert cluster.psql("SELECT pg_is_in_recovery()") == "f"
    assert 0 < max_seq(apps, APPS_DB) <= max_seq(participant, PARTICIPANT_DB) <= writer.seq
    assert static_digests(apps, APPS_DB, "app") == static_digests(sources.apps, APPS_DB, "app")


@pytest.mark.slow
def test_a_gone_snapshot_or_a_broken_order_is_refused_before_anything_is_created(
    sources, pg_factory, pg_env, jobs_cli, tmp_path
):
    url = f"file://{tmp_path}/store"
    copiers = {PVCS["apps"]: DataDirCopy(sources.apps, pg_factory.base),
               PVCS["participant"]: DataDirCopy(sources.participant, pg_factory.base)}  # fmt: skip
    with ClusterWithKubelet(copiers) as api:
        api.ready_after = 1
        for pvc in PVCS.values():
            api.add_pvc(NS, pvc)
        take_volume_set(jobs_cli, api, url, sources, "vol-set-2")
        set_url = f"{url}/{snapshot_set_prefix(4, 'vol-set-2')}"
        args = ["restore-snapshot-set", set_url, "--kube-api", api.url, "--poll-interval", "0.01", "--image", IMAGE]

        # the restore targets default to the PVCs the snapshots were taken of: they exist, and are not replaced
        exists = jobs_cli(*args, "--execute")
        assert exists.returncode == 1 and "apps: PVC sv/data-apps-pg-0 exists: not overwriting it" in exists.stderr

        unpinned = jobs_cli(*args[:-4], "--image", "ghcr.io/example/jobs:latest")
        assert unpinned.returncode == 1 and "pinned by digest" in unpinned.stderr

        manifest = json.loads(open_destination(url).read_bytes(f"{snapshot_set_prefix(4, 'vol-set-2')}/{MANIFEST}"))
        participant = next(r for r in manifest["snapshots"] if r["role"] == "participant")
        with api.lock:
            del api.objects[("volumesnapshots", NS, participant["handle"].split("/")[1])]
        gone = jobs_cli(*args, "--target", "apps=r-apps", "--target", "participant=r-par", "--execute")
        assert gone.returncode == 1
        assert f"participant: VolumeSnapshot {participant['handle']} is gone" in gone.stderr
        assert not [b for plural, b in api.created if plural in ("persistentvolumeclaims", "pods")]

        # a set whose ordering fails: apps completed after the participant was requested
        apps = next(r for r in manifest["snapshots"] if r["role"] == "apps")
        apps["completed_at"], apps["completed_mono"] = "2999-01-01T00:00:00Z", 10.0**12
        broken = "vol-set-3"
        manifest["set_id"] = broken
        open_destination(url).put_bytes(f"{snapshot_set_prefix(4, broken)}/{MANIFEST}", to_json(manifest))
        bad = jobs_cli("restore-snapshot-set", f"{url}/{snapshot_set_prefix(4, broken)}", "--image", IMAGE)
        assert bad.returncode == 1 and "cannot be restored" in bad.stderr and "apps" in bad.stderr
        assert not [b for plural, b in api.created if plural in ("persistentvolumeclaims", "pods")]


# ---------------------------------------------------------------------------------------------- Cloud SQL

PROJECT = "sv-node-1"
TOKEN = "ya29.secret-token-value-0123456789"


def test_a_cloudsql_set_restores_onto_the_targets_and_refuses_the_source(tmp_path):
    clock = FakeTime()
    poll = Poll(interval=1, max_interval=4, timeout=120, sleep=clock.sleep, monotonic=clock.monotonic)
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    with CloudSqlAdmin(token=TOKEN, polls_per_state=2) as api:
        for instance in ("apps-pg", "participant-pg", "dr-apps-pg", "dr-participant-pg"):
            api.add_instance(PROJECT, instance)
        for role in ("apps", "participant"):
            provider = CloudSqlBackups(PROJECT, f"{role}-pg", "us", api_url=api.url, token_source=lambda: TOKEN,
                                       poll=poll)  # fmt: skip
            run_step(dest, provider, role=role, set_id="sql-set-1", migration_id=2)
        seal(dest, set_id="sql-set-1", migration_id=2, roles=["apps", "participant"])
        set_url = f"{url}/{snapshot_set_prefix(2, 'sql-set-1')}"
        access = RestoreAccess(cloudsql_api_url=api.url, cloudsql_token_source=lambda: TOKEN, cloudsql_poll=poll,
                               sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip

        source = SetRestoreOptions(targets={"apps": "dr-apps-pg", "participant": "participant-pg"})
        with pytest.raises(
            SetRestoreError, match="participant: --target participant=participant-pg is the backup's own"
        ):
            restore_snapshot_set(set_url, source, access, execute=True)
        bad = SetRestoreOptions(targets={"apps": "dr-apps-pg", "participant": "Participant_PG"})
        with pytest.raises(SetRestoreError, match="participant=Participant_PG: expected a Cloud SQL instance name"):
            restore_snapshot_set(set_url, bad, access, execute=True)
        missing = SetRestoreOptions(targets={"apps": "dr-apps-pg"})
        with pytest.raises(SetRestoreError, match=r"--target participant=<the existing Cloud SQL instance>"):
            restore_snapshot_set(set_url, missing, access)
        assert not any(r.path.endswith("/restoreBackup") for r in api.requests)

        plan = restore_snapshot_set(set_url, SetRestoreOptions(targets={"apps": "dr-apps-pg",
                                    "participant": "dr-participant-pg"}), access)  # fmt: skip
        assert not plan.executed and "gcloud sql backups restore" in plan.plans[0].commands[0]
        assert not any(r.path.endswith("/restoreBackup") for r in api.requests)

        options = SetRestoreOptions(targets={"apps": "dr-apps-pg", "participant": "dr-participant-pg"})
        result = restore_snapshot_set(set_url, options, access, execute=True)
        restores = [r for r in api.requests if r.path.endswith("/restoreBackup")]
        assert [r.path.split("/")[-2] for r in restores] == ["dr-apps-pg", "dr-participant-pg"]  # the set's order
        runs = {run["description"].split()[3]: run["id"] for i in ("apps-pg", "participant-pg")
                for run in api.runs_of(PROJECT, i)}  # fmt: skip
        assert restores[1].json()["restoreBackupContext"]["backupRunId"] == str(runs["role=participant"])
        assert [d["role"] for d in result.done] == ["apps", "participant"] and result.rto_seconds is not None

        in_place = SetRestoreOptions(targets={"apps": "apps-pg", "participant": "participant-pg"}, in_place=True)
        assert len(restore_snapshot_set(set_url, in_place, access, execute=True).done) == 2

        # a backup run gone (deleted by the pruner) is found before anything is restored
        before = len([r for r in api.requests if r.path.endswith("/restoreBackup")])
        run_id = runs["role=participant"]
        provider = CloudSqlBackups(PROJECT, None, None, api_url=api.url, token_source=lambda: TOKEN, poll=poll)
        provider.delete(f"{PROJECT}/participant-pg/{run_id}")
        with pytest.raises(SetRestoreError, match=f"participant: backup run {PROJECT}/participant-pg/{run_id} is gone"):
            restore_snapshot_set(set_url, options, access, execute=True)
        assert len([r for r in api.requests if r.path.endswith("/restoreBackup")]) == before


# ---------------------------------------------------------------------------------------------------- RDS

PRIMARY, DR = "us-east-1", "us-west-2"


def test_an_rds_set_restores_from_the_dr_copy_into_new_instances_never_an_existing_one(aws_env, tmp_path):
    clock = FakeTime()
    poll = Poll(interval=5, max_interval=20, timeout=600, sleep=clock.sleep, monotonic=clock.monotonic)
    dr_key = boto3.client("kms", region_name=DR).create_key(Description="rds dr")["KeyMetadata"]["Arn"]
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    rds = boto3.client("rds", region_name=PRIMARY)
    instances = {}
    for role in ("apps", "participant"):
        instances[role] = f"{role}-pg-{secrets.token_hex(3)}"
        rds.create_db_instance(DBInstanceIdentifier=instances[role], DBInstanceClass="db.t3.micro", Engine="postgres",
                               MasterUsername="cnadmin", MasterUserPassword="not-a-real-secret-1", AllocatedStorage=20,
                               Tags=[{"Key": "svbackups-node", "Value": "sv-node-1"}])  # fmt: skip
        provider = RdsSnapshots(PRIMARY, instances[role], DR, dr_key, poll=poll)
        run_step(dest, provider, role=role, set_id="rds-set-1", migration_id=1)
    manifest = seal(dest, set_id="rds-set-1", migration_id=1, roles=["apps", "participant"])
    set_url = f"{url}/{snapshot_set_prefix(1, 'rds-set-1')}"
    access = RestoreAccess(rds_poll=poll, sleep=clock.sleep, monotonic=clock.monotonic)

    existing = SetRestoreOptions(targets={"apps": f"new-apps-{secrets.token_hex(3)}",
                                          "participant": instances["participant"]}, from_dr_copy=True)  # fmt: skip
    boto3.client("rds", region_name=DR).create_db_instance(
        DBInstanceIdentifier=instances["participant"], DBInstanceClass="db.t3.micro", Engine="postgres",
        MasterUsername="cnadmin", MasterUserPassword="not-a-real-secret-1", AllocatedStorage=20)  # fmt: skip
    with pytest.raises(SetRestoreError, match=r"participant: --target participant=.*that RDS instance exists"):
        restore_snapshot_set(set_url, existing, access, execute=True)
    dr = boto3.client("rds", region_name=DR)

    def ours() -> set[str]:  # the moto server is shared by the session's tests: count only this test's instances
        names = {i["DBInstanceIdentifier"] for i in dr.describe_db_instances()["DBInstances"]}
        return {n for n in names if n in instances.values() or n.startswith(("new-apps-", "dr-apps-", "dr-par-"))}

    assert ours() == {instances["participant"]}  # nothing restored, apps neither

    targets = {"apps": f"dr-apps-{secrets.token_hex(3)}", "participant": f"dr-par-{secrets.token_hex(3)}"}
    result = restore_snapshot_set(set_url, SetRestoreOptions(targets=targets, from_dr_copy=True,
                                  instance_class="db.t3.small"), access, execute=True)  # fmt: skip
    assert [d["role"] for d in result.done] == ["apps", "participant"]
    copies = {r["role"]: r["dr_copy"]["handle"] for r in manifest["snapshots"]}
    for role, target in targets.items():
        [db] = dr.describe_db_instances(DBInstanceIdentifier=target)["DBInstances"]
        assert db["DBInstanceStatus"] == "available" and db["DBInstanceClass"] == "db.t3.small"
        assert ":us-west-2:" in copies[role]
        assert f"--db-snapshot-identifier {copies[role]}" in result.plans[list(targets).index(role)].commands[0]

    # the DR copy gone: refused before anything is restored
    dr.delete_db_snapshot(DBSnapshotIdentifier=copies["participant"].rsplit(":", 1)[1])
    again = SetRestoreOptions(targets={r: f"{t}-2" for r, t in targets.items()}, from_dr_copy=True)
    with pytest.raises(SetRestoreError, match=r"participant: RDS snapshot .* is gone"):
        restore_snapshot_set(set_url, again, access, execute=True)
    assert ours() == {instances["participant"], *targets.values()}
