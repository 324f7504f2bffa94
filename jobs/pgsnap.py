"""Snapshot sets: the per-role step, the seal, listing, verification and pruning, for every provider alike.

The providers (jobs/snapshot_providers.py: in-cluster volumes, Cloud SQL, RDS) take and delete snapshots; this
module orders them into sets and keeps the records, as jobs/pgsets.py does for dump sets:

- a step asks its provider for the role's snapshot and, once the provider reports it complete, writes
  `snapshot-sets/<migration id>/<set id>/steps/<role>.json` create-only: the step is done when it exists;
- the seal reads the expected steps, checks each and the ordering rule (rules/snapshot_sets.py) and writes
  `manifest.json` last. A missing or invalid step, or a broken order, leaves no manifest: the set does not exist;
- the pruner keeps whole sets by `rules.retention.select_kept` (rules/snapshot_sets.kept_sets), deletes the
  snapshots of the others through the provider their manifest names, and records each deletion as
  `pruned/<role>.json`; it also removes the snapshots of runs that never sealed (leftovers), after a grace.
Nothing in the store is overwritten or deleted; the manifests outlive their snapshots.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobs import __version__
from jobs.destinations import Destination, ObjectExists
from jobs.snapshot_providers import SnapshotError, SnapshotProvider, Taken
from rules.manifest import Clock, SetError, format_time, parse_time, role_sort_key, utc_now
from rules.snapshot_sets import (
    MANIFEST,
    SNAPSHOT_SETS,
    RoleSnapshot,
    build_manifest,
    build_step,
    kept_sets,
    manifest_errors,
    manifest_snapshots,
    pruned_key,
    set_taken_at,
    snapshot_set_prefix,
    step_errors,
    step_key,
)


def log(message: str) -> None:
    """Progress for humans on stderr; stdout carries only the JSON outcome events."""
    print(message, file=sys.stderr, flush=True)


def to_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def read_json(dest: Destination, key: str) -> dict[str, Any] | None:
    """The object parsed, or None when absent or unreadable."""
    try:
        value = json.loads(dest.read_bytes(key))
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------- step


def run_step(
    dest: Destination, provider: SnapshotProvider, *, role: str, set_id: str, migration_id: int
) -> dict[str, Any]:
    """Take the role's snapshot and record the step. A step already recorded (a container retried after its
    success) is returned untouched, nothing taken. A provider failure raises SnapshotError and records nothing."""
    prefix = snapshot_set_prefix(migration_id, set_id)
    existing = read_json(dest, f"{prefix}/{step_key(role)}")
    if existing is not None:
        log(f"step {role} of snapshot set {set_id} is already recorded; nothing to do")
        return existing
    snapshot = provider.take(role=role, set_id=set_id, migration_id=migration_id)
    step = build_step(
        snapshot, set_id=set_id, migration_id=migration_id, code_version=__version__, host=socket.gethostname()
    )
    errors = step_errors(step, set_id, migration_id, role)
    if errors:  # a provider bug; the snapshot stays a leftover the pruner removes
        raise SetError("; ".join(errors))
    dest.put_bytes(f"{prefix}/{step_key(role)}", to_json(step))
    return step


# ---------------------------------------------------------------------------------------------- seal


def seal(
    dest: Destination,
    *,
    set_id: str,
    migration_id: int,
    roles: list[str],
    serial_id: int | None = None,
    now: Clock = utc_now,
) -> dict[str, Any]:
    """Check the steps of `roles` and the ordering rule; write the manifest last. Raises SetError (nothing
    written) when a step is missing or invalid or the order is broken. A set sealed before is returned as is."""
    if serial_id is not None and serial_id != migration_id:
        raise SetError(f"serial id {serial_id} is not the id the set is filed under ({migration_id})")
    if not roles:
        raise SetError("no roles given: a set needs at least one")
    prefix = snapshot_set_prefix(migration_id, set_id)
    existing = read_json(dest, f"{prefix}/{MANIFEST}")
    if existing is not None and not manifest_errors(existing, set_id):
        log(f"snapshot set {set_id} is already sealed")
        return existing
    steps, errors = [], []
    for role in sorted(roles, key=role_sort_key):
        step = read_json(dest, f"{prefix}/{step_key(role)}")
        if step is None:
            errors.append(f"role {role}: no completed step (steps/{role}.json is missing)")
            continue
        step_problems = step_errors(step, set_id, migration_id, role)
        errors += step_problems
        if not step_problems:
            steps.append(step)
    if errors:
        raise SetError("refusing to seal snapshot set " + set_id + ": " + "; ".join(errors))
    manifest = build_manifest(
        set_id=set_id,
        migration_id=migration_id,
        created_at=now(),
        code_version=__version__,
        steps=steps,
        serial_id=serial_id,
    )
    errors = manifest_errors(manifest, set_id) + wal_errors(dest, prefix, manifest, deep=False)
    if errors:
        raise SetError("refusing to seal snapshot set " + set_id + ": " + "; ".join(errors))
    dest.put_bytes(f"{prefix}/{MANIFEST}", to_json(manifest))
    return manifest


# ----------------------------------------------------------------------------------------- listing

MANIFEST_READERS = 8


def complete_snapshot_sets(dest: Destination, migration_id: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(set prefix, manifest) of every complete snapshot set, newest first; sets without a valid manifest are
    skipped (they do not exist)."""
    base = f"{SNAPSHOT_SETS}/" if migration_id is None else f"{SNAPSHOT_SETS}/{migration_id}/"
    keys = [
        info.key for info in dest.list(base) if len(info.key.split("/")) == 4 and info.key.split("/")[3] == MANIFEST
    ]
    with ThreadPoolExecutor(max_workers=MANIFEST_READERS) as pool:
        manifests = list(pool.map(lambda key: read_json(dest, key), keys))
    found = []
    for key, manifest in zip(keys, manifests, strict=True):
        parts = key.split("/")
        if manifest is None or manifest_errors(manifest, parts[2]):
            continue
        found.append(("/".join(parts[:3]), manifest))
    found.sort(key=lambda item: (parse_time(item[1]["created_at"]), item[0]), reverse=True)
    return found


