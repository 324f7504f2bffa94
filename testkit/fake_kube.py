"""A fake Kubernetes API server for the objects the backup jobs touch: PersistentVolumeClaims, ConfigMaps, Pods,
VolumeSnapshots and VolumeSnapshotContents, with a toy snapshot controller, PVC binder and kubelet.

It speaks the real paths, label selectors, pagination (`page_size`), JSON merge patch with the
`metadata.resourceVersion` precondition, `Status` error bodies, and the snapshot controller's visible
behaviour: a new VolumeSnapshot becomes bound to a VolumeSnapshotContent (deletionPolicy from its class) and
`readyToUse` after `ready_after` reads, or reports `status.error` (mode "error"; mode "flaky" reports it
until `ready_after` reads, then succeeds, as the real controller does after transient errors), or never
becomes ready (mode "pending"). Deleting a VolumeSnapshot deletes its content, and the "disk snapshot" behind it, only
when the content's deletionPolicy is Delete; `disk_snapshots` is what the cloud would bill.

PVCs restored from a snapshot (`spec.dataSource`) become Bound after `bind_after` reads when the snapshot exists
and is ready (`pvc_mode` "bind"), or stay Pending (`pvc_mode` "pending", or no such ready snapshot). A pod
starts once every claim it mounts is Bound and then, one read at a time, runs and ends as `pod_mode` says
("succeeded": exit 0, "failed": exit 3, "pending": never starts), with `pod_message` as its termination message.
`created` keeps every body POSTed, for assertions on what a job asked for.

The disk snapshots are made-up GCE paths unless `take_disk_snapshot` / `delete_disk_snapshot` stand for the CSI
driver's cloud calls (the EBS tests create and delete real moto EC2 snapshots there; set `driver` to match).
"""

from __future__ import annotations

import copy
import itertools
import re
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from testkit.httpserver import LocalServer, Reply, Request

