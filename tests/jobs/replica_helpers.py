"""Helpers for the replication tests: complete sets written through the real stores and manifest code, and
replication simulated the way S3 CRR / a transfer job does it (object by object, any order, same bytes)."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta

from jobs.destinations import Destination
from jobs.pgsets import to_json
from rules.history import history_record
from rules.manifest import (
    STEP_FORMAT,
    build_manifest,
    format_time,
    manifest_errors,
    set_prefix,
    step_key,
    windows_record,
)

ROLES = (("apps", "cantonnet_sv"), ("participant", "participant_0"))


def write_set(
    dest: Destination,
    set_id: str,
    created_at: datetime,
    *,
    tier: str = "recent",
    migration_id: int = 0,
    dump_size: int = 48 * 1024,
    sequencer_pruning: timedelta | None = None,
    roles: tuple[tuple[str, str], ...] = ROLES,
) -> str:
    """A complete set (dumps, step records, manifest last) whose manifest passes every check; returns its prefix.
    `roles`: (role, database) in backup order (a DABFT node's canton-bft first)."""
    prefix = set_prefix(tier, migration_id, set_id)
    moment = created_at - timedelta(minutes=10)
    steps = []
    for role, database in roles:
        data = random.Random(f"{set_id}/{role}").randbytes(dump_size)
        key = f"data/{role}/{database}.0a1b2c3d.pgdump.zst"
        dest.put_bytes(f"{prefix}/{key}", data)
        times = [format_time(moment + timedelta(seconds=s)) for s in (0, 1, 2)]
        moment += timedelta(seconds=3)
        record = {
            "role": role,
            "database": database,
            "server_version": "15.18",
            "snapshot_requested_at": times[0],
            "snapshot_acquired_at": times[1],
            "finished_at": times[2],
            "wal_lsn": "0/1A2B3C4",
            "objects": [{"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
        }
        step = {
            "format": STEP_FORMAT,
            "set_id": set_id,
            "migration_id": migration_id,
            "role": role,
            "databases": [record],
        }
        dest.put_bytes(f"{prefix}/{step_key(role)}", to_json(step))
        steps.append(step)
    manifest = build_manifest(
        set_id=set_id,
        migration_id=migration_id,
        tier=tier,
        created_at=created_at,
        code_version="test",
        steps=steps,
        windows=windows_record(None, sequencer_pruning, timedelta(days=14)),
        history=history_record([], exclude=set_id),
    )
    assert not manifest_errors(manifest, set_id)
    dest.put_bytes(f"{prefix}/manifest.json", to_json(manifest))
    return prefix


def replicate(src: Destination, dst: Destination, *, skip: tuple[str, ...] = (), under: str = "") -> list[str]:
    """Copy every object of `src` (under `under`) to `dst`, manifests first (replication keeps no order);
    keys ending with any of `skip` are left out. Returns the keys copied."""
    keys = [info.key for tier in ("recent/", "historical/") for info in src.list(tier) if info.key.startswith(under)]
    keys.sort(key=lambda k: (not k.endswith("manifest.json"), k))
    copied = []
    for key in keys:
        if key.endswith(skip) and skip:
            continue
        dst.put_bytes(key, src.read_bytes(key))
        copied.append(key)
    return copied


def corrupt(dst: Destination, key: str, src: Destination) -> None:
    """Replace `key` in `dst` by the source's bytes with one byte flipped: same size, other content. Stores are
    create-only, so the test writes the corrupted object where replication would have written the good one."""
    data = bytearray(src.read_bytes(key))
    data[len(data) // 2] ^= 0xFF
    dst.put_bytes(key, bytes(data))
