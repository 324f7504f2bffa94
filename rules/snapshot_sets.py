"""Snapshot sets: the records of an ordered set of storage snapshots (pure: no I/O).

A snapshot set is the storage-snapshot twin of a dump set (rules/manifest.py): one step per role, run in the
order of ROLE_ORDER (canton-bft, apps, participant, sequencer, mediator), each step done when the provider
reports its snapshot complete, before the next step asks for its own; a seal that checks every step and the
ordering rule (every `apps` snapshot complete before the first `participant` snapshot was requested) and writes
`manifest.json` last, create-only. What a step took is a `RoleSnapshot`: who took what, when we asked, when the
provider says it was cut, when we saw it complete, the provider's own handle and timestamps, and how the data
was made consistent.

Where the records live in the backup store (beside the dump sets' `recent/` and `historical/`):
`snapshot-sets/<migration id>/<set id>/steps/<role>.json` and `.../manifest.json`. They are a few kB each and
outlive the snapshots they describe: a pruned snapshot is recorded by `.../pruned/<role>.json`, never by
deleting or rewriting its manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rules.manifest import format_time, parse_time

SNAPSHOT_SET_FORMAT = "sv-backups/snapshot-set/v1"
SNAPSHOT_STEP_FORMAT = "sv-backups/snapshot-step/v1"
SNAPSHOT_SETS = "snapshot-sets"

# How a role's snapshot is taken.
VOLUME_SNAPSHOT = "volume-snapshot"  # a CSI VolumeSnapshot of an in-cluster instance's data volume (and WAL volume)
CLOUDSQL_BACKUP = "cloudsql-backup"  # an on-demand Cloud SQL backup (backupRuns.insert)
RDS_SNAPSHOT = "rds-snapshot"  # a manual RDS DB snapshot
METHODS = (VOLUME_SNAPSHOT, CLOUDSQL_BACKUP, RDS_SNAPSHOT)

# How the snapshot's data is consistent.
ONLINE = "online"  # taken inside pg_backup_start/pg_backup_stop: restored with the recorded backup label + WAL
CRASH_CONSISTENT = "crash-consistent"  # one atomic snapshot of a volume holding the data directory and pg_wal
PROVIDER = "provider"  # the managed service's own backup (Cloud SQL, RDS) guarantees it
CONSISTENCIES = (ONLINE, CRASH_CONSISTENT, PROVIDER)


def snapshot_set_prefix(migration_id: int, set_id: str) -> str:
    return f"{SNAPSHOT_SETS}/{migration_id}/{set_id}"


@dataclass(frozen=True)
class RoleSnapshot:
    """What one step took. Wall-clock times are what humans read and what the providers report; the monotonic
    readings (`requested_mono`, `completed_mono`, with `boot_id`) back the ordering proof as in dump sets.

    - `handle`: the provider's name for the snapshot, enough to find it again and restore it: a VolumeSnapshot
      `namespace/name`, a Cloud SQL `project/instance/backupRunId`, an RDS snapshot ARN.
    - `cut_at`: the provider's point-in-time of the data (VolumeSnapshot `status.creationTime`, the backup run's
      `windowStartTime`, the RDS `SnapshotCreateTime`).
    - `provider_times`: the provider's timestamps verbatim (name -> RFC 3339 text).
    - `details`: per method (volume: PVC, VolumeSnapshotContent, disk snapshot handle, size; the backup label
      and the WAL objects of an online backup; a lock's expiry), free-form but JSON.
    - `dr_copy`: the copy that survives the loss of the primary region (handle, region, when complete), or None
      where the provider keeps the snapshot itself in more than one region (`details` says where).
    """

    role: str
    method: str
    handle: str
    consistency: str
    requested_at: datetime
    cut_at: datetime
    completed_at: datetime
    requested_mono: float
    completed_mono: float
    boot_id: str
    provider_times: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    dr_copy: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "method": self.method,
            "handle": self.handle,
            "consistency": self.consistency,
            "requested_at": format_time(self.requested_at),
            "cut_at": format_time(self.cut_at),
            "completed_at": format_time(self.completed_at),
            "requested_mono": self.requested_mono,
            "completed_mono": self.completed_mono,
            "boot_id": self.boot_id,
            "provider_times": dict(self.provider_times),
            "details": dict(self.details),
            "dr_copy": self.dr_copy,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RoleSnapshot:
        """Raises KeyError/ValueError/TypeError on a malformed record (callers report it as a step error)."""
        return cls(
            role=record["role"],
            method=record["method"],
            handle=record["handle"],
            consistency=record["consistency"],
            requested_at=parse_time(record["requested_at"]),
            cut_at=parse_time(record["cut_at"]),
            completed_at=parse_time(record["completed_at"]),
            requested_mono=float(record["requested_mono"]),
            completed_mono=float(record["completed_mono"]),
            boot_id=str(record["boot_id"]),
            provider_times=dict(record.get("provider_times") or {}),
            details=dict(record.get("details") or {}),
            dr_copy=record.get("dr_copy"),
        )
