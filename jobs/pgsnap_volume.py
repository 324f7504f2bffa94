"""The in-cluster snapshot provider: a CSI VolumeSnapshot of an instance's data volume (and WAL volume), made an
online backup where the server allows. Its DR copies and locks on EBS are jobs/pgsnap_ebs.py; the restore side
(a PVC from the snapshot; a data directory prepared with the backup label and the WAL) is jobs/pgsnap_restore.py.

Consistency (PostgreSQL 15+, "Making a Base Backup Using the Low Level API"):
- One volume holding the data directory and pg_wal, snapshotted atomically, is crash-consistent by itself: a
  server started on it recovers as after a power loss. A `CHECKPOINT` first keeps that recovery short.
- `--online`, in ONE session: `CHECKPOINT`; a physical replication slot reserving WAL from now on;
  `pg_backup_start(label, fast => true)`; the snapshot(s); `pg_backup_stop(wait_for_archive => false)`, whose
  label file (and tablespace map) is kept in the step record. The backup ends with the WAL record that
  `pg_backup_stop` writes, which no snapshot taken before the stop holds, so the WAL from start to stop is
  streamed through the slot with `pg_receivewal --slot S --endpos STOP --no-loop` and kept in the store
  (zstd, sha256 of object and segment, create-only) under the set's `wal/<role>/`. Restored with the label and
  that WAL (`prepare-datadir`), the server replays to the end of the backup: consistent, as of the stop.
- The slot is a persistent one, dropped when the step ends. A *temporary* slot (the first design) cannot work:
  it stays acquired by the session that created it, so `pg_receivewal` gets "replication slot ... is active for
  PID ...". A slot left by a killed run is dropped by the next run (`sv_backups_` slots not in use), so it holds
  WAL for one schedule interval at most.
- WAL on its own volume (`--wal-pvc`): two snapshots are never taken at one instant, so only an online backup
  (whose label and WAL do not depend on when each snapshot was cut) makes them consistent. Without one
  possible, the step is refused. On a single volume, when the online backup is not possible (no privilege, an
  older server, `wal_level = minimal`, no replication connection) or fails after the snapshot was taken, the
  snapshot is still crash-consistent and is recorded so, with the reason.

Ordering: the role's data as restored is as of the stop (online) or the snapshot (crash-consistent), both before
`completed_at`, which is read only after both. So "apps completed before participant requested" (the set's
rule) bounds the data as it must.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg
import zstandard

from jobs.destinations import Destination, DestinationError
from jobs.kube import (
    KubeClient,
    KubeError,
    volume_snapshot_content_path,
    volume_snapshots_path,
)
from jobs.pgdump import boot_id, client_binary, connect, redact
from jobs.pgsnap_ebs import EbsDrCopies
from jobs.snapshot_providers import SnapshotError, Taken
from jobs.volume_snapshots import (
    MIGRATION_ID_LABEL,
    SET_ID_LABEL,
    TAKEN_AT_LABEL,
    VolumeSnapshotFailure,
    check_pvc_bound,
    label_value,
    remove,
    status_of,
    wait_ready,
)
from rules.manifest import Clock, format_time, parse_time, utc_now
from rules.naming import LABEL_PREFIX, MANAGED_BY
from rules.snapshot_sets import (
    CRASH_CONSISTENT,
    ONLINE,
    VOLUME_SNAPSHOT,
    RoleSnapshot,
    snapshot_set_prefix,
    wal_prefix,
)

ROLE_LABEL = f"{LABEL_PREFIX}/role"
VOLUME_LABEL = f"{LABEL_PREFIX}/volume"  # data | wal
# Tells the Postgres snapshots apart from the CometBFT ones (same namespace, same labels otherwise).
BACKUP_LABEL = f"{LABEL_PREFIX}/backup"
BACKUP_VALUE = "postgres-snapshot"
SET_ID_ANNOTATION = f"{LABEL_PREFIX}/set-id-full"  # a set id may not fit a label value
PVC_ANNOTATION = f"{LABEL_PREFIX}/pvc"
SLOT_PREFIX = "sv_backups_"
MIN_ONLINE_VERSION = 150000  # pg_backup_start/stop; pg_receivewal starts at the slot's restart_lsn
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_K8S_NAME = re.compile(r"[^a-z0-9-]+")


class OnlineNotPossible(Exception):
    """The server or the user cannot make an online backup (the message says what is missing)."""


def _now(clock: Clock) -> tuple[datetime, float]:
    mono = time.monotonic()  # monotonic first: the wall reading never precedes the one it is paired with
    return clock(), mono


# ------------------------------------------------------------------------------------------ the snapshots


@dataclass
class Cut:
    """What a snapshotter took for one role: the handle the manifest records, the time the data was cut and
    the provider's own times and facts."""

    handle: str
    cut_at: datetime
    provider_times: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Snapshotter(Protocol):
    """Takes the volume snapshot(s) of one role. The VolumeSnapshot one below; the tests' copy of a data
    directory stands in for it against real PostgreSQL."""

    def snapshot(self, *, role: str, set_id: str, migration_id: int) -> Cut:
        """On failure: remove what this call created, raise SnapshotError."""
        ...

    def discard(self, cut: Cut) -> None: ...

    def list_taken(self) -> list[Taken]: ...

    def delete(self, handle: str) -> None: ...


