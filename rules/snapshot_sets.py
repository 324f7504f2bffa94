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

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rules.history import SetPoint
from rules.manifest import APPS, CANTON_BFT, PARTICIPANT, format_time, parse_time, role_sort_key
from rules.retention import Keepable, select_kept

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


# ------------------------------------------------------------------------------------ step and manifest records

MANIFEST = "manifest.json"
STEPS_DIR = "steps"
PRUNED_DIR = "pruned"
WAL_DIR = "wal"
KIND = "snapshot"  # what list-sets / audit-history print beside the dump sets' `dump`


def step_key(role: str) -> str:
    return f"{STEPS_DIR}/{role}.json"


def pruned_key(role: str) -> str:
    return f"{PRUNED_DIR}/{role}.json"


def wal_prefix(role: str) -> str:
    """Where an online backup's WAL (start..stop) is kept, under the set's prefix."""
    return f"{WAL_DIR}/{role}"


def build_step(
    snapshot: RoleSnapshot, *, set_id: str, migration_id: int, code_version: str, host: str
) -> dict[str, Any]:
    """The record `snapshot-step` writes create-only as `steps/<role>.json`: the step is done when it exists."""
    return {
        "format": SNAPSHOT_STEP_FORMAT,
        "set_id": set_id,
        "migration_id": migration_id,
        "role": snapshot.role,
        "code_version": code_version,
        "host": host,
        "snapshot": snapshot.to_record(),
    }


def snapshot_errors(record: Any, role: str | None = None) -> list[str]:
    """Why one role's snapshot record is unusable (empty when it is sound)."""
    label = f"role {role or (record.get('role') if isinstance(record, dict) else '?')}"
    if not isinstance(record, dict):
        return [f"{label}: snapshot record is not an object"]
    try:
        snap = RoleSnapshot.from_record(record)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return [f"{label}: malformed snapshot record ({type(exc).__name__}: {exc})"]
    errors = []
    if role is not None and snap.role != role:
        errors.append(f"{label}: records role {snap.role!r}")
    if snap.method not in METHODS:
        errors.append(f"{label}: method {snap.method!r} is not one of {', '.join(METHODS)}")
    if snap.consistency not in CONSISTENCIES:
        errors.append(f"{label}: consistency {snap.consistency!r} is not one of {', '.join(CONSISTENCIES)}")
    elif (snap.consistency == PROVIDER) != (snap.method != VOLUME_SNAPSHOT):
        errors.append(f"{label}: consistency {snap.consistency!r} does not fit method {snap.method!r}")
    if not snap.handle:
        errors.append(f"{label}: no handle")
    if not snap.requested_at <= snap.completed_at:
        errors.append(f"{label}: completed_at {format_time(snap.completed_at)} is before requested_at")
    if snap.completed_mono < snap.requested_mono:
        errors.append(f"{label}: monotonic completion is before the request")
    if snap.consistency == ONLINE:
        errors += _online_errors(label, snap.details)
    return errors


def _online_errors(label: str, details: dict[str, Any]) -> list[str]:
    """An online snapshot restores only with its backup label and the WAL from start to stop."""
    errors = []
    if not isinstance(details.get("backup_label"), str) or "START WAL LOCATION" not in details["backup_label"]:
        errors.append(f"{label}: online snapshot without its backup label")
    wal = details.get("wal")
    if not isinstance(wal, dict) or not wal.get("objects"):
        return [*errors, f"{label}: online snapshot without its WAL objects"]
    for obj in wal["objects"]:
        key = obj.get("key") if isinstance(obj, dict) else None
        if not isinstance(key, str) or key.startswith("/") or ".." in key.split("/"):
            errors.append(f"{label}: bad WAL object key {key!r}")
            continue
        if not isinstance(obj.get("size"), int) or not isinstance(obj.get("segment_size"), int):
            errors.append(f"{label}: WAL object {key} has no size")
        for digest in ("sha256", "segment_sha256"):
            if not re.fullmatch(r"[0-9a-f]{64}", str(obj.get(digest, ""))):
                errors.append(f"{label}: WAL object {key} has a bad {digest}")
        if not re.fullmatch(r"[0-9A-F]{24}", str(obj.get("segment", ""))):
            errors.append(f"{label}: WAL object {key} names no segment")
    return errors


