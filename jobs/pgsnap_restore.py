"""The restore side of in-cluster snapshot sets: a PVC from a role's VolumeSnapshot (`restore-snapshot-volume`),
and a restored data directory made to start as the online backup it is (`prepare-datadir`: backup label,
tablespace map and the WAL from start to stop, checksums verified). See docs/jobs-snapshots.md, "Restore"."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from jobs.destinations import Destination, open_destination
from jobs.kube import (
    KubeClient,
    KubeError,
    pods_path,
    pvc_path,
    pvcs_path,
    volume_snapshot_content_path,
    volume_snapshots_path,
)
from jobs.pgsnap import verify_snapshot_set
from jobs.pgsnap_volume import ROLE_LABEL, SET_ID_ANNOTATION, SLOT_PREFIX
from jobs.volume_snapshots import status_of
from rules.manifest import format_time
from rules.naming import MANAGED_BY
from rules.snapshot_sets import (
    CLOUDSQL_BACKUP,
    ONLINE,
    RDS_SNAPSHOT,
    SNAPSHOT_SETS,
    VOLUME_SNAPSHOT,
    data_taken_by,
    snapshot_set_prefix,
)


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


# ---------------------------------------------------------------------------------------- whole snapshot sets
#
# `restore-snapshot-set`: every role of a set, in the set's role order, each by its method. The set is checked
# first (manifest, ordering, WAL objects, then each snapshot or DR copy still there and ready, and every target
# allowed); only then is anything created, and the first failure stops the run. Without `execute` the same
# checks of the manifest run and the plan (commands and manifests) is printed instead. Names kept stable for the
# drill (jobs/drill_snapshots.py): SetRestoreOptions, RestoreAccess, SetRestoreError, parse_snapshot_set_url,
# load_snapshot_set, plan_snapshot_set_restore, check_snapshot_set_restore, restore_snapshot_set, prepare_pod_body.

CLOUDSQL_EMULATOR_ENV = "SV_BACKUPS_CLOUDSQL_EMULATOR"
PREPARE_MOUNT = "/restore"
# bitnami/postgresql, the chart of Splice's SV examples (components/settings.py default_pvc): the volume is
# mounted at /bitnami/postgresql, PGDATA is its `data` directory, and the server runs as uid/gid 1001, which owns
# it. (The deprecated splice-postgres chart: the postgres image, uid 999; pass --datadir-uid/--datadir-subpath.)
DEFAULT_DATADIR_UID = 1001
DEFAULT_DATADIR_SUBPATH = "data"
DRIVERS = {"gcp": "pd.csi.storage.gke.io", "aws": "ebs.csi.aws.com"}
_DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


class SetRestoreError(Exception):
    """A check refused the set, or a role's restore failed: `role` names it (None: the set as a whole)."""

    def __init__(self, message: str, role: str | None = None):
        super().__init__(f"{role}: {message}" if role else message)
        self.role = role


@dataclass(frozen=True)
class SetRestoreOptions:
    """What `restore-snapshot-set` is told. `targets`: role -> the new PVC (volume), the existing Cloud SQL
    instance restored onto, or the NEW RDS instance id; a volume role defaults to the PVC it was taken from."""

    targets: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None
    storage_class: str | None = None
    from_dr_copy: bool = False
    in_place: bool = False
    replace: bool = False
    image: str | None = None
    datadir_subpath: str = DEFAULT_DATADIR_SUBPATH
    datadir_uid: int = DEFAULT_DATADIR_UID
    service_account: str | None = None
    target_project: str | None = None
    instance_class: str | None = None
    subnet_group: str | None = None
    security_groups: tuple[str, ...] = ()
    parameter_group: str | None = None
    timeout: float = 3600.0
    poll_interval: float = 5.0


@dataclass
class RestoreAccess:
    """How the providers are reached (injectable for tests): a Kubernetes client for volume roles, the Cloud SQL
    Admin API (URL and token source; None: Google's, with ADC) and the RDS client factory (None: boto3)."""

    kube: KubeClient | None = None
    cloudsql_api_url: str | None = None
    cloudsql_token_source: Callable[[], str] | None = None
    cloudsql_poll: Any = None
    rds_client_factory: Callable[[str], Any] | None = None
    rds_poll: Any = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic


