"""The snapshot-set commands of `python -m jobs`: snapshot-step, snapshot-seal, prune-snapshots, and the two
restore-side helpers restore-snapshot-volume and prepare-datadir (docs/jobs-snapshots.md).

The provider is picked by `--method`: `volume-snapshot` (jobs/pgsnap_volume.py), `cloudsql-backup`
(jobs/pgsnap_cloudsql.py), `rds-snapshot` (jobs/pgsnap_rds.py). The managed ones are imported only when asked
for, so an image without them still runs the in-cluster ones, and says so clearly when asked for one it lacks.

Exit codes: 0 success, 1 failure (with a `backup.failed` event for step, seal and prune), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs import cli_types, pgpass
from jobs.destinations import open_destination
from jobs.ebs_copies import SnapshotCopier, check_options
from jobs.events import COMPLETED, FAILED, emit
from jobs.kube import KubeClient, KubeError, resolve_config
from jobs.pgsnap import prune, read_json, run_step, seal
from jobs.pgsnap_ebs import EbsDrCopies
from jobs.pgsnap_restore import (
    DEFAULT_DATADIR_SUBPATH,
    DEFAULT_DATADIR_UID,
    PrepareError,
    RestoreAccess,
    SetRestoreError,
    SetRestoreOptions,
    prepare_datadir,
    restore_snapshot_set,
    restore_volume,
)
from jobs.pgsnap_volume import KubeOptions, KubeVolumeSnapshotter, VolumeSnapshotProvider
from jobs.snapshot_providers import SnapshotError
from rules.manifest import check_role, check_set_id, utc_now
from rules.snapshot_sets import (
    CLOUDSQL_BACKUP,
    MANIFEST,
    METHODS,
    RDS_SNAPSHOT,
    VOLUME_SNAPSHOT,
    manifest_errors,
    snapshot_set_prefix,
)

KIND = "postgres-snapshots"
PRUNE_KIND = "snapshot-prune"
SET_ID_ENV = "SET_ID"
MANAGED_MODULES = {CLOUDSQL_BACKUP: "jobs.pgsnap_cloudsql", RDS_SNAPSHOT: "jobs.pgsnap_rds"}


class Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM before the step was complete")


def _unwind_on_sigterm() -> None:
    # SIGTERM (the Job's deadline) unwinds through the providers' cleanup: no half-taken snapshot stays.
    signal.signal(signal.SIGTERM, _on_sigterm)


def _emitter(kind: str):
    """Progress lines (slot dropped, snapshot requested, ...) for humans on stderr; stdout keeps the JSON
    outcome events the alerts read."""

    def event(name: str, **fields: Any) -> None:
        print(f"{kind} {name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), file=sys.stderr, flush=True)

    return event


class ConfigError(Exception):
    """Bad or missing options for the method; one message naming the flag and what is allowed."""


# ------------------------------------------------------------------------------------------ providers


def _kube_client(args) -> KubeClient:
    return KubeClient(resolve_config(args.kube_api))


def volume_provider(args, *, dest=None, client: KubeClient | None = None) -> VolumeSnapshotProvider:
    missing = [
        flag
        for flag, value in (
            ("--namespace", args.namespace),
            ("--pvc", getattr(args, "pvc", "-")),
            ("--snapshot-class", getattr(args, "snapshot_class", "-")),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"--method {VOLUME_SNAPSHOT} needs {', '.join(missing)}")
    if getattr(args, "online", False) and not args.pg:
        raise ConfigError(
            "--online needs --pg postgresql://USER@HOST:PORT/postgres (password: --password-file, PGPASSWORD or "
            "PGPASSFILE)"
        )
    if getattr(args, "password_file", None) is not None and not getattr(args, "online", False):
        raise ConfigError("--password-file is for --online (the step's own session); without --online it is unused")
    taking = dest is not None  # a step; the pruner and verify-set only list and delete
    if taking and getattr(args, "lock_for", None) and not getattr(args, "copy_to_region", None):
        raise ConfigError(
            "--lock-for (EBS Snapshot Lock) goes with --copy-to-region/--copy-kms-key: on AWS each snapshot is "
            "copied to the DR region and both are locked"
        )
    dr_copies = _ebs_dr_copies(args, taking=taking)
    options = KubeOptions(
        namespace=args.namespace,
        pvc=getattr(args, "pvc", None) or "",
        snapshot_class=getattr(args, "snapshot_class", None) or "",
        wal_pvc=getattr(args, "wal_pvc", None),
        ready_timeout=args.ready_timeout,
        error_grace=args.error_grace,
        poll_interval=args.poll_interval,
    )
    snapshotter = KubeVolumeSnapshotter(client or _kube_client(args), options, _emitter(KIND))
    return VolumeSnapshotProvider(
        snapshotter,
        _emitter(KIND),
        dest=dest,
        online_dsn=args.pg if getattr(args, "online", False) else None,
        wal_separate=bool(options.wal_pvc),
        pg_bin=getattr(args, "pg_bin", None),
        dr_copies=dr_copies,
    )


def _ebs_dr_copies(args, *, taking: bool) -> EbsDrCopies | None:
    """EBS: the DR copies a step makes (`--copy-to-region` with `--copy-kms-key`) or the pruner deletes
    (`--copy-to-region`); the primary region is the pod's (AWS_REGION, set by IRSA)."""
    region, key = getattr(args, "copy_to_region", None), getattr(args, "copy_kms_key", None)
    if not region and not key:
        return None
    primary = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if taking:
        problems = (
            check_options(region, key, primary)
            if region and key
            else ["--copy-to-region and --copy-kms-key go together"]
        )
    else:
        problems = [] if primary else ["the primary region is unknown: AWS_REGION (or AWS_DEFAULT_REGION) must be set"]
    if problems:
        raise ConfigError("; ".join(problems))
    copier = SnapshotCopier(primary, region, key or "")
    lock_for = getattr(args, "lock_for", None)
    return EbsDrCopies(copier, timeout=args.ready_timeout, poll=args.poll_interval, lock_for=lock_for)