def step_errors(step: Any, set_id: str, migration_id: int, role: str) -> list[str]:
    if not isinstance(step, dict):
        return [f"step {role}: not a JSON object"]
    errors = []
    if step.get("format") != SNAPSHOT_STEP_FORMAT:
        errors.append(f"step {role}: format {step.get('format')!r} is not {SNAPSHOT_STEP_FORMAT}")
    if step.get("set_id") != set_id:
        errors.append(f"step {role}: set id {step.get('set_id')!r} is not {set_id!r}")
    if step.get("migration_id") != migration_id:
        errors.append(f"step {role}: migration id {step.get('migration_id')!r} is not {migration_id}")
    if step.get("role") != role:
        errors.append(f"step {role}: records role {step.get('role')!r}")
    return errors + snapshot_errors(step.get("snapshot"), role)


# ------------------------------------------------------------------------------------------------ ordering


def _strictly_before(done: RoleSnapshot, asked: RoleSnapshot) -> tuple[bool, str]:
    """As rules/manifest.py: the monotonic clocks decide when both readings come from one kernel (same boot id,
    the containers of one pod), because a wall clock can be stepped between two steps; else the wall clocks."""
    if done.boot_id and done.boot_id == asked.boot_id:
        if done.completed_mono >= asked.requested_mono:
            return False, f"monotonic {done.completed_mono:.6f} s is not before {asked.requested_mono:.6f} s"
        return True, ""
    if done.completed_at >= asked.requested_at:
        return False, f"wall clock {format_time(done.completed_at)} is not before {format_time(asked.requested_at)}"
    return True, ""


# (first, then): `first` must be complete before `then` is requested. Splice issue #932: apps before participant;
# on a DABFT node the canton-bft state first, as Splice's backup script takes it.
ORDER_RULES = ((CANTON_BFT, APPS), (CANTON_BFT, PARTICIPANT), (APPS, PARTICIPANT))


def ordering_errors(snapshots: list[RoleSnapshot]) -> list[str]:
    by_role = {s.role: s for s in snapshots}
    errors = []
    for first, then in ORDER_RULES:
        if first in by_role and then in by_role:
            ok, why = _strictly_before(by_role[first], by_role[then])
            if not ok:
                errors.append(
                    f"{first} snapshot completed at {format_time(by_role[first].completed_at)}, not before the "
                    f"{then} snapshot was requested at {format_time(by_role[then].requested_at)}: {why}"
                )
    return errors


def ordering_summary(snapshots: list[RoleSnapshot]) -> dict[str, Any]:
    by_role = {s.role: s for s in snapshots}
    summary: dict[str, Any] = {
        "rule": "every apps (and canton-bft) snapshot complete before the participant snapshot was requested",
        "holds": not ordering_errors(snapshots),
    }
    if APPS in by_role:
        summary["apps_completed_at"] = format_time(by_role[APPS].completed_at)
    if PARTICIPANT in by_role:
        summary["participant_requested_at"] = format_time(by_role[PARTICIPANT].requested_at)
    return summary


# ------------------------------------------------------------------------------------------------ manifest


def build_manifest(
    *,
    set_id: str,
    migration_id: int,
    created_at: datetime,
    code_version: str,
    steps: list[dict[str, Any]],
    serial_id: int | None = None,
) -> dict[str, Any]:
    """The sealed set: one record per role in ROLE_ORDER. `serial_id`: taken under logical synchronizer
    upgrades (as rules/manifest.py v3: the set is filed under its serial, so it equals `migration_id`)."""
    ordered = sorted(steps, key=lambda s: role_sort_key(s["role"]))
    snapshots = [RoleSnapshot.from_record(s["snapshot"]) for s in ordered]
    manifest: dict[str, Any] = {
        "format": SNAPSHOT_SET_FORMAT,
        "kind": KIND,
        "set_id": set_id,
        "complete": True,
        "migration_id": migration_id,
        "created_at": format_time(created_at),
        "code_version": code_version,
        "roles": [s.role for s in snapshots],
        "steps": [step_key(s.role) for s in snapshots],
        "ordering": ordering_summary(snapshots),
        "snapshots": [s.to_record() for s in snapshots],
    }
    if serial_id is not None:
        manifest["serial_id"] = serial_id
    return manifest