@dataclass
class RoleRestore:
    """One role's restore as planned: what --execute does, and the same as commands an operator can run."""

    role: str
    method: str
    target: str
    title: str
    commands: list[str]
    manifests: list[dict[str, Any]] = field(default_factory=list)
    # Volume roles: the imported DR copy (VolumeSnapshotContent, VolumeSnapshot), the claim, the prepare pod.
    content: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    claim: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    # Managed roles: the provider call's arguments.
    call: dict[str, Any] = field(default_factory=dict)


def parse_snapshot_set_url(url: str) -> tuple[str, int, str]:
    """STORE/snapshot-sets/<migration id>/<set id> -> (store URL, migration id, set id)."""
    parts = url.rstrip("/").rsplit("/", 3)
    if len(parts) != 4 or parts[1] != SNAPSHOT_SETS or not parts[2].isdigit() or not parts[3]:
        raise SetRestoreError(
            f"{url!r}: expected STORE_URL/{SNAPSHOT_SETS}/<migration id>/<set id> (list-sets shows it)"
        )
    return parts[0], int(parts[2]), parts[3]


def load_snapshot_set(dest: Destination, migration_id: int, set_id: str) -> dict[str, Any]:
    """The set's manifest, checked as verify-set checks it: valid, the ordering rule holds, every WAL object there
    with its sha256. Raises SetRestoreError naming every problem."""
    manifest, errors = verify_snapshot_set(dest, snapshot_set_prefix(migration_id, set_id))
    if manifest is None or errors:
        raise SetRestoreError(
            f"snapshot set {set_id} (migration id {migration_id}) cannot be restored: " + "; ".join(errors)
        )
    return manifest


def _dns(text: str, limit: int = 253) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return name[:limit].rstrip("-.")


def _data_volume(record: dict[str, Any]) -> dict[str, Any]:
    for volume in (record.get("details") or {}).get("volume_snapshots") or []:
        if volume.get("volume", "data") == "data":
            return volume
    return {}


def dr_copy_handle(record: dict[str, Any]) -> tuple[str, str]:
    """(CSI driver, disk snapshot handle) of a volume role's copy that survives the primary region: on AWS the EBS
    copy in the DR region (dr_copy.snapshot_ids.data); on GCP the PD snapshot itself, stored in the multi-region
    the snapshot class pins (global, readable from the DR region)."""
    copy = record.get("dr_copy") or {}
    ids = copy.get("snapshot_ids") or {}
    if ids.get("data"):
        return DRIVERS["aws"], str(ids["data"])
    handle = str(_data_volume(record).get("snapshot_handle") or "")
    if handle.startswith("projects/"):
        return DRIVERS["gcp"], handle
    raise SetRestoreError(
        "no DR copy recorded (neither an EBS copy in dr_copy.snapshot_ids nor a PD snapshot handle in "
        "details.volume_snapshots): restore from the primary's VolumeSnapshot (without --from-dr-copy)",
        record["role"],
    )


def prepare_pod_body(
    name: str,
    namespace: str,
    claim: str,
    *,
    image: str,
    store_url: str,
    set_id: str,
    migration_id: int,
    role: str,
    options: SetRestoreOptions,
) -> dict[str, Any]:
    """The one-off pod that runs prepare-datadir on the restored claim before PostgreSQL starts: the job image
    pinned by digest (its entrypoint is `python -m jobs`), the claim as its only volume, no Kubernetes API token,
    as the data directory's owner, nothing writable but the claim. The store is read with the pod's cloud
    identity (`service_account`: Workload Identity / IRSA), never a key in the manifest."""
    uid = options.datadir_uid
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "prepare-datadir",
                "image": image,
                "args": [
                    "prepare-datadir",
                    "--dest",
                    store_url,
                    "--set",
                    set_id,
                    "--migration-id",
                    str(migration_id),
                    "--role",
                    role,
                    "--datadir",
                    f"{PREPARE_MOUNT}/{options.datadir_subpath}".rstrip("/"),
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "privileged": False,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "restored", "mountPath": PREPARE_MOUNT}],
            }
        ],
        "volumes": [{"name": "restored", "persistentVolumeClaim": {"claimName": claim}}],
    }
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {SET_ID_ANNOTATION: set_id, ROLE_LABEL: role},
        },
        "spec": spec,
    }


