"""`python -m jobs drill-cometbft`: can the newest CometBFT snapshot be restored into a volume that mounts?

One run:
1. lists the VolumeSnapshots matching `--selector` (the labels snapshot-cometbft puts on its own, see
   jobs/cometbft.py; `app.kubernetes.io/managed-by=sv-backups` is always added) and takes the newest ready one
   (by its taken-at label, else its creation time);
2. creates a PVC from it (`dataSource` the snapshot, size its `status.restoreSize`, class `--storage-class`);
3. creates a hardened probe pod (non-root, read-only root filesystem, no privilege escalation, all capabilities
   dropped, RuntimeDefault seccomp, no service account token, no network needed) that mounts the PVC read-only
   and checks it has CometBFT's data directory shape (`blockstore.db` and `state.db`, non-empty, at the volume
   root or under `data/`), writing what it found to its termination message;
4. waits, within `--timeout`, for the PVC to be Bound and the pod to Succeed (storage classes that bind on
   first consumer bind only once the pod is scheduled, so both are created first);
5. deletes the pod and the PVC, whatever happened (also on SIGTERM), and waits until they are gone.

The volume is mounted read-only in the container; the pod-level claim stays writable so that the kubelet can
apply `fsGroup` (CometBFT's files are private to its own user, and the probe runs as another). The clone is
thrown away, the snapshot itself is never written.

RBAC (the program declares it, namespace-scoped): volumesnapshots get/list; persistentvolumeclaims and pods
create/get/delete. Outcome: one `backup.completed` / `backup.failed` event with `"kind": "drill-cometbft"`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import cli_types, events
from jobs.cometbft import TAKEN_AT_LABEL
from jobs.drill_run import run_drill
from jobs.kube import KubeClient, KubeError, pods_path, pvc_path, pvcs_path, resolve_config, volume_snapshots_path
from rules.naming import LABEL_PREFIX, MANAGED_BY
from rules.retention import DURATION_HELP, format_duration

KIND = "drill-cometbft"
DRILL_LABEL = f"{LABEL_PREFIX}/drill"
MOUNT = "/cometbft"
PROBE_UID = 65532
# Exit 0 when the volume has CometBFT's data directory shape; the findings go to the termination message
# (readable in the pod's status with `get pods`, no log access needed).
PROBE_SCRIPT = r"""
set -u
msg=/dev/termination-log
for base in "$MOUNT" "$MOUNT/data"; do
  if [ -d "$base/blockstore.db" ] && [ -d "$base/state.db" ]; then
    if [ -z "$(ls -A "$base/blockstore.db")" ] || [ -z "$(ls -A "$base/state.db")" ]; then
      echo "data directory $base has empty blockstore.db or state.db" > "$msg"; exit 3
    fi
    found=""
    for f in priv_validator_state.json evidence.db tx_index.db cs.wal; do
      [ -e "$base/$f" ] && found="$found $f"
    done
    echo "CometBFT data directory at $base: blockstore.db state.db$found" > "$msg"; exit 0
  fi