def is_snapshot_prefix(prefix: str) -> bool:
    return prefix.split("/", 1)[0] == SNAPSHOT_SETS


# ------------------------------------------------------------------------------------------ verify


def wal_errors(dest: Destination, prefix: str, manifest: dict[str, Any], deep: bool) -> list[str]:
    """The online backups' WAL objects present with their sizes; with `deep`, their sha256 recomputed."""
    import hashlib

    errors = []
    for record in manifest["snapshots"]:
        for obj in ((record.get("details") or {}).get("wal") or {}).get("objects") or []:
            key = f"{prefix}/{obj['key']}"
            size = dest.size(key)
            if size is None:
                errors.append(f"{record['role']}: WAL object {obj['key']} is missing")
            elif size != obj["size"]:
                errors.append(f"{record['role']}: WAL object {obj['key']} has {size} bytes, expected {obj['size']}")
            elif deep and hashlib.sha256(dest.read_bytes(key)).hexdigest() != obj["sha256"]:
                errors.append(f"{record['role']}: WAL object {obj['key']} sha256 differs from the manifest")
    return errors


def verify_snapshot_set(
    dest: Destination, prefix: str, providers: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Manifest valid, ordering holds, WAL objects intact; with `providers` (method -> provider), each role's
    snapshot still exists and is ready (unless the pruner recorded it pruned)."""
    manifest = read_json(dest, f"{prefix}/{MANIFEST}")
    if manifest is None:
        return None, [f"{dest.describe(prefix)} has no manifest.json: the set does not exist (incomplete)"]
    errors = manifest_errors(manifest, prefix.rstrip("/").split("/")[-1])
    if errors:
        return manifest, errors
    errors = wal_errors(dest, prefix, manifest, deep=True)
    for snap in manifest_snapshots(manifest) if providers is not None else []:
        if dest.size(f"{prefix}/{pruned_key(snap.role)}") is not None:
            errors.append(f"{snap.role}: snapshot {snap.handle} was pruned ({pruned_key(snap.role)})")
            continue
        provider = providers.get(snap.method)
        if provider is None:
            errors.append(f"{snap.role}: cannot check a {snap.method} snapshot here (no access given)")
            continue
        state = _state(provider, snap.handle)
        if state is None:
            errors.append(f"{snap.role}: snapshot {snap.handle} no longer exists")
        elif state is False:
            errors.append(f"{snap.role}: snapshot {snap.handle} is not ready")
    return manifest, errors


def _state(provider: Any, handle: str) -> bool | None:
    """Ready (True), present but not ready (False) or gone (None): a provider's own check where it has one, else
    what the protocol's `list_taken` shows."""
    check = getattr(provider, "exists_ready", None)
    if check is not None:
        return check(handle)
    found = [t for t in provider.list_taken() if t.handle == handle]
    return None if not found else found[0].ready


# ------------------------------------------------------------------------------------------- prune


@dataclass
class PruneResult:
    kept: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # handles deleted
    locked: list[str] = field(default_factory=list)  # handles a lock kept (reported, not a failure)
    leftovers: list[str] = field(default_factory=list)  # handles of runs that never sealed, deleted
    errors: list[str] = field(default_factory=list)  # failures: the run fails


def prune(
    dest: Destination,
    providers: Mapping[str, SnapshotProvider],
    *,
    now: datetime,
    keep_recent: timedelta,
    historical_cadence: timedelta | None = None,
    lock_for: timedelta | None = None,
    leftover_grace: timedelta = timedelta(hours=6),
    on_event: Callable[..., Any] = lambda *a, **k: None,
) -> PruneResult:
    """Prune whole snapshot sets of this store (every migration id: `select_kept` keeps per migration id).

    A deletion the provider refuses is kept and reported; it fails the run unless the snapshot is younger than
    its lock (`details.lock_until`, else taken + `lock_for`): a lock doing its job is not a fault."""
    result = PruneResult()
    sets = complete_snapshot_sets(dest)
    kept = kept_sets(sets, now, keep_recent, historical_cadence)
    for prefix, manifest in sets:
        if prefix in kept:
            result.kept.append(prefix)
            continue
        for snap in manifest_snapshots(manifest):
            marker = f"{prefix}/{pruned_key(snap.role)}"
            if dest.size(marker) is not None:
                continue  # pruned by an earlier run
            provider = providers.get(snap.method)
            if provider is None:
                result.errors.append(f"{prefix} {snap.role}: no access to {snap.method} snapshots given")
                continue
            try:
                provider.delete(snap.handle)
            except SnapshotError as error:
                if _locked(snap, now, lock_for):
                    result.locked.append(snap.handle)
                    on_event("snapshot.locked", handle=snap.handle, set_id=manifest["set_id"], error=str(error))
                else:
                    result.errors.append(f"{prefix} {snap.role}: deleting {snap.handle}: {error}")
                continue
            record = {
                "set_id": manifest["set_id"],
                "role": snap.role,
                "method": snap.method,
                "handle": snap.handle,
                "pruned_at": format_time(now),
                "set_taken_at": format_time(set_taken_at(manifest)),
            }
            with contextlib.suppress(ObjectExists):  # a concurrent or retried run recorded it first
                dest.put_bytes(marker, to_json(record))
            result.pruned.append(snap.handle)
            on_event("snapshot.pruned", handle=snap.handle, set_id=manifest["set_id"], role=snap.role)
    # Leftovers: snapshots of sets that never sealed, once no step of that run can still be going.
    recorded = {handle for _, m in sets for s in manifest_snapshots(m) for handle in _handles(s)}
    for method, provider in providers.items():
        try:
            taken: list[Taken] = provider.list_taken()
        except SnapshotError as error:
            result.errors.append(f"listing {method} snapshots: {error}")
            continue
        for item in taken:
            if item.handle in recorded or now - item.taken_at < leftover_grace:
                continue
            if dest.size(f"{snapshot_set_prefix(item.migration_id, item.set_id)}/{MANIFEST}") is not None:
                continue  # sealed (perhaps invalid): not a leftover to judge here
            try:
                provider.delete(item.handle)
            except SnapshotError as error:
                if lock_for is not None and now - item.taken_at < lock_for:
                    result.locked.append(item.handle)
                else:
                    result.errors.append(f"leftover {item.handle}: {error}")
                continue
            result.leftovers.append(item.handle)
            on_event("snapshot.leftover_removed", handle=item.handle, set_id=item.set_id)
    return result


def _handles(snap: RoleSnapshot) -> list[str]:
    """The role's handle and those of the volumes taken with it (a WAL volume's snapshot)."""
    namespace = snap.details.get("namespace")
    extra = [f"{namespace}/{v['name']}" for v in snap.details.get("volume_snapshots") or [] if namespace]
    return [snap.handle, *extra]


def _locked(snap: RoleSnapshot, now: datetime, lock_for: timedelta | None) -> bool:
    until = snap.details.get("lock_until") or (snap.dr_copy or {}).get("lock_until")
    if until:
        try:
            return now < parse_time(until)
        except (TypeError, ValueError):
            pass
    return lock_for is not None and now - snap.requested_at < lock_for
