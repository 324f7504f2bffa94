"""The `rds-snapshot` provider (jobs/pgsnap_rds.py) on a moto server: DB snapshots, their copies to the DR region
under a DR-region KMS key, listing, deletion and restore into a new instance.

What moto does not do, and how it is covered: moto makes every snapshot, copy and restored instance
`available` at once and never fails one, and it does not throttle. The faults are bent into the answers of the
real (moto) client by `Bent`, a thin wrapper the provider gets through its `client_factory`: a script of
statuses (creating ... failed, or never available), Throttling errors, a refused DeleteDBSnapshot (the creating
identity) and refused CopyDBSnapshot. Everything else is moto's own behaviour (tags, ARNs, KMS key of the copy,
DBInstanceAlreadyExists, DBSnapshotNotFound). Waits run on a fake monotonic clock advanced by the code's sleeps.
"""

from __future__ import annotations

import re
import secrets

import boto3
import pytest
from botocore.exceptions import ClientError

from jobs.pgsnap_cloudsql import Poll
from jobs.pgsnap_rds import (
    MANAGED_BY_TAG,
    ROLE_TAG,
    SOURCE_SNAPSHOT_TAG,
    RdsSnapshots,
    parse_snapshot_arn,
    provider_from_args,
    restore_rds_snapshot,
    snapshot_identifier,
)
from jobs.snapshot_providers import SnapshotError
from rules.snapshot_sets import PROVIDER, RDS_SNAPSHOT, RoleSnapshot

PRIMARY, DR = "us-east-1", "us-west-2"
NODE = "sv-node-1"


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def refused(code: str, operation: str, message: str = "refused") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class Bent:
    """A moto RDS client with scripted faults (see the module docstring)."""

    def __init__(self, client):
        self.client = client
        self.statuses: list[str] = []  # replaces the Status of the next DescribeDBSnapshots(identifier) answers
        self.instance_statuses: list[str] = []
        self.forever: str | None = None  # a status every answer carries once the script is used up
        self.throttle = 0
        self.deny_delete = False
        self.copy_error: ClientError | None = None
        self.create_errors: list[ClientError] = []
        self.garbage = False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def describe_db_snapshots(self, **kw):
        if self.throttle > 0:
            self.throttle -= 1
            raise refused("Throttling", "DescribeDBSnapshots", "Rate exceeded")
        if self.garbage:
            return {"ResponseMetadata": {}, "DBSnapshot": "?"}
        answer = self.client.describe_db_snapshots(**kw)
        if "DBSnapshotIdentifier" in kw and answer["DBSnapshots"]:
            status = self.statuses.pop(0) if self.statuses else self.forever
            if status:
                answer["DBSnapshots"][0]["Status"] = status
        return answer

    def describe_db_instances(self, **kw):
        answer = self.client.describe_db_instances(**kw)
        if self.instance_statuses and answer["DBInstances"]:
            answer["DBInstances"][0]["DBInstanceStatus"] = self.instance_statuses.pop(0)
        return answer

    def delete_db_snapshot(self, **kw):
        if self.deny_delete:
            raise refused("AccessDenied", "DeleteDBSnapshot", "not authorized to perform: rds:DeleteDBSnapshot")
        return self.client.delete_db_snapshot(**kw)

    def create_db_snapshot(self, **kw):
        if self.create_errors:
            raise self.create_errors.pop(0)
        return self.client.create_db_snapshot(**kw)

    def copy_db_snapshot(self, **kw):
        if self.copy_error:
            raise self.copy_error
        return self.client.copy_db_snapshot(**kw)


@pytest.fixture
def clock():
    return FakeTime()


@pytest.fixture
def poll(clock):
    return Poll(interval=5, max_interval=20, timeout=600, transient_retries=3, sleep=clock.sleep,
                monotonic=clock.monotonic)  # fmt: skip


@pytest.fixture
def bent(aws_env):
    clients = {region: Bent(boto3.client("rds", region_name=region)) for region in (PRIMARY, DR)}
    return clients


@pytest.fixture
def dr_key(aws_env):
    return boto3.client("kms", region_name=DR).create_key(Description="rds dr")["KeyMetadata"]["Arn"]


def make_instance(region=PRIMARY, tags=None) -> str:
    name = f"apps-pg-{secrets.token_hex(4)}"
    boto3.client("rds", region_name=region).create_db_instance(
        DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro", Engine="postgres", MasterUsername="cnadmin",
        MasterUserPassword="not-a-real-secret-1", AllocatedStorage=20,
        Tags=[{"Key": k, "Value": v} for k, v in (tags if tags is not None else {"svbackups-node": NODE}).items()],
    )  # fmt: skip
    return name


