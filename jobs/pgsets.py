"""Postgres backup sets: the per-role step, the seal, the one-process set, listing, verification, promotion.

Hand-over between steps (the CronJob runs one container per role, then the seal container; `backup-set` runs
the independent roles concurrently in one process): all of them get the same set id (the pod name) and
migration id, so they write under one prefix `<dest>/recent/<migration id>/<set id>/`. A step writes its
dumps under `data/<role>/`, then its record `steps/<role>.json` (create-only: a step is done exactly when its
record exists). The seal reads the records of the roles it expects, checks them and their objects, checks the
ordering rule, and writes `manifest.json` last. Nothing is ever deleted or overwritten; a set without a
manifest does not exist for anyone.

Clock: every wall-clock time a set records (snapshot times, step times, `created_at`) is read from one `clock`
callable (default: the system's UTC time), so that tests can take real sets at chosen times. The monotonic
readings that back the ordering proof always come from the kernel.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from jobs import __version__
from jobs.destinations import Destination, ObjectExists
from jobs.pgdump import (
    DumpSettings,
    allow_dumps,
    connect,
    database_name,
    dump_database,
    kill_running_dumps,
    parse_dsn,
    redact,
)
from jobs.progress import Advance, byte_progress, no_progress
from rules.chain import chain_record
from rules.databases import unlisted_databases, unlisted_message
from rules.history import SetPoint, history_record, lsu_from, set_point
from rules.manifest import (
    APPS,
    CANTON_BFT,
    HISTORICAL,
    MANIFEST,
    PARTICIPANT,
    RECENT,
    STEP_FORMAT,
    Clock,
    SetError,
    build_manifest,
    format_time,
    manifest_errors,
    parse_time,
    role_sort_key,
    set_prefix,
    step_errors,
    step_key,
    utc_now,
    windows_record,
)
from rules.retention import SV_SCHEDULE_GAP, postgres_historical_cadence, promotion_due


def log(message: str) -> None:
    """Progress for humans on stderr; stdout carries only the JSON outcome events."""
    print(message, file=sys.stderr, flush=True)


def new_set_id(at: datetime | None = None) -> str:
    at = at or datetime.now(UTC)
    return f"{at.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


# ------------------------------------------------------------------------------ databases on the server


class UnlistedDatabases(SetError):
    """A server has a database the stack neither backs up nor ignores (rules/databases.py)."""

    def __init__(self, server: str, roles: list[str], unlisted: list[str]):
        super().__init__(unlisted_message(server, roles, unlisted))
        self.server = server
        self.unlisted = unlisted


@dataclass(frozen=True)
class DatabaseCheck:
    """What a run accounts for beyond the databases it dumps: `also_configured`, the databases other roles back
    up from the same server (the CronJob runs one step per role; several roles may share a server); `ignored`,
    the databases the stack says hold nothing to keep."""

    also_configured: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()


def server_of(dsn: str) -> str:
    """host:port of a DSN (libpq's defaults when absent), the key that tells roles on one server apart."""
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    return f"{host}:{port}"


def server_databases(dsn: str) -> list[str]:
    """The databases a client can hold data in: templates and databases that refuse connections are not."""
    with connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname"
        ).fetchall()
    return [row[0] for row in rows]


def check_databases(dsns: dict[str, list[str]], check: DatabaseCheck) -> None:
    """Raise UnlistedDatabases when a server of `dsns` (role -> DSNs) has a database that no role backs up and
    `check` does not account for. Runs before a set writes anything: a refused run leaves no trace in the store.

    A server none of whose DSNs accepts a connection is skipped: its dump fails on its own, with libpq's error,
    at the point of the set it always did (apps may still complete before participant's server is found down)."""
    servers: dict[str, tuple[list[str], set[str], list[str]]] = {}
    for role, role_dsns in dsns.items():
        for dsn in role_dsns:
            roles, names, server_dsns = servers.setdefault(server_of(dsn), ([], set(), []))
            if role not in roles:
                roles.append(role)
            names.add(database_name(dsn))
            server_dsns.append(dsn)
    for server, (roles, names, server_dsns) in servers.items():
        present = None
        for dsn in server_dsns:
            try:
                present = server_databases(dsn)
                break
            except psycopg.OperationalError as exc:
                log(f"server {server}: cannot list its databases through {redact(dsn)}: {exc}".rstrip())
        if present is None:
            continue
        unlisted = unlisted_databases(present, names | check.also_configured, check.ignored)
        if unlisted:
            raise UnlistedDatabases(server, roles, unlisted)
        log(f"server {server}: every database is backed up or ignored ({', '.join(sorted(names))} by "
            f"{', '.join(roles)})")