@dataclass
class KubeOptions:
    namespace: str
    pvc: str
    snapshot_class: str
    wal_pvc: str | None = None
    ready_timeout: timedelta = timedelta(minutes=30)
    error_grace: timedelta = timedelta(minutes=2)
    poll_interval: float = 5.0


def snapshot_name(set_id: str, role: str, volume: str, attempt: str) -> str:
    """A DNS-1123 name unique per attempt (a retried step never meets its failed attempt's snapshot)."""
    base = _K8S_NAME.sub("-", set_id.lower()).strip("-")[:200] or "set"
    return f"pg-{role}-{base}-{volume}-{attempt}"[:253].strip("-")


class KubeVolumeSnapshotter:
    def __init__(
        self,
        client: KubeClient,
        options: KubeOptions,
        log: Callable[..., Any],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.options = options
        self.log = log
        self.clock = clock
        self.sleep = sleep

    def _volumes(self) -> list[tuple[str, str]]:
        o = self.options
        return [("data", o.pvc)] + ([("wal", o.wal_pvc)] if o.wal_pvc else [])

    def check(self) -> None:
        for _, pvc in self._volumes():
            try:
                check_pvc_bound(self.client, self.options.namespace, pvc)
            except VolumeSnapshotFailure as error:
                raise SnapshotError("pvc", str(error)) from None

    def snapshot(self, *, role: str, set_id: str, migration_id: int) -> Cut:
        o = self.options
        self.check()
        attempt = secrets.token_hex(3)
        taken_at = int(self.clock())
        created: list[str] = []
        records = []
        try:
            for volume, pvc in self._volumes():
                name = snapshot_name(set_id, role, volume, attempt)
                body = {
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "metadata": {
                        "name": name,
                        "namespace": o.namespace,
                        "labels": {
                            SET_ID_LABEL: label_value(set_id),
                            MIGRATION_ID_LABEL: str(migration_id),
                            TAKEN_AT_LABEL: str(taken_at),
                            ROLE_LABEL: role,
                            VOLUME_LABEL: volume,
                            BACKUP_LABEL: BACKUP_VALUE,
                            **MANAGED_BY,
                        },
                        "annotations": {SET_ID_ANNOTATION: set_id, PVC_ANNOTATION: pvc},
                    },
                    "spec": {"volumeSnapshotClassName": o.snapshot_class, "source": {"persistentVolumeClaimName": pvc}},
                }
                try:
                    self.client.create(volume_snapshots_path(o.namespace), body)
                except KubeError as error:
                    raise SnapshotError("request", f"creating VolumeSnapshot {o.namespace}/{name}: {error}") from None
                created.append(name)
                self.log("snapshot.requested", snapshot=f"{o.namespace}/{name}", pvc=pvc, role=role)
            # All requested first (closest together in time), then waited for.
            for (volume, pvc), name in zip(self._volumes(), created, strict=True):
                try:
                    ready = wait_ready(
                        self.client,
                        o.namespace,
                        name,
                        ready_timeout=o.ready_timeout,
                        error_grace=o.error_grace,
                        poll_interval=o.poll_interval,
                        clock=self.clock,
                        sleep=self.sleep,
                    )
                except VolumeSnapshotFailure as error:
                    raise SnapshotError("wait", str(error)) from None
                records.append(self._record(ready, volume, pvc))
        except BaseException:
            for name in created:
                self._discard_name(name)
            raise
        data = records[0]
        return Cut(
            handle=f"{o.namespace}/{created[0]}",
            cut_at=parse_time(data["creation_time"]) if data.get("creation_time") else utc_now(),
            provider_times={"creationTime": data.get("creation_time") or ""},
            details={"namespace": o.namespace, "volume_snapshots": records, "snapshot_class": o.snapshot_class},
        )

    def _record(self, snapshot: dict[str, Any], volume: str, pvc: str) -> dict[str, Any]:
        status = status_of(snapshot)
        content_name = status.get("boundVolumeSnapshotContentName")
        handle = None
        if content_name:
            content = self.client.get_optional(volume_snapshot_content_path(content_name)) or {}
            handle = status_of(content).get("snapshotHandle")
        return {
            "volume": volume,
            "pvc": pvc,
            "name": snapshot["metadata"]["name"],
            "content": content_name,
            "snapshot_handle": handle,
            "restore_size": status.get("restoreSize"),
            "creation_time": status.get("creationTime"),
        }

    def _discard_name(self, name: str) -> None:
        """Best effort after a failure: the failure is what gets reported, not a cleanup error."""
        try:
            remove(self.client, self.options.namespace, name)
            self.log("snapshot.discarded", snapshot=f"{self.options.namespace}/{name}")
        except Exception as error:
            self.log("snapshot.discard_failed", snapshot=name, error=f"{type(error).__name__}: {error}")

    def discard(self, cut: Cut) -> None:
        for record in cut.details.get("volume_snapshots", []):
            self._discard_name(record["name"])

    def list_taken(self) -> list[Taken]:
        try:
            items = self.client.list(
                volume_snapshots_path(self.options.namespace), {BACKUP_LABEL: BACKUP_VALUE, **MANAGED_BY}
            )
        except KubeError as error:
            raise SnapshotError("list", str(error)) from None
        taken = []
        for item in items:
            meta = item.get("metadata") or {}
            labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
            try:
                taken.append(
                    Taken(
                        handle=f"{self.options.namespace}/{meta['name']}",
                        set_id=notes.get(SET_ID_ANNOTATION) or labels[SET_ID_LABEL],
                        role=labels[ROLE_LABEL],
                        migration_id=int(labels[MIGRATION_ID_LABEL]),
                        taken_at=datetime.fromtimestamp(int(labels[TAKEN_AT_LABEL]), tz=UTC),
                        ready=status_of(item).get("readyToUse") is True,
                    )
                )
            except (KeyError, ValueError, TypeError, OverflowError):
                continue  # not shaped like ours: never ours to judge
        return taken

    def siblings(self, handle: str) -> list[str]:
        """The role's snapshot and those taken with it of its other volumes (same set id, role, attempt)."""
        namespace, _, name = handle.partition("/")
        try:
            snapshot = self.client.get_optional(volume_snapshots_path(namespace, name))
            names = [name]
            if snapshot is not None:
                labels = snapshot["metadata"].get("labels") or {}
                if labels.get(SET_ID_LABEL) and labels.get(ROLE_LABEL):
                    selector = {
                        SET_ID_LABEL: labels[SET_ID_LABEL],
                        ROLE_LABEL: labels[ROLE_LABEL],
                        BACKUP_LABEL: BACKUP_VALUE,
                    }
                    attempt = "-" + name.rsplit("-", 1)[-1]
                    listed = self.client.list(volume_snapshots_path(namespace), selector)
                    names += [
                        other["metadata"]["name"]
                        for other in listed
                        if other["metadata"]["name"] != name and other["metadata"]["name"].endswith(attempt)
                    ]
        except KubeError as error:
            raise SnapshotError("delete", f"reading VolumeSnapshot {handle}: {error}") from None
        return [f"{namespace}/{n}" for n in names]

    def disk_handles(self, handles: list[str]) -> list[str]:
        """The disk snapshots (VolumeSnapshotContent `snapshotHandle`) behind VolumeSnapshots namespace/name."""
        found = []
        for each in handles:
            namespace, _, name = each.partition("/")
            try:
                snapshot = self.client.get_optional(volume_snapshots_path(namespace, name)) or {}
                content = status_of(snapshot).get("boundVolumeSnapshotContentName")
                bound = self.client.get_optional(volume_snapshot_content_path(content)) if content else None
            except KubeError as error:
                raise SnapshotError("delete", f"reading VolumeSnapshot {each}: {error}") from None
            if bound and status_of(bound).get("snapshotHandle"):
                found.append(status_of(bound)["snapshotHandle"])
        return found

    def delete(self, handle: str) -> None:
        """The role's snapshot and its WAL-volume sibling."""
        try:
            for each in self.siblings(handle):
                namespace, _, name = each.partition("/")
                remove(self.client, namespace, name)
        except KubeError as error:
            raise SnapshotError("delete", f"deleting VolumeSnapshot {handle}: {error}") from None

    def exists_ready(self, handle: str) -> bool | None:
        """True ready, False present but not ready, None gone (verify-set --deep)."""
        namespace, _, name = handle.partition("/")
        try:
            snapshot = self.client.get_optional(volume_snapshots_path(namespace, name))
        except KubeError as error:
            raise SnapshotError("read", str(error)) from None
        return None if snapshot is None else status_of(snapshot).get("readyToUse") is True


# --------------------------------------------------------------------------------------- the online backup


@dataclass
class BackupStop:
    start_lsn: str
    stop_lsn: str
    label_file: str
    tablespace_map: str
    stopped_at: datetime


class OnlineBackup:
    """One session: slot, pg_backup_start, (the snapshots), pg_backup_stop; then the WAL through the slot."""

    def __init__(
        self, dsn: str, *, label: str, log: Callable[..., Any], pg_bin: Path | None = None, clock: Clock = utc_now
    ):
        self.dsn = dsn
        self.label = label
        self.log = log
        self.pg_bin = pg_bin
        self.clock = clock
        self.conn: psycopg.Connection | None = None
        self.slot = SLOT_PREFIX + hashlib.sha256(f"{label}:{secrets.token_hex(4)}".encode()).hexdigest()[:24]
        self.slot_created = False
        self.start_lsn: str | None = None
        self.server_major = 0

    def start(self) -> str:
        try:
            self.conn = connect(self.dsn, autocommit=True)
        except psycopg.Error as error:
            raise OnlineNotPossible(f"cannot connect to {redact(self.dsn)}: {error}".strip()) from None
        conn = self.conn
        version = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
        self.server_major = version // 10000
        if version < MIN_ONLINE_VERSION:
            raise OnlineNotPossible(f"server version {version} is older than PostgreSQL 15 (pg_backup_start)")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            self.log("online.no_checkpoint", reason="CHECKPOINT needs pg_checkpoint; pg_backup_start checkpoints")
        try:
            self._drop_stale_slots()
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true, false)", (self.slot,))
            self.slot_created = True
            row = conn.execute("SELECT pg_backup_start(%s, fast => true)::text", (self.label,)).fetchone()
        except (
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.ObjectNotInPrerequisiteState,
            psycopg.errors.UndefinedFunction,
            psycopg.errors.ConfigurationLimitExceeded,
        ) as error:
            raise OnlineNotPossible(f"{type(error).__name__}: {str(error).strip()}") from None
        self.start_lsn = row[0]
        self.log("online.started", start_lsn=self.start_lsn, slot=self.slot)
        return self.start_lsn

    def _drop_stale_slots(self) -> None:
        """Slots of killed runs (ours by name, not in use): they would hold WAL on the server forever."""
        rows = self.conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT active "
            "AND starts_with(slot_name, %s)",
            (SLOT_PREFIX,),
        ).fetchall()
        for (name,) in rows:
            self.conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            self.log("online.stale_slot_dropped", slot=name)

    def stop(self) -> BackupStop:
        lsn, label_file, spcmap = self.conn.execute(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)"
        ).fetchone()
        stopped = self.clock()
        self.log("online.stopped", stop_lsn=lsn)
        return BackupStop(self.start_lsn or "", lsn, label_file, spcmap or "", stopped)

    def capture_wal(self, stop_lsn: str, directory: Path) -> list[Path]:
        """The WAL from the slot's start to `stop_lsn`: whole segments (pg_receivewal pads the last, `.partial`,
        one to full size)."""
        binary = client_binary("pg_receivewal", self.server_major, override=self.pg_bin)
        result = subprocess.run(
            [
                binary,
                "-d",
                self.dsn,
                "--slot",
                self.slot,
                "--endpos",
                stop_lsn,
                "-D",
                str(directory),
                "--no-loop",
                "--no-password",
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if result.returncode != 0:
            raise SnapshotError("wal", f"pg_receivewal failed ({result.returncode}): {result.stderr.strip()[-500:]}")
        return sorted(p for p in directory.iterdir() if p.is_file())

    def close(self) -> None:
        """Drop the slot and end the session (ending it also aborts a backup still in progress)."""
        if self.conn is None:
            return
        try:
            if self.slot_created and not self.conn.closed:
                self.conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        except psycopg.Error as error:
            self.log("online.slot_drop_failed", slot=self.slot, error=str(error).strip())
        finally:
            self.conn.close()
            self.conn = None


def upload_wal(dest: Destination, prefix: str, files: list[Path]) -> list[dict[str, Any]]:
    """Each segment zstd-compressed, create-only, with the sha256 of the stored object and of the segment."""
    objects = []
    for path in files:
        segment = path.name.removesuffix(".partial")
        if not SEGMENT.match(segment):
            continue  # pg_receivewal's own bookkeeping, not a segment
        raw = path.read_bytes()
        stored = zstandard.ZstdCompressor(level=3).compress(raw)
        key = f"{prefix}/{segment}.zst"
        dest.put_bytes(key, stored)
        objects.append(
            {
                "key": key,
                "segment": segment,
                "size": len(stored),
                "segment_size": len(raw),
                "sha256": hashlib.sha256(stored).hexdigest(),
                "segment_sha256": hashlib.sha256(raw).hexdigest(),
                "partial": path.name.endswith(".partial"),
            }
        )
    return objects


# ----------------------------------------------------------------------------------------------- provider


class VolumeSnapshotProvider:
    """SnapshotProvider (jobs/snapshot_providers.py) for in-cluster instances."""

    method = VOLUME_SNAPSHOT

    def __init__(
        self,
        snapshotter: Snapshotter,
        log: Callable[..., Any],
        *,
        dest: Destination | None = None,
        online_dsn: str | None = None,
        wal_separate: bool = False,
        pg_bin: Path | None = None,
        clock: Clock = utc_now,
        dr_copies: EbsDrCopies | None = None,
    ):
        self.dr_copies = dr_copies
        self.snapshotter = snapshotter
        self.log = log
        self.dest = dest
        self.online_dsn = online_dsn
        self.wal_separate = wal_separate
        self.pg_bin = pg_bin
        self.clock = clock

    def take(self, *, role: str, set_id: str, migration_id: int) -> RoleSnapshot:
        if self.wal_separate and not self.online_dsn:
            raise SnapshotError("config", WAL_VOLUME_REFUSED)
        requested_at, requested_mono = _now(self.clock)
        backup: OnlineBackup | None = None
        reason = None if self.online_dsn else "no online backup asked for (--online)"
        if self.online_dsn:
            backup = OnlineBackup(
                self.online_dsn, label=f"sv-backups {set_id} {role}", log=self.log, pg_bin=self.pg_bin, clock=self.clock
            )
            try:
                backup.start()
            except OnlineNotPossible as error:
                backup.close()
                backup = None
                if self.wal_separate:
                    raise SnapshotError(
                        "online", f"{WAL_VOLUME_REFUSED}; the online backup is not possible: {error}"
                    ) from None
                reason = f"online backup not possible: {error}"
                self.log("online.fallback", role=role, reason=reason)
            except BaseException:
                backup.close()
                raise
        try:
            cut = self.snapshotter.snapshot(role=role, set_id=set_id, migration_id=migration_id)
        except BaseException:
            if backup:
                backup.close()
            raise
        details = dict(cut.details)
        consistency, cut_at = CRASH_CONSISTENT, cut.cut_at
        try:
            if backup:
                try:
                    details.update(self._finish_online(backup, role, set_id, migration_id))
                    consistency, cut_at = ONLINE, parse_time(details["backup_stopped_at"])
                except ONLINE_FAULTS as error:  # not SIGTERM's unwinding: that fails the step
                    if self.wal_separate:
                        raise SnapshotError("online", f"online backup failed after the snapshots: {error}") from None
                    reason = f"online backup failed after the snapshot: {type(error).__name__}: {error}"
                    self.log("online.fallback", role=role, reason=reason)
        except BaseException:
            self.snapshotter.discard(cut)
            raise
        finally:
            if backup:
                backup.close()
        if consistency != ONLINE:
            details["consistency_reason"] = reason
        dr_copy = None
        if self.dr_copies is not None:
            try:
                dr_copy = self.dr_copies.copy(
                    cut.details["volume_snapshots"], namespace=cut.details["namespace"], set_id=set_id,
                    migration_id=migration_id, taken_at=cut.cut_at,
                )  # fmt: skip
            except BaseException:
                self.snapshotter.discard(cut)
                raise
        completed_at, completed_mono = _now(self.clock)
        return RoleSnapshot(
            role=role,
            method=self.method,
            handle=cut.handle,
            consistency=consistency,
            requested_at=requested_at,
            cut_at=cut_at,
            completed_at=completed_at,
            requested_mono=requested_mono,
            completed_mono=completed_mono,
            boot_id=boot_id() or "",
            provider_times=dict(cut.provider_times),
            details=details,
            dr_copy=dr_copy,
        )

    def _finish_online(self, backup: OnlineBackup, role: str, set_id: str, migration_id: int) -> dict[str, Any]:
        stop = backup.stop()
        if self.dest is None:
            raise SnapshotError("wal", "no store to keep the WAL in")
        with tempfile.TemporaryDirectory(prefix="pgsnap-wal-") as tmp:
            files = backup.capture_wal(stop.stop_lsn, Path(tmp))
            prefix = f"{snapshot_set_prefix(migration_id, set_id)}/{wal_prefix(role)}/{secrets.token_hex(4)}"
            objects = upload_wal(self.dest, prefix, files)
        if not objects:
            raise SnapshotError("wal", f"pg_receivewal wrote no WAL segment up to {stop.stop_lsn}")
        # Keys relative to the set's prefix, as the dump sets' objects are.
        set_prefix = snapshot_set_prefix(migration_id, set_id) + "/"
        for obj in objects:
            obj["key"] = obj["key"].removeprefix(set_prefix)
        return {
            "backup_label": stop.label_file,
            "tablespace_map": stop.tablespace_map,
            "start_lsn": stop.start_lsn,
            "stop_lsn": stop.stop_lsn,
            "backup_stopped_at": format_time(stop.stopped_at),
            "wal": {"compression": "zstd", "slot": backup.slot, "objects": objects},
        }

    def list_taken(self) -> list[Taken]:
        return self.snapshotter.list_taken()

    def delete(self, handle: str) -> None:
        """The snapshot (and its WAL-volume sibling), then their DR copies: a copy never outlives its set's
        record of having been pruned."""
        siblings = self.snapshotter.siblings(handle) if self.dr_copies is not None else []
        if self.dr_copies is not None and self.dr_copies.lock_for is not None:
            # A locked EBS snapshot: the CSI driver's DeleteSnapshot would fail behind a deleted VolumeSnapshot, out
            # of sight; refuse here, before anything is touched, so the pruner reports and keeps it.
            until = self.dr_copies.locked_until(self.snapshotter.disk_handles(siblings), siblings)
            if until is not None:
                raise SnapshotError("delete", f"{handle} is locked (EBS Snapshot Lock) until {format_time(until)}")
        self.snapshotter.delete(handle)
        for each in siblings:
            self.dr_copies.delete_for(each)

    def exists_ready(self, handle: str) -> bool | None:
        return self.snapshotter.exists_ready(handle)


# What can go wrong in the online part after the snapshot (the server, pg_receivewal, the store): on a single
# volume the snapshot is still crash-consistent and is kept as such.
ONLINE_FAULTS = (psycopg.Error, SnapshotError, OSError, subprocess.SubprocessError, DestinationError, ValueError)

WAL_VOLUME_REFUSED = (
    "pg_wal is on its own volume (--wal-pvc): the data and WAL snapshots are not taken at one instant, so "
    "together they are not even crash-consistent; only an online backup (--online --pg DSN: backup label and "
    "the WAL from start to stop) makes them restorable. Refusing to take an unrestorable snapshot"
)
