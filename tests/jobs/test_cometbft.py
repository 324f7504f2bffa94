"""snapshot-cometbft against the fake Kubernetes API (real HTTP): create, wait, clean up on failure, prune.

Which snapshots to keep is `rules.retention.select_kept` (its properties are tested with it); here we
test that the job feeds it the right snapshots and acts on its answer safely."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from jobs import cometbft
from jobs.cometbft import (
    MIGRATION_ID_LABEL,
    SET_ID_LABEL,
    TAKEN_AT_LABEL,
    Options,
    SnapshotJob,
    Terminated,
    run,
    snapshot_name,
)
from jobs.kube import KubeClient, KubeConfig
from rules.retention import Keepable, cometbft_historical_cadence, select_kept
from tests.jobs.fakes.kube import FakeKubeApi

NS = "sv"
PVC = "global-domain-1-cometbft-cometbft-data"
CLASS = "sv-1-cometbft-retain"
MANAGED = {"app.kubernetes.io/managed-by": "sv-backups"}
HOUR = 3600
RETAIN_BLOCKS, BLOCKS_PER_HOUR = 5_040_000, 7000
KEEP_RECENT = timedelta(days=3)


@pytest.fixture
def api():
    with FakeKubeApi() as fake:
        fake.add_pvc(NS, PVC)
        yield fake


def options(api: FakeKubeApi, **overrides) -> Options:
    values = dict(
        namespace=NS,
        pvc=PVC,
        snapshot_class=CLASS,
        migration_id=1,
        keep_recent=KEEP_RECENT,
        retain_blocks=RETAIN_BLOCKS,
        blocks_per_hour=BLOCKS_PER_HOUR,
        ready_timeout=timedelta(seconds=5),
        error_grace=timedelta(0),
        poll_interval=0.02,
        set_id="sv-1-cometbft-backup-29000000-abcde",
        kube_api=api.url,
        kube_retry_wait=0.01,
    )
    values.update(overrides)
    return Options(**values)


def seed(api, name, *, age_hours: float, migration: int = 1, pvc: str = PVC, ready: bool = True, labels=None):
    taken_at = int(time.time() - age_hours * HOUR)
    api.add_snapshot(
        NS,
        name,
        pvc=pvc,
        ready=ready,
        labels=labels
        if labels is not None
        else {**MANAGED, TAKEN_AT_LABEL: str(taken_at), MIGRATION_ID_LABEL: str(migration), SET_ID_LABEL: name},
    )
    return taken_at


def read_events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def outcome(events) -> list[str]:
    return [e["event"] for e in events if e["event"].startswith("backup.")]


def content_of(api, name):
    snapshot = api.get("volumesnapshots", NS, name)
    return api.get("volumesnapshotcontents", "", snapshot["status"]["boundVolumeSnapshotContentName"])


def new_snapshots(api, before: set[str]) -> list[str]:
    return [n for n in api.names("volumesnapshots", NS) if n not in before]


# --- create and wait ---------------------------------------------------------------------------------------
def test_creates_a_labelled_snapshot_and_waits_until_ready(api, capsys):
    assert run(options(api)) == 0

    [name] = api.names("volumesnapshots", NS)
    snapshot = api.get("volumesnapshots", NS, name)
    labels = snapshot["metadata"]["labels"]
    assert labels[SET_ID_LABEL] == "sv-1-cometbft-backup-29000000-abcde"
    assert labels[MIGRATION_ID_LABEL] == "1" and labels["app.kubernetes.io/managed-by"] == "sv-backups"
    assert abs(int(labels[TAKEN_AT_LABEL]) - time.time()) < 60 and name == snapshot_name(
        PVC, int(labels[TAKEN_AT_LABEL])
    )
    assert snapshot["spec"] == {"volumeSnapshotClassName": CLASS, "source": {"persistentVolumeClaimName": PVC}}
    assert snapshot["status"]["readyToUse"] is True

    events = read_events(capsys)
    assert outcome(events) == ["backup.completed"]
    done = events[-1]
    assert done["kind"] == "cometbft" and done["snapshot"] == name and done["pvc"] == PVC
    assert done["content"] == snapshot["status"]["boundVolumeSnapshotContentName"]
    assert done["restore_size"] == "2000Gi" and done["pruned"] == [] and done["kept"] == 1


def test_missing_pvc_fails_without_creating_anything(api, capsys):
    seed(api, "old", age_hours=24 * 40)
    assert run(options(api, pvc="global-domain-9-cometbft-cometbft-data")) == 1
    assert api.names("volumesnapshots", NS) == ["old"]
    failed = read_events(capsys)[-1]
    assert failed["event"] == "backup.failed" and failed["stage"] == "pvc" and "not found" in failed["error"]


def test_unbound_pvc_fails(api, capsys):
    api.add_pvc(NS, "pending-pvc", phase="Pending")
    assert run(options(api, pvc="pending-pvc")) == 1
    assert "is Pending, not Bound" in read_events(capsys)[-1]["error"]
    assert api.names("volumesnapshots", NS) == []


def test_snapshot_error_fails_removes_its_snapshot_and_prunes_nothing(api, capsys):
    seed(api, "ancient-1", age_hours=24 * 60)
    seed(api, "ancient-2", age_hours=24 * 59)  # prunable on a good day
    disks_before = set(api.disk_snapshots)
    api.mode = "error"

    assert run(options(api)) == 1

    assert api.names("volumesnapshots", NS) == ["ancient-1", "ancient-2"], "nothing pruned after a failure"
    assert api.disk_snapshots == disks_before, "the failed snapshot's disk snapshot is deleted too (not orphaned)"
    events = read_events(capsys)
    assert outcome(events) == ["backup.failed"]
    assert events[-1]["stage"] == "wait" and "quota exceeded" in events[-1]["error"]
    assert any(e["event"] == "cometbft.discarded" for e in events)


def test_transient_controller_errors_within_the_grace_are_waited_out(api, capsys):
    api.mode, api.ready_after = "flaky", 3
    assert run(options(api, error_grace=timedelta(seconds=30))) == 0
    assert outcome(read_events(capsys)) == ["backup.completed"]


def test_not_ready_in_time_fails_and_removes_its_snapshot(api, capsys):
    seed(api, "ancient-1", age_hours=24 * 60)
    seed(api, "ancient-2", age_hours=24 * 59)
    api.mode = "pending"
    assert run(options(api, ready_timeout=timedelta(seconds=0.3))) == 1
    assert api.names("volumesnapshots", NS) == ["ancient-1", "ancient-2"]
    failed = read_events(capsys)[-1]
    assert failed["stage"] == "wait" and "not ready after" in failed["error"]


def test_terminated_while_waiting_removes_its_snapshot(api):
    api.mode = "pending"
    events = []
    with KubeClient(KubeConfig(server=api.url), retry_wait=0.01) as client:

        def sigterm(_seconds):
            raise Terminated()

        job = SnapshotJob(client, options(api), lambda e, **f: events.append((e, f)), sleep=sigterm)
        assert job.run() == 1
    assert api.names("volumesnapshots", NS) == []
    assert events[-1][0] == "backup.failed" and "terminated" in events[-1][1]["error"]


def test_a_retried_create_that_already_went_through_is_accepted(api):
    now = 1_900_000_000
    name = snapshot_name(PVC, now)
    set_id = "sv-1-cometbft-backup-29000000-abcde"
    api.add_snapshot(NS, name, pvc=PVC, ready=False, labels={**MANAGED, SET_ID_LABEL: set_id})
    with KubeClient(KubeConfig(server=api.url)) as client:
        job = SnapshotJob(client, options(api), lambda *a, **k: None, clock=lambda: now)
        assert job.create(now) == name
        other = SnapshotJob(client, options(api, set_id="someone-else"), lambda *a, **k: None, clock=lambda: now)
        with pytest.raises(cometbft.SnapshotFailure, match="already exists"):
            other.create(now)


def test_transient_api_errors_are_retried(api, capsys):
    api.fail("POST", "/apis/snapshot.storage.k8s.io", 503)
    api.fail("GET", "/api/v1/namespaces/sv/persistentvolumeclaims", 500)
    assert run(options(api)) == 0
    assert len(api.names("volumesnapshots", NS)) == 1


# --- pruning ----------------------------------------------------------------------------------------------
def test_prunes_by_tier_through_the_contents_deletion_policy(api, capsys):
    ready_seeds: dict[str, tuple[int, int]] = {}
    # Every 12 h for 40 days in migration 1, and a few old ones from migration 0 (kept per migration id).
    for i in range(1, 80):
        name = f"m1-{i:02d}"
        ready_seeds[name] = (seed(api, name, age_hours=12 * i + 0.5), 1)
    for i in range(3):
        name = f"m0-{i}"
        ready_seeds[name] = (seed(api, name, age_hours=24 * (70 + i), migration=0), 0)
    seed(api, "other-pvc-old", age_hours=24 * 50, pvc="global-domain-0-cometbft-cometbft-data")
    seed(api, "not-ours", age_hours=24 * 50, labels={"team": "ops"})
    seed(api, "ours-without-date", age_hours=24 * 50, labels={**MANAGED, MIGRATION_ID_LABEL: "1"})
    untouchable = {"other-pvc-old", "not-ours", "ours-without-date"}
    contents = {name: content_of(api, name) for name in [*ready_seeds, *untouchable]}

    assert run(options(api)) == 0

    events = read_events(capsys)
    done = events[-1]
    new = done["snapshot"]
    now = datetime.fromtimestamp(int(api.get("volumesnapshots", NS, new)["metadata"]["labels"][TAKEN_AT_LABEL]), UTC)
    items = [Keepable(n, datetime.fromtimestamp(t, UTC), m) for n, (t, m) in ready_seeds.items()]
    items.append(Keepable(new, now, 1))
    cadence = cometbft_historical_cadence(RETAIN_BLOCKS, BLOCKS_PER_HOUR)
    expected_kept = select_kept(items, now, KEEP_RECENT, cadence)
    expected_pruned = {i.key for i in items} - expected_kept
    assert expected_pruned and len(expected_kept) > 10  # the scenario exercises both sides

    remaining = set(api.names("volumesnapshots", NS))
    assert remaining == expected_kept | untouchable
    assert set(done["pruned"]) == expected_pruned and done["kept"] == len(expected_kept)
    for name in expected_pruned:  # gone, with its content and the disk snapshot (no orphan billed forever)
        assert api.get("volumesnapshotcontents", "", contents[name]["metadata"]["name"]) is None
        assert contents[name]["status"]["snapshotHandle"] not in api.disk_snapshots
    for name in (expected_kept - {new}) | untouchable:
        assert (
            api.get("volumesnapshotcontents", "", contents[name]["metadata"]["name"])["spec"]["deletionPolicy"]
            == "Retain"
        )
    assert {"m0-0", "m0-2"} <= remaining  # the first and newest of an earlier migration id stay forever
    assert any(e["event"] == "cometbft.unrecognised" and e["snapshot"] == "ours-without-date" for e in events)

    # A second run right after keeps everything the first one kept (no flip-flopping).
    assert run(options(api)) == 0
    assert expected_kept <= set(api.names("volumesnapshots", NS))


def test_an_earlier_migration_ids_snapshots_of_its_own_pvc_are_pruned_too(api, capsys):
    """After a synchronizer upgrade the PVC is another one (its name carries the serial): the old id's 4-hourly
    snapshots are thinned by the new id's runs to what select_kept keeps for the old id."""
    old_pvc = "global-domain-0-cometbft-cometbft-data"
    old = {
        f"m0-{i:03d}": seed(api, f"m0-{i:03d}", age_hours=4 * i + 240, migration=0, pvc=old_pvc) for i in range(90)
    }
    newer_elsewhere = seed(api, "m2-elsewhere", age_hours=300, migration=2, pvc="global-domain-2-cometbft-data")
    assert run(options(api)) == 0
    new = read_events(capsys)[-1]["snapshot"]
    now = datetime.fromtimestamp(int(api.get("volumesnapshots", NS, new)["metadata"]["labels"][TAKEN_AT_LABEL]), UTC)
    items = [Keepable(n, datetime.fromtimestamp(t, UTC), 0) for n, t in old.items()]
    cadence = cometbft_historical_cadence(RETAIN_BLOCKS, BLOCKS_PER_HOUR)
    expected = select_kept(items, now, KEEP_RECENT, cadence)
    remaining = set(api.names("volumesnapshots", NS))
    assert {n for n in remaining if n.startswith("m0-")} == expected
    assert len(expected) < len(old) and {"m0-000", "m0-089"} <= expected  # newest and first of the old id stay
    assert "m2-elsewhere" in remaining and newer_elsewhere  # a higher id on another PVC is not this run's


