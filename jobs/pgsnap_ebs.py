"""EBS DR copies and Snapshot Lock of the in-cluster provider's snapshots (AWS): each snapshot copied to the DR
region through jobs/ebs_copies.py, waited for, then the sources and copies locked; read back and deleted by the
pruner. See docs/jobs-snapshots.md, "DR copy and immutability per cloud"."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from jobs.ebs_copies import SNAPSHOT_ID, VOLUME_SNAPSHOT_TAG, CopyError, SnapshotCopier, Source
from jobs.snapshot_providers import SnapshotError
from rules.manifest import format_time, utc_now


class EbsDrCopies:
    """The DR copies of EBS-backed VolumeSnapshots (AWS, in-cluster): each snapshot copied to the DR region
    under a DR-region KMS key by jobs/ebs_copies.py (tagged with the node, set id, migration id and the
    VolumeSnapshot it belongs to), and waited for until complete. Deleted with their snapshot when pruned."""

    def __init__(
        self,
        copier: SnapshotCopier,
        *,
        timeout: timedelta = timedelta(hours=2),
        poll: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        client: Any = None,
        lock_for: timedelta | None = None,
        primary_client: Any = None,
    ):
        self.copier = copier
        self.lock_for = lock_for
        self.timeout = timeout
        self.poll = poll
        self.clock = clock
        self.sleep = sleep
        if client is None:
            import boto3

            client = boto3.client("ec2", region_name=copier.dr_region)
        if primary_client is None:
            import boto3

            primary_client = boto3.client("ec2", region_name=copier.source_region)
        self._dr = client
        self._primary = primary_client

    def copy(
        self,
        volume_snapshots: list[dict[str, Any]],
        *,
        namespace: str,
        set_id: str,
        migration_id: int,
        taken_at: datetime,
    ) -> dict[str, Any]:
        """Copy every volume snapshot of a role (the records jobs/pgsnap_volume.py keeps in `volume_snapshots`);
        wait until each copy is completed, then lock. Returns the dr_copy record; on failure removes the copies
        it started and raises SnapshotError."""
        started: dict[str, str] = {}
        sources: list[str] = []
        try:
            for record in volume_snapshots:
                handle = str(record.get("snapshot_handle") or "")
                if not SNAPSHOT_ID.match(handle):
                    raise SnapshotError(
                        "copy",
                        f"VolumeSnapshot {namespace}/{record['name']}: snapshotHandle "
                        f"{handle!r} is not an EBS snapshot id; --copy-to-region needs the "
                        "ebs.csi.aws.com driver",
                    )
                source = Source(
                    volume_snapshot=f"{namespace}/{record['name']}",
                    snapshot_id=handle,
                    set_id=set_id,
                    migration_id=migration_id,
                    taken_at=int(taken_at.timestamp()),
                )
                started[record["volume"]] = self.copier.copy(self.copier.node_of(handle), source)
                sources.append(handle)
            self._wait(list(started.values()))
            lock_until = self._lock(sources, list(started.values()))
        except CopyError as error:
            self._discard(started.values())
            raise SnapshotError("copy", str(error)) from None
        except BaseException:
            self._discard(started.values())
            raise
        record = {"region": self.copier.dr_region, "snapshot_ids": started, "completed_at": format_time(utc_now())}
        if lock_until:
            record["lock_until"] = lock_until
        return record

    def _lock(self, sources: list[str], copies: list[str]) -> str | None:
        """EBS Snapshot Lock, governance mode, for `lock_for` (whole days, rounded up): the sources in the
        primary region and their copies. Returns when the locks expire (RFC 3339), None without `lock_for`."""
        if not self.lock_for:
            return None
        days = max(1, -(-int(self.lock_for.total_seconds()) // 86400))
        expires = []
        for client, region, ids in ((self._primary, self.copier.source_region, sources),
                                    (self._dr, self.copier.dr_region, copies)):  # fmt: skip
            for snapshot_id in ids:
                try:
                    answer = client.lock_snapshot(SnapshotId=snapshot_id, LockMode="governance", LockDuration=days)
                except Exception as error:
                    raise CopyError(f"locking {snapshot_id} in {region}: {error}") from None
                expires.append(answer.get("LockExpiresOn") or (utc_now() + timedelta(days=days)))
        return format_time(min(expires)) if expires else None

    def locked_until(self, sources: list[str], volume_snapshots: list[str]) -> datetime | None:
        """The latest lock expiry still ahead among the sources and their copies (None: nothing locked)."""
        copies = []
        for each in volume_snapshots:
            copies += [s["SnapshotId"] for s in self._copies_of(each)]
        ahead = []
        for client, ids in ((self._primary, sources), (self._dr, copies)):
            if not ids:
                continue
            try:
                found = client.describe_locked_snapshots(SnapshotIds=ids)["Snapshots"]
            except Exception as error:
                raise SnapshotError("delete", f"reading the locks of {', '.join(ids)}: {error}") from None
            ahead += [s["LockExpiresOn"] for s in found if s.get("LockExpiresOn") and s["LockExpiresOn"] > utc_now()]
        return max(ahead) if ahead else None

    def _copies_of(self, volume_snapshot: str) -> list[dict[str, Any]]:
        try:
            return self._dr.describe_snapshots(
                OwnerIds=["self"], Filters=[{"Name": f"tag:{VOLUME_SNAPSHOT_TAG}", "Values": [volume_snapshot]}]
            )["Snapshots"]
        except Exception as error:
            raise SnapshotError("delete", f"listing the DR copies of {volume_snapshot}: {error}") from None

    def _wait(self, ids: list[str]) -> None:
        deadline = self.clock() + self.timeout.total_seconds()
        while True:
            try:
                found = self._dr.describe_snapshots(SnapshotIds=ids)["Snapshots"]
            except Exception as error:
                raise CopyError(f"reading the copies {', '.join(ids)} in {self.copier.dr_region}: {error}") from None
            states = {s["SnapshotId"]: s.get("State") for s in found}
            if any(state == "error" for state in states.values()):
                raise CopyError(f"a copy in {self.copier.dr_region} failed: {states}")
            if len(states) == len(ids) and all(state == "completed" for state in states.values()):
                return
            if self.clock() >= deadline:
                raise CopyError(f"copies {states} not completed in {self.copier.dr_region} within {self.timeout}")
            self.sleep(self.poll)

    def _discard(self, ids) -> None:
        for copy_id in ids:
            with contextlib.suppress(CopyError):  # best effort; the failure is what gets reported
                self.copier.delete(copy_id)

    def delete_for(self, volume_snapshot: str) -> None:
        """Delete the copies of one VolumeSnapshot (namespace/name), found by tag."""
        try:
            for snapshot in self._copies_of(volume_snapshot):
                self.copier.delete(snapshot["SnapshotId"])
        except CopyError as error:
            raise SnapshotError("delete", str(error)) from None
