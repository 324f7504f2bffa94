"""The restore side of in-cluster snapshot sets: a PVC from a role's VolumeSnapshot (`restore-snapshot-volume`),
and a restored data directory made to start as the online backup it is (`prepare-datadir`: backup label,
tablespace map and the WAL from start to stop, checksums verified). See docs/jobs-snapshots.md, "Restore"."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

from jobs.destinations import Destination
from jobs.kube import KubeClient, KubeError, pvc_path, pvcs_path, volume_snapshots_path
from jobs.pgsnap_volume import ROLE_LABEL, SET_ID_ANNOTATION, SLOT_PREFIX
from jobs.volume_snapshots import status_of
from rules.naming import MANAGED_BY
from rules.snapshot_sets import ONLINE, VOLUME_SNAPSHOT, snapshot_set_prefix


class PrepareError(Exception):
    pass


def _running_postmaster(datadir: Path) -> int | None:
    """The PID of a server running on `datadir`, or None. The snapshot of a running server always holds that
    server's postmaster.pid: stale in the restored copy, which is told apart by the data directory the lock file
    names (a copy mounted elsewhere) or by no live postgres process under that PID (another pod)."""
    lock = datadir / "postmaster.pid"
    if not lock.exists():
        return None
    try:
        lines = lock.read_text().splitlines()
        pid, locked_dir = int(lines[0]), Path(lines[1])
    except (ValueError, IndexError, OSError):
        return None
    try:
        if locked_dir.resolve() != datadir.resolve():
            return None
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm in ("postgres", "postmaster") else None


def _write_owned(path: Path, data: bytes, like: Path) -> None:
    """Write through a temp file, with the owner of `like` (the data directory's), mode 0600."""
    tmp = path.with_name(f".{path.name}.sv-backups-tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    st = like.stat()
    if os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)


def prepare_datadir(
    dest: Destination, manifest: dict[str, Any], *, role: str, datadir: Path, log: Callable[..., Any]
) -> dict[str, Any]:
    """Make a data directory restored from the role's snapshot start as the backup: the backup label (and
    tablespace map) and the WAL from start to stop (checksums verified) written in; a crash-consistent
    snapshot needs nothing. Refuses a directory that is not a PGDATA or that a running server uses."""
    if not (datadir / "PG_VERSION").is_file() or not (datadir / "global" / "pg_control").is_file():
        raise PrepareError(
            f"{datadir} does not look like a PostgreSQL data directory (no PG_VERSION or "
            "global/pg_control): mount the volume restored from the snapshot and name its PGDATA"
        )
    pid = _running_postmaster(datadir)
    if pid is not None:
        raise PrepareError(f"{datadir} is in use by a running server (PID {pid}): prepare it before the server starts")
    records = {r["role"]: r for r in manifest["snapshots"]}
    if role not in records:
        raise PrepareError(f"the set has no {role} snapshot (roles: {', '.join(sorted(records))})")
    record = records[role]
    facts: dict[str, Any] = {"role": role, "consistency": record["consistency"], "datadir": str(datadir)}
    stale = datadir / "postmaster.pid"
    if stale.exists():
        # The running source server's lock file, captured by the snapshot: a base backup must not hold it.
        stale.unlink()
        facts["removed_stale_postmaster_pid"] = True
    # Our WAL slot, persisted in the snapshot: on the restored server it would hold WAL forever.
    for slot in sorted((datadir / "pg_replslot").glob(f"{SLOT_PREFIX}*")):
        shutil.rmtree(slot)
        facts.setdefault("removed_slots", []).append(slot.name)
    if record["consistency"] != ONLINE:
        log("prepare.nothing_to_write", **facts)
        return facts
    details = record["details"]
    owner = datadir / "PG_VERSION"
    label = details["backup_label"].encode()
    existing = datadir / "backup_label"
    if existing.exists() and existing.read_bytes() != label:
        raise PrepareError(f"{existing} exists and is not this backup's label: refusing to overwrite it")
    wal_dir = datadir / "pg_wal"
    prefix = snapshot_set_prefix(manifest["migration_id"], manifest["set_id"])
    written = []
    for obj in details["wal"]["objects"]:
        stored = dest.read_bytes(f"{prefix}/{obj['key']}")
        if hashlib.sha256(stored).hexdigest() != obj["sha256"]:
            raise PrepareError(f"{obj['key']}: sha256 differs from the manifest")
        raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=obj["segment_size"])
        if hashlib.sha256(raw).hexdigest() != obj["segment_sha256"] or len(raw) != obj["segment_size"]:
            raise PrepareError(f"{obj['key']}: the segment's sha256 differs from the manifest")
        _write_owned(wal_dir / obj["segment"], raw, owner)
        written.append(obj["segment"])
    if details.get("tablespace_map"):
        _write_owned(datadir / "tablespace_map", details["tablespace_map"].encode(), owner)
    # The label last: a directory with a label but without its WAL would fail recovery in a confusing way.
    _write_owned(existing, label, owner)
    facts.update(wal_segments=written, stop_lsn=details.get("stop_lsn"))
    log("prepare.written", **facts)
    return facts