def provider(bent, poll, instance, *, dr_key=None, **kw) -> RdsSnapshots:
    return RdsSnapshots(PRIMARY, instance, DR if dr_key else None, dr_key, client_factory=bent.__getitem__, poll=poll,
                        **kw)  # fmt: skip


def take(p: RdsSnapshots, role="apps", set_id="sv-pg-snap-29012345-abcde", migration_id=3) -> RoleSnapshot:
    return p.take(role=role, set_id=set_id, migration_id=migration_id)


def snapshot(region: str, arn_or_id: str) -> dict | None:
    ident = parse_snapshot_arn(arn_or_id)[1] if arn_or_id.startswith("arn:") else arn_or_id
    try:
        [found] = boto3.client("rds", region_name=region).describe_db_snapshots(DBSnapshotIdentifier=ident)[
            "DBSnapshots"
        ]
    except ClientError as error:
        assert error.response["Error"]["Code"] == "DBSnapshotNotFound"
        return None
    return found


def tags_of(found: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in found["TagList"]}


def test_a_snapshot_is_taken_tagged_waited_for_and_recorded(bent, poll):
    instance = make_instance()
    bent[PRIMARY].statuses = ["creating", "creating", "available"]
    taken = take(provider(bent, poll, instance))

    found = snapshot(PRIMARY, taken.handle)
    assert found["Status"] == "available" and found["DBInstanceIdentifier"] == instance
    assert (taken.method, taken.consistency, taken.dr_copy) == (RDS_SNAPSHOT, PROVIDER, None)
    assert taken.cut_at == found["SnapshotCreateTime"]
    assert "SnapshotCreateTime" in taken.provider_times
    tags = tags_of(found)
    assert tags["svbackups-node"] == NODE  # read from the instance's own tag
    assert tags[ROLE_TAG] == "apps" and tags[MANAGED_BY_TAG] == "sv-backups"
    assert tags["sv-backups.canton.network/set-id"] == "sv-pg-snap-29012345-abcde"
    assert tags["sv-backups.canton.network/migration-id"] == "3"
    assert RoleSnapshot.from_record(taken.to_record()) == taken


def test_a_snapshot_is_copied_to_the_dr_region_under_the_dr_key_and_delete_removes_both(bent, poll, dr_key):
    instance = make_instance()
    p = provider(bent, poll, instance, dr_key=dr_key)
    bent[DR].statuses = ["copying", "creating", "available"]
    taken = take(p)

    copy = snapshot(DR, taken.dr_copy["handle"])
    assert taken.dr_copy["region"] == DR and parse_snapshot_arn(taken.dr_copy["handle"])[0] == DR
    assert copy["KmsKeyId"] == dr_key
    assert tags_of(copy)[SOURCE_SNAPSHOT_TAG] == taken.handle and tags_of(copy)["svbackups-node"] == NODE
    assert "SnapshotCreateTime" in taken.dr_copy["provider_times"]
    # list_taken shows sources only (the copy goes with its source).
    assert [(t.handle, t.role, t.ready) for t in p.list_taken()] == [(taken.handle, "apps", True)]

    p.delete(taken.handle)
    assert snapshot(PRIMARY, taken.handle) is None and snapshot(DR, taken.dr_copy["handle"]) is None
    p.delete(taken.handle)  # gone counts as deleted


def test_a_snapshot_that_fails_fails_the_step_and_is_removed(bent, poll):
    instance = make_instance()
    p = provider(bent, poll, instance)
    bent[PRIMARY].statuses = ["creating", "failed"]
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert raised.value.stage == "wait" and "status failed" in str(raised.value) and "removed" in str(raised.value)
    assert p.list_taken() == []


def test_a_failed_snapshot_the_creator_cannot_delete_stays_for_the_pruner(bent, poll):
    instance = make_instance()
    p = provider(bent, poll, instance)
    bent[PRIMARY].statuses = ["failed"]
    bent[PRIMARY].deny_delete = True
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert "left for the pruner (AccessDenied" in str(raised.value)
    assert [t.role for t in p.list_taken()] == ["apps"]


def test_a_snapshot_that_never_completes_fails_at_the_deadline(bent, poll, clock):
    instance = make_instance()
    bent[PRIMARY].forever = "creating"
    with pytest.raises(SnapshotError) as raised:
        take(provider(bent, poll, instance))
    assert raised.value.stage == "wait"
    assert "not available after 600s (last status creating" in str(raised.value)
    assert clock.now >= 600