# ---------------------------------------------------------------------------------------------- step


def run_step(
    dest: Destination, *, role: str, set_id: str, migration_id: int, dsns: list[str], settings: DumpSettings,
    clock: Clock = utc_now, check: DatabaseCheck | None = None,
) -> dict[str, Any]:
    """Dump every database of one role (one after the other, each with its own snapshot) and record the step.

    With `check`, first refuse (UnlistedDatabases) when the role's server has a database nobody accounts for.
    Returns the step record. If the role's record already exists (a retried container after success), it is
    returned untouched."""
    prefix = set_prefix(RECENT, migration_id, set_id)
    existing = read_json(dest, f"{prefix}/{step_key(role)}")
    if existing is not None:
        log(f"step {role} of set {set_id} is already recorded; nothing to do")
        return existing
    if check is not None:
        check_databases({role: dsns}, check)
    started = clock()
    attempt = secrets.token_hex(4)
    databases = [
        dump_database(role=role, dsn=dsn, dest=dest, set_prefix=prefix, attempt=attempt, settings=settings, log=log,
                      clock=clock)
        for dsn in dsns
    ]
    names = [db["database"] for db in databases]
    if len(names) != len(set(names)):
        raise SetError(f"role {role}: a database is listed twice ({', '.join(names)})")
    step = {
        "format": STEP_FORMAT,
        "set_id": set_id,
        "migration_id": migration_id,
        "role": role,
        "code_version": __version__,
        "host": socket.gethostname(),
        "attempt": attempt,
        "started_at": format_time(started),
        "finished_at": format_time(clock()),
        "databases": databases,
    }
    dest.put_bytes(f"{prefix}/{step_key(role)}", to_json(step))
    return step


# ---------------------------------------------------------------------------------------------- seal


@dataclass
class SealResult:
    set_id: str
    migration_id: int
    manifest: dict[str, Any]
    urls: list[str] = field(default_factory=list)
    promoted: bool = False
    promotion_error: str | None = None