def _heredoc(verb: str, namespace: str, body: dict[str, Any]) -> str:
    return f"kubectl -n {shlex.quote(namespace)} {verb} -f - <<'EOF'\n{json.dumps(body, indent=2)}\nEOF"


def _volume_plan(
    store_url: str, manifest: dict[str, Any], record: dict[str, Any], options: SetRestoreOptions, target: str
) -> RoleRestore:
    role, set_id, migration_id = record["role"], manifest["set_id"], manifest["migration_id"]
    snap_ns, _, snap_name = record["handle"].partition("/")
    namespace = options.namespace or snap_ns
    q = shlex.quote
    if not options.image or not _DIGEST.match(options.image):
        raise SetRestoreError(
            f"--image {options.image!r}: the prepare-datadir pod needs the job image pinned by digest "
            "(REGISTRY/IMAGE@sha256:<64 hex>)",
            role,
        )
    size = _data_volume(record).get("restore_size")
    content = snapshot = None
    commands: list[str] = []
    if options.from_dr_copy:
        driver, handle = dr_copy_handle(record)
        snap_name = _dns(f"{target}-from-{set_id}")
        content = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": _dns(f"{namespace}-{snap_name}"), "labels": dict(MANAGED_BY)},
            "spec": {
                "deletionPolicy": "Retain",  # deleting the import must never delete the DR copy
                "driver": driver,
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"name": snap_name, "namespace": namespace},
            },
        }
        snapshot = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": snap_name,
                "namespace": namespace,
                "labels": dict(MANAGED_BY),
                "annotations": {SET_ID_ANNOTATION: set_id, ROLE_LABEL: role},
            },
            "spec": {"source": {"volumeSnapshotContentName": content["metadata"]["name"]}},
        }
        commands += [
            _heredoc("apply", namespace, content),
            _heredoc("apply", namespace, snapshot),
            f"kubectl -n {q(namespace)} wait volumesnapshot/{q(snap_name)} "
            "--for=jsonpath='{.status.readyToUse}'=true --timeout=30m",
        ]
    elif snap_ns != namespace:
        raise SetRestoreError(
            f"the VolumeSnapshot is in namespace {snap_ns}; a PVC can be restored from it only there (asked for "
            f"{namespace}); --from-dr-copy imports the disk snapshot into any namespace",
            role,
        )
    if not size:
        raise SetRestoreError("the step record has no restore_size for the data volume", role)
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": target,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {SET_ID_ANNOTATION: set_id, ROLE_LABEL: role},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap_name},
            **({"storageClassName": options.storage_class} if options.storage_class else {}),
        },
    }
    pod_name = _dns(f"{target}-prepare", 63)
    pod = prepare_pod_body(
        pod_name,
        namespace,
        target,
        image=options.image,
        store_url=store_url,
        set_id=set_id,
        migration_id=migration_id,
        role=role,
        options=options,
    )
    if options.replace:
        commands.append(f"kubectl -n {q(namespace)} delete pvc {q(target)} --ignore-not-found --wait")
    commands += [
        _heredoc("create", namespace, claim),
        _heredoc("create", namespace, pod),
        f"kubectl -n {q(namespace)} wait pod/{q(pod_name)} --for=jsonpath='{{.status.phase}}'=Succeeded --timeout=30m",
        f"kubectl -n {q(namespace)} logs pod/{q(pod_name)}; kubectl -n {q(namespace)} delete pod {q(pod_name)}",
    ]
    source = "its DR copy" if options.from_dr_copy else f"VolumeSnapshot {record['handle']}"
    return RoleRestore(
        role,
        VOLUME_SNAPSHOT,
        f"{namespace}/{target}",
        f"{role}: PVC {namespace}/{target} from {source} ({size}), then prepare-datadir ({record['consistency']})",
        commands,
        [m for m in (content, snapshot, claim, pod) if m],
        content,
        snapshot,
        claim,
        pod,
    )