def test_throttling_is_ridden_out_and_persistent_throttling_fails(bent, poll):
    instance = make_instance()
    bent[PRIMARY].throttle = 2
    take(provider(bent, poll, instance))

    bent[PRIMARY].throttle = 100
    with pytest.raises(SnapshotError, match="Throttling: Rate exceeded"):
        take(provider(bent, poll, instance), role="participant")


def busy_instance() -> ClientError:
    return refused("InvalidDBInstanceState", "CreateDBSnapshot", "Instance is not in available state (backing-up)")


def test_an_instance_busy_with_another_backup_is_retried_and_one_busy_too_long_fails(bent, poll):
    instance = make_instance()
    p = provider(bent, poll, instance)
    bent[PRIMARY].create_errors = [busy_instance(), busy_instance()]
    take(p)
    assert [t.role for t in p.list_taken()] == ["apps"]

    bent[PRIMARY].create_errors = [busy_instance() for _ in range(poll.busy_retries + 1)]
    with pytest.raises(SnapshotError, match="InvalidDBInstanceState") as raised:
        take(p, role="participant")
    assert raised.value.stage == "request" and "left for the pruner" not in str(raised.value)
    assert [t.role for t in p.list_taken()] == ["apps"]


def test_a_lost_answer_to_the_request_fails_it_and_removes_what_it_may_have_made(bent, poll):
    instance = make_instance()
    p = provider(bent, poll, instance)
    real = bent[PRIMARY].client.create_db_snapshot

    def made_then_500(**kw):
        real(**kw)
        raise ClientError({"Error": {"Code": "InternalFailure", "Message": "internal"},
                           "ResponseMetadata": {"HTTPStatusCode": 500}}, "CreateDBSnapshot")  # fmt: skip

    bent[PRIMARY].client.create_db_snapshot = made_then_500
    with pytest.raises(SnapshotError, match=r"InternalFailure: internal; snapshot svb-.* removed") as raised:
        take(p)
    assert raised.value.stage == "request" and p.list_taken() == []


def test_a_garbage_answer_fails_the_step_with_a_clear_message(bent, poll):
    instance = make_instance()
    bent[PRIMARY].garbage = True
    with pytest.raises(SnapshotError, match=r"DescribeDBSnapshots svb-.*: unexpected answer"):
        take(provider(bent, poll, instance))


def test_a_failed_copy_fails_the_step_removes_the_copy_and_keeps_the_source(bent, poll, dr_key):
    instance = make_instance()
    p = provider(bent, poll, instance, dr_key=dr_key)
    bent[DR].statuses = ["copying", "failed"]
    with pytest.raises(SnapshotError) as raised:
        take(p)
    message = str(raised.value)
    assert raised.value.stage == "copy" and "status failed" in message and "stays" in message
    [source] = p.list_taken()
    assert source.ready and snapshot(PRIMARY, source.handle) is not None
    assert snapshot(DR, parse_snapshot_arn(source.handle)[1]) is None


def test_a_refused_copy_fails_the_step(bent, poll, dr_key):
    instance = make_instance()
    bent[DR].copy_error = refused("KMSKeyNotAccessibleFault", "CopyDBSnapshot", "key disabled")
    with pytest.raises(SnapshotError) as raised:
        take(provider(bent, poll, instance, dr_key=dr_key))
    assert raised.value.stage == "copy" and "KMSKeyNotAccessibleFault: key disabled" in str(raised.value)


def test_an_unknown_instance_or_one_without_a_node_is_refused(bent, poll):
    with pytest.raises(SnapshotError, match="DBInstanceNotFound") as raised:
        take(provider(bent, poll, "missing-pg"))
    assert raised.value.stage == "request"
    with pytest.raises(SnapshotError, match=r"CreateDBSnapshot .*DBInstanceNotFound"):
        take(provider(bent, poll, "missing-pg", node=NODE))
    untagged = make_instance(tags={})
    with pytest.raises(SnapshotError, match="has no svbackups-node tag and no node was given"):
        take(provider(bent, poll, untagged))