done
top=$(ls -A "$MOUNT" 2>&1 | head -c 300 | tr '\n' ' ')
echo "no CometBFT data directory (blockstore.db and state.db) at $MOUNT or $MOUNT/data; top level: $top" > "$msg"
exit 3
"""
_SELECTOR = re.compile(r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*$")


class DrillFailure(Exception):
    def __init__(self, stage: str, message: str, **fields: Any):
        super().__init__(message)
        self.stage = stage
        self.fields = {k: v for k, v in fields.items() if v is not None}


class Terminated(Exception):
    pass


@dataclass
class Options:
    namespace: str
    selector: dict[str, str]
    storage_class: str
    probe_image: str
    timeout: timedelta = timedelta(minutes=30)
    kube_api: str | None = None
    poll_interval: float = 5.0
    run_as_user: int = PROBE_UID
    kube_retry_wait: float = 1.0


def parse_selector(text: str) -> dict[str, str]:
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    if not pairs or not all(_SELECTOR.match(p) for p in pairs):
        raise ValueError(f"--selector {text!r}: expected KEY=VALUE[,KEY=VALUE...] (equality only)")
    return dict(p.split("=", 1) for p in pairs)


def _taken_at(snapshot: dict[str, Any]) -> float:
    labels = (snapshot.get("metadata") or {}).get("labels") or {}
    if str(labels.get(TAKEN_AT_LABEL, "")).isdigit():
        return float(labels[TAKEN_AT_LABEL])
    stamp = (snapshot.get("status") or {}).get("creationTime") or snapshot["metadata"].get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def newest_ready(snapshots: list[dict[str, Any]]) -> dict[str, Any] | None:
    ready = [s for s in snapshots if (s.get("status") or {}).get("readyToUse") is True
             and (s.get("status") or {}).get("restoreSize") and not s["metadata"].get("deletionTimestamp")]
    return max(ready, key=lambda s: (_taken_at(s), s["metadata"]["name"]), default=None)


def drill_name(snapshot: str) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", snapshot.lower())[:40].strip("-")
    return f"drill-{base}-{int(time.time()) % 100000:05d}"


def pvc_body(name: str, namespace: str, snapshot: dict[str, Any], storage_class: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, DRILL_LABEL: "cometbft"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                           "name": snapshot["metadata"]["name"]},
            "resources": {"requests": {"storage": snapshot["status"]["restoreSize"]}},
        },
    }


def pod_body(name: str, namespace: str, claim: str, image: str, uid: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, DRILL_LABEL: "cometbft"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": image,
                "command": ["/bin/sh", "-c", PROBE_SCRIPT],
                "env": [{"name": "MOUNT", "value": MOUNT}],
                "securityContext": {
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "restored", "mountPath": MOUNT, "readOnly": True}],
            }],
            "volumes": [{"name": "restored", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return {}


class CometbftDrill:
    def __init__(self, client: KubeClient, options: Options, log: Callable[..., dict],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.client, self.options, self.log, self.clock, self.sleep = client, options, log, clock, sleep
        self.result: dict[str, Any] = {}

    def pick(self) -> dict[str, Any]:
        o = self.options
        selector = {**o.selector, **MANAGED_BY}
        try:
            listed = self.client.list(volume_snapshots_path(o.namespace), label_selector=selector)
        except KubeError as error:
            raise DrillFailure("list", f"listing VolumeSnapshots in {o.namespace}: {error}") from None
        snapshot = newest_ready(listed)
        if snapshot is None:
            shown = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            raise DrillFailure("list", f"no ready VolumeSnapshot in {o.namespace} matches {shown} "
                               f"({len(listed)} listed)")
        return snapshot

    def wait(self, pvc: str, pod: str) -> dict[str, Any]:
        o = self.options
        deadline = self.clock() + o.timeout.total_seconds()
        interval = min(o.poll_interval, 1.0)
        bound_after = None
        started = self.clock()
        while True:
            try:
                claim = self.client.get(pvc_path(o.namespace, pvc))
                probe = self.client.get(pods_path(o.namespace, pod))
            except KubeError as error:
                raise DrillFailure("wait", f"reading the drill's PVC or pod: {error}") from None
            phase = (claim.get("status") or {}).get("phase")
            if phase == "Bound" and bound_after is None:
                bound_after = round(self.clock() - started, 1)
            pod_phase = (probe.get("status") or {}).get("phase")
            terminated = _terminated(probe)
            if pod_phase == "Succeeded" and phase == "Bound":
                return {"bound_seconds": bound_after, "probe": (terminated.get("message") or "").strip()[:500]}
            if pod_phase == "Failed":
                said = (terminated.get("message") or terminated.get("reason") or "no message").strip()[:500]
                raise DrillFailure("probe", f"the probe found no usable CometBFT data: {said} "
                                   f"(exit {terminated.get('exitCode')})", pvc_phase=phase)
            now = self.clock()
            if now >= deadline:
                if phase != "Bound":
                    raise DrillFailure("bind", f"PVC {o.namespace}/{pvc} not Bound after {format_duration(o.timeout)} "
                                       f"(phase {phase or 'none'}): the snapshot cannot be restored with storage class "
                                       f"{o.storage_class}", pvc_phase=phase)
                raise DrillFailure("probe", f"probe pod {o.namespace}/{pod} not Succeeded after "
                                   f"{format_duration(o.timeout)} (phase {pod_phase or 'none'})", pvc_phase=phase)
            self.sleep(min(interval, max(0.0, deadline - now)))
            interval = min(interval * 2, o.poll_interval)

    def cleanup(self, pvc: str | None, pod: str | None) -> list[str]:
        """Delete the pod, then the PVC; wait until both are gone (a pod holding the claim keeps it alive)."""
        o = self.options
        problems = []
        for path in [pods_path(o.namespace, pod) if pod else None, pvc_path(o.namespace, pvc) if pvc else None]:
            if path is None:
                continue
            try:
                self.client.delete(path)
                deadline = self.clock() + 120
                while self.client.get_optional(path) is not None:
                    if self.clock() >= deadline:
                        problems.append(f"{path} still exists 120s after its deletion")
                        break
                    self.sleep(1.0)
            except KubeError as error:
                problems.append(f"deleting {path}: {error}")
        return problems

    def run(self) -> int:
        o = self.options
        started = self.clock()
        pvc = pod = None
        facts: dict[str, Any] = {"namespace": o.namespace}
        failure: DrillFailure | None = None
        try:
            snapshot = self.pick()
            facts.update(snapshot=snapshot["metadata"]["name"], restore_size=snapshot["status"]["restoreSize"],
                         snapshot_age_seconds=round(datetime.now(UTC).timestamp() - _taken_at(snapshot), 1))
            name = drill_name(snapshot["metadata"]["name"])
            try:
                self.client.create(pvcs_path(o.namespace), pvc_body(name, o.namespace, snapshot, o.storage_class))
                pvc = name
                self.client.create(pods_path(o.namespace),
                                   pod_body(name, o.namespace, name, o.probe_image, o.run_as_user))
                pod = name
            except KubeError as error:
                message = f"creating the drill's PVC and pod {o.namespace}/{name}: {error}"
                raise DrillFailure("create", message) from None
            self.log("drill.created", pvc=pvc, pod=pod, snapshot=facts["snapshot"])
            facts.update(self.wait(pvc, pod))
        except DrillFailure as error:
            failure = error
        except (KubeError, Terminated) as error:
            failure = DrillFailure("wait", "terminated" if isinstance(error, Terminated) else str(error))
        finally:
            cleanup = self.cleanup(pvc, pod)
        facts.update(pvc=pvc, seconds=round(self.clock() - started, 1), cleaned_up=not cleanup)
        if cleanup:
            facts["cleanup_problems"] = cleanup
        self.result = {"ok": failure is None and not cleanup, **facts}
        if failure is not None:
            self.result.update(error=str(failure), stage=failure.stage)
            self.log(events.FAILED, error=str(failure), stage=failure.stage, **failure.fields, **facts)
            return 1
        if cleanup:
            self.log(events.FAILED, error="the drill passed but its PVC or pod could not be deleted: "
                     + "; ".join(cleanup), stage="cleanup", **facts)
            return 1
        self.log(events.COMPLETED, **facts)
        return 0


def run(options: Options, *, stream=None, results: list[dict] | None = None) -> int:
    def log(event: str, **fields: Any) -> dict[str, Any]:
        return events.emit(event, KIND, stream=stream, **fields)

    try:
        config = resolve_config(options.kube_api)
    except KubeError as error:
        log(events.FAILED, error=str(error), stage="config")
        return 1
    return run_drill(
        config, options.kube_retry_wait, lambda client: CometbftDrill(client, options, log), log, Terminated, results
    )




def register(subparsers) -> None:
    p = subparsers.add_parser("drill-cometbft", help="restore the newest CometBFT snapshot into a PVC, check it "
                              "binds and mounts with CometBFT's data, delete it")
    p.add_argument("--namespace", required=True)
    p.add_argument("--selector", required=True, type=cli_types.from_parser(parse_selector), metavar="KEY=VALUE[,..]",
                   help="labels of the snapshots to consider (managed-by=sv-backups is always added)")
    p.add_argument("--storage-class", required=True, help="StorageClass of the restored PVC")
    p.add_argument("--probe-image", required=True, help="image with /bin/sh that runs the check (e.g. the jobs image)")
    p.add_argument("--timeout", type=cli_types.duration, default=timedelta(minutes=30),
                   help=f"for the PVC to bind and the probe to succeed, {DURATION_HELP} (default 30min)")
    p.add_argument("--kube-api", default=None, help="API server URL (default: in-cluster)")
    p.add_argument("--run-as-user", type=int, default=PROBE_UID,
                   help=f"uid (and gid, fsGroup) of the probe (default {PROBE_UID}; must not be 0)")
    p.add_argument("--poll-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON object after the event")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    if args.run_as_user <= 0:
        events.emit(events.FAILED, KIND, error="--run-as-user must be a non-root uid", stage="config")
        return 1
    options = Options(namespace=args.namespace, selector=args.selector, storage_class=args.storage_class,
                      probe_image=args.probe_image, timeout=args.timeout, kube_api=args.kube_api,
                      poll_interval=args.poll_interval, run_as_user=args.run_as_user)
    results: list[dict] = []
    code = run(options, stream=sys.stdout, results=results)
    if args.json and results:
        print(json.dumps(results[0], sort_keys=True), flush=True)
    return code
