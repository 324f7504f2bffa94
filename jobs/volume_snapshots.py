"""The VolumeSnapshot calls the CometBFT job (jobs/cometbft.py) and the Postgres snapshot sets
(jobs/pgsnap_volume.py) share: check a PVC is Bound, wait until a snapshot is ready (or has failed for good),
and remove a snapshot together with its disk snapshot.

Why shared: both take VolumeSnapshots of a class with deletionPolicy Retain and must treat the snapshot
controller's transient errors, its permanent ones and a Retain content on removal in exactly the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from jobs.kube import KubeClient, KubeError, pvc_path, volume_snapshot_content_path, volume_snapshots_path
from rules.naming import LABEL_PREFIX
from rules.retention import format_duration

# The labels every sv-backups VolumeSnapshot carries (CometBFT's and the Postgres snapshot sets'), which the
# pruners select on.
SET_ID_LABEL = f"{LABEL_PREFIX}/set-id"
MIGRATION_ID_LABEL = f"{LABEL_PREFIX}/migration-id"
TAKEN_AT_LABEL = f"{LABEL_PREFIX}/taken-at"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(text: str) -> str:
    """A valid label value (63 chars, alphanumeric ends) derived from `text`."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return cleaned if _LABEL_VALUE.match(cleaned) else ""


class VolumeSnapshotFailure(Exception):
    """`stage` (pvc, wait) and the snapshot's name when one exists."""

    def __init__(self, stage: str, message: str, snapshot: str | None = None, status: int | None = None):
        super().__init__(message)
        self.stage = stage
        self.snapshot = snapshot
        self.status = status


def status_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def check_pvc_bound(client: KubeClient, namespace: str, pvc: str) -> dict[str, Any]:
    try:
        claim = client.get(pvc_path(namespace, pvc))
    except KubeError as error:
        what = "not found" if error.not_found else str(error)
        raise VolumeSnapshotFailure("pvc", f"PVC {namespace}/{pvc}: {what}", status=error.status) from None
    phase = status_of(claim).get("phase")
    if phase != "Bound":
        raise VolumeSnapshotFailure("pvc", f"PVC {namespace}/{pvc} is {phase or 'in no phase'}, not Bound")
    return claim


def wait_ready(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    ready_timeout: timedelta,
    error_grace: timedelta,
    poll_interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """The snapshot once `status.readyToUse`. An error the controller keeps reporting for `error_grace` (it
    retries on its own and clears transient errors), or no readiness within `ready_timeout`, raises."""
    path = volume_snapshots_path(namespace, name)
    deadline = clock() + ready_timeout.total_seconds()
    error_since: float | None = None
    interval = min(poll_interval, 1.0)
    while True:
        try:
            snapshot = client.get(path)
        except KubeError as error:
            raise VolumeSnapshotFailure("wait", f"reading VolumeSnapshot {namespace}/{name}: {error}") from None
        status = status_of(snapshot)
        if status.get("readyToUse") is True:
            return snapshot
        error = status.get("error") or {}
        now = clock()
        if error:
            error_since = now if error_since is None else error_since
            if now - error_since >= error_grace.total_seconds():
                reason = error.get("message") or "error without message"
                raise VolumeSnapshotFailure("wait", f"VolumeSnapshot {namespace}/{name} failed: {reason}", name)
        else:
            error_since = None
        if now >= deadline:
            raise VolumeSnapshotFailure(
                "wait", f"VolumeSnapshot {namespace}/{name} not ready after {format_duration(ready_timeout)}", name
            )
        sleep(min(interval, max(0.0, deadline - now)))
        interval = min(interval * 2, poll_interval)


def remove(client: KubeClient, namespace: str, name: str) -> None:
    """Delete a snapshot and its disk snapshot: the class is Retain, so first switch the bound content to
    Delete (otherwise deleting the VolumeSnapshot would orphan a billed disk snapshot). Gone already: done."""
    path = volume_snapshots_path(namespace, name)
    snapshot = client.get_optional(path)
    if snapshot is None:
        return
    content = status_of(snapshot).get("boundVolumeSnapshotContentName")
    if content:
        try:
            client.merge_patch(volume_snapshot_content_path(content), {"spec": {"deletionPolicy": "Delete"}})
        except KubeError as error:
            if not error.not_found:
                raise
    client.delete(path)
