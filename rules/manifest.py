"""Backup-set records and the checks made on them (pure: no I/O).

A set is written as one step record per role (`steps/<role>.json`, by the step that dumped that role's
databases) and sealed by `manifest.json`, written last. The manifest repeats every database record, so that
anyone can check the set from the manifest alone:

- every object's size and sha256;
- the ordering rule (Splice issue #932): every `apps` database finished before the first `participant`
  database's snapshot was requested. Wall-clock times (RFC 3339 UTC, microseconds) are what humans read;
  CLOCK_MONOTONIC readings are what we trust when the steps ran on the same kernel (same `boot_id`: the
  containers of one pod share the node's kernel), because a wall clock can be stepped between two steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rules.chain import chain_errors
from rules.retention import format_duration, parse_duration

# v2: a database may be stored in parts (LAYOUT_SECTIONS), and the manifest records the pruning windows and the
# history the seal saw. v1 sets (one archive per database, no windows) stay readable and restorable.
# v3: v2 plus `serial_id`, written by nodes that run logical synchronizer upgrades (LSU): the set was taken under
# that synchronizer serial and is filed under it (`migration_id` repeats it, so every v2 reader still works); its
# participant continues the participant of the earlier serials (rules/history.py) back to `lsu_from`, the first
# serial the node's sets were taken under LSU (carried forward from the store like `history`, so it outlives that
# serial's sets). Hard-migration nodes write v2.
SET_FORMAT = "sv-backups/postgres-set/v2"
SET_FORMAT_LSU = "sv-backups/postgres-set/v3"
SET_FORMATS = ("sv-backups/postgres-set/v1", SET_FORMAT, SET_FORMAT_LSU)
STEP_FORMAT = "sv-backups/postgres-step/v2"
STEP_FORMATS = ("sv-backups/postgres-step/v1", STEP_FORMAT)
# A database stored as one schema archive (pre-data and post-data sections) plus data archives that each hold
# the data of some tables (`tables`) or of everything else (`rest`); without `layout`, one whole archive.
LAYOUT_SECTIONS = "sections"
SCHEMA_PART = "schema"
DATA_PART = "data"
MANIFEST = "manifest.json"
STEPS_DIR = "steps"
DATA_DIR = "data"
RECENT = "recent"
HISTORICAL = "historical"
TIERS = (RECENT, HISTORICAL)

APPS = "apps"
PARTICIPANT = "participant"
# A DABFT synchronizer's ordering state (the sequencer pod's cantonBft database): backed up first, as Splice's own
# backup script does, before apps and participant.
CANTON_BFT = "canton-bft"
# The order the CronJob's init containers run in (contracts.md section 2); unknown roles run last.
ROLE_ORDER = (CANTON_BFT, APPS, PARTICIPANT, "sequencer", "mediator")
# The config key of each role under sv-backups:postgres where it differs from the role's name (role names are
# lower-case with '-', as Kubernetes container names; config keys are camelCase).
ROLE_KEYS = {CANTON_BFT: "cantonBft"}


def role_key(role: str) -> str:
    """The role's key under sv-backups:postgres (canton-bft -> cantonBft)."""
    return ROLE_KEYS.get(role, role)


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SetError(Exception):
    """A set (or a step of it) is not valid; the message says which rule failed."""


def check_role(role: str) -> str:
    if not _NAME.match(role):
        raise ValueError(f"role {role!r}: use lower-case letters, digits and '-' (apps, participant, ...)")
    return role


def check_set_id(set_id: str) -> str:
    if not _SET_ID.match(set_id):
        raise ValueError(f"set id {set_id!r}: use letters, digits, '.', '_' and '-' (a pod name fits)")
    return set_id


