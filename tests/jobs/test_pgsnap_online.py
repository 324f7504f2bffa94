"""Snapshot sets against real PostgreSQL: an online backup around a "snapshot" (a copy of the running data
directory, taken while writes run: not atomic, so only the backup label and the WAL from start to stop make it
restorable), sealed in order, then prepared with `prepare-datadir` and started: the server reaches consistency,
the data is there, and the restored apps data is not newer than the participant's (Splice issue #932)."""

from __future__ import annotations

import json
import secrets

import pytest

from jobs.destinations import open_destination
from jobs.pgsnap import run_step, seal, verify_snapshot_set
from jobs.pgsnap_volume import VolumeSnapshotProvider
from jobs.snapshot_providers import SnapshotError
from rules.manifest import SetError
from rules.snapshot_sets import CRASH_CONSISTENT, ONLINE, manifest_errors, snapshot_set_prefix
from testkit.pgcluster import PASSWORD, wait_for
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, Writer, make_sources, max_seq, static_digests
from tests.jobs.pgsnap_helpers import DataDirCopy, start_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources(pg_factory):
    return make_sources(pg_factory, size_mb=4)


def _log(*args, **fields):
    return None


def provider(cluster, base, dest, *, dsn=None, wal_separate=False):
    snapshotter = DataDirCopy(cluster, base)
    return VolumeSnapshotProvider(
        snapshotter, _log, dest=dest, online_dsn=dsn or cluster.dsn("postgres"), wal_separate=wal_separate
    ), snapshotter


def test_online_set_restores_consistent_and_ordered(sources, pg_factory, pg_env, jobs_cli, tmp_path):
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    set_id = "snap-online-1"
    apps_provider, apps_copies = provider(sources.apps, pg_factory.base, dest)
    par_provider, par_copies = provider(sources.participant, pg_factory.base, dest)
    with Writer(sources) as writer:
        run_step(dest, apps_provider, role="apps", set_id=set_id, migration_id=3)
        written_between = writer.seq
        run_step(dest, par_provider, role="participant", set_id=set_id, migration_id=3)
    assert writer.seq > written_between  # writes ran across both snapshots
    manifest = seal(dest, set_id=set_id, migration_id=3, roles=["participant", "apps"])
    assert not manifest_errors(manifest, set_id)
    assert manifest["roles"] == ["apps", "participant"] and manifest["ordering"]["holds"] is True
    records = {r["role"]: r for r in manifest["snapshots"]}
    assert {r["consistency"] for r in records.values()} == {ONLINE}
    for record in records.values():
        details = record["details"]
        assert "START WAL LOCATION" in details["backup_label"]
        assert details["wal"]["objects"] and all(
            o["key"].startswith(f"wal/{record['role']}/") for o in details["wal"]["objects"]
        )
    # the slots are gone from the sources (a slot left behind would hold WAL forever)
    for cluster in (sources.apps, sources.participant):
        assert cluster.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    _, errors = verify_snapshot_set(dest, snapshot_set_prefix(3, set_id))
    assert errors == []

    restored = {}
    for role, copies in (("apps", apps_copies), ("participant", par_copies)):
        (root,) = copies.copies.values()
        result = jobs_cli(
            "prepare-datadir",
            "--dest",
            url,
            "--set",
            set_id,
            "--migration-id",
            "3",
            "--role",
            role,
            "--datadir",
            str(root / "data"),
        )
        assert result.returncode == 0, result.stderr + result.stdout
        assert (root / "data" / "backup_label").exists()
        assert not list((root / "data" / "pg_replslot").glob("sv_backups_*"))
        restored[role] = pg_factory.clusters.append(start_copy(root)) or pg_factory.clusters[-1]
    for cluster in restored.values():
        log = (cluster.root / "log").read_text()
        assert "consistent recovery state reached" in log, log[-3000:]
        assert cluster.psql("SELECT pg_is_in_recovery()") == "f"
    apps_seq = max_seq(restored["apps"], APPS_DB)
    par_seq = max_seq(restored["participant"], PARTICIPANT_DB)
    assert 0 < apps_seq <= par_seq  # apps not newer than the participant
    assert par_seq > apps_seq or writer.seq == apps_seq  # the participant was cut later, while writes ran
    assert static_digests(restored["apps"], APPS_DB, "app") == static_digests(sources.apps, APPS_DB, "app")


