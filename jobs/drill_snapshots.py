"""`python -m jobs drill-snapshots`: does the newest complete snapshot set restore into servers that start?

One run (the weekly CronJob `<node>-drill-snapshots`, docs/jobs-drills.md):
1. picks the newest complete snapshot set of `--migration-id` in the store (`jobs/pgsnap.py`
   complete_snapshot_sets: a valid, sealed manifest whose ordering holds), or `--set-id`;
2. per in-cluster role (method volume-snapshot): a scratch PVC from the role's VolumeSnapshot
   (`jobs/pgsnap_restore.restore_volume`, the restore path itself: a snapshot that is gone or not ready fails
   here); managed roles (Cloud SQL, RDS) are listed as not drilled (see "Managed roles" in docs/jobs-drills.md);
3. one scratch pod mounting every restored PVC: per role an init container running `prepare-datadir` (the backup
   label and the WAL from start to stop, checksums checked), then one container, `drill-snapshots-probe`, that
   starts a server on each restored data directory (unix socket only, no TCP; WAL archiving, replication and
   preloaded libraries off; its own pg_hba), waits until it has reached consistency and accepts connections,
   checks that every database of the stack's config for that role is there, checks the apps-before-participant
   order in the restored data (`jobs/drill.py ordering_from_data`), stops the servers and writes the findings to
   its termination message (read from the pod's status: no log access needed);
4. deletes the pod and the PVCs whatever happened (also on SIGTERM: the Job's deadline) and waits until they
   are gone. The snapshots themselves are only read.

RTO is the wall time from the first PVC's creation to the probe's success (disk from snapshot, prepare, WAL
replay, start): what a restore of this set takes before the node can start. RPO is the set's age at the start of
the drill (its first snapshot's request), held to `--max-age` as the Postgres drill does.

The drill pod talks to the Kubernetes API (its token, a Role: get volumesnapshots; create/get/delete
persistentvolumeclaims and pods) and reads the store as the restore identity; the scratch pod runs as that
identity too (prepare-datadir reads the WAL from the store) without a token. Outcome: one `backup.completed` /
`backup.failed` event with `"kind": "drill-postgres-snapshots"`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs import cli_types, events
from jobs.destinations import open_destination
from jobs.drill_run import run_drill
from jobs.drill_snapshots_probe import (
    MESSAGE_LIMIT,
    PGDATA_SUBPATH,
    PROBE_COMMAND,
    RESTORED,
    TMP,
    parse_databases,
    parse_role_values,
)
from jobs.kube import KubeClient, KubeError, pods_path, pvc_path, resolve_config
from rules.manifest import format_time, parse_time
from rules.naming import LABEL_PREFIX, MANAGED_BY
from rules.retention import DURATION_HELP, format_duration
from rules.snapshot_sets import VOLUME_SNAPSHOT, set_taken_at

KIND = "drill-postgres-snapshots"
PICK_COMMAND = "drill-snapshots-pick"
DRILL_LABEL = f"{LABEL_PREFIX}/drill"
# The bitnami/postgresql chart Splice's SV examples install (components/settings.py default_pvc) runs the server as
# uid 1001 and keeps PGDATA in `data/` of its volume. PostgreSQL refuses a data directory owned by another user,
# so the scratch pod runs as the source's uid; both are flags for other charts.
SOURCE_UID = 1001


class DrillFailure(Exception):
    def __init__(self, stage: str, message: str, **fields: Any):
        super().__init__(message)
        self.stage = stage
        self.fields = {k: v for k, v in fields.items() if v is not None}


class Terminated(Exception):
    pass


@dataclass
class Options:
    dest: str
    namespace: str
    migration_id: int
    databases: dict[str, list[str]]  # role -> databases the stack's config names (as the dump CronJob's --db)
    users: dict[str, str]  # role -> a login role of that instance (the backup user): trust on the scratch socket
    image: str
    service_account: str  # the scratch pod's: the restore identity (prepare-datadir reads the WAL in the store)
    storage_class: str | None = None
    timeout: timedelta = timedelta(hours=2)
    max_age: timedelta | None = None
    set_id: str | None = None
    run_as_user: int = SOURCE_UID
    pgdata: str = PGDATA_SUBPATH
    kube_api: str | None = None
    poll_interval: float = 5.0
    kube_retry_wait: float = 1.0
    # The store is read by a pick pod (the restore identity, no API token); False: read here (run by hand).
    pick_in_pod: bool = True


# ------------------------------------------------------------------------------------------ the scratch pod


def scratch_name(set_id: str) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", set_id.lower())[:30].strip("-")
    return f"drill-snap-{base}-{int(time.time()) % 100000:05d}"


def _hardened(uid: int) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_body(name: str, options: Options, set_id: str, claims: dict[str, str]) -> dict[str, Any]:
    """The scratch pod: per role an init container `prepare-datadir`, then the probe. No fsGroup: the kubelet would
    make the data directory group-writable, which PostgreSQL refuses (it must be 0700 or 0750); the pod runs as
    the uid that owns the restored files instead."""
    o = options
    mounts = [{"name": "tmp", "mountPath": TMP}]
    mounts += [{"name": f"restored-{role}", "mountPath": f"{RESTORED}/{role}"} for role in claims]
    common = {
        "image": o.image,
        "securityContext": _hardened(o.run_as_user),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [{"name": "HOME", "value": TMP}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
    }
    small = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    init = [
        {
            **common,
            "name": f"prepare-{role}",
            "command": ["python", "-m", "jobs"],
            "args": [
                "prepare-datadir",
                "--dest",
                o.dest,
                "--set",
                set_id,
                "--migration-id",
                str(o.migration_id),
                "--role",
                role,
                "--datadir",
                f"{RESTORED}/{role}/{o.pgdata}",
            ],
            "resources": small,
        }
        for role in claims
    ]
    probe_args = [PROBE_COMMAND, "--root", RESTORED, "--pgdata", o.pgdata, "--socket-root", TMP]
    for role in claims:
        probe_args += [
            "--databases",
            f"{role}={','.join(o.databases.get(role, []))}",
            "--user",
            f"{role}={o.users[role]}",
        ]
    probe = {
        **common,
        "name": "probe",
        "command": ["python", "-m", "jobs"],
        "args": probe_args,
        # One server per role recovers at a time; shared_buffers is pinned small by the probe.
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    volumes += [
        {"name": f"restored-{role}", "persistentVolumeClaim": {"claimName": claim}} for role, claim in claims.items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": o.namespace,
            "labels": {**MANAGED_BY, DRILL_LABEL: "postgres-snapshots"},
        },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": o.service_account,
            "automountServiceAccountToken": False,  # reads the store with its cloud identity, never the API
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": o.run_as_user,
                "runAsGroup": o.run_as_user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": init,
            "containers": [probe],
            "volumes": volumes,
        },
    }


def _terminated(pod: dict[str, Any], key: str = "containerStatuses") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for status in (pod.get("status") or {}).get(key) or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            found.append((status.get("name", "?"), terminated))
    return found


class PickError(Exception):
    pass


def pick_summary(dest, migration_id: int, set_id: str | None = None) -> dict[str, Any]:
    """What the drill needs of the newest complete snapshot set (jobs/pgsnap.py complete_snapshot_sets: sealed,
    manifest valid, ordering proven), small enough for a termination message: the set, when it was taken, and per
    role its method, handle, consistency and the volumes taken."""
    from jobs.pgsnap import complete_snapshot_sets

    sets = complete_snapshot_sets(dest, migration_id)
    if set_id is not None:
        sets = [s for s in sets if s[1]["set_id"] == set_id]
    if not sets:
        which = f"set {set_id}" if set_id else "complete snapshot set"
        raise PickError(f"no {which} of migration id {migration_id} in {dest.describe('')}")
    prefix, manifest = sets[0]
    snapshots = []
    for record in manifest["snapshots"]:
        volumes = [
            {k: v[k] for k in ("volume", "name", "restore_size") if k in v}
            for v in (record.get("details") or {}).get("volume_snapshots") or []
        ]
        snapshots.append(
            {
                "role": record["role"],
                "method": record["method"],
                "handle": record["handle"],
                "consistency": record["consistency"],
                "details": {"volume_snapshots": volumes},
            }
        )
    return {
        "set_id": manifest["set_id"],
        "prefix": prefix,
        "taken_at": format_time(set_taken_at(manifest)),
        "snapshots": snapshots,
    }


def pick_pod_body(name: str, options: Options) -> dict[str, Any]:
    """A pod of the restore identity (no API token) that prints pick_summary to its termination message."""
    o = options
    args = [PICK_COMMAND, "--dest", o.dest, "--migration-id", str(o.migration_id)]
    if o.set_id:
        args += ["--set-id", o.set_id]
    labels = {**MANAGED_BY, DRILL_LABEL: "postgres-snapshots"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": o.namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": o.service_account,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "pick",
                    "image": o.image,
                    "command": ["python", "-m", "jobs"],
                    "args": args,
                    "securityContext": _hardened(o.run_as_user),
                    "env": [{"name": "HOME", "value": TMP}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                    "volumeMounts": [{"name": "tmp", "mountPath": TMP}],
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def handle_pick(args: argparse.Namespace) -> int:
    try:
        summary = pick_summary(open_destination(args.dest), args.migration_id, args.set_id)
        text, code = json.dumps(summary, separators=(",", ":")), 0
    except (PickError, ValueError, OSError) as error:
        text, code = json.dumps({"error": str(error)[:1000]}), 1
    if len(text) > MESSAGE_LIMIT:
        too_long = f"the set's summary is {len(text)} bytes, over the termination message's limit {MESSAGE_LIMIT}"
        text, code = json.dumps({"error": too_long}), 1
    print(text, flush=True)
    with contextlib.suppress(OSError):
        Path(args.termination_log).write_text(text)
    return code


# ------------------------------------------------------------------------------------------ the drill


class SnapshotDrill:
    def __init__(
        self,
        client: KubeClient,
        dest,
        options: Options,
        log: Callable[..., dict],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.client, self.dest, self.options, self.log = client, dest, options, log
        self.clock, self.sleep, self.now = clock, sleep, now
        self.result: dict[str, Any] = {}

    def pick(self, pods: list[str]) -> dict[str, Any]:
        """The newest complete set's summary (pick_summary). In the CronJob it is read by a pick pod that runs as
        the restore identity without an API token, so that this pod, which holds the API token, needs no cloud
        identity (drill-least-privilege); run by hand with `--read-store-here`, it is read here."""
        o = self.options
        if not o.pick_in_pod:
            try:
                return pick_summary(self.dest, o.migration_id, o.set_id)
            except PickError as error:
                raise DrillFailure("pick", str(error)) from None
        name = f"{scratch_name(o.set_id or 'newest')}-pick"
        try:
            self.client.create(pods_path(o.namespace), pick_pod_body(name, o))
        except KubeError as error:
            raise DrillFailure("create", f"creating the pick pod {o.namespace}/{name}: {error}") from None
        pods.append(name)
        status = self._await_pod(name, [], "pick")
        picked = dict(_terminated(status)).get("pick") or {}
        summary = _findings(picked)
        if (status.get("status") or {}).get("phase") != "Succeeded" or "set_id" not in summary:
            said = summary.get("error") or (picked.get("message") or picked.get("reason") or "no message").strip()
            raise DrillFailure("pick", f"the pick pod found no set to drill: {said[-800:]}")
        return summary

    def _await_pod(self, pod: str, pvcs: list[str], what: str) -> dict[str, Any]:
        """Poll until the pod has Succeeded or Failed; a timeout says whether its PVCs never bound."""
        o = self.options
        deadline = self.clock() + o.timeout.total_seconds()
        interval = min(o.poll_interval, 1.0)
        while True:
            try:
                status = self.client.get(pods_path(o.namespace, pod))
                # The claims' phases say, on a timeout, whether the disks never came from the snapshots.
                phases = {c: (self.client.get(pvc_path(o.namespace, c)).get("status") or {}).get("phase") for c in pvcs}
            except KubeError as error:
                raise DrillFailure("wait", f"reading the {what} pod or its PVCs: {error}") from None
            phase = (status.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return status
            now = self.clock()
            if now >= deadline:
                unbound = sorted(c for c, p in phases.items() if p != "Bound")
                if unbound:
                    raise DrillFailure(
                        "bind",
                        f"PVC(s) {', '.join(unbound)} not Bound after {format_duration(o.timeout)}: the snapshots "
                        f"cannot be restored with storage class {o.storage_class or '(default)'}",
                        pvc_phases=phases,
                    )
                raise DrillFailure(
                    "timeout",
                    f"{what} pod {o.namespace}/{pod} not Succeeded after {format_duration(o.timeout)} (phase "
                    f"{phase or 'none'})" + (": the servers did not recover and pass in time" if pvcs else ""),
                )
            self.sleep(min(interval, max(0.0, deadline - now)))
            interval = min(interval * 2, o.poll_interval)

    def wait(self, pod: str, pvcs: list[str]) -> dict[str, Any]:
        status = self._await_pod(pod, pvcs, "scratch")
        probe = dict(_terminated(status)).get("probe") or {}
        if (status.get("status") or {}).get("phase") == "Succeeded":
            return _findings(probe)
        for name, state in _terminated(status, "initContainerStatuses"):
            if state.get("exitCode") not in (0, None):
                said = (state.get("message") or state.get("reason") or "no message").strip()[-800:]
                raise DrillFailure("prepare", f"init container {name} (prepare-datadir) failed: {said}")
        findings = _findings(probe)
        if findings.get("problems"):
            raise DrillFailure(
                findings.get("stage", "probe"),
                "; ".join(findings["problems"]),
                roles=findings.get("roles"),
                ordering=findings.get("ordering"),
            )
        said = (probe.get("message") or probe.get("reason") or "no message").strip()[-800:]
        raise DrillFailure("probe", f"the scratch pod failed: {said} (exit {probe.get('exitCode')})")

    def cleanup(self, pods: list[str], pvcs: list[str]) -> list[str]:
        """The pods first (the scratch pod holds the claims), then the PVCs; wait until each is gone."""
        o = self.options
        problems = []
        paths = [pods_path(o.namespace, p) for p in pods] + [pvc_path(o.namespace, p) for p in pvcs]
        for path in paths:
            try:
                self.client.delete(path)
                deadline = self.clock() + 120
                while self.client.get_optional(path) is not None:
                    if self.clock() >= deadline:
                        problems.append(f"{path} still exists 120s after its deletion")
                        break
                    self.sleep(1.0)
            except KubeError as error:
                if error.status != 404:
                    problems.append(f"deleting {path}: {error}")
        return problems

    def run(self) -> int:
        from jobs.pgsnap_restore import PrepareError, restore_volume

        o = self.options
        started = self.clock()
        pods: list[str] = []
        pvcs: list[str] = []
        facts: dict[str, Any] = {"namespace": o.namespace, "migration_id": o.migration_id}
        failure: DrillFailure | None = None
        warnings: list[str] = []
        try:
            summary = self.pick(pods)
            set_id = summary["set_id"]
            facts.update(
                set_id=set_id,
                set_url=f"{o.dest.rstrip('/')}/{summary['prefix']}",
                rpo_seconds=round((self.now() - parse_time(summary["taken_at"])).total_seconds(), 1),
            )
            # The records restore_volume reads (role, method, handle, the volumes taken): the summary carries them.
            manifest = {"set_id": set_id, "snapshots": summary["snapshots"]}
            records = {r["role"]: r for r in summary["snapshots"]}
            volume_roles = [r for r in records if records[r]["method"] == VOLUME_SNAPSHOT]
            managed = {r: records[r]["method"] for r in records if r not in volume_roles}
            if managed:
                facts["not_drilled"] = {
                    r: f"{m}: managed roles are not restored by this drill" for r, m in sorted(managed.items())
                }
            if not volume_roles:
                raise DrillFailure(
                    "pick",
                    f"set {set_id} has no in-cluster (volume-snapshot) role to drill "
                    f"(roles: {', '.join(sorted(records))})",
                )
            unknown = [r for r in volume_roles if r not in o.users]
            if unknown:
                raise DrillFailure(
                    "config",
                    f"no --user for role(s) {', '.join(unknown)} of set {set_id}: the "
                    "drill logs into each restored server as a role of the stack's config",
                )
            for role in volume_roles:
                walled = [v for v in records[role]["details"].get("volume_snapshots") or [] if v.get("volume") == "wal"]
                if walled:
                    raise DrillFailure(
                        "config",
                        f"{role}: pg_wal is on its own volume in set {set_id}; this drill "
                        "restores single-volume roles only (restore it with restore-snapshot-volume "
                        "--volume wal by hand)",
                        role=role,
                    )
            name = scratch_name(set_id)
            restore_started = self.clock()
            claims: dict[str, str] = {}
            for role in volume_roles:
                claim = f"{name}-{role}"[:63].rstrip("-")
                try:
                    restore_volume(
                        self.client,
                        manifest,
                        role=role,
                        namespace=o.namespace,
                        pvc=claim,
                        storage_class=o.storage_class,
                    )
                except PrepareError as error:
                    raise DrillFailure("snapshot", f"{role}: {error}", role=role) from None
                except KubeError as error:
                    raise DrillFailure(
                        "create", f"{role}: creating PVC {o.namespace}/{claim}: {error}", role=role
                    ) from None
                pvcs.append(claim)
                claims[role] = claim
            try:
                self.client.create(pods_path(o.namespace), pod_body(name, o, set_id, claims))
                pods.append(name)
            except KubeError as error:
                raise DrillFailure("create", f"creating the scratch pod {o.namespace}/{name}: {error}") from None
            self.log("drill.created", pod=name, pvcs=pvcs, set_id=set_id)
            findings = self.wait(name, pvcs)
            facts.update(
                rto_seconds=round(self.clock() - restore_started, 1),
                roles=findings.get("roles"),
                ordering=findings.get("ordering"),
            )
            problems = list(findings.get("problems") or [])
            if not findings.get("roles"):
                problems.append("the probe reported no findings (termination message empty or not JSON)")
            if problems:
                raise DrillFailure(findings.get("stage", "probe"), "; ".join(problems))
            if o.max_age is not None and facts["rpo_seconds"] > o.max_age.total_seconds():
                raise DrillFailure(
                    "rpo",
                    f"the newest complete snapshot set {set_id} is "
                    f"{format_duration(timedelta(seconds=int(facts['rpo_seconds'])))} old, beyond "
                    f"--max-age {format_duration(o.max_age)}: it restores, but the RPO is not met",
                )
            ordering = findings.get("ordering") or {}
            if ordering.get("checked") is False:
                warnings.append(f"ordering not checked in the data: {ordering.get('detail')}")
        except DrillFailure as error:
            failure = error
        except Terminated:
            failure = DrillFailure("terminated", "terminated (SIGTERM: the Job's deadline?) before the drill ended")
        except KubeError as error:
            failure = DrillFailure("kube", str(error))
        finally:
            cleanup = self.cleanup(pods, pvcs)
        facts.update(pods=pods, pvcs=pvcs, seconds=round(self.clock() - started, 1), cleaned_up=not cleanup)
        if warnings:
            facts["warnings"] = warnings
        if cleanup:
            facts["cleanup_problems"] = cleanup
        self.result = {"ok": failure is None and not cleanup, **facts}
        if failure is not None:
            self.result.update(error=str(failure), stage=failure.stage)
            self.log(events.FAILED, error=str(failure), stage=failure.stage, **{**facts, **failure.fields})
            return 1
        if cleanup:
            self.log(
                events.FAILED,
                error="the drill passed but its scratch pod or PVCs could not be deleted: " + "; ".join(cleanup),
                stage="cleanup",
                **facts,
            )
            return 1
        self.log(events.COMPLETED, **facts)
        return 0


def _findings(terminated: dict[str, Any]) -> dict[str, Any]:
    try:
        found = json.loads((terminated.get("message") or "").strip() or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def run(options: Options, *, stream=None, results: list[dict] | None = None) -> int:
    def log(event: str, **fields: Any) -> dict[str, Any]:
        return events.emit(event, KIND, stream=stream, **fields)

    try:
        config = resolve_config(options.kube_api)
        dest = open_destination(options.dest)
    except (KubeError, ValueError) as error:
        log(events.FAILED, error=str(error), stage="config")
        return 1
    build = lambda client: SnapshotDrill(client, dest, options, log)  # noqa: E731
    return run_drill(config, options.kube_retry_wait, build, log, Terminated, results)


# ------------------------------------------------------------------------------------------ the CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "drill-snapshots",
        help="restore the newest complete snapshot set into scratch PVCs "
        "under a scratch PostgreSQL pod, check it starts and holds the databases, delete it",
    )
    p.add_argument("--dest", required=True, help="the backup store URL")
    p.add_argument("--namespace", required=True, help="where the snapshots are (and the scratch PVCs and pod go)")
    p.add_argument("--migration-id", type=int, required=True)
    p.add_argument("--set-id", default=None, help="drill this set instead of the newest")
    p.add_argument(
        "--databases",
        action="append",
        metavar="ROLE=DB[,DB...]",
        help="the databases the stack's config names for a role (repeat per role)",
    )
    p.add_argument(
        "--user",
        action="append",
        metavar="ROLE=USER",
        help="a login role of the role's instance (the backup user; no password: trust on the scratch socket)",
    )
    p.add_argument("--image", required=True, help="the job image (PostgreSQL server binaries 14-17)")
    p.add_argument("--service-account", required=True, help="the scratch pod's (the restore identity's)")
    p.add_argument("--storage-class", default=None, help="StorageClass of the scratch PVCs (the snapshot's driver)")
    p.add_argument(
        "--timeout",
        type=cli_types.duration,
        default=timedelta(hours=2),
        help=f"for the PVCs to bind and the servers to recover and pass, {DURATION_HELP} (default 2h)",
    )
    p.add_argument("--max-age", type=cli_types.duration, default=None, help=f"RPO bound, {DURATION_HELP}")
    p.add_argument(
        "--run-as-user",
        type=int,
        default=SOURCE_UID,
        help=f"uid owning the restored data (default {SOURCE_UID}, the bitnami chart's; not 0)",
    )
    p.add_argument("--pgdata", default=PGDATA_SUBPATH, help=f"PGDATA within the volume (default {PGDATA_SUBPATH})")
    p.add_argument("--kube-api", default=None, help="API server URL (default: in-cluster)")
    p.add_argument(
        "--read-store-here",
        action="store_true",
        help="read the store in this process (run by hand with store credentials) instead of a pick pod",
    )
    p.add_argument("--poll-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON object after the event")
    p.set_defaults(func=handle)

    k = subparsers.add_parser(
        PICK_COMMAND,
        help="(in the drill's pick pod) print the newest complete snapshot set's summary to the termination log",
    )
    k.add_argument("--dest", required=True)
    k.add_argument("--migration-id", type=int, required=True)
    k.add_argument("--set-id", default=None)
    k.add_argument("--termination-log", default="/dev/termination-log")
    k.set_defaults(func=handle_pick)


def handle(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        events.emit(events.FAILED, KIND, error=message, stage="config")
        return 1

    if args.run_as_user <= 0:
        return fail("--run-as-user must be a non-root uid (the owner of the restored data)")
    try:
        databases = parse_databases(args.databases)
        users = parse_role_values(args.user, "--user")
    except ValueError as error:
        return fail(str(error))
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.pgdata) or args.pgdata in (".", ".."):
        return fail(f"--pgdata {args.pgdata!r}: a directory name within the volume (letters, digits, . _ -)")
    options = Options(
        dest=args.dest,
        namespace=args.namespace,
        migration_id=args.migration_id,
        databases=databases,
        users=users,
        image=args.image,
        service_account=args.service_account,
        storage_class=args.storage_class,
        timeout=args.timeout,
        max_age=args.max_age,
        set_id=args.set_id,
        run_as_user=args.run_as_user,
        pgdata=args.pgdata,
        kube_api=args.kube_api,
        poll_interval=args.poll_interval,
        pick_in_pod=not args.read_store_here,
    )
    results: list[dict] = []
    code = run(options, stream=sys.stdout, results=results)
    if args.json and results:
        print(json.dumps(results[0], sort_keys=True), flush=True)
    return code