def role_sort_key(role: str) -> tuple[int, str]:
    return (ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER), role)


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock of every recorded wall time (tests inject others: see jobs/pgsets.py)."""
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339, UTC, always with microseconds: `2026-11-21T16:09:41.123456Z`."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value.astimezone(UTC)


def set_prefix(tier: str, migration_id: int, set_id: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"tier {tier!r}")
    return f"{tier}/{migration_id}/{set_id}"


def step_key(role: str) -> str:
    return f"{STEPS_DIR}/{role}.json"


# ------------------------------------------------------------------------------------------ ordering rule


@dataclass(frozen=True)
class _Moment:
    wall: datetime
    monotonic_ns: int | None
    boot_id: str | None


def _moment(db: dict[str, Any], which: str) -> _Moment:
    return _Moment(
        wall=parse_time(db[f"{which}_at"]),
        monotonic_ns=(db.get("monotonic_ns") or {}).get(which),
        boot_id=db.get("boot_id"),
    )


def _strictly_before(a: _Moment, b: _Moment) -> tuple[bool, str]:
    """Both clocks must agree where both are comparable; the wall clock alone otherwise."""
    if a.wall >= b.wall:
        return False, f"wall clock {format_time(a.wall)} is not before {format_time(b.wall)}"
    comparable = a.boot_id and a.boot_id == b.boot_id and None not in (a.monotonic_ns, b.monotonic_ns)
    if comparable and a.monotonic_ns >= b.monotonic_ns:
        return False, f"monotonic clock {a.monotonic_ns} ns is not before {b.monotonic_ns} ns (same boot)"
    return True, ""


def ordering_errors(databases: list[dict[str, Any]]) -> list[str]:
    """Why the set breaks the apps-before-participant rule (empty when it holds).

    Also checks each database's own times run forward (requested <= acquired <= finished)."""
    errors: list[str] = []
    for db in databases:
        label = f"{db['role']}/{db['database']}"
        try:
            requested, acquired, finished = (
                _moment(db, w) for w in ("snapshot_requested", "snapshot_acquired", "finished")
            )
        except (KeyError, TypeError, ValueError) as exc:
            errors.append(f"{label}: missing or unreadable snapshot times ({exc})")
            continue
        if not (requested.wall <= acquired.wall <= finished.wall):
            errors.append(f"{label}: snapshot times do not run forward")
    if errors:
        return errors
    apps = [db for db in databases if db["role"] == APPS]
    participant = [db for db in databases if db["role"] == PARTICIPANT]
    if not apps or not participant:
        return errors
    for app_db in apps:
        app_finished = _moment(app_db, "finished")
        for par_db in participant:
            ok, why = _strictly_before(app_finished, _moment(par_db, "snapshot_requested"))
            if not ok:
                errors.append(
                    f"apps/{app_db['database']} finished at {app_db['finished_at']}, not before participant/"
                    f"{par_db['database']} snapshot was requested at {par_db['snapshot_requested_at']}: {why}"
                )
    return errors


def ordering_summary(databases: list[dict[str, Any]]) -> dict[str, Any]:
    apps = [db for db in databases if db["role"] == APPS]
    participant = [db for db in databases if db["role"] == PARTICIPANT]
    summary: dict[str, Any] = {
        "rule": "every apps database finished before the first participant snapshot was requested",
        "holds": not ordering_errors(databases),
    }
    if apps:
        summary["apps_last_finished_at"] = format_time(max(parse_time(d["finished_at"]) for d in apps))
    if participant:
        summary["participant_first_requested_at"] = format_time(
            min(parse_time(d["snapshot_requested_at"]) for d in participant)
        )
    return summary


# ----------------------------------------------------------------------------------------- record checks

_DB_FIELDS = (
    "role",
    "database",
    "server_version",
    "snapshot_requested_at",
    "snapshot_acquired_at",
    "finished_at",
    "wal_lsn",
    "objects",
)