def test_leftovers_of_failed_runs_are_removed_in_progress_ones_are_not(api, capsys):
    seed(api, "stuck-old", age_hours=2, ready=False)
    seed(api, "in-progress", age_hours=0, ready=False)
    assert run(options(api, ready_timeout=timedelta(minutes=30))) == 0
    remaining = api.names("volumesnapshots", NS)
    assert "stuck-old" not in remaining and "in-progress" in remaining
    assert "stuck-old" in read_events(capsys)[-1]["pruned"]


def test_pruning_failure_keeps_the_new_snapshot_and_never_orphans_a_disk_snapshot(api, capsys):
    seed(api, "ancient-1", age_hours=24 * 60)
    seed(api, "ancient-2", age_hours=24 * 59)
    seed(api, "ancient-3", age_hours=24 * 58)
    api.forbid("PATCH", "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents")

    assert run(options(api)) == 1

    remaining = api.names("volumesnapshots", NS)
    assert {"ancient-1", "ancient-2", "ancient-3"} <= set(remaining), "not deleted while its content stays Retain"
    assert len(remaining) == 4
    events = read_events(capsys)
    assert outcome(events) == ["backup.completed", "backup.failed"]
    assert events[-1]["stage"] == "prune" and "403" in events[-1]["error"]


# --- CLI -----------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser()
    cometbft.register(top.add_subparsers(dest="command", required=True))
    return top