def managed_provider(method: str, args) -> Any:
    """The Cloud SQL / RDS provider, from its module: `provider_from_args(args)` when the module has one, else
    its provider class (the one whose `method` is `method`) built from the flags its constructor names."""
    name = MANAGED_MODULES[method]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        raise ConfigError(
            f"--method {method}: this image has no {name.replace('.', '/')}.py (the {method} "
            "provider is not installed); use an image that has it"
        ) from None
    factory = getattr(module, "provider_from_args", None)
    if factory is not None:
        return factory(args)
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if getattr(c, "method", None) == method and c.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise ConfigError(f"{name} has no single provider class for {method}")
    cls = classes[0]
    params = inspect.signature(cls.__init__).parameters
    kwargs, missing = {}, []
    for pname, param in params.items():
        if pname == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        value = getattr(args, pname, None)
        if value is not None:
            kwargs[pname] = value
        elif param.default is inspect.Parameter.empty:
            if pname in ("location",):
                kwargs[pname] = None
            else:
                missing.append("--" + pname.replace("_", "-"))
    if missing:
        raise ConfigError(f"--method {method} needs {', '.join(missing)}")
    return cls(**kwargs)


def provider_for(method: str, args, *, dest=None) -> Any:
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == VOLUME_SNAPSHOT:
        return volume_provider(args, dest=dest)
    return managed_provider(method, args)


# ------------------------------------------------------------------------------------------- commands


def cmd_snapshot_step(args) -> int:
    _unwind_on_sigterm()
    started = time.monotonic()
    set_id = args.set_id or os.environ.get(SET_ID_ENV)
    fields = {
        "set_id": set_id,
        "migration_id": args.migration_id,
        "role": args.role,
        "method": args.method,
        "stage": "step",
    }
    try:
        if not set_id:
            raise ConfigError(f"--set-id (or env {SET_ID_ENV}) is required")
        check_set_id(set_id)
        if args.serial_id is not None and args.serial_id != args.migration_id:
            raise ConfigError(
                f"--serial-id {args.serial_id} must equal --migration-id {args.migration_id} "
                "(the set is filed under its serial)"
            )
        dest = open_destination(args.dest)
        provider = provider_for(args.method, args, dest=dest)
        pgpass.install_from_args(args)  # before the provider opens its session (psycopg, then pg_receivewal)
        step = run_step(dest, provider, role=args.role, set_id=set_id, migration_id=args.migration_id)
    except SnapshotError as error:
        return _failed(KIND, f"{args.role}: {error}", **{**fields, "stage": error.stage})
    except Exception as error:
        return _failed(KIND, error, **fields)
    snap = step["snapshot"]
    emit(
        "backup.step_completed",
        KIND,
        handle=snap["handle"],
        consistency=snap["consistency"],
        consistency_reason=snap["details"].get("consistency_reason"),
        cut_at=snap["cut_at"],
        seconds=round(time.monotonic() - started, 3),
        **fields,
    )
    return 0