def test_without_privileges_a_single_volume_falls_back_to_crash_consistent(sources, pg_factory, pg_env, tmp_path):
    user = f"nopriv_{secrets.token_hex(3)}"
    sources.apps.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")
    dest = open_destination(f"file://{tmp_path}/store")
    prov, _ = provider(sources.apps, pg_factory.base, dest, dsn=sources.apps.dsn("postgres", user=user))
    step = run_step(dest, prov, role="apps", set_id="fallback", migration_id=0)
    snap = step["snapshot"]
    assert snap["consistency"] == CRASH_CONSISTENT
    assert "online backup not possible" in snap["details"]["consistency_reason"]
    assert "InsufficientPrivilege" in snap["details"]["consistency_reason"]


def test_wal_on_its_own_volume_without_online_backup_is_refused(sources, pg_factory, pg_env, tmp_path):
    user = f"nopriv_{secrets.token_hex(3)}"
    sources.apps.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")
    dest = open_destination(f"file://{tmp_path}/store")
    prov, copies = provider(
        sources.apps, pg_factory.base, dest, dsn=sources.apps.dsn("postgres", user=user), wal_separate=True
    )
    with pytest.raises(SnapshotError, match="not taken at one instant") as caught:
        run_step(dest, prov, role="apps", set_id="walvol", migration_id=0)
    assert "InsufficientPrivilege" in str(caught.value)
    assert not copies.copies  # nothing taken
    assert dest.size(f"{snapshot_set_prefix(0, 'walvol')}/steps/apps.json") is None
    with pytest.raises(SetError, match=r"steps/apps\.json is missing"):
        seal(dest, set_id="walvol", migration_id=0, roles=["apps"])


def test_prepare_datadir_refuses_a_running_server_a_non_datadir_and_bad_wal(
    sources, pg_factory, pg_env, jobs_cli, tmp_path
):
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    prov, copies = provider(sources.participant, pg_factory.base, dest)
    run_step(dest, prov, role="participant", set_id="prep", migration_id=0)
    seal(dest, set_id="prep", migration_id=0, roles=["participant"])
    args = ("prepare-datadir", "--dest", url, "--set", "prep", "--migration-id", "0", "--role", "participant")
    live = jobs_cli(*args, "--datadir", str(sources.participant.datadir))
    assert live.returncode == 1 and "in use by a running server" in live.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = jobs_cli(*args, "--datadir", str(empty))
    assert result.returncode == 1 and "does not look like a PostgreSQL data directory" in result.stderr
    # A WAL object changed in the store: refused before anything is written into the data directory.
    manifest = json.loads(dest.read_bytes(f"{snapshot_set_prefix(0, 'prep')}/manifest.json"))
    first = manifest["snapshots"][0]["details"]["wal"]["objects"][0]["key"]
    path = tmp_path / "store" / snapshot_set_prefix(0, "prep") / first
    path.chmod(0o644)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    (root,) = copies.copies.values()
    result = jobs_cli(*args, "--datadir", str(root / "data"))
    assert result.returncode == 1 and "sha256 differs" in result.stderr
    assert not (root / "data" / "backup_label").exists()


