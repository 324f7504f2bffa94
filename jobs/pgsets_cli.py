"""The Postgres commands of `python -m jobs`: backup-step, seal-set, backup-set, verify-set, list-sets,
restore-set. Exit codes: 0 success, 1 failure (with a `backup.failed` event for the backup commands), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from jobs import cli_types, pgpass
from jobs.destinations import open_destination
from jobs.events import COMPLETED, FAILED, emit
from jobs.pgdump import DumpSettings, MiB
from jobs.pgsets import (
    DatabaseCheck,
    UnlistedDatabases,
    backup_set,
    complete_sets,
    log,
    new_set_id,
    read_json,
    run_step,
    seal_set,
    verify_set,
)
from jobs.pgsnap import complete_snapshot_sets, verify_snapshot_set
from jobs.pgsnap_cli import volume_provider
from jobs.restore import RestoreOptions, restore_set
from jobs.restore_checks import any_failed, check_restored, summary_lines
from rules.databases import PLAIN_IDENTIFIER
from rules.manifest import (
    MANIFEST,
    TIERS,
    check_role,
    data_taken_by,
    format_time,
    manifest_errors,
    parse_time,
    stale_set_problem,
    utc_now,
)
from rules.retention import DURATION_HELP, SV_SCHEDULE_GAP
from rules.snapshot_sets import SNAPSHOT_SETS, VOLUME_SNAPSHOT
from rules.snapshot_sets import data_taken_by as snapshot_data_taken_by

KIND = "postgres"



def _db(text: str) -> tuple[str, str]:
    role, sep, dsn = text.partition("=")
    if not sep or not dsn:
        raise argparse.ArgumentTypeError(f"expected ROLE=DSN, got {text.split('=')[0]!r}...")
    try:
        check_role(role)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return role, dsn



def _roles(text: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    try:
        for role in roles:
            check_role(role)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not roles or len(roles) != len(set(roles)):
        raise argparse.ArgumentTypeError("a comma-separated list of distinct roles, e.g. apps,participant")
    return roles



def _names(text: str) -> frozenset[str]:
    """A comma-separated list of database names (plain identifiers, as the stack config allows)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not PLAIN_IDENTIFIER.match(n)]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated database names (letters, digits, _ and $), got {text!r}")
    return frozenset(names)


def _check(args) -> DatabaseCheck:
    return DatabaseCheck(also_configured=frozenset().union(*getattr(args, "server_also_backs_up", [])),
                         ignored=frozenset().union(*args.ignore_databases))


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for role, dsn in pairs:
        grouped.setdefault(role, []).append(dsn)
    return grouped


def _split_set_url(url: str):
    """`<dest>/<tier>/<migration id>/<set id>` -> (destination, prefix)."""
    base, tier, migration, set_id = url.rstrip("/").rsplit("/", 3)
    if tier not in TIERS or not migration.isdigit():
        raise ValueError(f"{url}: expected DEST/<recent|historical>/<migration id>/<set id>")
    return open_destination(base), f"{tier}/{migration}/{set_id}"


def _dump_settings(args) -> DumpSettings:
    settings = DumpSettings(zstd_level=args.zstd_level, lock_wait_timeout=args.lock_wait_timeout, pg_bin=args.pg_bin,
                            dump_jobs=args.dump_jobs, max_parts=args.max_parts,
                            min_part_size=args.part_min_mb * MiB)
    if args.zstd_threads:
        settings.zstd_threads = args.zstd_threads
    return settings


def _add_dump_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zstd-level", type=int, default=1, help="zstd level (default 1; 3 is ~3%% smaller, slower)")
    parser.add_argument("--zstd-threads", type=int, default=0, help="compression threads (default: CPUs, max 4)")
    parser.add_argument("--lock-wait-timeout", default="10min",
                        help="how long to wait for the tables' locks behind running DDL before failing (default 10min)")
    parser.add_argument("--dump-jobs", type=cli_types.count, default=2,
                        help="pg_dump processes per database at once (schema and data parts; default 2)")
    parser.add_argument("--max-parts", type=cli_types.count, default=8,
                        help="data objects per database: the most a restore can load at once (default 8)")
    parser.add_argument("--part-min-mb", type=cli_types.count, default=64,
                        help="tables smaller than this (MiB) share the rest part (default 64)")
    _add_pg_bin(parser)