def cmd_snapshot_seal(args) -> int:
    _unwind_on_sigterm()
    started = time.monotonic()
    set_id = args.set_id or os.environ.get(SET_ID_ENV)
    fields = {"set_id": set_id, "migration_id": args.migration_id, "stage": "seal"}
    try:
        if not set_id:
            raise ConfigError(f"--set-id (or env {SET_ID_ENV}) is required")
        dest = open_destination(args.dest)
        manifest = seal(dest, set_id=set_id, migration_id=args.migration_id, roles=args.roles, serial_id=args.serial_id)
    except Exception as error:
        return _failed(KIND, error, **fields)
    emit(
        COMPLETED,
        KIND,
        set_id=set_id,
        migration_id=args.migration_id,
        roles=manifest["roles"],
        url=dest.describe(snapshot_set_prefix(args.migration_id, set_id)),
        consistency={r["role"]: r["consistency"] for r in manifest["snapshots"]},
        seconds=round(time.monotonic() - started, 3),
    )
    return 0


def cmd_prune_snapshots(args) -> int:
    started = time.monotonic()
    try:
        dest = open_destination(args.dest)
        providers = {}
        if args.namespace:
            providers[VOLUME_SNAPSHOT] = volume_provider(args)
        if args.project:
            providers[CLOUDSQL_BACKUP] = managed_provider(CLOUDSQL_BACKUP, args)
        if args.region:
            providers[RDS_SNAPSHOT] = managed_provider(RDS_SNAPSHOT, args)
        if not providers:
            raise ConfigError("give the provider access: --namespace (volumes), --project (Cloud SQL), --region (RDS)")
        result = prune(
            dest,
            providers,
            now=utc_now(),
            keep_recent=args.keep_recent,
            historical_cadence=args.historical_cadence,
            lock_for=args.lock_for,
            leftover_grace=args.leftover_grace,
            on_event=_emitter(PRUNE_KIND),
        )
    except Exception as error:
        return _failed(PRUNE_KIND, error, migration_id=args.migration_id, stage="prune")
    facts = {
        "migration_id": args.migration_id,
        "kept": len(result.kept),
        "pruned": result.pruned,
        "locked": result.locked,
        "leftovers": result.leftovers,
        "seconds": round(time.monotonic() - started, 3),
    }
    if result.errors:
        return _failed(PRUNE_KIND, "; ".join(result.errors), stage="prune", **facts)
    emit(COMPLETED, PRUNE_KIND, **facts)
    return 0


def _manifest(dest, migration_id: int, set_id: str) -> dict[str, Any]:
    manifest = read_json(dest, f"{snapshot_set_prefix(migration_id, set_id)}/{MANIFEST}")
    if manifest is None:
        raise PrepareError(f"no snapshot set {set_id} under migration id {migration_id} (no manifest.json)")
    errors = manifest_errors(manifest, set_id)
    if errors:
        raise PrepareError(f"snapshot set {set_id} is not valid: {'; '.join(errors)}")
    return manifest


def _find_manifest(dest, set_id: str, migration_id: int | None) -> dict[str, Any]:
    if migration_id is not None:
        return _manifest(dest, migration_id, set_id)
    for info in dest.list("snapshot-sets/"):
        parts = info.key.split("/")
        if len(parts) == 4 and parts[2] == set_id and parts[3] == MANIFEST:
            return _manifest(dest, int(parts[1]), set_id)
    raise PrepareError(f"no snapshot set {set_id} in {dest.describe('snapshot-sets')}")


def cmd_prepare_datadir(args) -> int:
    try:
        dest = open_destination(args.dest)
        manifest = _manifest(dest, args.migration_id, args.set)
        facts = prepare_datadir(dest, manifest, role=args.role, datadir=args.datadir, log=_emitter(KIND))
    except (PrepareError, OSError) as error:
        print(f"prepare-datadir: {error}", file=sys.stderr)
        return 1
    print(
        f"OK {args.datadir}: {facts['consistency']} snapshot of {args.role}; "
        f"{len(facts.get('wal_segments', []))} WAL segments and the backup label written"
        if facts["consistency"] == "online"
        else f"OK {args.datadir}: crash-consistent snapshot, nothing to add"
    )
    return 0