def seal_set(
    dest: Destination, *, set_id: str, migration_id: int, roles: list[str],
    participant_pruning: timedelta | None = None, sequencer_pruning: timedelta | None = None,
    now: Clock = utc_now, serial_id: int | None = None, schedule_gap: timedelta = SV_SCHEDULE_GAP,
) -> SealResult:
    """Check the steps of `roles` and write the manifest last; then promote to historical when due.

    The manifest records the pruning windows and cadence (for the history audit) and the history seen in the store
    (`rules.history.history_record`). Re-running a seal that already succeeded is harmless: it finds its manifest
    and finishes the promotion. `serial_id`: the node runs logical synchronizer upgrades; the set is filed under
    its serial (so it must equal `migration_id`) and the manifest records it (v3). `schedule_gap`: the largest gap
    of the dump schedule, which enters the historical cadence when it is sparser than 4 h (dump sets beside
    snapshot sets, rules/retention.py)."""
    if serial_id is not None and serial_id != migration_id:
        raise SetError(f"serial id {serial_id} is not the id the set is filed under ({migration_id})")
    prefix = set_prefix(RECENT, migration_id, set_id)
    cadence = postgres_historical_cadence(participant_pruning, sequencer_pruning, schedule_gap)
    # Every complete set's record of history, so that a loss stays on record after the sets that saw it expire.
    listed = complete_sets(dest)
    known = [set_point(key.split("/", 1)[0], m) for key, m in listed]
    kept = [p for p in known if p.tier == HISTORICAL]
    existing = read_json(dest, f"{prefix}/{MANIFEST}")
    if existing is not None and not manifest_errors(existing, set_id):
        manifest = existing
        log(f"set {set_id} is already sealed")
    else:
        steps = []
        errors = []
        for role in sorted(roles, key=role_sort_key):
            step = read_json(dest, f"{prefix}/{step_key(role)}")
            if step is None:
                errors.append(f"role {role}: no completed step (steps/{role}.json is missing)")
                continue
            errors += step_errors(step, set_id, migration_id, role)
            steps.append(step)
        if errors:
            raise SetError("; ".join(errors))
        manifest = build_manifest(
            set_id=set_id, migration_id=migration_id, tier=RECENT, created_at=now(), code_version=__version__,
            steps=steps, windows=windows_record(participant_pruning, sequencer_pruning, cadence),
            history=history_record(known, exclude=set_id), serial_id=serial_id,
            lsu_from=min((i for i in (lsu_from(known), serial_id) if i is not None), default=None),
            chain=_chain(listed, migration_id, set_id),
        )
        errors = manifest_errors(manifest, set_id) + object_errors(dest, prefix, manifest, deep=False)
        if errors:
            raise SetError("refusing to seal set " + set_id + ": " + "; ".join(errors))
        dest.put_bytes(f"{prefix}/{MANIFEST}", to_json(manifest))
    result = SealResult(set_id, migration_id, manifest, urls=[dest.describe(prefix)])
    # Measured from when the newest historical set was taken: the start of the gap the audit judges (the cadence's
    # safety argument in rules/retention.py relies on it).
    last = max((p.taken_at for p in kept if p.migration_id == migration_id and p.set_id != set_id), default=None)
    historical = set_prefix(HISTORICAL, migration_id, set_id)
    already = read_json(dest, f"{historical}/{MANIFEST}") is not None
    if already or promotion_due(last, parse_time(manifest["created_at"]), cadence):
        try:
            if not already:
                promote(dest, manifest, prefix, historical)
        except Exception as exc:  # the set itself is sealed; the next set will be promoted instead
            result.promotion_error = f"{type(exc).__name__}: {exc}"
            return result
        result.promoted = True
        result.urls.append(dest.describe(historical))
    try:
        close_earlier_migrations(dest, known, migration_id)
    except Exception as exc:  # retried by every later seal while the set is still in recent/
        result.promotion_error = f"closing an earlier migration id: {type(exc).__name__}: {exc}"
    return result


def _chain(listed: list[tuple[str, dict[str, Any]]], migration_id: int, set_id: str) -> dict[str, Any]:
    """The links a new set records (rules/chain.py): the newest set and the newest historical set of its migration
    id, from the listing the seal made (newest first)."""
    mine = [(key, m) for key, m in listed if m["migration_id"] == migration_id and m["set_id"] != set_id]
    previous = next((m for _, m in mine), None)
    historical = next((m for key, m in mine if key.startswith(f"{HISTORICAL}/")), None)
    return chain_record(previous, historical)


def close_earlier_migrations(dest: Destination, known: list[SetPoint], migration_id: int) -> list[str]:
    """Keep the newest set of every earlier migration id as historical. After a synchronizer upgrade the old
    databases take no new sets, so without this the data between the old id's last promotion and the upgrade
    would only be in recent/ and expire with it. Returns the prefixes promoted."""
    newest: dict[int, SetPoint] = {}
    for point in known:
        current = newest.get(point.migration_id)
        if point.migration_id < migration_id and (current is None or point.created_at > current.created_at):
            newest[point.migration_id] = point
    promoted = []
    for mid, point in sorted(newest.items()):
        source = set_prefix(RECENT, mid, point.set_id)
        target = set_prefix(HISTORICAL, mid, point.set_id)
        if read_json(dest, f"{target}/{MANIFEST}") is not None:
            continue
        manifest = read_json(dest, f"{source}/{MANIFEST}")
        if manifest is None or manifest_errors(manifest, point.set_id):
            continue
        promote(dest, manifest, source, target)
        promoted.append(target)
    return promoted