def _add_pg_bin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pg-bin", type=Path, default=None,
                        help="directory of the PostgreSQL client tools (default: the server's major version under "
                             "/usr/lib/postgresql/<major>/bin, else the oldest newer one, else PATH)")


def _add_database_check(parser: argparse.ArgumentParser, *, step: bool) -> None:
    parser.add_argument("--ignore-databases", type=_names, action="append", default=[], metavar="DB,...",
                        help="databases on the server(s) that hold nothing to keep; every other database that is "
                             "not backed up fails the run before it writes anything")
    if step:
        parser.add_argument("--server-also-backs-up", type=_names, action="append", default=[], metavar="DB,...",
                            help="databases other roles back up from this role's server (they share it)")


def _add_pruning(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--participant-pruning", type=cli_types.duration, default=None,
                        help=f"participant pruning retentionPeriod, {DURATION_HELP} (omit: pruning off)")
    parser.add_argument("--sequencer-pruning", type=cli_types.duration, default=None,
                        help="sequencer pruning retentionPeriod (omit: pruning off)")


class Terminated(Exception):
    """SIGTERM (the Job's deadline, a node drain): unwind so that uploads abort and backup.failed is logged."""


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM before the set was complete")


def _unwind_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def _failed(error: BaseException | str, **fields) -> int:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    if isinstance(error, UnlistedDatabases):  # fields the alert's log entry can be read by
        fields.update(stage="databases", server=error.server, unlisted_databases=error.unlisted)
    emit(FAILED, KIND, error=message, **fields)
    return 1


def _sealed(result, started: float, **fields) -> int:
    emit(COMPLETED, KIND, set_id=result.set_id, migration_id=result.migration_id, urls=result.urls,
         promoted=result.promoted, bytes=result.manifest["total_size"], roles=result.manifest["roles"],
         seconds=round(time.monotonic() - started, 3), **fields)
    if result.promotion_error:
        return _failed(f"set sealed but promotion to historical failed: {result.promotion_error}",
                       set_id=result.set_id, migration_id=result.migration_id, stage="promote")
    return 0


# ------------------------------------------------------------------------------------------- commands


def cmd_backup_step(args) -> int:
    _unwind_on_sigterm()
    started = time.monotonic()
    fields = {"set_id": args.set_id, "migration_id": args.migration_id, "role": args.role, "stage": "step"}
    try:
        pgpass.install_from_args(args)
        grouped = _group(args.db)
        if set(grouped) != {args.role}:
            raise ValueError(f"every --db must be for role {args.role} (got {', '.join(sorted(grouped))})")
        step = run_step(open_destination(args.dest), role=args.role, set_id=args.set_id,
                        migration_id=args.migration_id, dsns=grouped[args.role], settings=_dump_settings(args),
                        check=_check(args))
    except Exception as exc:
        return _failed(exc, **fields)
    emit("backup.step_completed", KIND, databases=[d["database"] for d in step["databases"]],
         bytes=sum(o["size"] for d in step["databases"] for o in d["objects"]),
         seconds=round(time.monotonic() - started, 3), **fields)
    return 0


def cmd_seal_set(args) -> int:
    _unwind_on_sigterm()
    started = time.monotonic()
    try:
        result = seal_set(open_destination(args.dest), set_id=args.set_id, migration_id=args.migration_id,
                          roles=args.roles, participant_pruning=args.participant_pruning,
                          sequencer_pruning=args.sequencer_pruning, serial_id=args.serial_id,
                          schedule_gap=args.schedule_gap)
    except Exception as exc:
        return _failed(exc, set_id=args.set_id, migration_id=args.migration_id, stage="seal")
    return _sealed(result, started)


def cmd_backup_set(args) -> int:
    _unwind_on_sigterm()
    started = time.monotonic()
    set_id = args.set_id or new_set_id()
    try:
        pgpass.install_from_args(args)
        result = backup_set(open_destination(args.dest), dsns=_group(args.db), set_id=set_id,
                            migration_id=args.migration_id, settings=_dump_settings(args),
                            participant_pruning=args.participant_pruning, sequencer_pruning=args.sequencer_pruning,
                            parallel=args.parallel, serial_id=args.serial_id, check=_check(args))
    except Exception as exc:
        return _failed(exc, set_id=set_id, migration_id=args.migration_id)
    return _sealed(result, started)