def cmd_restore_snapshot_volume(args) -> int:
    try:
        dest = open_destination(args.dest)
        manifest = _find_manifest(dest, args.set, args.migration_id)
        with _kube_client(args) as client:
            facts = restore_volume(
                client,
                manifest,
                role=args.role,
                namespace=args.namespace,
                pvc=args.pvc,
                storage_class=args.storage_class,
                replace=args.replace,
                volume=args.volume,
            )
    except (PrepareError, KubeError) as error:
        print(f"restore-snapshot-volume: {error}", file=sys.stderr)
        return 1
    print(f"OK PVC {facts['pvc']} from VolumeSnapshot {facts['from']} ({facts['size']})")
    return 0


def cmd_restore_snapshot_set(args) -> int:
    """Plan (and with --execute run) the restore of every role of a snapshot set; the plan on stdout, progress on
    stderr; exit 1 at the first failure, naming the role and what was done before it."""
    options = SetRestoreOptions(
        targets=dict(args.target),
        namespace=args.namespace,
        storage_class=args.storage_class,
        from_dr_copy=args.from_dr_copy,
        in_place=args.in_place,
        replace=args.replace,
        image=args.image,
        datadir_subpath=args.datadir_subpath,
        datadir_uid=args.datadir_uid,
        service_account=args.service_account,
        target_project=args.target_project,
        instance_class=args.instance_class,
        subnet_group=args.subnet_group,
        security_groups=tuple(args.security_group),
        parameter_group=args.parameter_group,
        timeout=args.ready_timeout.total_seconds(),
        poll_interval=args.poll_interval,
    )
    client = None
    try:
        if args.execute:
            # Volume roles need the Kubernetes API; a set of managed roles only does not.
            try:
                client = _kube_client(args)
            except KubeError:
                client = None
        result = restore_snapshot_set(
            args.url, options, RestoreAccess(kube=client), execute=args.execute, log=_emitter("restore-snapshot-set")
        )
    except SetRestoreError as error:
        done = getattr(error, "done", [])
        print(f"restore-snapshot-set: {error}", file=sys.stderr)
        if done:
            restored = ", ".join(f"{d['role']} -> {d['target']}" for d in done)
            print(f"restore-snapshot-set: restored before it: {restored}", file=sys.stderr)
        print("restore-snapshot-set: stopped; nothing after it was done", file=sys.stderr)
        return 1
    except (KubeError, OSError, ValueError) as error:
        print(f"restore-snapshot-set: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    print(f"# snapshot set {result.set_id} (migration id {result.migration_id}): data as of {result.data_taken_by}; "
          f"{len(result.plans)} roles in this order: {', '.join(p.role for p in result.plans)}")  # fmt: skip
    if not result.executed:
        for number, plan in enumerate(result.plans, start=1):
            print(f"# {number}. {plan.title}")
            for command in plan.commands:
                print(command)
            print()
        print("# plan only: nothing was done. Scale the node's components to 0 first; run again with --execute")
        return 0
    for done in result.done:
        print(f"OK {done['role']} ({done['method']}) -> {done['target']}")
    print(f"OK restored {len(result.done)} roles of {result.set_id}; RTO {result.rto_seconds:.1f}s "
          "(from the first check to the last role restored); scale the components back to 1")  # fmt: skip
    return 0


def _failed(kind: str, error: BaseException | str, **fields) -> int:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    emit(FAILED, kind, error=message, **{k: v for k, v in fields.items() if v is not None})
    return 1


# ------------------------------------------------------------------------------------------------ CLI


def _add_volume_options(p: argparse.ArgumentParser, *, step: bool) -> None:
    p.add_argument("--namespace", help="volume-snapshot: the namespace of the PVCs and snapshots")
    if step:
        p.add_argument("--pvc", help="volume-snapshot: the PVC of the data directory")
        p.add_argument("--wal-pvc", help="volume-snapshot: the PVC of pg_wal when on its own volume (needs --online)")
        p.add_argument("--snapshot-class", help="volume-snapshot: VolumeSnapshotClass (deletionPolicy Retain)")
        p.add_argument(
            "--online",
            action="store_true",
            help="pg_backup_start/stop around the snapshot, WAL kept in the store (needs --pg)",
        )
        p.add_argument(
            "--pg", help="postgresql://USER@HOST:PORT/postgres; password: --password-file, PGPASSWORD or PGPASSFILE"
        )
        pgpass.add_arguments(p)
        p.add_argument("--pg-bin", type=Path, default=None, help="directory of pg_receivewal (default: by version)")
        p.add_argument(
            "--copy-to-region", help="EBS / RDS: copy each snapshot to this DR region (needs --copy-kms-key)"
        )
        p.add_argument(
            "--copy-kms-key", help="EBS / RDS: ARN of the KMS key in --copy-to-region that encrypts the copies"
        )
    p.add_argument("--kube-api", help="Kubernetes API URL (default: in-cluster; env SV_BACKUPS_KUBE_API)")
    p.add_argument("--ready-timeout", type=cli_types.duration, default=timedelta(minutes=30))
    p.add_argument(
        "--error-grace",
        type=cli_types.duration,
        default=timedelta(minutes=2),
        help="how long a snapshot error may persist before the step fails (default 2m)",
    )
    p.add_argument("--poll-interval", type=float, default=5.0, help="seconds between readiness checks")