@pytest.mark.parametrize("wal_pvc", [False, True])
def test_snapshot_step_online_through_the_cli_and_the_kube_api(sources, pg_env, jobs_cli, tmp_path, wal_pvc):
    """The command the CronJob runs: an online backup around a VolumeSnapshot (fake API), the WAL in the store,
    the server left with no slot and no backup in progress. With pg_wal on its own PVC: both volumes
    snapshotted inside the one backup."""
    from tests.jobs.fakes.kube import FakeKubeApi

    url = f"file://{tmp_path}/store"
    with FakeKubeApi() as api:
        api.ready_after = 1
        api.add_pvc("sv", "data-apps-pg-0")
        api.add_pvc("sv", "wal-apps-pg-0")
        result = jobs_cli(
            "snapshot-step", "--role", "apps", "--dest", url, "--set-id", "cli-online", "--migration-id", "0",
            "--method", "volume-snapshot", "--namespace", "sv", "--pvc", "data-apps-pg-0",
            "--snapshot-class", "c", "--kube-api", api.url, "--poll-interval", "0.02",
            "--online", "--pg", sources.apps.dsn("postgres"), *(["--wal-pvc", "wal-apps-pg-0"] if wal_pvc else []),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        (done,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert done["consistency"] == ONLINE and done["kind"] == "postgres-snapshots"
        names = api.names("volumesnapshots", "sv")
        assert done["handle"].split("/")[1] in names and len(names) == (2 if wal_pvc else 1)
        if wal_pvc:  # the WAL volume's PVC restored beside the data one
            sealed = jobs_cli("snapshot-seal", "--dest", url, "--set-id", "cli-online", "--migration-id", "0",
                              "--roles", "apps")  # fmt: skip
            assert sealed.returncode == 0, sealed.stdout
            restored = jobs_cli("restore-snapshot-volume", "--dest", url, "--set", "cli-online", "--role", "apps",
                                "--namespace", "sv", "--pvc", "restored-wal", "--volume", "wal",
                                "--kube-api", api.url)  # fmt: skip
            assert restored.returncode == 0, restored.stderr
            source = api.get("persistentvolumeclaims", "sv", "restored-wal")["spec"]["dataSource"]["name"]
            assert source.startswith("pg-apps-cli-online-wal-") and source in names
    step = json.loads(open_destination(url).read_bytes(f"{snapshot_set_prefix(0, 'cli-online')}/steps/apps.json"))
    details = step["snapshot"]["details"]
    assert details["volume_snapshots"][0]["pvc"] == "data-apps-pg-0" and details["stop_lsn"]
    assert "PGPASSWORD" not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr
    assert sources.apps.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    assert sources.apps.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'") == "0"


def test_an_online_backup_failing_after_the_snapshot(sources, pg_factory, pg_env, tmp_path):
    """pg_receivewal cannot run (an image without it): on a single volume the snapshot is kept as
    crash-consistent, with the reason; with pg_wal on its own volume the step fails and its snapshots go. Either
    way the server is left with no slot and no backup in progress."""
    dest = open_destination(f"file://{tmp_path}/store")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    for wal_separate in (False, True):
        snapshotter = DataDirCopy(sources.apps, pg_factory.base)
        prov = VolumeSnapshotProvider(snapshotter, _log, dest=dest, online_dsn=sources.apps.dsn("postgres"),
                                      wal_separate=wal_separate, pg_bin=empty_bin)  # fmt: skip
        set_id = f"late-{wal_separate}"
        if wal_separate:
            with pytest.raises(SnapshotError, match="online backup failed after the snapshots"):
                run_step(dest, prov, role="apps", set_id=set_id, migration_id=0)
            assert not snapshotter.copies
        else:
            snap = run_step(dest, prov, role="apps", set_id=set_id, migration_id=0)["snapshot"]
            assert snap["consistency"] == CRASH_CONSISTENT
            assert "online backup failed after the snapshot" in snap["details"]["consistency_reason"]
            assert "backup_label" not in snap["details"]
        assert sources.apps.psql("SELECT count(*) FROM pg_replication_slots") == "0"
        # the backup's session is gone, and with it the backup (a non-exclusive backup ends with its session)
        wait_for(lambda: sources.apps.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sv-backups'") == "0")  # fmt: skip
