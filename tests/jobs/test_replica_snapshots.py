"""check-replica sees snapshot sets beside dump sets: a snapshot set's manifest, step records and captured WAL
must reach the DR copy like a dump set's manifest, steps and dumps (the snapshots themselves are the providers'
copies, checked when each step is recorded)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from jobs.destinations import open_destination
from jobs.replica import DIFFERS, IN_SYNC, MISSING, CheckOptions, check_sets
from rules.snapshot_sets import ONLINE, build_step, snapshot_set_prefix, step_key
from tests.jobs.replica_helpers import replicate, write_set
from tests.jobs.test_pgsnap_rules import manifest_of, snap

NOW = datetime.now(UTC)


def online_snapshot(role: str, start_min: int, end_min: int, wal: bytes):
    segment = "000000010000000000000003"
    details = {
        "backup_label": "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n",
        "wal": {"objects": [{
            "key": f"wal/{role}/{segment}.zst", "segment": segment, "size": len(wal), "segment_size": 16 << 20,
            "sha256": hashlib.sha256(wal).hexdigest(), "segment_sha256": "0" * 64,
        }]},
    }  # fmt: skip
    return snap(role, start_min, end_min, consistency=ONLINE, details=details)


def write_snapshot_set(dest, set_id: str, wal: bytes) -> str:
    apps, participant = online_snapshot("apps", 1, 2, wal), snap("participant", 3, 4)
    manifest = manifest_of(apps, participant, set_id=set_id, migration_id=1)
    manifest["created_at"] = (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    prefix = snapshot_set_prefix(1, set_id)
    for record in (apps, participant):
        step = build_step(record, set_id=set_id, migration_id=1, code_version="t", host="h")
        dest.put_bytes(f"{prefix}/{step_key(record.role)}", json.dumps(step).encode())
    dest.put_bytes(f"{prefix}/wal/apps/000000010000000000000003.zst", wal)
    dest.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    return prefix


def statuses(src, dst) -> dict[str, str]:
    report = check_sets(src, dst, CheckOptions(max_lag=timedelta(minutes=30), now=lambda: NOW))
    return {r.prefix: r.status for r in report.sets}


def test_snapshot_sets_are_checked_beside_dump_sets(tmp_path):
    src, dst = open_destination(f"file://{tmp_path}/primary"), open_destination(f"file://{tmp_path}/dr")
    dump = write_set(src, "d1", NOW - timedelta(hours=2), migration_id=1)
    snapshot = write_snapshot_set(src, "s1", b"wal bytes of the online backup")
    replicate(src, dst)
    assert statuses(src, dst) == {dump: IN_SYNC, snapshot: MISSING}

    for info in src.list("snapshot-sets/"):
        if not info.key.endswith(".zst"):
            dst.put_bytes(info.key, src.read_bytes(info.key))
    wal_key = f"{snapshot}/wal/apps/000000010000000000000003.zst"
    dst.put_bytes(wal_key, b"wal bytes of the online backuP")  # same size, other bytes
    assert statuses(src, dst)[snapshot] == DIFFERS
    good = tmp_path / "dr-good"
    fresh = open_destination(f"file://{good}")
    replicate(src, fresh)
    for info in src.list("snapshot-sets/"):
        fresh.put_bytes(info.key, src.read_bytes(info.key))
    assert statuses(src, fresh) == {dump: IN_SYNC, snapshot: IN_SYNC}