def restore_volume(
    client: KubeClient,
    manifest: dict[str, Any],
    *,
    role: str,
    namespace: str,
    pvc: str,
    storage_class: str | None = None,
    replace: bool = False,
    volume: str = "data",
) -> dict[str, Any]:
    """A new PVC from the role's VolumeSnapshot of `volume` (data, or wal where pg_wal has its own volume) as its
    dataSource. An existing PVC is never touched unless `replace` (then it is deleted first: scale the workload
    using it to 0 before, or its deletion waits on the pod)."""
    records = {r["role"]: r for r in manifest["snapshots"]}
    record = records.get(role)
    if record is None or record["method"] != VOLUME_SNAPSHOT:
        raise PrepareError(f"the set has no volume snapshot of {role}")
    snap_ns, _, snap_name = record["handle"].partition("/")
    taken = {v.get("volume"): v for v in record["details"].get("volume_snapshots") or []}
    if volume != "data":
        if volume not in taken:
            raise PrepareError(f"the {role} snapshot has no {volume} volume (volumes: {', '.join(sorted(taken))})")
        snap_name = taken[volume]["name"]
    if snap_ns != namespace:
        raise PrepareError(
            f"the snapshot is in namespace {snap_ns}; a PVC can be restored from it only there (asked for {namespace})"
        )
    snapshot = client.get_optional(volume_snapshots_path(namespace, snap_name))
    if snapshot is None or status_of(snapshot).get("readyToUse") is not True:
        raise PrepareError(f"VolumeSnapshot {record['handle']} is {'gone' if snapshot is None else 'not ready'}")
    existing = client.get_optional(pvc_path(namespace, pvc))
    if existing is not None:
        if not replace:
            raise PrepareError(f"PVC {namespace}/{pvc} exists: not overwriting it (--replace deletes it first)")
        client.delete(pvc_path(namespace, pvc))
    size = status_of(snapshot).get("restoreSize") or next(
        (v.get("restore_size") for v in taken.values() if v.get("name") == snap_name and v.get("restore_size")), None
    )
    if not size:
        raise PrepareError(f"VolumeSnapshot {record['handle']} reports no restoreSize")
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
        "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap_name},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": pvc,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {SET_ID_ANNOTATION: manifest["set_id"], ROLE_LABEL: role},
        },
        "spec": spec,
    }
    try:
        client.create(pvcs_path(namespace), body)
    except KubeError as error:
        if error.conflict and existing is not None:
            raise PrepareError(
                f"PVC {namespace}/{pvc} is still being deleted (a pod still mounts it?): scale its workload to 0 and "
                "run again with --replace"
            ) from None
        raise
    return {"pvc": f"{namespace}/{pvc}", "from": record["handle"], "size": size, "replaced": existing is not None}
