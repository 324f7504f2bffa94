"""`python -m jobs snapshot-cometbft`: snapshot the CometBFT PersistentVolume and prune old snapshots by tier.

One run:
1. checks that the PVC exists and is Bound;
2. creates a labelled VolumeSnapshot of it (class CLASS, whose deletionPolicy is Retain so that deleting a
   VolumeSnapshot object by mistake never deletes the disk snapshot);
3. waits until `status.readyToUse`; an error that the snapshot controller keeps reporting for longer than
   `--error-grace` (it retries on its own, and clears transient errors), or the `--ready-timeout`, fails the
   run, and the job deletes what it created (content included) so no ready-looking snapshot of a failed run
   stays behind;
4. with `--copy-to-region REGION --copy-kms-key KEY_ARN` (EBS, whose snapshots stay in one region): copies
   the new snapshot, and every kept snapshot that has no copy yet, to the DR region (jobs/ebs_copies.py). A
   failed copy fails the run before anything is pruned; the snapshot stays, and the next run copies it;
5. only after a ready (and copied) snapshot: prunes. Of this PVC's sv-backups snapshots (and those earlier
   migration ids took of their own PVCs: `of_this_node`), `select_kept`
   (rules/retention.py, the same code the Pulumi program plans with) keeps everything within
   `--keep-recent` and, older, one per historical cadence (from `--retain-blocks` / `--blocks-per-hour`) per
   migration id, forever. Each pruned snapshot's bound VolumeSnapshotContent is patched to `deletionPolicy:
   Delete`, then the VolumeSnapshot is deleted, which makes the CSI driver delete the disk snapshot. Leftovers
   of earlier failed runs (never ready, older than the ready timeout) are removed the same way. DR copies go
   with their pruned snapshots, and are pruned by the same rule among themselves.

Outcome: one `backup.completed` or `backup.failed` event (kind `cometbft`), exit code 0 or 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import cli_types, events
from jobs.ebs_copies import (
    SNAPSHOT_ID,
    CopyError,
    SnapshotCopier,
    Source,
    check_options,
    copies_to_delete,
    current_copies,
)
from jobs.kube import (
    KubeClient,
    KubeError,
    resolve_config,
    volume_snapshot_content_path,
    volume_snapshots_path,
)
from jobs.volume_snapshots import (
    MIGRATION_ID_LABEL,
    SET_ID_LABEL,
    TAKEN_AT_LABEL,
    VolumeSnapshotFailure,
    check_pvc_bound,
    label_value,
    remove,
    wait_ready,
)
from rules.naming import LABEL_PREFIX, MANAGED_BY
from rules.retention import Keepable, cometbft_historical_cadence, select_kept

KIND = "cometbft"
PVC_ANNOTATION = f"{LABEL_PREFIX}/pvc"
SET_ID_ENV = "SET_ID"

_MAX_NAME = 253


class SnapshotFailure(Exception):
    def __init__(self, stage: str, message: str, **fields: Any):
        super().__init__(message)
        self.stage = stage
        self.fields = {k: v for k, v in fields.items() if v is not None}


class Terminated(Exception):
    """SIGTERM (the Job's deadline, a node drain): unwind so the run cleans up what it created."""


@dataclass
class Options:
    namespace: str
    pvc: str
    snapshot_class: str
    migration_id: int
    keep_recent: timedelta
    retain_blocks: int
    blocks_per_hour: float
    ready_timeout: timedelta = timedelta(minutes=30)
    error_grace: timedelta = timedelta(minutes=2)
    poll_interval: float = 5.0
    set_id: str | None = None
    kube_api: str | None = None
    kube_retry_wait: float = 1.0
    copy_to_region: str | None = None
    copy_kms_key: str | None = None


def snapshot_name(pvc: str, taken_at: int) -> str:
    suffix = f"-{taken_at}"
    return pvc[: _MAX_NAME - len(suffix)] + suffix


def _status(snapshot: dict[str, Any]) -> dict[str, Any]:
    return snapshot.get("status") or {}


def _keepable(snapshot: dict[str, Any]) -> Keepable | None:
    labels = (snapshot.get("metadata") or {}).get("labels") or {}
    try:
        return Keepable(
            key=snapshot["metadata"]["name"],
            taken_at=datetime.fromtimestamp(int(labels[TAKEN_AT_LABEL]), UTC),
            migration_id=int(labels[MIGRATION_ID_LABEL]),
        )
    except (KeyError, ValueError, TypeError, OverflowError):
        return None


def of_this_node(snapshot: dict[str, Any], pvc: str, migration_id: int) -> bool:
    """The snapshots this run prunes: its PVC's, and those an earlier migration id's run took of its own PVC.

    The CometBFT PVC is named after the synchronizer serial (global-domain-<serial>-cometbft-cometbft-data), so
    after an upgrade the old id's snapshots are of another PVC; without this their recent tier would never be
    thinned (no run of the old id is left to do it). `select_kept` still keeps, per migration id, the first, the
    newest and one per cadence. A snapshot of another PVC with the same or a higher id is not ours to judge."""
    source = ((snapshot.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
    if source == pvc:
        return True
    labels = (snapshot.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels[MIGRATION_ID_LABEL]) < migration_id
    except (KeyError, ValueError, TypeError):
        return False


@dataclass
class PrunePlan:
    """What pruning will do, decided before anything is deleted (copies are made for `kept` first)."""

    kept: set[str]
    pruned: list[str]  # by tier
    leftovers: list[str]  # never ready, from failed runs
    ready: dict[str, dict[str, Any]]  # name -> VolumeSnapshot, every ready one of this PVC


@dataclass
class CopyState:
    node: str
    copies: list  # jobs.ebs_copies.Copy, as listed before this run copied anything


class SnapshotJob:
    def __init__(
        self,
        client: KubeClient,
        options: Options,
        log: Callable[..., dict[str, Any]],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        copier: SnapshotCopier | None = None,
    ):
        self.client = client
        self.options = options
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.copier = copier

    # --- create and wait ------------------------------------------------------------------------------
    def check_pvc(self) -> None:
        o = self.options
        try:
            check_pvc_bound(self.client, o.namespace, o.pvc)
        except VolumeSnapshotFailure as error:
            raise SnapshotFailure("pvc", str(error), status=error.status) from None

    def create(self, taken_at: int) -> str:
        o = self.options
        name = snapshot_name(o.pvc, taken_at)
        set_id = label_value(o.set_id or name) or str(taken_at)
        body = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": name,
                "namespace": o.namespace,
                "labels": {
                    SET_ID_LABEL: set_id,
                    MIGRATION_ID_LABEL: str(o.migration_id),
                    TAKEN_AT_LABEL: str(taken_at),
                    **MANAGED_BY,
                },
                # PVC names may exceed a label value's 63 characters: an annotation for humans and restores.
                "annotations": {PVC_ANNOTATION: o.pvc},
            },
            "spec": {"volumeSnapshotClassName": o.snapshot_class, "source": {"persistentVolumeClaimName": o.pvc}},
        }
        path = volume_snapshots_path(o.namespace)
        try:
            self.client.create(path, body)
        except KubeError as error:
            if error.conflict and self._ours(name, set_id):
                return name  # a retried POST whose first attempt went through
            raise SnapshotFailure("create", f"creating VolumeSnapshot {o.namespace}/{name}: {error}") from None
        return name

    def _ours(self, name: str, set_id: str) -> bool:
        existing = self.client.get_optional(volume_snapshots_path(self.options.namespace, name)) or {}
        labels = (existing.get("metadata") or {}).get("labels") or {}
        return labels.get(SET_ID_LABEL) == set_id

    def wait_ready(self, name: str) -> dict[str, Any]:
        o = self.options
        try:
            return wait_ready(
                self.client,
                o.namespace,
                name,
                ready_timeout=o.ready_timeout,
                error_grace=o.error_grace,
                poll_interval=o.poll_interval,
                clock=self.clock,
                sleep=self.sleep,
            )
        except VolumeSnapshotFailure as error:
            raise SnapshotFailure("wait", str(error), snapshot=error.snapshot) from None

    # --- delete ---------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        """Delete a snapshot and its disk snapshot (jobs/volume_snapshots.py: Retain content switched first)."""
        remove(self.client, self.options.namespace, name)

    def discard_own(self, name: str) -> None:
        """Best effort after a failure: the failure is what gets reported, not a cleanup error."""
        try:
            self.remove(name)
            self.log("cometbft.discarded", snapshot=name)
        except Exception as error:
            self.log("cometbft.discard_failed", snapshot=name, error=f"{type(error).__name__}: {error}")

    # --- DR copies -------------------------------------------------------------------------------------
    def volume_snapshot(self, name: str) -> str:
        return f"{self.options.namespace}/{name}"

    def source_of(self, snapshot: dict[str, Any]) -> Source:
        """The EBS snapshot behind a ready VolumeSnapshot (its content's snapshotHandle) and its tier facts."""
        name = snapshot["metadata"]["name"]
        item = _keepable(snapshot)
        content_name = _status(snapshot).get("boundVolumeSnapshotContentName")
        if item is None or not content_name:
            raise SnapshotFailure("copy", f"VolumeSnapshot {self.volume_snapshot(name)} has no content or labels")
        try:
            content = self.client.get(volume_snapshot_content_path(content_name))
        except KubeError as error:
            raise SnapshotFailure("copy", f"reading VolumeSnapshotContent {content_name}: {error}") from None
        handle = str(_status(content).get("snapshotHandle") or "")
        if not SNAPSHOT_ID.match(handle):
            raise SnapshotFailure(
                "copy",
                f"VolumeSnapshotContent {content_name} of {self.volume_snapshot(name)}: snapshotHandle {handle!r} is "
                "not an EBS snapshot id (snap-...); --copy-to-region needs the ebs.csi.aws.com driver",
            )
        labels = snapshot["metadata"].get("labels") or {}
        return Source(
            volume_snapshot=self.volume_snapshot(name),
            snapshot_id=handle,
            set_id=labels.get(SET_ID_LABEL) or name,
            migration_id=item.migration_id,
            taken_at=int(item.taken_at.timestamp()),
        )

    def copy_out(self, new: dict[str, Any], plan: PrunePlan) -> tuple[CopyState, dict[str, Any]]:
        """Copy the new snapshot, then every kept one without a copy (newest first), to the DR region."""
        copier = self.copier
        new_source = self.source_of(new)
        try:
            node = copier.node_of(new_source.snapshot_id)
            copies = copier.list_copies(node)
        except CopyError as error:
            raise SnapshotFailure("copy", str(error), snapshot=new["metadata"]["name"]) from None
        standing = current_copies(copies)
        new_name = new["metadata"]["name"]
        older = sorted(
            (n for n in plan.kept if n != new_name and n in plan.ready),
            key=lambda n: int(plan.ready[n]["metadata"]["labels"][TAKEN_AT_LABEL]),
            reverse=True,
        )
        started: dict[str, str] = {}
        failures: list[str] = []
        for name in [new_name, *older]:
            if self.volume_snapshot(name) in standing:
                continue
            try:
                source = new_source if name == new_name else self.source_of(plan.ready[name])
                copy_id = copier.copy(node, source)
            except (CopyError, SnapshotFailure) as error:
                failures.append(str(error))
                self.log("cometbft.copy_failed", snapshot=name, region=copier.dr_region, error=str(error))
                continue
            started[name] = copy_id
            self.log(
                "cometbft.copy_started",
                snapshot=name,
                source_snapshot=source.snapshot_id,
                copy_snapshot=copy_id,
                region=copier.dr_region,
            )
        if failures:
            raise SnapshotFailure(
                "copy",
                f"{len(failures)} DR copy(ies) to {copier.dr_region} failed (the snapshots stay; the next run "
                "retries): " + "; ".join(failures[:5]),
                snapshot=new_name,
                copy_region=copier.dr_region,
            )
        current = standing.get(self.volume_snapshot(new_name))
        facts = {
            "copy_region": copier.dr_region,
            "copy_snapshot": started.get(new_name) or current.snapshot_id,
            "copy_state": "pending" if new_name in started else current.state,
            "source_snapshot": new_source.snapshot_id,
            "copies_started": len(started),
        }
        return CopyState(node, copies), facts

    def prune_copies(self, state: CopyState, plan: PrunePlan, now: datetime) -> list[str]:
        o = self.options
        reasons = copies_to_delete(
            state.copies,
            kept={self.volume_snapshot(n) for n in plan.kept},
            pruned={self.volume_snapshot(n) for n in plan.pruned},
            now=now,
            keep_recent=o.keep_recent,
            cadence=cometbft_historical_cadence(o.retain_blocks, o.blocks_per_hour),
        )
        tags = {c.snapshot_id: c.volume_snapshot for c in state.copies}
        for copy_id, why in sorted(reasons.items()):
            self.copier.delete(copy_id)
            self.log("cometbft.copy_pruned", copy_snapshot=copy_id, snapshot=tags.get(copy_id), reason=why)
        return sorted(reasons)

    # --- prune ------------------------------------------------------------------------------------------
    def plan_prune(self, now: datetime) -> PrunePlan:
        o = self.options
        listed = self.client.list(volume_snapshots_path(o.namespace), label_selector=MANAGED_BY)
        mine = [s for s in listed if of_this_node(s, o.pvc, o.migration_id)]
        ready: list[Keepable] = []
        objects: dict[str, dict[str, Any]] = {}
        leftovers: list[str] = []
        for snapshot in mine:
            item = _keepable(snapshot)
            if item is None:
                # Never delete what we cannot date or place: it may be an operator's copy with our label.
                self.log("cometbft.unrecognised", snapshot=snapshot["metadata"]["name"])
                continue
            if snapshot.get("metadata", {}).get("deletionTimestamp"):
                continue
            if _status(snapshot).get("readyToUse") is True:
                ready.append(item)
                objects[item.key] = snapshot
            elif now - item.taken_at > o.ready_timeout:
                leftovers.append(item.key)
        cadence = cometbft_historical_cadence(o.retain_blocks, o.blocks_per_hour)
        kept = select_kept(ready, now, o.keep_recent, cadence)
        pruned = sorted(item.key for item in ready if item.key not in kept)
        return PrunePlan(kept=set(kept), pruned=pruned, leftovers=leftovers, ready=objects)

    def prune(self, plan: PrunePlan) -> list[str]:
        for name in [*plan.pruned, *plan.leftovers]:
            self.remove(name)
            self.log(
                "cometbft.pruned",
                snapshot=name,
                reason="leftover of a failed run" if name in plan.leftovers else "tier",
            )
        return [*plan.pruned, *plan.leftovers]

    # --- the run ----------------------------------------------------------------------------------------
    def run(self) -> int:
        o = self.options
        started = self.clock()
        taken_at = int(started)
        created: str | None = None
        try:
            self.check_pvc()
            created = self.create(taken_at)
            self.log("cometbft.created", snapshot=created, pvc=o.pvc, snapshot_class=o.snapshot_class)
            snapshot = self.wait_ready(created)
        except (SnapshotFailure, KubeError, Terminated) as error:
            if created:
                self.discard_own(created)
            stage = error.stage if isinstance(error, SnapshotFailure) else "wait"
            fields = error.fields if isinstance(error, SnapshotFailure) else {}
            message = str(error) if not isinstance(error, Terminated) else "terminated before the snapshot was ready"
            self.log(events.FAILED, error=message, stage=stage, pvc=o.pvc, **fields)
            return 1
        status = _status(snapshot)
        facts: dict[str, Any] = {
            "snapshot": created,
            "pvc": o.pvc,
            "migration_id": o.migration_id,
            "restore_size": status.get("restoreSize"),
            "content": status.get("boundVolumeSnapshotContentName"),
            "ready_seconds": round(self.clock() - started, 1),
        }
        now = datetime.fromtimestamp(taken_at, UTC)
        copy_state: CopyState | None = None
        try:
            plan = self.plan_prune(now)
            if self.copier:
                copy_state, copy_facts = self.copy_out(snapshot, plan)
                facts.update(copy_facts)
        except (SnapshotFailure, KubeError, Terminated) as error:
            # The snapshot is good and stays; without its DR copy it is not a backup yet, so nothing is pruned.
            message = str(error) if not isinstance(error, Terminated) else "terminated while copying to the DR region"
            fields = error.fields if isinstance(error, SnapshotFailure) else {}
            self.log(events.FAILED, error=message, stage="copy", pvc=o.pvc, **{"snapshot": created, **fields})
            return 1
        try:
            pruned = self.prune(plan)
            if copy_state:
                facts["copies_pruned"] = self.prune_copies(copy_state, plan, now)
        except (KubeError, CopyError, Terminated) as error:
            # The new snapshot is good; a pruning failure costs money, not safety. Report both.
            self.log(events.COMPLETED, **facts, pruned=[], prune_error=str(error))
            self.log(events.FAILED, error=f"pruning old snapshots failed: {error}", stage="prune", pvc=o.pvc)
            return 1
        self.log(events.COMPLETED, **facts, kept=len(plan.kept), pruned=pruned)
        return 0


# --- CLI ---------------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "snapshot-cometbft",
        help="snapshot the CometBFT PVC (VolumeSnapshot) and prune old snapshots by tier",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--pvc", required=True, help="e.g. global-domain-<serial>-cometbft-cometbft-data")
    parser.add_argument("--class", dest="snapshot_class", required=True, help="VolumeSnapshotClass (Retain)")
    parser.add_argument("--migration-id", type=int, required=True)
    parser.add_argument("--keep-recent", type=cli_types.duration, required=True, help="keep every snapshot this recent")
    parser.add_argument("--retain-blocks", type=int, required=True, help="CometBFT retainBlocks")
    parser.add_argument("--blocks-per-hour", type=float, required=True)
    parser.add_argument("--ready-timeout", type=cli_types.duration, default=timedelta(minutes=30))
    parser.add_argument(
        "--error-grace",
        type=cli_types.duration,
        default=timedelta(minutes=2),
        help="how long a snapshot error may persist before the run fails (the controller retries; default 2m)",
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between readiness checks")
    parser.add_argument("--set-id", help=f"value of the set-id label (default: env {SET_ID_ENV}, else the name)")
    parser.add_argument("--kube-api", help="Kubernetes API URL (default: in-cluster; env SV_BACKUPS_KUBE_API)")
    parser.add_argument(
        "--copy-to-region",
        help="EBS: copy each kept snapshot to this region (the primary region is AWS_REGION); needs --copy-kms-key",
    )
    parser.add_argument("--copy-kms-key", help="EBS: ARN of the KMS key in --copy-to-region that encrypts the copies")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    options = Options(
        namespace=args.namespace,
        pvc=args.pvc,
        snapshot_class=args.snapshot_class,
        migration_id=args.migration_id,
        keep_recent=args.keep_recent,
        retain_blocks=args.retain_blocks,
        blocks_per_hour=args.blocks_per_hour,
        ready_timeout=args.ready_timeout,
        error_grace=args.error_grace,
        poll_interval=args.poll_interval,
        set_id=args.set_id or os.environ.get(SET_ID_ENV),
        kube_api=args.kube_api,
        copy_to_region=args.copy_to_region,
        copy_kms_key=args.copy_kms_key,
    )
    return run(options, stream=sys.stdout)


def run(options: Options, *, stream=None) -> int:
    def log(event: str, **fields: Any) -> dict[str, Any]:
        return events.emit(event, KIND, stream=stream, **fields)

    if options.retain_blocks <= 0 or options.blocks_per_hour <= 0 or options.migration_id < 0:
        log(
            events.FAILED,
            error="--retain-blocks, --blocks-per-hour must be positive, --migration-id >= 0",
            stage="config",
        )
        return 1
    copier = None
    if options.copy_to_region or options.copy_kms_key:
        problems = (
            check_options(options.copy_to_region, options.copy_kms_key, _primary_region())
            if options.copy_to_region and options.copy_kms_key
            else ["--copy-to-region and --copy-kms-key go together"]
        )
        if problems:
            log(events.FAILED, error="; ".join(problems), stage="config", pvc=options.pvc)
            return 1
        copier = SnapshotCopier(_primary_region(), options.copy_to_region, options.copy_kms_key)
    try:
        config = resolve_config(options.kube_api)
    except KubeError as error:
        log(events.FAILED, error=str(error), stage="config", pvc=options.pvc)
        return 1
    previous = _install_sigterm()
    try:
        with KubeClient(config, retry_wait=options.kube_retry_wait) as client:
            return SnapshotJob(client, options, log, copier=copier).run()
    except Exception as error:
        # A bug must still end in backup.failed (the alert); the job's own failures are handled inside.
        log(events.FAILED, error=f"unexpected {type(error).__name__}: {error}", stage="internal", pvc=options.pvc)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _primary_region() -> str | None:
    """The cluster's region: IRSA's pod identity webhook sets AWS_REGION (and AWS_DEFAULT_REGION)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _install_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)