SNAP = "/apis/snapshot.storage.k8s.io/v1"
_ROUTES = [
    (re.compile(r"^/api/v1/namespaces/([^/]+)/(persistentvolumeclaims|configmaps|pods)(?:/([^/]+))?$"), True),
    (re.compile(rf"^{SNAP}/namespaces/([^/]+)/(volumesnapshots)(?:/([^/]+))?$"), True),
    (re.compile(rf"^{SNAP}/(volumesnapshotcontents)(?:/([^/]+))?$"), False),
]
_KINDS = {
    "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
    "configmaps": ("v1", "ConfigMap"),
    "pods": ("v1", "Pod"),
    "volumesnapshots": ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"),
    "volumesnapshotcontents": ("snapshot.storage.k8s.io/v1", "VolumeSnapshotContent"),
}
_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def _status(code: int, message: str) -> Reply:
    return Reply.json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": _REASONS.get(code, "Unknown"),
            "code": code,
        },
        code,
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubeApi(LocalServer):
    def __init__(self):
        super().__init__()
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace or "", name)
        self.class_policies: dict[str, str] = {}  # VolumeSnapshotClass -> deletionPolicy (default Retain)
        self.mode = "ready"  # ready | error | flaky | pending
        self.ready_after = 2  # reads of a new snapshot before it is ready
        self.error_message = "failed to take snapshot of the volume: googleapi: Error 400: quota exceeded"
        self.page_size: int | None = None
        self.disk_snapshots: set[str] = set()
        self.driver = "pd.csi.storage.gke.io"
        self.take_disk_snapshot: Callable[[dict], str] | None = None  # VolumeSnapshot -> snapshotHandle
        self.delete_disk_snapshot: Callable[[str], None] | None = None  # snapshotHandle ->
        self._reads: dict[str, int] = {}
        self._versions = itertools.count(1000)
        self._faults: list[tuple[str, str, deque[int]]] = []
        self._forbidden: set[tuple[str, str]] = set()
        self.pvc_mode = "bind"  # bind | pending
        self.bind_after = 2
        self.pod_mode = "succeeded"  # succeeded | failed | pending
        self.pod_message = "CometBFT data directory at /cometbft/data: blockstore.db state.db"
        self.created: list[tuple[str, dict]] = []  # (plural, body) of every POST

    # --- test controls --------------------------------------------------------------------------------
    def fail(self, method: str, path_prefix: str, *statuses: int) -> None:
        """The next matching requests answer these statuses, one each."""
        with self.lock:
            self._faults.append((method, path_prefix, deque(statuses)))

    def forbid(self, method: str, path_prefix: str) -> None:
        """RBAC says no, every time."""
        with self.lock:
            self._forbidden.add((method, path_prefix))

    def allow(self, method: str, path_prefix: str) -> None:
        """Undo `forbid` (another identity, e.g. the pruner's, may)."""
        with self.lock:
            self._forbidden.discard((method, path_prefix))

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        with self.lock:
            return copy.deepcopy(self.objects.get((plural, namespace, name)))

    def names(self, plural: str, namespace: str = "") -> list[str]:
        with self.lock:
            return sorted(n for (p, ns, n) in self.objects if p == plural and ns == namespace)

    def add_pvc(self, namespace: str, name: str, phase: str = "Bound") -> None:
        self._put("persistentvolumeclaims", namespace, name, {"spec": {}, "status": {"phase": phase}})

    def add_configmap(self, namespace: str, name: str, data: dict[str, str] | None = None) -> None:
        self._put("configmaps", namespace, name, {"data": data or {}})

    def add_snapshot(
        self,
        namespace: str,
        name: str,
        *,
        pvc: str,
        labels: dict[str, str],
        ready: bool = True,
        snapshot_class: str = "cometbft-retain",
    ) -> None:
        """A snapshot as an earlier run left it (bound to a Retain content when ready)."""
        self._put(
            "volumesnapshots",
            namespace,
            name,
            {
                "metadata": {"labels": labels},
                "spec": {"volumeSnapshotClassName": snapshot_class, "source": {"persistentVolumeClaimName": pvc}},
                "status": {"readyToUse": False},
            },
        )
        if ready:
            with self.lock:
                self._bind(self.objects[("volumesnapshots", namespace, name)], ready=True)

    # --- internals -----------------------------------------------------------------------------------
    def _put(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        api_version, kind = _KINDS[plural]
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        meta.update(
            name=name, uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=str(next(self._versions))
        )
        if namespace:
            meta["namespace"] = namespace
        obj.update(apiVersion=api_version, kind=kind)
        with self.lock:
            self.objects[(plural, namespace, name)] = obj
        return obj

    def _bind(self, snapshot: dict, *, ready: bool) -> None:
        meta, spec = snapshot["metadata"], snapshot["spec"]
        content_name = "snapcontent-" + meta["uid"]
        if self.take_disk_snapshot:
            handle = self.take_disk_snapshot(snapshot)
        else:
            handle = f"projects/p/global/snapshots/snapshot-{meta['uid']}"
        policy = self.class_policies.get(spec.get("volumeSnapshotClassName"), "Retain")
        self._put(
            "volumesnapshotcontents",
            "",
            content_name,
            {
                "spec": {
                    "deletionPolicy": policy,
                    "driver": self.driver,
                    "volumeSnapshotClassName": spec.get("volumeSnapshotClassName"),
                    "volumeSnapshotRef": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                    "source": {"volumeHandle": "projects/p/zones/z/disks/pvc-1"},
                },
                "status": {"readyToUse": ready, "snapshotHandle": handle},
            },
        )
        self.disk_snapshots.add(handle)
        snapshot["status"] = {"boundVolumeSnapshotContentName": content_name, "readyToUse": ready}
        if ready:
            snapshot["status"].update(creationTime=_now(), restoreSize="2000Gi")

    def _advance(self, snapshot: dict) -> None:
        """The snapshot controller's progress, one step per read of a not-yet-ready snapshot."""
        meta = snapshot["metadata"]
        if snapshot.get("status", {}).get("readyToUse"):
            return
        reads = self._reads[meta["uid"]] = self._reads.get(meta["uid"], 0) + 1
        if self.mode == "error" or (self.mode == "flaky" and reads < self.ready_after):
            if "boundVolumeSnapshotContentName" not in snapshot.get("status", {}):
                self._bind(snapshot, ready=False)
            snapshot["status"]["error"] = {"message": self.error_message, "time": _now()}
        elif self.mode in ("ready", "flaky") and reads >= self.ready_after:
            content = self.objects.get(("volumesnapshotcontents", "", "snapcontent-" + meta["uid"]))
            if content:
                content["status"]["readyToUse"] = True
                snapshot["status"].update(readyToUse=True, creationTime=_now(), restoreSize="2000Gi")
                snapshot["status"].pop("error", None)
            else:
                self._bind(snapshot, ready=True)

    def _advance_claim(self, claim: dict) -> None:
        """The PV controller: a claim restored from a ready snapshot binds after `bind_after` reads."""
        source = claim.get("spec", {}).get("dataSource")
        if not source or claim.get("status", {}).get("phase") == "Bound":
            return
        snapshot = self.objects.get(("volumesnapshots", claim["metadata"]["namespace"], source.get("name")))
        ready = bool(snapshot and snapshot.get("status", {}).get("readyToUse"))
        reads = self._reads[claim["metadata"]["uid"]] = self._reads.get(claim["metadata"]["uid"], 0) + 1
        if self.pvc_mode == "bind" and ready and reads >= self.bind_after:
            size = claim["spec"]["resources"]["requests"]["storage"]
            claim["status"] = {"phase": "Bound", "capacity": {"storage": size}}

    def _advance_pod(self, pod: dict) -> None:
        """The scheduler and kubelet: Pending until every claim is Bound, then Running, then done."""
        status = pod.setdefault("status", {"phase": "Pending"})
        if status.get("phase") in ("Succeeded", "Failed") or self.pod_mode == "pending":
            return
        namespace = pod["metadata"]["namespace"]
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v
        ]
        if not all(
            (self.objects.get(("persistentvolumeclaims", namespace, c)) or {}).get("status", {}).get("phase") == "Bound"
            for c in claims
        ):
            return
        if status.get("phase") == "Pending":
            status["phase"] = "Running"
            return
        code = 0 if self.pod_mode == "succeeded" else 3
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "message": self.pod_message,
                    }
                },
            }
            for c in pod["spec"]["containers"]
        ]

    def _delete_snapshot(self, key: tuple[str, str, str]) -> None:
        snapshot = self.objects.pop(key)
        content_name = snapshot.get("status", {}).get("boundVolumeSnapshotContentName")
        content = self.objects.get(("volumesnapshotcontents", "", content_name)) if content_name else None
        if content and content["spec"]["deletionPolicy"] == "Delete":
            del self.objects[("volumesnapshotcontents", "", content_name)]
            self.disk_snapshots.discard(content["status"]["snapshotHandle"])
            if self.delete_disk_snapshot:
                self.delete_disk_snapshot(content["status"]["snapshotHandle"])

    def _injected(self, request: Request) -> Reply | None:
        for method, prefix in self._forbidden:
            if request.method == method and request.path.startswith(prefix):
                return _status(403, f'{request.path} is forbidden: User "system:serviceaccount:sv:backup" cannot')
        for method, prefix, statuses in self._faults:
            if request.method == method and request.path.startswith(prefix) and statuses:
                return _status(statuses.popleft(), "injected fault")
        return None

    # --- HTTP ----------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        with self.lock:
            injected = self._injected(request)
            if injected:
                return injected
            for pattern, namespaced in _ROUTES:
                match = pattern.match(request.path)
                if match:
                    if namespaced:
                        namespace, plural, name = match.groups()
                    else:
                        (plural, name), namespace = match.groups(), ""
                    return self._dispatch(request, plural, namespace, name)
            return _status(404, f"the server could not find the requested resource ({request.path})")

    def _dispatch(self, request: Request, plural: str, namespace: str, name: str | None) -> Reply:
        method = request.method
        if name is None and method == "GET":
            return self._list(request, plural, namespace)
        if name is None and method == "POST":
            return self._create(request, plural, namespace)
        key = (plural, namespace, name)
        if key not in self.objects:
            _, kind = _KINDS[plural]
            return _status(404, f'{plural}.{kind.lower()} "{name}" not found')
        obj = self.objects[key]
        if method == "GET":
            if plural == "volumesnapshots":
                self._advance(obj)
            elif plural == "persistentvolumeclaims":
                self._advance_claim(obj)
            elif plural == "pods":
                self._advance_pod(obj)
            return Reply.json(obj)
        if method == "PATCH":
            if request.headers.get("content-type") != "application/merge-patch+json":
                return _status(415, "the body of the request was in an unknown format")
            patch = request.json()
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != obj["metadata"]["resourceVersion"]:
                return _status(
                    409,
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                )
            updated = merge_patch(obj, patch)
            updated["metadata"]["resourceVersion"] = str(next(self._versions))
            self.objects[key] = updated
            return Reply.json(updated)
        if method == "DELETE":
            if plural == "volumesnapshots":
                self._delete_snapshot(key)
            else:
                del self.objects[key]
            return Reply.json({"kind": "Status", "status": "Success"})
        return _status(405, f"{method} not allowed")

    def _list(self, request: Request, plural: str, namespace: str) -> Reply:
        selector = dict(part.split("=", 1) for part in (request.query.get("labelSelector", [""])[0]).split(",") if part)
        items = [
            obj
            for (p, ns, _), obj in sorted(self.objects.items())
            if p == plural
            and ns == namespace
            and all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]
        start = int(request.query.get("continue", ["0"])[0])
        end = start + self.page_size if self.page_size else len(items)
        api_version, kind = _KINDS[plural]
        meta = {"resourceVersion": str(next(self._versions))}
        if end < len(items):
            meta["continue"] = str(end)
        return Reply.json(
            {"apiVersion": api_version, "kind": kind + "List", "metadata": meta, "items": items[start:end]}
        )

    def _create(self, request: Request, plural: str, namespace: str) -> Reply:
        body = request.json()
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return _status(422, "metadata.name: Required value")
        if (plural, namespace, name) in self.objects:
            return _status(409, f'{plural} "{name}" already exists')
        self.created.append((plural, copy.deepcopy(body)))
        if plural == "volumesnapshots":
            body.setdefault("status", {})["readyToUse"] = False
        elif plural == "pods" or (plural == "persistentvolumeclaims" and body.get("spec", {}).get("dataSource")):
            body["status"] = {"phase": "Pending"}
        return Reply.json(self._put(plural, namespace, name, body), 201)
