"""Copies of the CometBFT EBS snapshots in the DR region (`snapshot-cometbft --copy-to-region R --copy-kms-key K`).

An EBS snapshot lives in one region: a same-region snapshot is not a backup until copied. After each ready
snapshot the job copies it with `ec2:CopySnapshot` (called in the DR region, encrypted under the DR region's
key), and prunes the copies by the same tiers as the snapshots in the cluster. The job does it rather than
Data Lifecycle Manager or AWS Backup because those copy only the snapshots or recovery points they create
themselves, not the ones the CSI driver takes for a VolumeSnapshot, and neither knows the tiers.

Every copy is tagged (set at creation, in the same CopySnapshot call):
- `svbackups-node`: the node, read from the source snapshot (the VolumeSnapshotClass tags every snapshot
  with it): the job's IAM role may tag copies and delete snapshots only with its own node's tag;
- set id, migration id, taken-at (the cluster snapshot's labels, which the tiers use), the source snapshot
  and region, and the VolumeSnapshot (namespace/name) the copy belongs to.

Idempotent: the copies are found by tag (DescribeSnapshots in the DR region, this node's only) before anything
is copied; a source with several copies (a CopySnapshot retried after its answer was lost) keeps one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rules.naming import LABEL_PREFIX, MANAGED_BY
from rules.retention import Keepable, select_kept

NODE_TAG = "svbackups-node"  # the AWS backend's tag for everything of one node (IAM conditions use it)
SET_ID_TAG = f"{LABEL_PREFIX}/set-id"
MIGRATION_ID_TAG = f"{LABEL_PREFIX}/migration-id"
TAKEN_AT_TAG = f"{LABEL_PREFIX}/taken-at"
SOURCE_SNAPSHOT_TAG = f"{LABEL_PREFIX}/source-snapshot"
SOURCE_REGION_TAG = f"{LABEL_PREFIX}/source-region"
VOLUME_SNAPSHOT_TAG = f"{LABEL_PREFIX}/volume-snapshot"

SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8,32}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# A KMS key in the DR region: key or alias ARN (CopySnapshot also takes ids, but an ARN names the region).
KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:(key/[A-Za-z0-9-]+|alias/[\w/+=,.@-]+)$")
# States a copy can be in: pending and completed count as copied; error is replaced.
USABLE_STATES = ("pending", "completed")


class CopyError(Exception):
    """An EC2 call failed; the message names the call, the snapshot and AWS's error code (no credentials)."""


@dataclass(frozen=True)
class Source:
    """A ready VolumeSnapshot of the node and the EBS snapshot behind it."""

    volume_snapshot: str  # namespace/name
    snapshot_id: str
    set_id: str
    migration_id: int
    taken_at: int


@dataclass(frozen=True)
class Copy:
    snapshot_id: str
    state: str
    started: datetime
    tags: dict[str, str]

    @property
    def volume_snapshot(self) -> str | None:
        return self.tags.get(VOLUME_SNAPSHOT_TAG)

    @property
    def keepable(self) -> Keepable | None:
        """The copy as the tiers see it, or None when its tags cannot place it (then it is never deleted)."""
        try:
            return Keepable(
                key=self.snapshot_id,
                taken_at=datetime.fromtimestamp(int(self.tags[TAKEN_AT_TAG]), UTC),
                migration_id=int(self.tags[MIGRATION_ID_TAG]),
            )
        except (KeyError, ValueError, OverflowError):
            return None


def check_options(copy_to_region: str, kms_key: str, source_region: str | None) -> list[str]:
    """Problems with the copy configuration, one message each (empty when it is usable)."""
    problems = []
    if not REGION.match(copy_to_region):
        problems.append(f"--copy-to-region {copy_to_region!r} is not an AWS region (e.g. us-west-2)")
    match = KMS_KEY_ARN.match(kms_key)
    if not match:
        problems.append(
            f"--copy-kms-key {kms_key!r} is not a KMS key or alias ARN (arn:aws:kms:<region>:<account>:key/<id>)"
        )
    elif match["region"] != copy_to_region:
        problems.append(
            f"--copy-kms-key is in {match['region']}, not in --copy-to-region {copy_to_region}: a copy is encrypted "
            "with a key of its own region"
        )
    if not source_region:
        problems.append("the primary region is unknown: AWS_REGION (or AWS_DEFAULT_REGION) must be set (IRSA sets it)")
    elif source_region == copy_to_region:
        problems.append(f"--copy-to-region {copy_to_region} is the primary region: a copy there is not a DR copy")
    return problems


def copy_tags(node: str, source: Source, source_region: str) -> list[dict[str, str]]:
    tags = {
        NODE_TAG: node,
        SET_ID_TAG: source.set_id,
        MIGRATION_ID_TAG: str(source.migration_id),
        TAKEN_AT_TAG: str(source.taken_at),
        SOURCE_SNAPSHOT_TAG: source.snapshot_id,
        SOURCE_REGION_TAG: source_region,
        VOLUME_SNAPSHOT_TAG: source.volume_snapshot,
        "Name": source.volume_snapshot,
        **MANAGED_BY,
    }
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _rank(copy: Copy) -> tuple:
    return (copy.state != "completed", copy.state != "pending", copy.started, copy.snapshot_id)