def test_list_taken_keeps_only_this_nodes_tagged_snapshots(bent, poll):
    instance = make_instance()
    p = provider(bent, poll, instance, node=NODE)
    take(p, role="apps")
    take(p, role="participant")
    rds = boto3.client("rds", region_name=PRIMARY)
    rds.create_db_snapshot(DBSnapshotIdentifier=f"by-hand-{secrets.token_hex(3)}", DBInstanceIdentifier=instance)
    taken = p.list_taken()
    assert sorted((t.role, t.set_id, t.migration_id) for t in taken) == [
        ("apps", "sv-pg-snap-29012345-abcde", 3),
        ("participant", "sv-pg-snap-29012345-abcde", 3),
    ]
    assert provider(bent, poll, instance, node="another-node").list_taken() == []


def test_delete_refuses_a_dr_snapshot_that_is_not_the_copy_and_reports_refusals(bent, poll, dr_key):
    instance = make_instance()
    p = provider(bent, poll, instance, dr_key=dr_key)
    taken = take(p)
    boto3.client("rds", region_name=DR).remove_tags_from_resource(
        ResourceName=taken.dr_copy["handle"], TagKeys=[SOURCE_SNAPSHOT_TAG]
    )
    with pytest.raises(SnapshotError, match="is not the copy of") as raised:
        p.delete(taken.handle)
    assert raised.value.stage == "delete" and snapshot(PRIMARY, taken.handle) is not None

    plain = provider(bent, poll, instance)
    bent[PRIMARY].deny_delete = True
    with pytest.raises(SnapshotError, match="DeleteDBSnapshot: AccessDenied"):
        plain.delete(taken.handle)
    with pytest.raises(SnapshotError, match="not an RDS snapshot ARN"):
        plain.delete("snap-0123456789abcdef0")


def test_bad_settings_are_refused_with_the_field_named(dr_key):
    with pytest.raises(ValueError, match=r"copy_kms_key .* in us-west-2"):
        RdsSnapshots(PRIMARY, "apps-pg", DR, dr_key.replace(DR, "eu-west-1"))
    with pytest.raises(ValueError, match="copy_kms_key without copy_to_region"):
        RdsSnapshots(PRIMARY, "apps-pg", None, dr_key)
    with pytest.raises(ValueError, match="copy_to_region 'us-east-1'"):
        RdsSnapshots(PRIMARY, "apps-pg", PRIMARY, dr_key)
    with pytest.raises(ValueError, match="instance 'apps--pg'"):
        RdsSnapshots(PRIMARY, "apps--pg", None, None)
    with pytest.raises(ValueError, match="region 'mars'"):
        RdsSnapshots("mars", "apps-pg", None, None)


def test_snapshot_identifiers_are_what_rds_accepts():
    ident = snapshot_identifier("SV_pg-snap--29012345", "canton-bft")
    assert re.fullmatch(r"[a-z](?!.*--)[a-z0-9-]*[a-z0-9]", ident) and ident.startswith(
        "svb-sv-pg-snap-29012345-canton-bft-"
    )
    assert len(snapshot_identifier("x" * 300, "apps")) <= 255


def test_restore_into_a_new_instance_from_the_source_and_from_the_dr_copy(bent, poll, dr_key):
    instance = make_instance()
    taken = take(provider(bent, poll, instance, dr_key=dr_key))
    target = f"scratch-{secrets.token_hex(4)}"
    bent[PRIMARY].instance_statuses = ["creating", "backing-up", "available"]
    result = restore_rds_snapshot(PRIMARY, taken.handle, target, instance_class="db.t3.small",
                                  client_factory=bent.__getitem__, poll=poll)  # fmt: skip
    assert result["status"] == "available" and result["instance"] == target
    [db] = boto3.client("rds", region_name=PRIMARY).describe_db_instances(DBInstanceIdentifier=target)["DBInstances"]
    assert db["DBInstanceClass"] == "db.t3.small"

    dr_target = f"dr-{secrets.token_hex(4)}"
    result = restore_rds_snapshot(DR, taken.dr_copy["handle"], dr_target, client_factory=bent.__getitem__, poll=poll)
    assert result["region"] == DR and ":us-west-2:" in result["arn"]


def test_restore_never_touches_an_existing_instance(bent, poll):
    instance = make_instance()
    taken = take(provider(bent, poll, instance))
    with pytest.raises(SnapshotError, match=f"refusing: instance {instance} exists") as raised:
        restore_rds_snapshot(PRIMARY, taken.handle, instance, client_factory=bent.__getitem__, poll=poll)
    assert raised.value.stage == "restore"
    with pytest.raises(ValueError, match="is in us-east-1, not us-west-2"):
        restore_rds_snapshot(DR, taken.handle, "new-pg", client_factory=bent.__getitem__, poll=poll)