def _cloudsql_plan(record: dict[str, Any], options: SetRestoreOptions, target: str) -> RoleRestore:
    from jobs.pgsnap_cloudsql import parse_handle

    role = record["role"]
    try:
        project, source, run_id = parse_handle(record["handle"])
    except Exception as error:
        raise SetRestoreError(str(error), role) from None
    target_project = options.target_project or project
    if (target_project, target) == (project, source) and not options.in_place:
        raise SetRestoreError(
            f"--target {role}={target} is the backup's own instance {project}/{source}: restoring overwrites the live "
            "database; name another instance, or pass --in-place (a failover onto the same instance)",
            role,
        )
    where = (record.get("details") or {}).get("location") or "the instance's default location"
    command = shlex.join(
        [
            "gcloud",
            "sql",
            "backups",
            "restore",
            run_id,
            f"--restore-instance={target}",
            f"--backup-instance={source}",
            f"--backup-project={project}",
            f"--project={target_project}",
            "--quiet",
        ]
    )
    return RoleRestore(
        role,
        CLOUDSQL_BACKUP,
        f"{target_project}/{target}",
        f"{role}: Cloud SQL backup run {run_id} of {project}/{source} (stored in {where}) onto the existing "
        f"instance {target_project}/{target}, overwriting it",
        [command],
        call={
            "project": project,
            "source_instance": source,
            "backup_run_id": run_id,
            "target_instance": target,
            "in_place": options.in_place,
            "target_project": target_project,
        },
    )


def _rds_plan(record: dict[str, Any], options: SetRestoreOptions, target: str) -> RoleRestore:
    role = record["role"]
    if options.from_dr_copy:
        copy = record.get("dr_copy") or {}
        if not copy.get("handle") or not copy.get("region"):
            raise SetRestoreError(
                "no DR copy recorded (dr_copy.handle, dr_copy.region): restore without --from-dr-copy", role
            )
        region, snapshot = copy["region"], copy["handle"]
    else:
        region, snapshot = (record.get("details") or {}).get("region"), record["handle"]
    argv = [
        "aws",
        "rds",
        "restore-db-instance-from-db-snapshot",
        "--region",
        region,
        "--db-instance-identifier",
        target,
        "--db-snapshot-identifier",
        snapshot,
    ]
    for flag, value in (
        ("--db-instance-class", options.instance_class),
        ("--db-subnet-group-name", options.subnet_group),
        ("--db-parameter-group-name", options.parameter_group),
    ):
        if value:
            argv += [flag, value]
    if options.security_groups:
        argv += ["--vpc-security-group-ids", *options.security_groups]
    return RoleRestore(
        role,
        RDS_SNAPSHOT,
        f"{region}/{target}",
        f"{role}: RDS snapshot {snapshot} into the NEW instance {region}/{target}",
        [
            shlex.join(argv),
            shlex.join(
                ["aws", "rds", "wait", "db-instance-available", "--region", region, "--db-instance-identifier", target]
            ),
        ],
        call={"region": region, "snapshot_id_or_arn": snapshot, "target_instance": target},
    )


