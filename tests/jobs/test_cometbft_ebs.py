"""snapshot-cometbft on EBS: DR copies with `--copy-to-region --copy-kms-key`, against moto server EC2 in two
regions and the fake Kubernetes API. The fake's snapshot controller stands for the EBS CSI driver: each
VolumeSnapshot it binds is a real moto snapshot of a volume in the primary region, tagged with the node as the
VolumeSnapshotClass's `tagSpecification_1` makes the driver tag it, and deleted with its content."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import pytest
from botocore.awsrequest import AWSResponse

from jobs import ebs_copies
from jobs.cometbft import MIGRATION_ID_LABEL, SET_ID_LABEL, TAKEN_AT_LABEL, run
from jobs.ebs_copies import NODE_TAG, SnapshotCopier, Source
from rules.retention import Keepable, cometbft_historical_cadence, select_kept
from tests.jobs.aws_calls import AwsCallRecorder
from tests.jobs.conftest import AWS_TEST_REGION
from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.test_cometbft import (
    BLOCKS_PER_HOUR,
    KEEP_RECENT,
    NS,
    PVC,
    RETAIN_BLOCKS,
    options,
    outcome,
    read_events,
    seed,
)

pytestmark = pytest.mark.slow
PRIMARY, DR = AWS_TEST_REGION, "us-west-2"


class Ebs:
    """The two regions of one account in moto: the CSI driver's snapshots in PRIMARY, the DR key in DR."""

    def __init__(self):
        import boto3

        self.primary = boto3.client("ec2", region_name=PRIMARY)
        self.dr = boto3.client("ec2", region_name=DR)
        self.key = boto3.client("kms", region_name=DR).create_key(Description="cometbft DR copies")["KeyMetadata"]
        self.volume = self.primary.create_volume(AvailabilityZone=f"{PRIMARY}a", Size=2000, Encrypted=True)["VolumeId"]
        # moto keeps every test's snapshots in one server: each test is its own node.
        self.node = f"sv-{secrets.token_hex(4)}"
        self.node_tag: str | None = self.node
        self.copier = SnapshotCopier(PRIMARY, DR, self.key["Arn"])  # for copies made "by earlier runs"

    def take(self, _snapshot: dict) -> str:
        tags = [{"Key": NODE_TAG, "Value": self.node_tag}] if self.node_tag else []
        spec = [{"ResourceType": "snapshot", "Tags": tags}] if tags else []
        return self.primary.create_snapshot(VolumeId=self.volume, TagSpecifications=spec)["SnapshotId"]

    def delete(self, handle: str) -> None:
        self.primary.delete_snapshot(SnapshotId=handle)

    def copies(self, node: str | None = None) -> list[dict]:
        node = node or self.node
        found = self.dr.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": f"tag:{NODE_TAG}", "Values": [node]}])
        return found["Snapshots"]

    def copies_by_volume_snapshot(self) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {}
        for snapshot in self.copies():
            tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
            grouped.setdefault(tags[ebs_copies.VOLUME_SNAPSHOT_TAG], []).append(snapshot)
        return grouped

    def primary_snapshot_ids(self) -> set[str]:
        return {s["SnapshotId"] for s in self.primary.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


@pytest.fixture
def ebs(aws_env):
    return Ebs()


@pytest.fixture
def api(ebs):
    with FakeKubeApi() as fake:
        fake.driver = "ebs.csi.aws.com"
        fake.take_disk_snapshot = ebs.take
        fake.delete_disk_snapshot = ebs.delete
        fake.add_pvc(NS, PVC)
        yield fake


def copying(api, ebs, **overrides):
    return options(api, **{"copy_to_region": DR, "copy_kms_key": ebs.key["Arn"], **overrides})


def handle_of(api, name: str) -> str:
    snapshot = api.get("volumesnapshots", NS, name)
    return api.get("volumesnapshotcontents", "", snapshot["status"]["boundVolumeSnapshotContentName"])["status"][
        "snapshotHandle"
    ]


def tags_of(snapshot: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags") or []}


def copy_by_hand(ebs, api, name: str, node: str | None = None) -> str:
    """A copy as an earlier run made it."""
    snapshot = api.get("volumesnapshots", NS, name)
    labels = snapshot["metadata"]["labels"]
    source = Source(
        volume_snapshot=f"{NS}/{name}",
        snapshot_id=handle_of(api, name),
        set_id=labels[SET_ID_LABEL],
        migration_id=int(labels[MIGRATION_ID_LABEL]),
        taken_at=int(labels[TAKEN_AT_LABEL]),
    )
    return ebs.copier.copy(node or ebs.node, source)


def fail_copies(code: str, message: str):
    """Makes every CopySnapshot answer an EC2 error, as the service would (the SDK parses it as usual)."""
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>fault</RequestID></Response>"
    ).encode()

    def answer(request, **_):
        return AWSResponse(request.url, 400, {"Content-Type": "text/xml"}, _Raw(body))

    import boto3

    boto3.DEFAULT_SESSION.events.register("before-send.ec2.CopySnapshot", answer, unique_id="fail-copies")
    return lambda: boto3.DEFAULT_SESSION.events.unregister("before-send.ec2.CopySnapshot", unique_id="fail-copies")


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body

    def read(self, *_):
        body, self._body = self._body, b""
        return body


# --- copying -----------------------------------------------------------------------------------------------
def test_the_new_snapshot_is_copied_encrypted_and_tagged(api, ebs, capsys):
    with AwsCallRecorder() as recorder:
        assert run(copying(api, ebs)) == 0

    [name] = api.names("volumesnapshots", NS)
    labels = api.get("volumesnapshots", NS, name)["metadata"]["labels"]
    [copy] = ebs.copies()
    assert copy["Encrypted"] is True and copy["KmsKeyId"] == ebs.key["Arn"]
    assert tags_of(copy) == {
        NODE_TAG: ebs.node,
        ebs_copies.SET_ID_TAG: "sv-1-cometbft-backup-29000000-abcde",
        ebs_copies.MIGRATION_ID_TAG: "1",
        ebs_copies.TAKEN_AT_TAG: labels[TAKEN_AT_LABEL],
        ebs_copies.SOURCE_SNAPSHOT_TAG: handle_of(api, name),
        ebs_copies.SOURCE_REGION_TAG: PRIMARY,
        ebs_copies.VOLUME_SNAPSHOT_TAG: f"{NS}/{name}",
        "Name": f"{NS}/{name}",
        "app.kubernetes.io/managed-by": "sv-backups",
    }
    events = read_events(capsys)
    assert outcome(events) == ["backup.completed"]
    done = events[-1]
    assert (done["copy_region"], done["copy_snapshot"], done["copies_started"]) == (DR, copy["SnapshotId"], 1)
    assert done["source_snapshot"] == handle_of(api, name)

    calls = [(c.region, c.operation) for c in recorder.calls]
    assert calls == [(PRIMARY, "DescribeSnapshots"), (DR, "DescribeSnapshots"), (DR, "CopySnapshot")]
    [copy_call] = [c for c in recorder.calls if c.operation == "CopySnapshot"]
    assert copy_call.params["SourceRegion"] == PRIMARY and copy_call.params["Encrypted"] is True
    assert copy_call.params["SourceSnapshotId"] == handle_of(api, name)


def test_runs_are_idempotent_and_copy_what_earlier_runs_missed(api, ebs, capsys):
    seed(api, "kept-with-copy", age_hours=8)
    seed(api, "kept-without-copy", age_hours=4)
    existing = copy_by_hand(ebs, api, "kept-with-copy")

    assert run(copying(api, ebs)) == 0

    copies = ebs.copies_by_volume_snapshot()
    assert set(copies) == {f"{NS}/{n}" for n in api.names("volumesnapshots", NS)}
    assert all(len(c) == 1 for c in copies.values()), "one copy per snapshot"
    assert copies[f"{NS}/kept-with-copy"][0]["SnapshotId"] == existing
    assert read_events(capsys)[-1]["copies_started"] == 2

    # A later run, not a retry: snapshot names carry the second they were taken (a run within the same second
    # is the same run's retried POST and rightly takes no new snapshot).
    time.sleep(1.01 - time.time() % 1)
    with AwsCallRecorder() as recorder:
        assert run(copying(api, ebs)) == 0
    assert recorder.operations().count("CopySnapshot") == 1, "only the second run's own snapshot"
    assert all(len(c) == 1 for c in ebs.copies_by_volume_snapshot().values())


def test_a_spare_copy_from_a_retried_call_is_removed(api, ebs):
    seed(api, "copied-twice", age_hours=4)
    both = {copy_by_hand(ebs, api, "copied-twice"), copy_by_hand(ebs, api, "copied-twice")}
    assert run(copying(api, ebs)) == 0
    [kept] = ebs.copies_by_volume_snapshot()[f"{NS}/copied-twice"]  # the oldest (moto's times are in seconds)
    assert kept["SnapshotId"] in both


def test_a_failed_copy_fails_the_run_keeps_the_snapshot_prunes_nothing_and_is_retried(api, ebs, capsys):
    seed(api, "ancient-1", age_hours=24 * 60)
    seed(api, "ancient-2", age_hours=24 * 59)  # prunable on a good day
    stop = fail_copies("ResourceLimitExceeded", "You have reached the limit of concurrent snapshot copies")
    try:
        assert run(copying(api, ebs)) == 1
    finally:
        stop()

    names = api.names("volumesnapshots", NS)
    assert {"ancient-1", "ancient-2"} <= set(names) and len(names) == 3, "the new snapshot stays, nothing pruned"
    events = read_events(capsys)
    assert outcome(events) == ["backup.failed"]
    failed = events[-1]
    assert failed["stage"] == "copy" and "ResourceLimitExceeded" in failed["error"]
    assert "the next run retries" in failed["error"] and failed["copy_region"] == DR
    assert ebs.copies() == []

    assert run(copying(api, ebs)) == 0
    kept = set(api.names("volumesnapshots", NS))
    assert set(ebs.copies_by_volume_snapshot()) == {f"{NS}/{n}" for n in kept}, "the missed copy is made now"


def test_a_source_without_the_node_tag_is_refused_clearly(api, ebs, capsys):
    ebs.node_tag = None
    assert run(copying(api, ebs)) == 1
    failed = read_events(capsys)[-1]
    assert failed["stage"] == "copy" and f"no {NODE_TAG} tag" in failed["error"]
    assert "tagSpecification_1" in failed["error"]
    assert ebs.copies() == [] and len(api.names("volumesnapshots", NS)) == 1


def test_a_non_ebs_snapshot_handle_is_refused_clearly(api, ebs, capsys):
    api.take_disk_snapshot = None  # the fake's GCE-style handles
    assert run(copying(api, ebs)) == 1
    failed = read_events(capsys)[-1]
    assert failed["stage"] == "copy" and "not an EBS snapshot id" in failed["error"]


# --- pruning -----------------------------------------------------------------------------------------------
def test_pruning_removes_the_copies_of_pruned_snapshots_and_prunes_copies_by_tier(api, ebs, capsys):
    seeds: dict[str, tuple[int, int]] = {}
    for i in range(1, 30):  # every 20 h for 24 days, each copied when it was new
        name = f"m1-{i:02d}"
        seeds[name] = (seed(api, name, age_hours=20 * i + 0.5), 1)
        copy_by_hand(ebs, api, name)
    # A copy of a snapshot of an earlier PVC (migration 0): gone from the cluster, its copies pruned by tier.
    older_pvc: dict[str, int] = {}
    for i in range(4):
        name = f"m0-{i}"
        older_pvc[name] = seed(api, name, age_hours=24 * (40 + i), migration=0, pvc="global-domain-0-cometbft-data")
        copy_by_hand(ebs, api, name)
        api.objects.pop(("volumesnapshots", NS, name))
    other_node = copy_by_hand(ebs, api, "m1-29", node=ebs.node + "-other")
    copy_ids = {name: c[0]["SnapshotId"] for name, c in ebs.copies_by_volume_snapshot().items()}
    handles = {name: handle_of(api, name) for name in seeds}

    assert run(copying(api, ebs)) == 0

    done = read_events(capsys)[-1]
    new = done["snapshot"]
    now = datetime.fromtimestamp(int(api.get("volumesnapshots", NS, new)["metadata"]["labels"][TAKEN_AT_LABEL]), UTC)
    cadence = cometbft_historical_cadence(RETAIN_BLOCKS, BLOCKS_PER_HOUR)
    items = [Keepable(n, datetime.fromtimestamp(t, UTC), m) for n, (t, m) in seeds.items()]
    cluster_kept = select_kept([*items, Keepable(new, now, 1)], now, KEEP_RECENT, cadence)
    assert set(api.names("volumesnapshots", NS)) == cluster_kept
    cluster_pruned = set(seeds) - cluster_kept
    assert cluster_pruned and len(cluster_kept) > 5

    remaining = ebs.copies_by_volume_snapshot()
    remaining_names = {k.split("/", 1)[1] for k in remaining}
    assert cluster_kept <= remaining_names, "every kept snapshot keeps its copy"
    assert not cluster_pruned & remaining_names, "the copies of pruned snapshots are deleted with them"
    # The earlier PVC's copies: the same rule among the copies (the first and the newest of migration 0 stay).
    m0_copies = {copy_ids[f"{NS}/{n}"]: n for n in older_pvc}
    m0_kept = select_kept(
        [Keepable(c, datetime.fromtimestamp(older_pvc[n], UTC), 0) for c, n in m0_copies.items()],
        now,
        KEEP_RECENT,
        cadence,
    )
    expected_m0 = {m0_copies[c] for c in m0_kept}
    assert remaining_names & set(older_pvc) == expected_m0 and expected_m0 < set(older_pvc)
    assert other_node in {c["SnapshotId"] for c in ebs.copies(ebs.node + "-other")}, "another node's copy stays"
    pruned_copies = set(done["copies_pruned"])
    assert pruned_copies == {copy_ids[f"{NS}/{n}"] for n in cluster_pruned | (set(older_pvc) - expected_m0)}
    # The pruned snapshots themselves went with their contents (the CSI driver's delete, here moto's).
    assert not {handle for name, handle in handles.items() if name in cluster_pruned} & ebs.primary_snapshot_ids()


def test_the_job_only_deletes_copies_it_can_place(api, ebs):
    seed(api, "recent", age_hours=2)
    unknown = copy_by_hand(ebs, api, "recent")
    ebs.dr.delete_tags(Resources=[unknown], Tags=[{"Key": ebs_copies.TAKEN_AT_TAG}])
    assert run(copying(api, ebs)) == 0
    assert unknown in {c["SnapshotId"] for c in ebs.copies()}


# --- configuration -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        ({"copy_kms_key": None}, {}, "go together"),
        ({"copy_to_region": PRIMARY}, {}, "is the primary region"),
        ({"copy_kms_key": f"arn:aws:kms:{PRIMARY}:123456789012:key/abc"}, {}, "not in --copy-to-region"),
        ({"copy_kms_key": "alias/backups"}, {}, "not a KMS key or alias ARN"),
        ({"copy_to_region": "west"}, {}, "not an AWS region"),
        ({}, {"AWS_REGION": None, "AWS_DEFAULT_REGION": None}, "AWS_REGION"),
    ],
)
def test_bad_copy_configuration_is_one_clear_error(api, ebs, monkeypatch, capsys, overrides, env, message):
    for name, value in env.items():
        monkeypatch.delenv(name) if value is None else monkeypatch.setenv(name, value)
    assert run(copying(api, ebs, **overrides)) == 1
    failed = read_events(capsys)[-1]
    assert failed["stage"] == "config" and message in failed["error"]
    assert api.names("volumesnapshots", NS) == []


def test_options_without_copies_make_no_aws_call(api, ebs):
    with AwsCallRecorder() as recorder:
        assert run(options(api)) == 0
    assert recorder.calls == []


def test_the_copy_flags_parse():
    import argparse

    from jobs import cometbft

    top = argparse.ArgumentParser()
    cometbft.register(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(
        [
            "snapshot-cometbft", "--namespace", NS, "--pvc", PVC, "--class", "c", "--migration-id", "1",
            "--keep-recent", "3d", "--retain-blocks", "1", "--blocks-per-hour", "1",
            "--copy-to-region", DR, "--copy-kms-key", f"arn:aws:kms:{DR}:123456789012:key/k",
        ]
    )  # fmt: skip
    assert (args.copy_to_region, args.copy_kms_key) == (DR, f"arn:aws:kms:{DR}:123456789012:key/k")
