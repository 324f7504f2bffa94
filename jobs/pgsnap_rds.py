"""RDS DB snapshots as a snapshot set's role snapshots (`--method rds-snapshot`), their DR copies, and restore.

- take: `CreateDBSnapshot` (a manual snapshot, tagged: node, set id, role, migration id, managed-by, when we
  asked), then our own poll of `DescribeDBSnapshots` until `available`, with a deadline, so that a snapshot
  that goes `failed`, never finishes or is throttled is reported as such (boto3's waiter would only say it
  timed out). `SnapshotCreateTime` is the cut. With a DR region: `CopyDBSnapshot` called in the DR region
  (SourceRegion + the source ARN; boto3 signs the pre-signed URL), encrypted under the DR region's KMS key,
  tags copied, and waited for the same way; the copy is the record's `dr_copy`.
- list: this instance's manual snapshots that carry our tags.
- delete (the pruning identity only): the DR copy (found by identifier in the DR region and checked to be
  the copy of this source), then the source.
- restore: `RestoreDBInstanceFromDBSnapshot` into a NEW instance, never onto an existing identifier, in the
  region the snapshot lives in (the primary, or the DR region for the copy), waited for until `available`.

Manual RDS snapshots have no lock: immutability is IAM's (the creator has no rds:DeleteDBSnapshot; the pruner
has it, limited to this node's tag). So when take() fails, the snapshot it made is removed only where the
identity may; otherwise the error says it stays, and list_taken shows it (not ready, or ready but no step
records it) for the pruner. A failed copy fails the step; the source stays for the same reason.

Errors name the call, the snapshot and AWS's error code and message; boto3 never puts credentials in them.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobs.ebs_copies import KMS_KEY_ARN, MIGRATION_ID_TAG, NODE_TAG, REGION, SET_ID_TAG
from jobs.pgdump import boot_id, now
from jobs.pgsnap_cloudsql import Poll, poll_from_args
from jobs.snapshot_providers import SnapshotError, Taken
from rules.manifest import Clock, format_time, parse_time, utc_now
from rules.naming import LABEL_PREFIX
from rules.snapshot_sets import PROVIDER, RDS_SNAPSHOT, RoleSnapshot

ROLE_TAG = f"{LABEL_PREFIX}/role"
REQUESTED_AT_TAG = f"{LABEL_PREFIX}/requested-at"
SOURCE_SNAPSHOT_TAG = f"{LABEL_PREFIX}/source-snapshot"
SOURCE_REGION_TAG = f"{LABEL_PREFIX}/source-region"
MANAGED_BY_TAG, MANAGED_BY = "managed-by", "sv-backups"  # as components/aws/context.py tags everything
# The provider's timestamps of a snapshot, recorded as RDS gives them (botocore parses them; we write the same
# instant back in RFC 3339).
SNAPSHOT_TIMES = ("SnapshotCreateTime", "OriginalSnapshotCreateTime", "SnapshotDatabaseTime", "InstanceCreateTime")
SNAPSHOT_FAILED = ("failed", "error", "incompatible-restore", "incompatible-parameters")
INSTANCE_FAILED = ("failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
                   "inaccessible-encryption-credentials", "restore-error", "storage-full")  # fmt: skip
THROTTLED = ("Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException")
_INSTANCE_ID = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,62}(?<!-)$")
_SNAPSHOT_ARN = re.compile(r"^arn:aws[a-z-]*:rds:(?P<region>[a-z0-9-]+):\d{12}:snapshot:(?P<id>[a-zA-Z][a-zA-Z0-9-]*)$")

ClientFactory = Callable[[str], Any]
DEFAULT_POLL = Poll(interval=10.0, max_interval=60.0)  # RDS snapshots take minutes to hours


def default_client_factory(region: str) -> Any:
    """boto3's RDS client (credentials from IRSA / the environment; `AWS_ENDPOINT_URL` honoured), with the
    standard retry mode, which also retries throttling on each call."""
    import boto3
    from botocore.config import Config

    return boto3.client("rds", region_name=region, config=Config(retries={"mode": "standard", "max_attempts": 8}))


def snapshot_identifier(set_id: str, role: str) -> str:
    """`svb-<set>-<role>-<6 hex>`: letters, digits and single hyphens, starting with a letter, as RDS requires.
    The random tail makes a retried step (the kubelet restarts a failed init container under the same pod
    name, so the same set id) request a new snapshot instead of colliding with the failed one."""
    base = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]+", "-", f"svb-{set_id}-{role}".lower())).strip("-")
    return f"{base[:240].rstrip('-')}-{secrets.token_hex(3)}"


def parse_snapshot_arn(handle: str) -> tuple[str, str]:
    """(region, snapshot identifier) of an RDS snapshot ARN."""
    match = _SNAPSHOT_ARN.match(handle or "")
    if not match:
        raise SnapshotError("delete", f"{handle!r} is not an RDS snapshot ARN (arn:aws:rds:REGION:ACCOUNT:snapshot:ID)")
    return match["region"], match["id"]


def _error_text(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        return f"{response['Error'].get('Code', '?')}: {response['Error'].get('Message', '')}"
    return f"{type(error).__name__}: {error}"


def _code(error: Exception) -> str:
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _ambiguous(error: Exception) -> bool:
    """Whether a failed create may still have created: no answer (BotoCoreError) or a server error (5xx)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return True
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return not isinstance(status, int) or status >= 500


