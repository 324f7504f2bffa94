"""The one small interface between a snapshot set and the place a role's snapshot is taken.

Three providers implement it: in-cluster volumes (jobs/pgsnap_volume.py: a CSI VolumeSnapshot, online backup
around it), Cloud SQL (jobs/pgsnap_cloudsql.py: an on-demand backup run) and RDS (jobs/pgsnap_rds.py: a DB
snapshot and its copy to the DR region). The set logic (jobs/pgsnap.py: order, records, seal, pruning) knows
nothing else of them.

Identities: `take` runs as the creator, which cannot delete; `delete` runs only in the pruning job, under its
own identity (the creator must not be able to destroy history, docs/jobs-snapshots.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from rules.snapshot_sets import RoleSnapshot


class SnapshotError(Exception):
    """A snapshot could not be taken, copied, restored or deleted; `stage` says where (request, wait, copy,
    lock, restore, delete), the message what the provider answered."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class Taken:
    """A snapshot this node's sets took, as the provider lists it (for pruning and for finding leftovers)."""

    handle: str
    set_id: str
    role: str
    migration_id: int
    taken_at: datetime
    ready: bool


class SnapshotProvider(Protocol):
    method: str

    def take(self, *, role: str, set_id: str, migration_id: int) -> RoleSnapshot:
        """Request the snapshot, wait until the provider reports it complete (and its DR copy, where the provider
        makes one), and return what was taken. On any failure: remove what this call created (so nothing
        ready-looking of a failed step stays behind) and raise SnapshotError."""
        ...

    def list_taken(self) -> list[Taken]:
        """Every snapshot the node's sets took with this provider (labels/tags carry set id, role, migration id)."""
        ...

    def delete(self, handle: str) -> None:
        """Delete one snapshot (and its DR copy). Pruning identity only; a locked snapshot raises SnapshotError."""
        ...