def _check_target(method: str, role: str, target: str) -> None:
    """A target name the provider accepts, checked before anything runs (a bad one found at its role's turn would
    stop the run after the roles before it were restored)."""
    from jobs.pgsnap_cloudsql import _INSTANCE
    from jobs.pgsnap_rds import _INSTANCE_ID

    allowed = {
        VOLUME_SNAPSHOT: (re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"), "a PVC name (lowercase DNS name)"),
        CLOUDSQL_BACKUP: (_INSTANCE, "a Cloud SQL instance name (lowercase letters, digits, hyphens)"),
        RDS_SNAPSHOT: (_INSTANCE_ID, "an RDS DB instance identifier (a letter, then letters, digits, single hyphens)"),
    }
    pattern, what = allowed[method]
    if not pattern.match(target):
        raise SetRestoreError(f"--target {role}={target}: expected {what}", role)


def plan_snapshot_set_restore(
    store_url: str, manifest: dict[str, Any], options: SetRestoreOptions
) -> list[RoleRestore]:
    """Per role, in the set's role order, what restoring it means; refuses (SetRestoreError) a target that is not
    allowed or missing, before anything is asked of a provider."""
    records = {r["role"]: r for r in manifest["snapshots"]}
    unknown = sorted(set(options.targets) - set(records))
    if unknown:
        raise SetRestoreError(
            f"--target names roles the set does not have: {', '.join(unknown)} "
            f"(the set's roles: {', '.join(manifest['roles'])})"
        )
    plans, missing = [], []
    for role in manifest["roles"]:
        record = records[role]
        target = options.targets.get(role)
        if record["method"] == VOLUME_SNAPSHOT:
            target = target or _data_volume(record).get("pvc")
        if not target:
            kind = "the existing Cloud SQL instance" if record["method"] == CLOUDSQL_BACKUP else "a NEW RDS instance id"
            missing.append(f"--target {role}=<{kind}>")
            continue
        _check_target(record["method"], role, target)
        if record["method"] == VOLUME_SNAPSHOT:
            plans.append(_volume_plan(store_url, manifest, record, options, target))
        elif record["method"] == CLOUDSQL_BACKUP:
            plans.append(_cloudsql_plan(record, options, target))
        elif record["method"] == RDS_SNAPSHOT:
            plans.append(_rds_plan(record, options, target))
        else:
            raise SetRestoreError(f"method {record['method']!r} is not one this tool restores", role)
    if missing:
        raise SetRestoreError("every managed role needs its target: " + ", ".join(missing))
    return plans


# ------------------------------------------------------------------------------------------- checks, execution


def _wait_ready_snapshot(
    client: KubeClient, namespace: str, name: str, role: str, options: SetRestoreOptions, access: RestoreAccess
) -> dict[str, Any]:
    deadline = access.monotonic() + options.timeout
    while True:
        found = client.get_optional(volume_snapshots_path(namespace, name))
        status = status_of(found) if found else {}
        if found is None:
            raise SetRestoreError(f"VolumeSnapshot {namespace}/{name} is gone", role)
        if status.get("readyToUse") is True:
            return found
        if (status.get("error") or {}).get("message") and access.monotonic() >= deadline:
            raise SetRestoreError(f"VolumeSnapshot {namespace}/{name}: {status['error']['message']}", role)
        if access.monotonic() >= deadline:
            raise SetRestoreError(
                f"VolumeSnapshot {namespace}/{name} not ready after {options.timeout:.0f}s "
                "(is the disk snapshot handle still there?)",
                role,
            )
        access.sleep(options.poll_interval)


def _cloudsql_api(access: RestoreAccess):
    from jobs.pgsnap_cloudsql import AdminApi, Poll

    emulator = os.environ.get(CLOUDSQL_EMULATOR_ENV)
    url = access.cloudsql_api_url or emulator
    token = access.cloudsql_token_source or ((lambda: "emulator") if emulator and not access.cloudsql_api_url else None)
    return url, token, access.cloudsql_poll or Poll(), AdminApi


def check_snapshot_set_restore(
    plans: list[RoleRestore],
    manifest: dict[str, Any],
    options: SetRestoreOptions,
    access: RestoreAccess,
    log: Callable[..., Any],
) -> None:
    """Each role's snapshot (or DR copy) still there and ready, each target allowed: before anything is
    created. Volume DR copies are imported here (a Retain VolumeSnapshotContent and its VolumeSnapshot, which
    changes nothing else) and waited for, because only the snapshot controller can say whether the handle exists."""
    records = {r["role"]: r for r in manifest["snapshots"]}
    for plan in plans:
        record, role = records[plan.role], plan.role
        if plan.method == VOLUME_SNAPSHOT:
            client = access.kube
            if client is None:
                raise SetRestoreError("volume roles need the Kubernetes API (--kube-api, or run in the cluster)", role)
            namespace = plan.claim["metadata"]["namespace"]
            try:
                if plan.content is not None:
                    name = plan.snapshot["metadata"]["name"]
                    if client.get_optional(volume_snapshots_path(namespace, name)) is None:
                        content_path = volume_snapshot_content_path(plan.content["metadata"]["name"])
                        if client.get_optional(content_path) is None:
                            client.create(volume_snapshot_content_path("").rstrip("/"), plan.content)
                        client.create(volume_snapshots_path(namespace), plan.snapshot)
                        log("restore.imported", role=role, handle=plan.content["spec"]["source"]["snapshotHandle"])
                    _wait_ready_snapshot(client, namespace, name, role, options, access)
                else:
                    snap_ns, _, snap_name = record["handle"].partition("/")
                    found = client.get_optional(volume_snapshots_path(snap_ns, snap_name))
                    if found is None or status_of(found).get("readyToUse") is not True:
                        state = "gone" if found is None else "not ready"
                        raise SetRestoreError(f"VolumeSnapshot {record['handle']} is {state}", role)
                if not options.replace and client.get_optional(pvc_path(namespace, plan.claim["metadata"]["name"])):
                    raise SetRestoreError(
                        f"PVC {plan.target} exists: not overwriting it (--replace deletes it first; "
                        "scale its workload to 0 before)",
                        role,
                    )
            except KubeError as error:
                raise SetRestoreError(str(error), role) from None
        elif plan.method == CLOUDSQL_BACKUP:
            url, token, poll, admin_api = _cloudsql_api(access)
            call = plan.call
            api = admin_api(api_url=url, token_source=token, poll=poll)
            path = (
                f"/v1/projects/{call['project']}/instances/{call['source_instance']}/backupRuns/{call['backup_run_id']}"
            )
            try:
                run = api.call_retrying("GET", path)
            except Exception as error:
                gone = getattr(error, "status", None) == 404
                raise SetRestoreError(f"backup run {record['handle']} is gone" if gone else str(error), role) from None
            finally:
                api.close()
            if run.get("status") != "SUCCESSFUL":
                raise SetRestoreError(f"backup run {record['handle']} is {run.get('status')!r}, not SUCCESSFUL", role)
        elif plan.method == RDS_SNAPSHOT:
            from jobs.pgsnap_rds import _aws_errors, _code, default_client_factory, parse_snapshot_arn

            call = plan.call
            client = (access.rds_client_factory or default_client_factory)(call["region"])
            snapshot = call["snapshot_id_or_arn"]
            # Described by identifier in its own region (the ARN's region is checked by the restore itself).
            ident = parse_snapshot_arn(snapshot)[1] if snapshot.startswith("arn:") else snapshot
            try:
                found = client.describe_db_snapshots(DBSnapshotIdentifier=ident)["DBSnapshots"]
            except _aws_errors() as error:
                gone = _code(error) == "DBSnapshotNotFound"
                raise SetRestoreError(
                    f"RDS snapshot {call['snapshot_id_or_arn']} is {'gone' if gone else 'unreadable: ' + str(error)}",
                    role,
                ) from None
            if not found or found[0].get("Status") != "available":
                raise SetRestoreError(f"RDS snapshot {call['snapshot_id_or_arn']} is not available", role)
            try:
                client.describe_db_instances(DBInstanceIdentifier=call["target_instance"])
            except _aws_errors() as error:
                if _code(error) != "DBInstanceNotFound":
                    raise SetRestoreError(f"DescribeDBInstances {call['target_instance']}: {error}", role) from None
            else:
                raise SetRestoreError(
                    f"--target {role}={call['target_instance']}: that RDS instance exists; a "
                    "snapshot is restored into a NEW instance (choose a new identifier)",
                    role,
                )
        log("restore.checked", role=role, method=plan.method, target=plan.target)


def _run_prepare_pod(client: KubeClient, plan: RoleRestore, options: SetRestoreOptions, access: RestoreAccess) -> str:
    namespace, name = plan.pod["metadata"]["namespace"], plan.pod["metadata"]["name"]
    if client.get_optional(pods_path(namespace, name)) is not None:
        client.delete(pods_path(namespace, name))  # a previous attempt's pod: its result is not this run's
    client.create(pods_path(namespace), plan.pod)
    deadline = access.monotonic() + options.timeout
    claim = plan.claim["metadata"]["name"]
    while True:
        # The claim too: its phase is what an operator needs when the pod never starts (a class that cannot
        # restore the snapshot leaves it Pending).
        claim_phase = (client.get(pvc_path(namespace, claim)).get("status") or {}).get("phase")
        pod = client.get(pods_path(namespace, name))
        phase = (pod.get("status") or {}).get("phase")
        terminated = next(
            (
                (s.get("state") or {}).get("terminated") or {}
                for s in (pod.get("status") or {}).get("containerStatuses") or []
            ),
            {},
        )
        message = (terminated.get("message") or terminated.get("reason") or "").strip()[:500]
        if phase == "Succeeded":
            client.delete(pods_path(namespace, name))
            return message
        if phase == "Failed":
            raise SetRestoreError(
                f"prepare-datadir pod {namespace}/{name} failed (exit {terminated.get('exitCode')}): "
                f"{message or 'no message'}; the pod is left for `kubectl logs`",
                plan.role,
            )
        if access.monotonic() >= deadline:
            raise SetRestoreError(
                f"prepare-datadir pod {namespace}/{name} not Succeeded after {options.timeout:.0f}s "
                f"(phase {phase}; PVC {claim} {claim_phase or 'without a phase'})",
                plan.role,
            )
        access.sleep(options.poll_interval)


def _execute_role(plan: RoleRestore, options: SetRestoreOptions, access: RestoreAccess) -> dict[str, Any]:
    if plan.method == VOLUME_SNAPSHOT:
        client = access.kube
        assert client is not None
        namespace, name = plan.claim["metadata"]["namespace"], plan.claim["metadata"]["name"]
        replaced = False
        try:
            if options.replace and client.get_optional(pvc_path(namespace, name)) is not None:
                client.delete(pvc_path(namespace, name))
                replaced = True
            client.create(pvcs_path(namespace), plan.claim)
            said = _run_prepare_pod(client, plan, options, access)
        except KubeError as error:
            hint = " (the old PVC is still being deleted: a pod still mounts it?)" if error.conflict else ""
            raise SetRestoreError(f"{error}{hint}", plan.role) from None
        return {"pvc": plan.target, "replaced": replaced, "prepare": said}
    if plan.method == CLOUDSQL_BACKUP:
        from jobs.pgsnap_cloudsql import restore_cloudsql_backup

        url, token, poll, _ = _cloudsql_api(access)
        try:
            return restore_cloudsql_backup(**plan.call, api_url=url, token_source=token, poll=poll)
        except Exception as error:
            raise SetRestoreError(str(error), plan.role) from None
    from jobs.pgsnap_rds import DEFAULT_POLL, restore_rds_snapshot

    extra = {
        "instance_class": options.instance_class,
        "subnet_group": options.subnet_group,
        "security_groups": list(options.security_groups) or None,
        "parameter_group": options.parameter_group,
    }
    try:
        return restore_rds_snapshot(
            **plan.call, **extra, client_factory=access.rds_client_factory, poll=access.rds_poll or DEFAULT_POLL
        )
    except Exception as error:
        raise SetRestoreError(str(error), plan.role) from None


@dataclass
class SetRestoreResult:
    set_id: str
    migration_id: int
    plans: list[RoleRestore]
    executed: bool
    done: list[dict[str, Any]] = field(default_factory=list)
    rto_seconds: float | None = None
    data_taken_by: str | None = None


def restore_snapshot_set(
    set_url: str,
    options: SetRestoreOptions,
    access: RestoreAccess | None = None,
    *,
    execute: bool = False,
    log: Callable[..., Any] = lambda *a, **k: None,
) -> SetRestoreResult:
    """Check the set, plan every role; with `execute`, check each snapshot and target, then restore role after
    role in the set's order, stopping at the first failure (SetRestoreError names the role; `done` on the
    exception lists what was restored before it). The RTO is measured from the start to the last role done."""
    access = access or RestoreAccess()
    started = access.monotonic()
    store_url, migration_id, set_id = parse_snapshot_set_url(set_url)
    manifest = load_snapshot_set(open_destination(store_url), migration_id, set_id)
    plans = plan_snapshot_set_restore(store_url, manifest, options)
    result = SetRestoreResult(set_id, migration_id, plans, execute, data_taken_by=format_time(data_taken_by(manifest)))
    if not execute:
        return result
    check_snapshot_set_restore(plans, manifest, options, access, log)
    for plan in plans:
        try:
            facts = _execute_role(plan, options, access)
        except SetRestoreError as error:
            error.done = list(result.done)  # type: ignore[attr-defined]
            raise
        result.done.append({"role": plan.role, "method": plan.method, "target": plan.target, **facts})
        log("restore.role_done", role=plan.role, method=plan.method, target=plan.target)
    result.rto_seconds = round(access.monotonic() - started, 3)
    return result