def _retry_busy(poll: Poll, call: Callable[[], Any]) -> Any:
    """RDS refuses a snapshot while the instance is not `available` (an automated backup, a modification:
    InvalidDBInstanceState), the counterpart of Cloud SQL's operationInProgress: retried with backoff."""
    wait = poll.interval
    for attempt in range(poll.busy_retries + 1):
        try:
            return call()
        except _aws_errors() as error:
            if _code(error) != "InvalidDBInstanceState" or attempt == poll.busy_retries:
                raise
        poll.sleep(wait)
        wait = min(wait * 2, poll.max_interval)
    raise AssertionError("unreachable")


def _aws_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _tags(tag_list: Any) -> dict[str, str]:
    if not isinstance(tag_list, list):
        return {}
    return {t["Key"]: t["Value"] for t in tag_list if isinstance(t, dict) and "Key" in t and "Value" in t}


def _times(snapshot: dict) -> dict[str, str]:
    return {n: format_time(_utc(snapshot[n])) for n in SNAPSHOT_TIMES if isinstance(snapshot.get(n), datetime)}


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class _Failed(Exception):
    """A wait ended without the resource available: failed, garbage, deadline, or an error answer."""


def _wait(poll: Poll, read: Callable[[], dict | None], status_key: str, failed: tuple[str, ...], what: str) -> dict:
    """Read until `status_key` is `available`. `read` returns the resource or None while it is not visible yet
    (RDS is eventually consistent right after a create). Throttling and not-yet-visible are retried up to
    `poll.transient_retries` times in a row; everything else ends the wait at once."""
    errors = _aws_errors()
    transient = 0
    last = "not seen yet"
    first = True
    waits = poll.waits()
    while True:
        if not first and next(waits, None) is None:
            raise _Failed(f"{what}: not available after {poll.timeout:.0f}s (last status {last})")
        first = False
        try:
            resource = read()
        except errors as error:
            if _code(error) in THROTTLED and transient < poll.transient_retries:
                transient += 1
                continue
            raise _Failed(f"{what}: {_error_text(error)}") from None
        if resource is None:
            if transient >= poll.transient_retries:
                raise _Failed(f"{what}: not found")
            transient += 1
            continue
        transient = 0
        status = resource.get(status_key)
        if not isinstance(status, str) or not status:
            raise _Failed(f"{what}: the answer has no {status_key} ({sorted(resource)[:8]})")
        last = status
        progress = resource.get("PercentProgress")
        if progress is not None:
            last = f"{status}, {progress}%"
        if status == "available":
            return resource
        if status in failed:
            raise _Failed(f"{what}: status {status}")


def _describe_snapshot(client: Any, snapshot_id: str) -> Callable[[], dict | None]:
    def read() -> dict | None:
        try:
            answer = client.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)
        except _aws_errors() as error:
            if _code(error) == "DBSnapshotNotFound":
                return None
            raise
        found = answer.get("DBSnapshots") if isinstance(answer, dict) else None
        if not isinstance(found, list) or len(found) > 1 or not all(isinstance(s, dict) for s in found):
            raise _Failed(f"DescribeDBSnapshots {snapshot_id}: unexpected answer {str(answer)[:200]!r}")
        return found[0] if found else None

    return read