def promote(dest: Destination, manifest: dict[str, Any], source: str, target: str) -> None:
    """Copy a sealed set to another tier: objects first (server-side), the manifest last. Idempotent."""
    keys = [obj["key"] for db in manifest["databases"] for obj in db["objects"]] + manifest.get("steps", [])
    for key in keys:
        size = dest.size(f"{target}/{key}")
        if size is not None and size == dest.size(f"{source}/{key}"):
            continue  # copied by an earlier, interrupted promotion
        dest.copy(f"{source}/{key}", f"{target}/{key}")
    promoted = {**manifest, "tier": HISTORICAL, "promoted_from": source}
    errors = object_errors(dest, target, promoted, deep=False)
    if errors:
        raise SetError("promotion incomplete: " + "; ".join(errors))
    dest.put_bytes(f"{target}/{MANIFEST}", to_json(promoted))


# ----------------------------------------------------------------------------------------- listing

MANIFEST_READERS = 8


def complete_sets(
    dest: Destination, tiers: tuple[str, ...] = (RECENT, HISTORICAL), migration_id: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(set prefix, manifest) of every complete set, newest first. Sets without a valid manifest are skipped.

    Manifests are read a few at a time: an object store's latency, not its bandwidth, bounds a long history."""
    keys = []
    for tier in tiers:
        base = f"{tier}/" if migration_id is None else f"{tier}/{migration_id}/"
        for info in dest.list(base):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST:
                keys.append(info.key)
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


# ------------------------------------------------------------------------------------------ verify


def object_errors(
    dest: Destination, prefix: str, manifest: dict[str, Any], deep: bool, advance: Advance = no_progress
) -> list[str]:
    """Every object present with its size; with `deep`, its sha256 recomputed from the store (`advance` is told
    the bytes read)."""
    import hashlib

    errors = []
    for db in manifest["databases"]:
        for obj in db["objects"]:
            key = f"{prefix}/{obj['key']}"
            size = dest.size(key)
            if size is None:
                errors.append(f"{obj['key']} is missing")
                continue
            if size != obj["size"]:
                errors.append(f"{obj['key']} has {size} bytes, expected {obj['size']}")
                continue
            if deep:
                digest = hashlib.sha256()
                with dest.open_read(key) as stream:
                    while chunk := stream.read(4 * 1024 * 1024):
                        digest.update(chunk)
                        advance(len(chunk))
                if digest.hexdigest() != obj["sha256"]:
                    errors.append(f"{obj['key']} sha256 differs from the manifest")
    return errors


def verify_set(dest: Destination, prefix: str) -> tuple[dict[str, Any] | None, list[str]]:
    manifest = read_json(dest, f"{prefix}/{MANIFEST}")
    if manifest is None:
        return None, [f"{dest.describe(prefix)} has no manifest.json: the set does not exist (incomplete)"]
    set_id = prefix.rstrip("/").split("/")[-1]
    errors = manifest_errors(manifest, set_id)
    if errors:
        return manifest, errors
    total = sum(obj["size"] for db in manifest["databases"] for obj in db["objects"])
    with byte_progress(total, f"verify {set_id}") as advance:
        return manifest, object_errors(dest, prefix, manifest, deep=True, advance=advance)


# --------------------------------------------------------------------------------------- whole set

# The dependencies between roles: a participant's snapshot is requested only after every apps database finished
# (Splice issue #932, manifest.ordering_errors); on a DABFT node the canton-bft state is taken first, as Splice's
# backup script does, so apps waits for it. Every other role is independent of all the others.
ROLE_DEPENDENCIES: dict[str, tuple[str, ...]] = {APPS: (CANTON_BFT,), PARTICIPANT: (APPS,)}


def role_dependencies(roles: list[str]) -> dict[str, tuple[str, ...]]:
    """Each role of the set -> the roles of the set it must wait for."""
    present = set(roles)
    return {role: tuple(d for d in ROLE_DEPENDENCIES.get(role, ()) if d in present) for role in roles}


def ready_roles(deps: dict[str, tuple[str, ...]], done: set[str], started: set[str], parallel: int) -> list[str]:
    """The roles to start now: not started, every dependency done, at most `parallel` running in all.

    Roles that others wait for go first (canton-bft, then apps, so that the chain to participant, usually the
    longest, is never held up by an independent role), then the CronJob's order."""
    free = max(1, parallel) - len(started - done)
    if free <= 0:
        return []
    waited_for = {d for ds in deps.values() for d in ds}
    ready = [r for r in deps if r not in started and all(d in done for d in deps[r])]
    ready.sort(key=lambda r: (r not in waited_for, role_sort_key(r)))
    return ready[:free]


def backup_set(
    dest: Destination, *, dsns: dict[str, list[str]], set_id: str, migration_id: int, settings: DumpSettings,
    participant_pruning: timedelta | None = None, sequencer_pruning: timedelta | None = None, parallel: int = 2,
    clock: Clock = utc_now, serial_id: int | None = None, check: DatabaseCheck | None = None,
) -> SealResult:
    """The CronJob's steps in one process, then the seal. Up to `parallel` roles are dumped at once: sequencer,
    mediator (and any other role) start at once, beside apps; participant starts only when the apps step is
    recorded, and apps only when the canton-bft step (DABFT) is (`role_dependencies`). The first failure stops
    every running dump (their uploads abort), starts nothing more and is raised: no seal, so no manifest. With
    `check`, every server is checked first (the roles sharing a server count together), so a refused set writes
    nothing."""
    if check is not None:
        check_databases(dsns, check)

    def step(role: str) -> dict[str, Any]:
        return run_step(dest, role=role, set_id=set_id, migration_id=migration_id, dsns=dsns[role],
                        settings=settings, clock=clock)

    roles = sorted(dsns, key=role_sort_key)
    deps = role_dependencies(roles)
    done: set[str] = set()
    started: set[str] = set()
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="role")
    running: dict[Future, str] = {}
    try:
        while len(done) < len(roles):
            for role in ready_roles(deps, done, started, parallel):
                started.add(role)
                running[pool.submit(step, role)] = role
            if not running:  # cannot happen with ROLE_DEPENDENCIES (no cycle); never wait on nothing
                raise SetError(f"no role can start: {sorted(set(roles) - done)} wait on each other")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                role = running.pop(future)
                future.result()  # the first failure ends the set here
                done.add(role)
    except BaseException:  # a failed role, or SIGTERM in this (the main) thread
        # The other roles' dumps fail fast and abort their uploads, also those still connecting.
        kill_running_dumps()
        pool.shutdown(wait=True, cancel_futures=True)
        allow_dumps()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return seal_set(dest, set_id=set_id, migration_id=migration_id, roles=roles,
                    participant_pruning=participant_pruning, sequencer_pruning=sequencer_pruning, now=clock,
                    serial_id=serial_id)


# --------------------------------------------------------------------------------------------- util


def to_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False) + "\n").encode()


def read_json(dest: Destination, key: str) -> dict[str, Any] | None:
    """The object parsed, or None when absent or unreadable (a set with a broken manifest is incomplete)."""
    try:
        data = dest.read_bytes(key)
    except FileNotFoundError:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


__all__ = [
    "APPS", "PARTICIPANT", "DatabaseCheck", "ObjectExists", "SealResult", "UnlistedDatabases", "backup_set",
    "check_databases", "complete_sets", "new_set_id", "ready_roles", "role_dependencies", "run_step", "seal_set",
    "verify_set",
]