def cmd_verify_set(args) -> int:
    if _is_snapshot_url(args.url):
        return _verify_snapshot_set(args)
    try:
        dest, prefix = _split_set_url(args.url)
        manifest, errors = verify_set(dest, prefix)
    except Exception as exc:
        print(f"verify-set: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if errors:
        for error in errors:
            print(f"verify-set: {error}", file=sys.stderr)
        return 1
    objects = sum(len(db["objects"]) for db in manifest["databases"])
    print(f"OK {args.url}: {len(manifest['databases'])} databases, {objects} objects, "
          f"{manifest['total_size']} bytes, ordering holds")
    return 0


def _is_snapshot_url(url: str) -> bool:
    parts = url.rstrip("/").rsplit("/", 3)
    return len(parts) == 4 and parts[1] == SNAPSHOT_SETS


def _verify_snapshot_set(args) -> int:
    """A snapshot set: manifest valid, ordering holds, WAL objects intact; with --deep, each role's snapshot still
    there and ready, asked of the provider (in-cluster volumes: --namespace; the others are reported unchecked)."""
    try:
        base, _, migration, set_id = args.url.rstrip("/").rsplit("/", 3)
        if not migration.isdigit():
            raise ValueError(f"{args.url}: expected DEST/{SNAPSHOT_SETS}/<migration id>/<set id>")
        dest = open_destination(base)
        providers = None
        if args.deep:
            providers = {VOLUME_SNAPSHOT: volume_provider(args)} if args.namespace else {}
        manifest, errors = verify_snapshot_set(dest, f"{SNAPSHOT_SETS}/{migration}/{set_id}", providers)
    except Exception as exc:
        print(f"verify-set: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if errors:
        for error in errors:
            print(f"verify-set: {error}", file=sys.stderr)
        return 1
    consistency = ", ".join(f"{r['role']} {r['consistency']}" for r in manifest["snapshots"])
    checked = "snapshots present and ready, " if args.deep else ""
    print(f"OK {args.url}: snapshot set of {len(manifest['snapshots'])} roles ({consistency}), {checked}"
          "ordering holds")
    return 0


def cmd_list_sets(args) -> int:
    try:
        dest = open_destination(args.url)
        sets = complete_sets(dest, migration_id=args.migration_id)
        snapshot_sets = complete_snapshot_sets(dest, migration_id=args.migration_id)
    except Exception as exc:
        print(f"list-sets: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    rows = []
    for prefix, manifest in sets:
        rows.append({"kind": "dump", "url": dest.describe(prefix), "created_at": manifest["created_at"],
                     "tier": prefix.split("/")[0], "migration_id": manifest["migration_id"],
                     "set_id": manifest["set_id"], "bytes": manifest["total_size"], "roles": manifest["roles"]})
    for prefix, manifest in snapshot_sets:
        # A snapshot set's size is its snapshots' (the provider's, incremental): only its WAL is in the store.
        wal = sum(o["size"] for r in manifest["snapshots"] for o in ((r["details"].get("wal") or {}).get("objects")
                                                                      or []))
        rows.append({"kind": "snapshot", "url": dest.describe(prefix), "created_at": manifest["created_at"],
                     "tier": "recent", "migration_id": manifest["migration_id"], "set_id": manifest["set_id"],
                     "bytes": wal, "roles": manifest["roles"],
                     "consistency": {r["role"]: r["consistency"] for r in manifest["snapshots"]}})
    if args.kind is not None:
        rows = [row for row in rows if row["kind"] == args.kind]
    if args.before is not None:
        # Damage noticed at `before`: only sets whose every database was read (cut) strictly before it.
        taken = {dest.describe(p): data_taken_by(m) for p, m in sets}
        taken |= {dest.describe(p): snapshot_data_taken_by(m) for p, m in snapshot_sets}
        rows = [row for row in rows if taken[row["url"]] < args.before]
    rows.sort(key=lambda r: (parse_time(r["created_at"]), r["url"]), reverse=True)
    if args.before is not None and not args.json:
        print(f"# sets whose every database was read before {format_time(args.before)}; the first is the one to "
              "restore", file=sys.stderr)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['created_at']}  {row['kind']:<8} {row['tier']:<10} {row['migration_id']:>4}  "
                  f"{row['bytes']:>14}  {','.join(row['roles']):<32} {row['url']}")
    return 0


def cmd_restore_set(args) -> int:
    started = time.monotonic()
    try:
        dest, prefix = _split_set_url(args.url)
        manifest = read_json(dest, f"{prefix}/{MANIFEST}")  # absent or invalid: restore_set says why
        stale = stale_set_problem(manifest, utc_now()) if manifest and not manifest_errors(manifest) else None
        if stale and not args.accept_stale_set:
            print(f"restore-set: REFUSED: {stale}; restore it anyway (e.g. to inspect its data) with "
                  "--accept-stale-set", file=sys.stderr)
            return 1
        if stale:
            log(f"restore-set: WARNING (--accept-stale-set): {stale}")
        results = restore_set(dest, prefix, _group(args.db),
                              RestoreOptions(jobs=args.jobs, no_owner=args.no_owner, workdir=args.workdir,
                                             pg_bin=args.pg_bin, analyze=args.analyze,
                                             replace_existing=args.replace_existing,
                                             create_missing_roles=args.create_missing_roles),
                              allow_partial=args.allow_partial, parallel=args.parallel)
    except Exception as exc:
        print(f"restore-set: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    rto = time.monotonic() - started
    checks, ordering = ({}, None)
    if not args.no_checks:
        try:
            checked, ordering = check_restored(manifest, results)
        except Exception as exc:  # a restored database that cannot be read is a failed restore
            print(f"restore-set: FAILED: post-restore checks: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        checks = {(r.role, r.database): r for r in checked}
        for line in summary_lines(checked, ordering):
            log(f"restore-set: {line}")
    for result in results:
        check = checks.get((result["role"], result["database"]))
        extra = {"check": check.as_json()} if check else {}
        print(json.dumps({"event": "restore.database", **result, **extra}))
    log(f"restore-set: {len(results)} databases restored in {rto:.1f}s (RTO of the databases); next: start the "
        "node's components again (docs/runbook.md, full node restore)")
    if checks and any_failed(list(checks.values()), ordering):
        print("restore-set: FAILED: the restored data does not match the set (see the check lines)", file=sys.stderr)
        return 1
    return 0


SERIAL_HELP = ("the node runs logical synchronizer upgrades: the synchronizer serial the set is taken under "
               "(equal to --migration-id, the id the set is filed under); recorded in the manifest")


def register(subparsers) -> None:
    common_dest = {"help": "destination: file:///path, gs://bucket/prefix or s3://bucket/prefix"}

    p = subparsers.add_parser("backup-step", help="dump the databases of one role into a set (one CronJob step)")
    p.add_argument("--role", required=True, type=cli_types.role)
    p.add_argument("--dest", required=True, **common_dest)
    p.add_argument("--set-id", required=True, type=cli_types.set_id)
    p.add_argument("--migration-id", required=True, type=int)
    p.add_argument("--db", required=True, action="append", type=_db, metavar="ROLE=DSN",
                   help="a database of this role; a password, if the login needs one, comes from "
                   "--password-file, PGPASSWORD or PGPASSFILE, never the DSN")
    pgpass.add_arguments(p)
    _add_database_check(p, step=True)
    _add_dump_options(p)
    p.set_defaults(func=cmd_backup_step)

    p = subparsers.add_parser("seal-set", help="check a set's steps and ordering, write its manifest, promote")
    p.add_argument("--dest", required=True, **common_dest)
    p.add_argument("--set-id", required=True, type=cli_types.set_id)
    p.add_argument("--migration-id", required=True, type=int)
    p.add_argument("--serial-id", type=int, default=None, help=SERIAL_HELP)
    p.add_argument("--roles", required=True, type=_roles, help="the roles the set must contain: apps,participant,...")
    p.add_argument("--schedule-gap", type=cli_types.duration, default=SV_SCHEDULE_GAP,
                   help="the dump schedule's largest gap, when sparser than 4h (dump sets beside snapshot sets): it "
                        "enters the historical cadence (default 4h)")
    _add_pruning(p)
    p.set_defaults(func=cmd_seal_set)

    p = subparsers.add_parser("backup-set", help="take a whole set in one process (the steps, then the seal)")
    p.add_argument("--dest", required=True, **common_dest)
    p.add_argument("--db", required=True, action="append", type=_db, metavar="ROLE=DSN")
    p.add_argument("--set-id", type=cli_types.set_id, default=None, help="default: <UTC time>-<random>")
    p.add_argument("--migration-id", type=int, default=0)
    p.add_argument("--serial-id", type=int, default=None, help=SERIAL_HELP)
    p.add_argument("--parallel", type=cli_types.count, default=2,
                   help="roles dumped at once (default 2): sequencer and mediator run beside apps, participant "
                        "starts when apps is done")
    pgpass.add_arguments(p)  # one password for every server, as PGPASSWORD would be
    _add_database_check(p, step=False)
    _add_pruning(p)
    _add_dump_options(p)
    p.set_defaults(func=cmd_backup_set)

    p = subparsers.add_parser("verify-set", help="check a set: manifest, every object's size and sha256, ordering")
    p.add_argument("url", help=f"DEST/<recent|historical|{SNAPSHOT_SETS}>/<migration id>/<set id>")
    p.add_argument("--deep", action="store_true",
                   help="snapshot sets: also ask the provider that each snapshot still exists and is ready")
    p.add_argument("--namespace", help="snapshot sets, --deep: the namespace of the VolumeSnapshots")
    p.add_argument("--kube-api", help="Kubernetes API URL (default: in-cluster; env SV_BACKUPS_KUBE_API)")
    p.set_defaults(func=cmd_verify_set, ready_timeout=None, error_grace=None, poll_interval=1.0, pvc="-",
                   snapshot_class="-")

    p = subparsers.add_parser("list-sets", help="list complete sets (dump and snapshot: column kind), newest first")
    p.add_argument("url", **common_dest)
    p.add_argument("--migration-id", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--kind", choices=("dump", "snapshot"), default=None,
                   help="only dump sets (restore-set: portable, row-verified) or snapshot sets")
    p.add_argument("--before", type=cli_types.moment, metavar="TIME",
                   help="damage noticed at TIME (e.g. 2026-12-07T03:10Z): only sets whose every database was read "
                        "strictly before it; the first listed is the one to restore")
    p.set_defaults(func=cmd_list_sets)

    p = subparsers.add_parser("restore-set", help="restore a complete set into (new or empty) databases and check")
    p.add_argument("url", help="DEST/<recent|historical>/<migration id>/<set id>")
    p.add_argument("--db", required=True, action="append", type=_db, metavar="ROLE=DSN",
                   help="where a role is restored: a server (postgresql://USER@HOST:PORT: every database of the "
                        "role under its own name) or one database URL per database; created if absent, must be "
                        "empty unless --replace-existing")
    p.add_argument("--replace-existing", action="store_true",
                   help="in-place restore: drop and recreate a target database that holds data (its contents are "
                        "lost; scale the node to 0 first); without it such a database is refused")
    p.add_argument("--create-missing-roles", action="store_true",
                   help="create the roles that own the set's objects when the target lacks them (NOLOGIN); "
                        "without it the restore stops before writing anything, naming them")
    p.add_argument("--jobs", type=cli_types.count, default=2,
                   help="pg_restore processes per database: data parts streamed at once, then post-data --jobs "
                        "(default 2; a v1 set's single archive always streams into one)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where each database's schema archive is fetched (small, no data; default: TMPDIR)")
    p.add_argument("--no-owner", action="store_true", help="pg_restore --no-owner --no-privileges")
    p.add_argument("--allow-partial", action="store_true", help="restore only the roles given")
    p.add_argument("--analyze", action="store_true", help="ANALYZE each restored database (pg_restore does not)")
    p.add_argument("--accept-stale-set", action="store_true",
                   help="restore a set at least as old as the sequencer pruning window in its manifest (a node "
                        "restored from it cannot catch up; refused without this flag)")
    p.add_argument("--parallel", type=cli_types.count, default=2, help="databases restored at once (default 2)")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the post-restore checks (row counts and samples against the manifest, the "
                        "apps-before-participant rule read from the data)")
    _add_pg_bin(p)
    p.set_defaults(func=cmd_restore_set)