def test_cli_runs_the_contract_command(api, capsys):
    args = parser().parse_args(
        [
            "snapshot-cometbft", "--namespace", NS, "--pvc", PVC, "--class", CLASS, "--migration-id", "1",
            "--keep-recent", "3d", "--retain-blocks", "5040000", "--blocks-per-hour", "7000",
            "--ready-timeout", "PT1M", "--poll-interval", "0.02", "--kube-api", api.url,
        ]
    )  # fmt: skip
    assert args.keep_recent == timedelta(days=3) and args.ready_timeout == timedelta(minutes=1)
    assert args.func(args) == 0
    assert outcome(read_events(capsys)) == ["backup.completed"]


def test_cli_set_id_defaults_to_the_pod_name(api, monkeypatch):
    monkeypatch.setenv("SET_ID", "sv-1-cometbft-backup-29000240-xyz12")
    args = parser().parse_args(
        [
            "snapshot-cometbft", "--namespace", NS, "--pvc", PVC, "--class", CLASS, "--migration-id", "1",
            "--keep-recent", "3d", "--retain-blocks", "5040000", "--blocks-per-hour", "7000",
            "--poll-interval", "0.02", "--kube-api", api.url,
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    [name] = api.names("volumesnapshots", NS)
    assert (
        api.get("volumesnapshots", NS, name)["metadata"]["labels"][SET_ID_LABEL]
        == "sv-1-cometbft-backup-29000240-xyz12"
    )


def test_cli_rejects_a_bad_duration(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(
            [
                "snapshot-cometbft", "--namespace", NS, "--pvc", PVC, "--class", CLASS, "--migration-id", "1",
                "--keep-recent", "three days", "--retain-blocks", "1", "--blocks-per-hour", "1",
            ]
        )  # fmt: skip
    assert "three days" in capsys.readouterr().err


def test_unreachable_api_fails_clearly(capsys):
    assert run(options(SimpleNamespace(url="http://127.0.0.1:9"))) == 1
    failed = read_events(capsys)[-1]
    assert failed["event"] == "backup.failed" and "ConnectError" in failed["error"]


def test_label_values_stay_valid():
    assert cometbft.label_value("a" * 80 + "-") == "a" * 63
    assert cometbft.label_value("pod/name with spaces") == "pod-name-with-spaces"
    assert len(snapshot_name("p" * 300, 1_900_000_000)) == 253