def database_errors(db: dict[str, Any]) -> list[str]:
    label = f"{db.get('role')}/{db.get('database')}"
    errors = [f"{label}: missing {name}" for name in _DB_FIELDS if name not in db]
    for obj in db.get("objects") or []:
        if not isinstance(obj.get("key"), str) or obj["key"].startswith("/") or ".." in obj["key"].split("/"):
            errors.append(f"{label}: bad object key {obj.get('key')!r}")
        if not isinstance(obj.get("size"), int) or obj["size"] < 0:
            errors.append(f"{label}: bad size for {obj.get('key')}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(obj.get("sha256", ""))):
            errors.append(f"{label}: bad sha256 for {obj.get('key')}")
    if "verification" in db:  # optional: sets taken before it was recorded have none (the drill says so)
        errors += verification_errors(label, db["verification"])
    if "objects" in db and not db["objects"]:
        errors.append(f"{label}: no objects")
    elif "objects" in db:
        errors += _layout_errors(label, db)
    return errors


def verification_errors(label: str, record: Any) -> list[str]:
    """Shape of the (optional) verification record of a database (written by jobs/pgverify.py)."""
    if not isinstance(record, dict):
        return [f"{label}: verification is not an object"]
    errors = []
    if not isinstance(record.get("database_size"), int) or record["database_size"] < 0:
        errors.append(f"{label}: verification.database_size must be a non-negative integer")
    tables = record.get("tables")
    if not isinstance(tables, list):
        return [*errors, f"{label}: verification.tables must be a list"]
    for table in tables:
        if not (
            isinstance(table, dict)
            and isinstance(table.get("schema"), str)
            and isinstance(table.get("name"), str)
            and isinstance(table.get("rows"), int)
            and table["rows"] >= 0
        ):
            errors.append(f"{label}: verification table {table!r} needs schema, name and rows")
            continue
        sample = table.get("sample")
        if sample is not None and not (
            isinstance(sample, dict)
            and isinstance(sample.get("rows"), int)
            and len(str(sample.get("sha256", ""))) == 64
        ):
            errors.append(f"{label}: verification sample of {table['schema']}.{table['name']} needs rows and sha256")
    return errors


def _layout_errors(label: str, db: dict[str, Any]) -> list[str]:
    objects = db["objects"]
    layout = db.get("layout")
    if layout is None:
        return [] if len(objects) == 1 else [f"{label}: {len(objects)} objects for a single-archive database"]
    if layout != LAYOUT_SECTIONS:
        return [f"{label}: unknown layout {layout!r}"]
    parts = [obj.get("part") for obj in objects]
    errors = []
    if parts.count(SCHEMA_PART) != 1:
        errors.append(f"{label}: needs exactly one {SCHEMA_PART} part, has {parts.count(SCHEMA_PART)}")
    data = [obj for obj in objects if obj.get("part") == DATA_PART]
    if len(data) + parts.count(SCHEMA_PART) != len(objects):
        errors.append(f"{label}: parts must be {SCHEMA_PART} or {DATA_PART}")
    if sum(1 for obj in data if obj.get("rest") is True) != 1:
        errors.append(f"{label}: exactly one {DATA_PART} part must hold the rest of the data")
    for obj in data:
        tables = obj.get("tables", [])
        if obj.get("rest") is not True and not (tables and all(isinstance(t, str) for t in tables)):
            errors.append(f"{label}: {DATA_PART} part {obj.get('key')} names no tables")
    return errors


def step_errors(step: dict[str, Any], set_id: str, migration_id: int, role: str) -> list[str]:
    errors = []
    if step.get("format") not in STEP_FORMATS:
        errors.append(f"step {role}: format {step.get('format')!r} is not one of {', '.join(STEP_FORMATS)}")
    if step.get("set_id") != set_id:
        errors.append(f"step {role}: set id {step.get('set_id')!r} is not {set_id!r}")
    if step.get("migration_id") != migration_id:
        errors.append(f"step {role}: migration id {step.get('migration_id')!r} is not {migration_id}")
    if step.get("role") != role:
        errors.append(f"step {role}: records role {step.get('role')!r}")
    databases = step.get("databases") or []
    if not databases:
        errors.append(f"step {role}: no databases")
    for db in databases:
        if db.get("role") != role:
            errors.append(f"step {role}: database {db.get('database')!r} has role {db.get('role')!r}")
        errors += database_errors(db)
    return errors


def manifest_errors(manifest: dict[str, Any], set_id: str | None = None) -> list[str]:
    """Everything checkable from the manifest alone (objects are checked against the store elsewhere)."""
    errors = []
    if manifest.get("format") not in SET_FORMATS:
        errors.append(f"format {manifest.get('format')!r} is not one of {', '.join(SET_FORMATS)}")
    if manifest.get("complete") is not True:
        errors.append("manifest is not marked complete")
    if set_id is not None and manifest.get("set_id") != set_id:
        errors.append(f"manifest set id {manifest.get('set_id')!r} is not {set_id!r}")
    for name in ("set_id", "migration_id", "created_at", "code_version", "databases"):
        if name not in manifest:
            errors.append(f"manifest has no {name}")
    if errors:
        return errors
    databases = manifest["databases"]
    if not databases:
        errors.append("manifest lists no databases")
    for db in databases:
        errors += database_errors(db)
    keys = [obj["key"] for db in databases for obj in db.get("objects", [])]
    if len(keys) != len(set(keys)):
        errors.append("an object key is listed twice")
    if manifest["format"] in (SET_FORMAT, SET_FORMAT_LSU):
        errors += _windows_errors(manifest.get("windows")) + _history_errors(manifest.get("history"))
        errors += chain_errors(manifest.get("chain"))
    if manifest["format"] == SET_FORMAT_LSU:
        serial, since = manifest.get("serial_id"), manifest.get("lsu_from")
        if serial != manifest["migration_id"]:
            errors.append(f"serial id {serial!r} is not the id the set is filed under")
        elif not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= serial:
            errors.append(f"lsu_from {since!r} is not a serial id up to {serial}")
    if errors:
        return errors
    return ordering_errors(databases)


WINDOW_KEYS = ("participant_pruning", "sequencer_pruning")


def windows_record(
    participant_pruning: timedelta | None, sequencer_pruning: timedelta | None, historical_cadence: timedelta
) -> dict[str, str | None]:
    """The pruning windows the seal was given (null: pruning off), so that an audit of the store alone knows the
    bound each gap had to keep, including changes of the windows over time."""
    return {
        "participant_pruning": format_duration(participant_pruning) if participant_pruning else None,
        "sequencer_pruning": format_duration(sequencer_pruning) if sequencer_pruning else None,
        "historical_cadence": format_duration(historical_cadence),
    }


def _windows_errors(windows: Any) -> list[str]:
    if not isinstance(windows, dict):
        return ["manifest has no windows"]
    errors = []
    for key in (*WINDOW_KEYS, "historical_cadence"):
        value = windows.get(key)
        if value is None and key != "historical_cadence":
            continue
        try:
            parse_duration(value)
        except ValueError:
            errors.append(f"windows.{key}: {value!r} is not a duration")
    return errors


def _history_errors(history: Any) -> list[str]:
    if not isinstance(history, dict):
        return ["manifest has no history"]
    errors = []
    for migration_id, entry in history.items():
        try:
            int(migration_id)
            for end in ("first", "last"):
                check_set_id(entry[end]["set_id"])
                parse_time(entry[end]["created_at"])
            if not isinstance(entry["count"], int) or entry["count"] < 1:
                raise ValueError("count")
        except (KeyError, TypeError, ValueError, AttributeError):
            errors.append(f"history[{migration_id!r}] is not {{first, last, count}}")
    return errors


def build_manifest(
    *,
    set_id: str,
    migration_id: int,
    tier: str,
    created_at: datetime,
    code_version: str,
    steps: list[dict[str, Any]],
    windows: dict[str, str | None],
    history: dict[str, Any],
    promoted_from: str | None = None,
    serial_id: int | None = None,
    lsu_from: int | None = None,
    chain: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`serial_id`: the node runs logical synchronizer upgrades (v3; filed under it, so it equals `migration_id`);
    `lsu_from`: the first serial it did (default: this one); `chain`: the links to the sets before it
    (rules/chain.py)."""
    databases = [db for step in sorted(steps, key=lambda s: role_sort_key(s["role"])) for db in step["databases"]]
    manifest: dict[str, Any] = {
        "format": SET_FORMAT,
        "set_id": set_id,
        "complete": True,
        "migration_id": migration_id,
        "tier": tier,
        "created_at": format_time(created_at),
        "code_version": code_version,
        "roles": [s["role"] for s in sorted(steps, key=lambda s: role_sort_key(s["role"]))],
        "ordering": ordering_summary(databases),
        "steps": [step_key(s["role"]) for s in sorted(steps, key=lambda s: role_sort_key(s["role"]))],
        "total_size": sum(obj["size"] for db in databases for obj in db["objects"]),
        "windows": windows,
        "history": history,
        "databases": databases,
    }
    if promoted_from:
        manifest["promoted_from"] = promoted_from
    if chain is not None:
        manifest["chain"] = chain
    if serial_id is not None:
        manifest["format"], manifest["serial_id"] = SET_FORMAT_LSU, serial_id
        manifest["lsu_from"] = serial_id if lsu_from is None else lsu_from
    return manifest


def parse_moment(text: str) -> datetime:
    """A point in time an operator types (`--before 2026-12-07T03:10Z`): ISO 8601 with a date, a time and a zone;
    a time without a zone is refused, since a wrong guess picks a set taken after the damage."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time such as 2026-12-07T03:10Z or 2026-12-07T04:10+01:00") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset, e.g. {text.strip()}Z")
    return value.astimezone(UTC)


def data_taken_by(manifest: dict[str, Any]) -> datetime:
    """When the newest data in the set was read: the latest snapshot any of its databases acquired. Nothing
    written after this moment is in the set, so it is the set to restore after damage noticed at any later time."""
    return max(parse_time(db["snapshot_acquired_at"]) for db in manifest["databases"])


def taken_before(manifest: dict[str, Any], moment: datetime) -> bool:
    """Every database of the set was read strictly before `moment` (list-sets / failover --before)."""
    return data_taken_by(manifest) < moment


def _age(value: timedelta) -> str:
    """An age to read, not to parse: `31d 4h`, `5h 12m`, `40s`."""
    seconds = max(0, int(value.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def stale_set_problem(manifest: dict[str, Any], now: datetime) -> str | None:
    """Why a node restored from this set could not catch up, or None when it can.

    Splice: "Due to sequencer pruning, a participant that is more than 30 days behind will be unable to catch
    up": the synchronizer has pruned what the participant would need to replay. The bound is the sequencer pruning
    window the seal recorded in the set's manifest (`windows`), so an old set is judged by the window in force
    when it was taken; none recorded (pruning off, or a v1 set without windows) means no limit. A set exactly the
    window old is already too old: Splice asks for a backup *less* than the window old."""
    window_text = (manifest.get("windows") or {}).get("sequencer_pruning")
    if not window_text:
        return None
    window = parse_duration(window_text)
    age = now - parse_time(manifest["created_at"])
    if age < window:
        return None
    return (
        f"set {manifest['set_id']} is {_age(age)} old (created {manifest['created_at']}), not less than the "
        f"sequencer pruning window of {window_text} recorded in its manifest: the synchronizer has pruned what a "
        f"participant restored from it needs to catch up"
    )