def current_copies(copies: Iterable[Copy]) -> dict[str, Copy]:
    """The one copy that stands for each VolumeSnapshot: completed before pending (errored ones never), then the
    oldest."""
    best: dict[str, Copy] = {}
    for copy in sorted(copies, key=_rank):
        if copy.volume_snapshot and copy.state in USABLE_STATES:
            best.setdefault(copy.volume_snapshot, copy)
    return best


def copies_to_delete(
    copies: list[Copy],
    *,
    kept: set[str],
    pruned: set[str],
    now: datetime,
    keep_recent: timedelta,
    cadence: timedelta,
) -> dict[str, str]:
    """copy snapshot id -> why, for this node's copies. `kept` and `pruned` are VolumeSnapshots (namespace/name)
    the cluster keeps and prunes in this run.

    A copy goes when its VolumeSnapshot was pruned, when it is a spare (another copy stands for the same
    VolumeSnapshot), when it failed (state error), or when `select_kept` over the copies does not keep it and the
    cluster does not keep its VolumeSnapshot either (copies outlive snapshots of earlier PVCs, which this job does
    not prune in the cluster). A copy in progress, or whose tags cannot be read, is never deleted."""
    standing = current_copies(copies)
    reasons: dict[str, str] = {}
    for copy in copies:
        if copy.keepable is None or copy.volume_snapshot is None or copy.state == "pending":
            continue
        if copy.volume_snapshot in pruned:
            reasons[copy.snapshot_id] = "its snapshot was pruned"
        elif copy.state == "error":
            reasons[copy.snapshot_id] = "the copy failed"
        elif standing.get(copy.volume_snapshot) is not copy:
            reasons[copy.snapshot_id] = "a spare copy of the same snapshot"
    candidates = [c.keepable for c in standing.values() if c.keepable and c.snapshot_id not in reasons]
    tier_kept = select_kept(candidates, now, keep_recent, cadence)
    for copy in standing.values():
        if copy.snapshot_id in reasons or copy.keepable is None or copy.state == "pending":
            continue
        if copy.snapshot_id not in tier_kept and copy.volume_snapshot not in kept:
            reasons[copy.snapshot_id] = "tier"
    return reasons


def _error(action: str, error: Exception) -> CopyError:
    response = getattr(error, "response", None)
    if response:
        info = response.get("Error", {})
        return CopyError(f"{action}: {info.get('Code')}: {info.get('Message')}")
    return CopyError(f"{action}: {type(error).__name__}: {error}")


class SnapshotCopier:
    """The EC2 calls: DescribeSnapshots (both regions), CopySnapshot and DeleteSnapshot (DR region only)."""

    def __init__(self, source_region: str, dr_region: str, kms_key: str, *, client: Callable[[str], Any] | None = None):
        if client is None:
            import boto3

            def client(region: str) -> Any:
                return boto3.client("ec2", region_name=region)

        self.source_region = source_region
        self.dr_region = dr_region
        self.kms_key = kms_key
        self._source = client(source_region)
        self._dr = client(dr_region)

    def node_of(self, snapshot_id: str) -> str:
        action = f"reading the tags of {snapshot_id} in {self.source_region}"
        try:
            found = self._source.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        except Exception as error:
            raise _error(action, error) from None
        tags = {t["Key"]: t["Value"] for snapshot in found for t in snapshot.get("Tags") or []}
        if not tags.get(NODE_TAG):
            raise CopyError(
                f"{action}: no {NODE_TAG} tag; the VolumeSnapshotClass must tag its snapshots with the node "
                f"(parameter tagSpecification_1: {NODE_TAG}=<node>), or the copies could not be tagged or pruned"
            )
        return tags[NODE_TAG]

    def list_copies(self, node: str) -> list[Copy]:
        action = f"listing the copies of node {node} in {self.dr_region}"
        copies = []
        try:
            pages = self._dr.get_paginator("describe_snapshots").paginate(
                OwnerIds=["self"], Filters=[{"Name": f"tag:{NODE_TAG}", "Values": [node]}]
            )
            for page in pages:
                for snapshot in page["Snapshots"]:
                    copies.append(
                        Copy(
                            snapshot_id=snapshot["SnapshotId"],
                            state=snapshot.get("State", ""),
                            started=snapshot.get("StartTime") or datetime.now(UTC),
                            tags={t["Key"]: t["Value"] for t in snapshot.get("Tags") or []},
                        )
                    )
        except Exception as error:
            raise _error(action, error) from None
        return copies

    def copy(self, node: str, source: Source) -> str:
        action = f"copying {source.snapshot_id} ({source.volume_snapshot}) to {self.dr_region}"
        try:
            response = self._dr.copy_snapshot(
                SourceRegion=self.source_region,
                SourceSnapshotId=source.snapshot_id,
                Encrypted=True,
                KmsKeyId=self.kms_key,
                Description=f"sv-backups DR copy of {source.volume_snapshot} ({source.snapshot_id}, "
                f"{self.source_region})",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": copy_tags(node, source, self.source_region)}],
            )
        except Exception as error:
            raise _error(action, error) from None
        return response["SnapshotId"]

    def delete(self, copy_id: str) -> None:
        try:
            self._dr.delete_snapshot(SnapshotId=copy_id)
        except Exception as error:
            if getattr(error, "response", {}).get("Error", {}).get("Code") == "InvalidSnapshot.NotFound":
                return  # already gone (a retried delete)
            raise _error(f"deleting the copy {copy_id} in {self.dr_region}", error) from None