def _add_managed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="cloudsql-backup: GCP project")
    p.add_argument("--instance", help="cloudsql-backup / rds-snapshot: the instance")
    p.add_argument("--location", help="cloudsql-backup: where the backup is stored (multi-region)")
    p.add_argument("--region", help="rds-snapshot: the instance's region")


def register(subparsers) -> None:
    p = subparsers.add_parser("snapshot-step", help="take one role's snapshot of a snapshot set and record it")
    p.add_argument("--role", required=True, type=check_role)
    p.add_argument("--dest", required=True, help="the backup store URL")
    p.add_argument("--set-id", help=f"the set id (default: env {SET_ID_ENV}, the pod name)")
    p.add_argument("--migration-id", type=int, required=True)
    p.add_argument("--serial-id", type=int, default=None, help="logical synchronizer upgrades: the serial")
    p.add_argument("--method", required=True, choices=METHODS)
    _add_volume_options(p, step=True)
    _add_managed_options(p)
    p.add_argument("--lock-for", type=cli_types.duration, default=None, help="EBS Snapshot Lock duration")
    p.set_defaults(func=cmd_snapshot_step)

    p = subparsers.add_parser("snapshot-seal", help="check a snapshot set's steps and ordering; write its manifest")
    p.add_argument("--dest", required=True)
    p.add_argument("--set-id", help=f"the set id (default: env {SET_ID_ENV})")
    p.add_argument("--migration-id", type=int, required=True)
    p.add_argument("--serial-id", type=int, default=None)
    p.add_argument("--roles", required=True, type=_roles, help="comma-separated: apps,participant,...")
    p.set_defaults(func=cmd_snapshot_seal)

    p = subparsers.add_parser("prune-snapshots", help="keep snapshot sets by tier, delete the others' snapshots")
    p.add_argument("--dest", required=True)
    p.add_argument("--migration-id", type=int, required=True, help="the node's current migration id (for events)")
    p.add_argument("--keep-recent", type=cli_types.duration, required=True)
    p.add_argument(
        "--historical-cadence",
        type=cli_types.duration,
        default=None,
        help="keep a historical tier of snapshot sets at this cadence (default: none)",
    )
    p.add_argument(
        "--lock-for",
        type=cli_types.duration,
        default=None,
        help="a refused deletion of a snapshot younger than this is a lock doing its job, not a failure",
    )
    p.add_argument(
        "--leftover-grace",
        type=cli_types.duration,
        default=timedelta(hours=6),
        help="snapshots of runs that never sealed are removed once this old (default 6h)",
    )
    p.add_argument("--copy-to-region", help="RDS / EBS: the DR region of the copies")
    _add_volume_options(p, step=False)
    _add_managed_options(p)
    p.set_defaults(func=cmd_prune_snapshots)

    p = subparsers.add_parser(
        "prepare-datadir", help="write a snapshot's backup label and WAL into its restored data directory"
    )
    p.add_argument("--dest", required=True)
    p.add_argument("--set", required=True, help="the snapshot set id")
    p.add_argument("--migration-id", type=int, required=True)
    p.add_argument("--role", required=True, type=check_role)
    p.add_argument("--datadir", required=True, type=Path, help="PGDATA on the restored volume (server not started)")
    p.set_defaults(func=cmd_prepare_datadir)

    p = subparsers.add_parser("restore-snapshot-volume", help="create a PVC from a role's VolumeSnapshot")
    p.add_argument("--dest", required=True)
    p.add_argument("--set", required=True, help="the snapshot set id")
    p.add_argument("--migration-id", type=int, default=None, help="default: found in the store")
    p.add_argument("--role", required=True, type=check_role)
    p.add_argument("--namespace", required=True)
    p.add_argument("--pvc", required=True, help="the new PVC's name")
    p.add_argument("--storage-class", default=None)
    p.add_argument("--replace", action="store_true", help="delete an existing PVC of that name first")
    p.add_argument("--volume", choices=("data", "wal"), default="data",
                   help="which of the role's volumes (wal: where pg_wal had its own PVC; default data)")  # fmt: skip
    p.add_argument("--kube-api", help="Kubernetes API URL (default: in-cluster; env SV_BACKUPS_KUBE_API)")
    p.set_defaults(func=cmd_restore_snapshot_volume)

    p = subparsers.add_parser(
        "restore-snapshot-set",
        help="restore every role of a snapshot set in its order (plan only without --execute)",
    )
    p.add_argument("url", help="STORE_URL/snapshot-sets/<migration id>/<set id> (list-sets prints it)")
    p.add_argument(
        "--target",
        action="append",
        type=_role_target,
        default=[],
        metavar="ROLE=NAME",
        help="volume: the new PVC (default: the PVC the snapshot was taken of); cloudsql-backup: the "
        "existing instance restored onto; rds-snapshot: a NEW instance id (repeat per role)",
    )
    p.add_argument("--execute", action="store_true", help="do it (default: print the plan only)")
    p.add_argument(
        "--from-dr-copy",
        action="store_true",
        help="restore from the DR copies (EBS copy / PD snapshot imported as a Retain "
        "VolumeSnapshotContent; the RDS copy in the DR region); Cloud SQL backups are multi-region",
    )
    p.add_argument(
        "--in-place",
        action="store_true",
        help="cloudsql-backup: allow restoring onto the backup's own instance (a failover)",
    )
    p.add_argument("--namespace", default=None, help="volume roles: where the PVCs go (default: the snapshot's)")
    p.add_argument("--storage-class", default=None)
    p.add_argument(
        "--replace",
        action="store_true",
        help="volume roles: delete an existing PVC of the target name first (scale its workload to 0)",
    )
    p.add_argument(
        "--image",
        default=None,
        help="the job image pinned by digest, for the prepare-datadir pod (REGISTRY/IMAGE@sha256:...)",
    )
    p.add_argument(
        "--datadir-subpath",
        default=DEFAULT_DATADIR_SUBPATH,
        help=f"PGDATA inside the volume (default {DEFAULT_DATADIR_SUBPATH}, the postgres image's)",
    )
    p.add_argument(
        "--datadir-uid",
        type=int,
        default=DEFAULT_DATADIR_UID,
        help=f"the uid owning PGDATA; the prepare pod runs as it (default {DEFAULT_DATADIR_UID})",
    )
    p.add_argument(
        "--service-account",
        default=None,
        help="the prepare pod's ServiceAccount (its cloud identity reads the store; no API token mounted)",
    )
    p.add_argument(
        "--target-project", default=None, help="cloudsql-backup: the target's project (default: the source's)"
    )
    p.add_argument("--instance-class", default=None, help="rds-snapshot: the new instance's class")
    p.add_argument("--subnet-group", default=None, help="rds-snapshot: the new instance's DB subnet group")
    p.add_argument("--security-group", action="append", default=[], help="rds-snapshot: VPC security group id")
    p.add_argument("--parameter-group", default=None, help="rds-snapshot: the new instance's parameter group")
    p.add_argument("--kube-api", help="Kubernetes API URL (default: in-cluster; env SV_BACKUPS_KUBE_API)")
    p.add_argument(
        "--ready-timeout",
        type=cli_types.duration,
        default=timedelta(hours=1),
        help="how long each wait may take (snapshot import, prepare pod; default 1h)",
    )
    p.add_argument("--poll-interval", type=float, default=5.0, help="seconds between readiness checks")
    p.set_defaults(func=cmd_restore_snapshot_set)


def parse_role_target(text: str) -> tuple[str, str]:
    """ROLE=NAME: a PVC, a Cloud SQL instance or a new RDS instance id (no secrets: the whole value is shown)."""
    role, sep, name = text.partition("=")
    if not sep or not name or not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]{0,252}$", name):
        raise ValueError(f"--target {text!r}: expected ROLE=NAME (a PVC, a Cloud SQL instance or a new RDS instance "
                         "id: letters, digits, hyphens)")  # fmt: skip
    return check_role(role), name


_role_target = cli_types.from_parser(parse_role_target)


def _roles(text: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    if not roles:
        raise argparse.ArgumentTypeError("--roles: give at least one role, e.g. apps,participant")
    try:
        return [check_role(r) for r in roles]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