def manifest_snapshots(manifest: dict[str, Any]) -> list[RoleSnapshot]:
    """The role records of a manifest that `manifest_errors` accepted."""
    return [RoleSnapshot.from_record(r) for r in manifest["snapshots"]]


def manifest_errors(manifest: Any, set_id: str | None = None) -> list[str]:
    """Everything checkable from the manifest alone (the snapshots are checked through their providers)."""
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    errors = []
    if manifest.get("format") != SNAPSHOT_SET_FORMAT:
        errors.append(f"format {manifest.get('format')!r} is not {SNAPSHOT_SET_FORMAT}")
    if manifest.get("complete") is not True:
        errors.append("manifest is not marked complete")
    if set_id is not None and manifest.get("set_id") != set_id:
        errors.append(f"manifest set id {manifest.get('set_id')!r} is not {set_id!r}")
    for name in ("set_id", "migration_id", "created_at", "code_version", "snapshots"):
        if name not in manifest:
            errors.append(f"manifest has no {name}")
    if errors:
        return errors
    try:
        parse_time(manifest["created_at"])
    except (TypeError, ValueError, AttributeError):
        errors.append(f"created_at {manifest['created_at']!r} is not an RFC 3339 time")
    if not isinstance(manifest["migration_id"], int) or isinstance(manifest["migration_id"], bool):
        errors.append(f"migration id {manifest['migration_id']!r} is not an integer")
    if "serial_id" in manifest and manifest["serial_id"] != manifest["migration_id"]:
        errors.append(f"serial id {manifest['serial_id']!r} is not the id the set is filed under")
    records = manifest["snapshots"]
    if not isinstance(records, list) or not records:
        return [*errors, "manifest lists no snapshots"]
    for record in records:
        errors += snapshot_errors(record)
    if errors:
        return errors
    snapshots = manifest_snapshots(manifest)
    roles = [s.role for s in snapshots]
    if len(roles) != len(set(roles)):
        errors.append(f"a role is listed twice ({', '.join(roles)})")
    return errors + ordering_errors(snapshots)


def set_taken_at(manifest: dict[str, Any]) -> datetime:
    """When the set's oldest data was asked for: what its age (RPO, retention) is measured from."""
    return min(s.requested_at for s in manifest_snapshots(manifest))


def data_taken_by(manifest: dict[str, Any]) -> datetime:
    """When the newest data in the set was cut (the latest `cut_at`): nothing written after it is in the set, so it
    is a set to restore after damage noticed at any later time (list-sets --before)."""
    return max(s.cut_at for s in manifest_snapshots(manifest))


# ------------------------------------------------------------------------------------------------ retention


def kept_sets(
    sets: list[tuple[str, dict[str, Any]]], now: datetime, keep_recent: timedelta, cadence: timedelta | None
) -> set[str]:
    """Prefixes of the complete sets to keep, decided on whole sets by the one `rules.retention.select_kept`:
    every set within `keep_recent`; with a historical `cadence`, older ones per migration id as that tier keeps
    them (forever). Without one, the dump sets carry the historical tier, and only the newest set outlives the
    recent window (a node whose runs stopped keeps its last snapshot set rather than none)."""
    items = [Keepable(key=prefix, taken_at=set_taken_at(m), migration_id=int(m["migration_id"])) for prefix, m in sets]
    if cadence is not None:
        return select_kept(items, now, keep_recent, cadence)
    kept = {i.key for i in items if now - i.taken_at <= keep_recent}
    if items:
        kept.add(max(items, key=lambda i: (i.taken_at, str(i.key))).key)
    return kept


def history_point(tier: str, manifest: dict[str, Any]) -> SetPoint:
    """A snapshot set as the history audit (rules/history.py) sees it: each role's data from request to
    completion. It records no pruning window of its own (`{}`: it bounds no gap, the dump sets' recorded windows
    do), so it counts for freshness without making the audit's windows unknown."""
    roles = {s.role: (s.requested_at, s.completed_at) for s in manifest_snapshots(manifest)}
    return SetPoint(
        tier=tier,
        migration_id=int(manifest["migration_id"]),
        set_id=manifest["set_id"],
        created_at=parse_time(manifest["created_at"]),
        roles=roles,
        windows={},
        serial_id=manifest.get("serial_id"),
    )