def test_a_restore_that_fails_or_never_finishes_is_a_restore_error(bent, poll):
    instance = make_instance()
    taken = take(provider(bent, poll, instance))
    bent[PRIMARY].instance_statuses = ["creating", "incompatible-restore"]
    with pytest.raises(SnapshotError, match="status incompatible-restore"):
        restore_rds_snapshot(PRIMARY, taken.handle, f"r-{secrets.token_hex(4)}", client_factory=bent.__getitem__,
                             poll=poll)  # fmt: skip
    bent[PRIMARY].instance_statuses = ["creating"] * 1000
    with pytest.raises(SnapshotError, match="not available after 600s"):
        restore_rds_snapshot(PRIMARY, taken.handle, f"r-{secrets.token_hex(4)}", client_factory=bent.__getitem__,
                             poll=poll)  # fmt: skip
    with pytest.raises(SnapshotError, match="DBSnapshotNotFound"):
        restore_rds_snapshot(PRIMARY, "svb-no-such-snapshot", f"r-{secrets.token_hex(4)}",
                             client_factory=bent.__getitem__, poll=poll)  # fmt: skip


def test_the_pruners_provider_lists_this_nodes_snapshots_in_the_region_and_deletes_the_copies(bent, poll, dr_key):
    node = f"node-{secrets.token_hex(3)}"
    apps, participant = make_instance(tags={"svbackups-node": node}), make_instance(tags={"svbackups-node": node})
    taken = [take(provider(bent, poll, apps, dr_key=dr_key), role="apps"),
             take(provider(bent, poll, participant, dr_key=dr_key), role="participant")]  # fmt: skip
    take(provider(bent, poll, make_instance(tags={"svbackups-node": "other-node"})))

    pruner = RdsSnapshots(PRIMARY, None, DR, None, client_factory=bent.__getitem__, poll=poll, node=node)
    assert sorted(t.handle for t in pruner.list_taken()) == sorted(t.handle for t in taken)
    for item in taken:
        pruner.delete(item.handle)
        assert snapshot(PRIMARY, item.handle) is None and snapshot(DR, item.dr_copy["handle"]) is None
    with pytest.raises(SnapshotError, match="taking needs the instance"):
        take(pruner)
    with pytest.raises(SnapshotError, match="needs the node"):
        RdsSnapshots(PRIMARY, None, None, None, client_factory=bent.__getitem__, poll=poll).list_taken()


def test_provider_from_the_cli_flags(monkeypatch, dr_key):
    from argparse import Namespace
    from datetime import timedelta

    monkeypatch.setenv("SV_BACKUPS_NODE", "sv-node-7")
    p = provider_from_args(Namespace(region=PRIMARY, instance="apps-pg", copy_to_region=DR, copy_kms_key=dr_key,
                                     poll_interval=3.0, ready_timeout=timedelta(hours=2)))  # fmt: skip
    assert (p.region, p.instance, p.copy_to_region, p.copy_kms_key, p.node) == (
        PRIMARY,
        "apps-pg",
        DR,
        dr_key,
        "sv-node-7",
    )
    assert (p.poll.interval, p.poll.timeout) == (3.0, 7200.0)
    assert provider_from_args(Namespace(region=PRIMARY, copy_to_region=DR)).instance is None
    with pytest.raises(ValueError, match="needs --region"):
        provider_from_args(Namespace(region=None))


def test_a_step_through_the_job_cli_with_its_dr_copy(jobs_cli, tmp_path, dr_key):
    """`python -m jobs snapshot-step --method rds-snapshot ... --copy-to-region --copy-kms-key` as the CronJob runs
    it (jobs/pgsnap_cli.py builds the provider with provider_from_args), on the moto server."""
    pytest.importorskip("jobs.pgsnap_cli")
    import json

    instance = make_instance()
    done = jobs_cli("snapshot-step", "--role", "apps", "--dest", f"file://{tmp_path}", "--set-id", "sv-pg-snap-1",
                    "--migration-id", "0", "--method", "rds-snapshot", "--region", PRIMARY, "--instance", instance,
                    "--copy-to-region", DR, "--copy-kms-key", dr_key, "--poll-interval", "0.01")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    handle = json.loads(done.stdout.splitlines()[-1])["handle"]
    assert snapshot(PRIMARY, handle) is not None
    assert tags_of(snapshot(DR, parse_snapshot_arn(handle)[1]))[SOURCE_SNAPSHOT_TAG] == handle