class RdsSnapshots:
    """The `rds-snapshot` provider of one DB instance in `region`. `copy_to_region` and `copy_kms_key` (a KMS
    key ARN in that region): every snapshot is copied there. `node`: the `svbackups-node` tag (the pruner's IAM
    is limited to it); None reads it from the instance's own tags.

    The pruner's provider may leave out what only taking needs: `instance` None lists this node's snapshots of
    every instance in the region (then `node` is required), `copy_kms_key` None still deletes the DR copies."""

    method = RDS_SNAPSHOT

    def __init__(
        self,
        region: str,
        instance: str | None,
        copy_to_region: str | None,
        copy_kms_key: str | None,
        *,
        clock: Clock = utc_now,
        client_factory: ClientFactory | None = None,
        poll: Poll = DEFAULT_POLL,
        node: str | None = None,
    ):
        if not REGION.match(region or ""):
            raise ValueError(f"region {region!r}: expected an AWS region such as us-east-1")
        if instance is not None and not _INSTANCE_ID.match(instance):
            raise ValueError(
                f"instance {instance!r}: expected an RDS DB instance identifier (a letter, then letters, digits, "
                "single hyphens; at most 63)"
            )
        if copy_kms_key is not None and copy_to_region is None:
            raise ValueError("copy_kms_key without copy_to_region: the key is the DR region's, name that region too")
        if copy_to_region is not None and (not REGION.match(copy_to_region) or copy_to_region == region):
            raise ValueError(f"copy_to_region {copy_to_region!r}: expected an AWS region other than {region}")
        if copy_kms_key is not None:
            key = KMS_KEY_ARN.match(copy_kms_key)
            if not key or key["region"] != copy_to_region:
                raise ValueError(
                    f"copy_kms_key {copy_kms_key!r}: expected a KMS key or alias ARN in {copy_to_region} (an RDS "
                    "snapshot copy is encrypted under a key of the region it is copied to)"
                )
        self.region = region
        self.instance = instance
        self.copy_to_region = copy_to_region
        self.copy_kms_key = copy_kms_key
        self.clock = clock
        self.poll = poll
        self.node = node
        self._factory = client_factory or default_client_factory
        self._clients: dict[str, Any] = {}

    def _client(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = self._factory(region)
        return self._clients[region]

    def _node(self, where: str) -> str:
        if self.node:
            return self.node
        try:
            answer = self._client(self.region).describe_db_instances(DBInstanceIdentifier=self.instance)
            [db] = answer["DBInstances"]
        except _aws_errors() as error:
            raise SnapshotError("request", f"{where}: DescribeDBInstances: {_error_text(error)}") from None
        except (KeyError, TypeError, ValueError):
            raise SnapshotError("request", f"{where}: DescribeDBInstances: unexpected answer") from None
        node = _tags(db.get("TagList")).get(NODE_TAG)
        if not node:
            raise SnapshotError(
                "request",
                f"{where}: the instance has no {NODE_TAG} tag and no node was given: every snapshot must carry the "
                "node's tag (the pruner's IAM may delete only those)",
            )
        self.node = node
        return node

    # ------------------------------------------------------------------------------------------------- take

    def take(self, *, role: str, set_id: str, migration_id: int) -> RoleSnapshot:
        where = f"RDS {self.region}/{self.instance} ({role})"
        if self.instance is None or (self.copy_to_region and not self.copy_kms_key):
            raise SnapshotError("request", f"{where}: taking needs the instance, and the DR key with a DR region")
        node = self._node(where)
        snapshot_id = snapshot_identifier(set_id, role)
        requested = now(self.clock)
        tags = {
            NODE_TAG: node,
            SET_ID_TAG: set_id,
            ROLE_TAG: role,
            MIGRATION_ID_TAG: str(migration_id),
            REQUESTED_AT_TAG: format_time(requested.wall),
            MANAGED_BY_TAG: MANAGED_BY,
        }
        client = self._client(self.region)
        try:
            _retry_busy(
                self.poll,
                lambda: client.create_db_snapshot(
                    DBSnapshotIdentifier=snapshot_id,
                    DBInstanceIdentifier=self.instance,
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                ),
            )
        except _aws_errors() as error:
            # A refused request made nothing; a lost answer may have: remove it if it exists.
            note = self._discard(client, snapshot_id) if _ambiguous(error) else ""
            message = f"{where}: CreateDBSnapshot {snapshot_id}: {_error_text(error)}{note}"
            raise SnapshotError("request", message) from None
        try:
            snapshot = _wait(self.poll, _describe_snapshot(client, snapshot_id), "Status", SNAPSHOT_FAILED,
                             f"snapshot {snapshot_id}")  # fmt: skip
            arn, cut = snapshot.get("DBSnapshotArn"), snapshot.get("SnapshotCreateTime")
            if not isinstance(arn, str) or not isinstance(cut, datetime):
                raise _Failed(f"snapshot {snapshot_id}: available, but without DBSnapshotArn or SnapshotCreateTime")
        except _Failed as failure:
            raise SnapshotError("wait", f"{where}: {failure}{self._discard(client, snapshot_id)}") from None
        completed = now(self.clock)
        dr_copy = self._copy(snapshot, tags, where) if self.copy_to_region else None
        return RoleSnapshot(
            role=role,
            method=self.method,
            handle=arn,
            consistency=PROVIDER,
            requested_at=requested.wall,
            cut_at=_utc(cut),
            completed_at=completed.wall,
            requested_mono=requested.monotonic_ns / 1e9,
            completed_mono=completed.monotonic_ns / 1e9,
            boot_id=boot_id() or "",
            provider_times=_times(snapshot),
            details={
                "region": self.region,
                "instance": self.instance,
                "snapshot_identifier": snapshot_id,
                "node": node,
                "engine": snapshot.get("Engine"),
                "engine_version": snapshot.get("EngineVersion"),
                "allocated_storage_gib": snapshot.get("AllocatedStorage"),
                "encrypted": snapshot.get("Encrypted"),
                "kms_key": snapshot.get("KmsKeyId"),
            },
            dr_copy=dr_copy,
        )

    def _copy(self, source: dict, tags: dict[str, str], where: str) -> dict[str, Any]:
        region = self.copy_to_region
        assert region is not None
        client = self._client(region)
        source_arn = source["DBSnapshotArn"]
        copy_id = source["DBSnapshotIdentifier"]  # identifiers are per region: the copy keeps the source's
        copy_tags = {**tags, SOURCE_SNAPSHOT_TAG: source_arn, SOURCE_REGION_TAG: self.region}
        stays = f"; the source {source_arn} stays (list_taken shows it for pruning)"
        requested = now(self.clock)
        try:
            client.copy_db_snapshot(
                SourceDBSnapshotIdentifier=source_arn,
                TargetDBSnapshotIdentifier=copy_id,
                SourceRegion=self.region,
                KmsKeyId=self.copy_kms_key,
                CopyTags=True,
                Tags=[{"Key": k, "Value": v} for k, v in copy_tags.items()],
            )
        except _aws_errors() as error:
            note = self._discard(client, copy_id) if _ambiguous(error) else ""
            message = f"{where}: CopyDBSnapshot to {region}: {_error_text(error)}{note}{stays}"
            raise SnapshotError("copy", message) from None
        try:
            copy = _wait(self.poll, _describe_snapshot(client, copy_id), "Status", SNAPSHOT_FAILED,
                         f"copy {copy_id} in {region}")  # fmt: skip
            arn = copy.get("DBSnapshotArn")
            if not isinstance(arn, str):
                raise _Failed(f"copy {copy_id} in {region}: available, but without DBSnapshotArn")
        except _Failed as failure:
            raise SnapshotError("copy", f"{where}: {failure}{self._discard(client, copy_id)}{stays}") from None
        completed = now(self.clock)
        return {
            "handle": arn,
            "region": region,
            "kms_key": copy.get("KmsKeyId") or self.copy_kms_key,
            "requested_at": format_time(requested.wall),
            "completed_at": format_time(completed.wall),
            "provider_times": _times(copy),
        }

    def _discard(self, client: Any, snapshot_id: str) -> str:
        """Remove a snapshot this call made that must not look like a finished step. Returns what happened, for
        the error message: the creating identity is not allowed to delete, and then the snapshot stays."""
        try:
            client.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
        except _aws_errors() as error:
            if _code(error) == "DBSnapshotNotFound":
                return ""
            return f"; snapshot {snapshot_id} left for the pruner ({_error_text(error)})"
        return f"; snapshot {snapshot_id} removed"

    # ------------------------------------------------------------------------------------------ list, delete

    def list_taken(self) -> list[Taken]:
        taken = []
        try:
            if self.instance is None and not self.node:
                raise SnapshotError(
                    "list",
                    f"RDS {self.region}: listing without an instance needs the node (SV_BACKUPS_NODE or --node), "
                    "or another node's snapshots would look like leftovers",
                )
            scope = {"DBInstanceIdentifier": self.instance} if self.instance else {}
            pages = self._client(self.region).get_paginator("describe_db_snapshots").paginate(
                SnapshotType="manual", **scope
            )  # fmt: skip
            for page in pages:
                for snapshot in page.get("DBSnapshots", []):
                    tags = _tags(snapshot.get("TagList"))
                    if tags.get(MANAGED_BY_TAG) != MANAGED_BY or SOURCE_SNAPSHOT_TAG in tags:
                        continue
                    if self.node and tags.get(NODE_TAG) != self.node:
                        continue
                    try:
                        stamp = snapshot.get("SnapshotCreateTime")
                        taken_at = _utc(stamp) if isinstance(stamp, datetime) else parse_time(tags[REQUESTED_AT_TAG])
                        taken.append(
                            Taken(
                                handle=snapshot["DBSnapshotArn"],
                                set_id=tags[SET_ID_TAG],
                                role=tags[ROLE_TAG],
                                migration_id=int(tags[MIGRATION_ID_TAG]),
                                taken_at=taken_at,
                                ready=snapshot.get("Status") == "available",
                            )
                        )
                    except (KeyError, ValueError):
                        continue  # tags that cannot place it: never pruned by us, as for EBS copies
        except _aws_errors() as error:
            message = f"RDS {self.region}/{self.instance}: DescribeDBSnapshots: {_error_text(error)}"
            raise SnapshotError("list", message) from None
        return taken

    def delete(self, handle: str) -> None:
        """Delete the DR copy (when this provider copies), then the source. Gone counts as deleted; a copy that
        is not this source's (its source-snapshot tag differs) is refused, never deleted."""
        region, snapshot_id = parse_snapshot_arn(handle)
        if self.copy_to_region:
            client = self._client(self.copy_to_region)
            try:
                copy = _describe_snapshot(client, snapshot_id)()
            except (_Failed, *_aws_errors()) as error:
                message = f"copy of {handle} in {self.copy_to_region}: {_error_text(error)}"
                raise SnapshotError("delete", message) from None
            if copy is not None:
                source = _tags(copy.get("TagList")).get(SOURCE_SNAPSHOT_TAG)
                if source != handle:
                    raise SnapshotError(
                        "delete",
                        f"{snapshot_id} in {self.copy_to_region} is not the copy of {handle} "
                        f"(its {SOURCE_SNAPSHOT_TAG} is {source!r}); left alone",
                    )
                self._delete_one(client, snapshot_id, f"copy of {handle} in {self.copy_to_region}")
        self._delete_one(self._client(region), snapshot_id, handle)

    @staticmethod
    def _delete_one(client: Any, snapshot_id: str, what: str) -> None:
        try:
            client.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
        except _aws_errors() as error:
            if _code(error) != "DBSnapshotNotFound":
                raise SnapshotError("delete", f"{what}: DeleteDBSnapshot: {_error_text(error)}") from None


NODE_ENV = "SV_BACKUPS_NODE"


def provider_from_args(args) -> RdsSnapshots:
    """The provider from `python -m jobs snapshot-step/prune-snapshots` flags (jobs/pgsnap_cli.py calls it):
    `--region` (required), `--instance` (None for the pruner), `--copy-to-region`, `--copy-kms-key`; the node
    from `--node` when the CLI has it, else env SV_BACKUPS_NODE, else (taking) the instance's tag."""
    if not getattr(args, "region", None):
        raise ValueError("--method rds-snapshot needs --region")
    return RdsSnapshots(
        args.region,
        getattr(args, "instance", None),
        getattr(args, "copy_to_region", None),
        getattr(args, "copy_kms_key", None),
        poll=poll_from_args(args),
        node=getattr(args, "node", None) or os.environ.get(NODE_ENV) or None,
    )


def restore_rds_snapshot(
    region: str,
    snapshot_id_or_arn: str,
    target_instance: str,
    *,
    instance_class: str | None = None,
    subnet_group: str | None = None,
    security_groups: list[str] | None = None,
    parameter_group: str | None = None,
    tags: dict[str, str] | None = None,
    client_factory: ClientFactory | None = None,
    poll: Poll = DEFAULT_POLL,
) -> dict[str, Any]:
    """Restore a snapshot (the source, or its DR copy: pass the DR region and the copy's ARN) into a NEW DB
    instance `target_instance` and wait until it is available. An existing identifier is refused before
    anything is asked. The instance is encrypted under the snapshot's own key (RestoreDBInstanceFromDBSnapshot
    takes no KMS key: to change it, copy the snapshot under the key first). Returns the instance's identifier,
    ARN, endpoint and status."""
    if not REGION.match(region or ""):
        raise ValueError(f"region {region!r}: expected an AWS region such as us-east-1")
    if not _INSTANCE_ID.match(target_instance or ""):
        raise ValueError(f"target instance {target_instance!r}: expected an RDS DB instance identifier")
    arn = _SNAPSHOT_ARN.match(snapshot_id_or_arn or "")
    if arn and arn["region"] != region:
        raise ValueError(
            f"snapshot {snapshot_id_or_arn!r} is in {arn['region']}, not {region}: restore in the snapshot's region "
            "(for the DR copy, the DR region and the copy's ARN)"
        )
    if not arn and not re.match(r"^[a-zA-Z][a-zA-Z0-9-]{0,254}$", snapshot_id_or_arn or ""):
        raise ValueError(f"snapshot {snapshot_id_or_arn!r}: expected an RDS snapshot identifier or ARN")
    client = (client_factory or default_client_factory)(region)
    where = f"restore of {snapshot_id_or_arn} into {region}/{target_instance}"
    errors = _aws_errors()
    try:
        client.describe_db_instances(DBInstanceIdentifier=target_instance)
    except errors as error:
        if _code(error) != "DBInstanceNotFound":
            raise SnapshotError("restore", f"{where}: DescribeDBInstances: {_error_text(error)}") from None
    else:
        raise SnapshotError(
            "restore",
            f"{where}: refusing: instance {target_instance} exists; a snapshot is restored into a new instance "
            "(choose a new identifier, or delete the old instance yourself first)",
        )
    request: dict[str, Any] = {
        "DBInstanceIdentifier": target_instance,
        "DBSnapshotIdentifier": snapshot_id_or_arn,
        "CopyTagsToSnapshot": True,
        "Tags": [{"Key": k, "Value": v} for k, v in {MANAGED_BY_TAG: MANAGED_BY, **(tags or {})}.items()],
    }
    optional = {"DBInstanceClass": instance_class, "DBSubnetGroupName": subnet_group,
                "VpcSecurityGroupIds": security_groups, "DBParameterGroupName": parameter_group}  # fmt: skip
    request.update({k: v for k, v in optional.items() if v})
    try:
        client.restore_db_instance_from_db_snapshot(**request)
    except errors as error:
        raise SnapshotError("restore", f"{where}: RestoreDBInstanceFromDBSnapshot: {_error_text(error)}") from None

    def read() -> dict | None:
        try:
            found = client.describe_db_instances(DBInstanceIdentifier=target_instance).get("DBInstances")
        except errors as error:
            if _code(error) == "DBInstanceNotFound":
                return None
            raise
        if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], dict):
            raise _Failed(f"DescribeDBInstances {target_instance}: unexpected answer")
        return found[0]

    try:
        db = _wait(poll, read, "DBInstanceStatus", INSTANCE_FAILED, f"instance {target_instance}")
    except _Failed as failure:
        # The new instance is left as it is: it may hold what an operator needs to see why.
        raise SnapshotError("restore", f"{where}: {failure}") from None
    endpoint = db.get("Endpoint") if isinstance(db.get("Endpoint"), dict) else {}
    return {
        "instance": target_instance,
        "arn": db.get("DBInstanceArn"),
        "region": region,
        "endpoint": f"{endpoint['Address']}:{endpoint.get('Port', 5432)}" if endpoint.get("Address") else None,
        "status": db.get("DBInstanceStatus"),
    }
