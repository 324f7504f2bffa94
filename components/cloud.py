"""The small interface behind which each cloud's specifics live.

Every backup concern (identities, Postgres sets, CometBFT, storage, alerts) is written once against this
Protocol; `components/gcp/` implements it for GKE + GCP and `components/aws/` for EKS + AWS. This module
knows no backend: `components/backends.py` picks one. A backend declares its resources as children of the
component that asks (`parent`), so the resource tree reads by concern, not by cloud.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import pulumi
from pulumi_kubernetes.core import v1 as core

from components.settings import ManagedPostgres


@dataclass(frozen=True)
class BackupStore:
    """Where backup sets go. `url` is what the jobs take as --dest (e.g. gs://bucket/prefix). `resource` is
    the bucket, or None for a store another stack declares (a DR stack reads the primary's)."""

    name: pulumi.Output[str]
    url: pulumi.Output[str]
    resource: pulumi.Resource | None
    # The copy in the DR region (a second bucket the cloud replicates to); None when `name` itself spans both
    # regions (a GCS dual-region bucket).
    dr_name: pulumi.Output[str] | None = None
    dr_url: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class WorkloadIdentity:
    """A cloud identity that one Kubernetes ServiceAccount acts as."""

    member: pulumi.Output[str]  # how IAM bindings name it
    service_account_annotations: dict[str, pulumi.Input[str]]
    resource: pulumi.Resource


@dataclass(frozen=True)
class SecretSlot:
    """The secret-manager entry holding identities dumps. `url` is what dump-identities takes as --secret;
    `resource` is None for a secret another stack declares."""

    id: pulumi.Output[str]
    url: pulumi.Output[str]
    resource: pulumi.Resource | None
    # How to reach the DR region's replica, where it is addressed separately (an AWS replica secret has its
    # own ARN); None when one name serves both regions (Secret Manager replicas).
    dr_id: pulumi.Output[str] | None = None
    dr_url: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class PostgresEndpoint:
    """Where the dump jobs connect to a managed instance, and how (libpq sslmode).

    With a password the job reads `postgresPassword` from the instance's k8s Secret. Without one
    (`password=False`) the backend authenticates the job by its cloud identity: `user` is then the database
    user of that identity and `sidecars` (native sidecars: initContainers with restartPolicy Always, started
    before the dump steps) carry the connection, e.g. the Cloud SQL Auth Proxy on 127.0.0.1:`port`."""

    host: pulumi.Output[str]
    sslmode: str
    port: int | None = None  # None: the instance's configured port
    user: pulumi.Input[str] | None = None  # None: the instance's configured user
    password: bool = True
    sidecars: Sequence[core.ContainerArgs] = ()
    # SQL an admin of the instance runs once before the first backup (exported as `postgresSetupSql`), e.g.
    # the GRANT that lets an IAM database user read every table.
    operator_sql: Sequence[pulumi.Input[str]] = ()


@dataclass(frozen=True)
class SnapshotCopies:
    """How the CometBFT snapshot job copies each kept snapshot out of the primary region, where the cloud
    does not do it itself: extra job args and the annotations that give its ServiceAccount a cloud identity."""

    job_args: Sequence[pulumi.Input[str]]
    service_account_annotations: dict[str, pulumi.Input[str]]


@dataclass(frozen=True)
class SnapshotJobAccess:
    """What one snapshot-set job (the creator or the pruner, components/pg_snapshots.py) gets from the cloud: the
    identity its ServiceAccount acts as (already granted what the job does with the provider, and nothing more)
    and the job args that name the provider's resources.

    `role_args`: for the creator, per role, the method args of a managed instance (`--method cloudsql-backup ...`,
    `--method rds-snapshot ...`) or the cloud's extras to a volume snapshot (EBS: the DR copy and the lock);
    empty for the pruner. `args`: for the pruner, its provider access (`--project`, `--region`,
    `--copy-to-region`); empty for the creator."""

    identity: WorkloadIdentity
    role_args: dict[str, list[pulumi.Input[str]]]
    args: list[pulumi.Input[str]]


@dataclass(frozen=True)
class AlertSpec:
    """One backup kind to watch: stale after `stale_after` without a completed run, or failed."""

    kind: str  # postgres | cometbft | identities | history | replica | drill-postgres | drill-cometbft | ...
    namespace: str
    cron_job: str
    stale_after: timedelta

    @property
    def run_name(self) -> str:
        """What one run of the watched job is, for alert titles: "postgres backup", "history audit",
        "postgres restore drill" (every kind logs the same backup.completed / backup.failed events)."""
        if self.kind in _RUN_NAMES:
            return _RUN_NAMES[self.kind]
        if self.kind.startswith("drill-"):
            return f"{self.kind.removeprefix('drill-')} restore drill"
        return f"{self.kind} backup"


_RUN_NAMES = {
    "history": "history audit",
    "replica": "DR replica check",
    "postgres-snapshots": "postgres snapshot set",
    "snapshot-prune": "postgres snapshot pruning",
}


class CloudBackend(Protocol):
    name: str
    default_snapshot_driver: str

    def snapshot_class_parameters(self, purpose: str = "cometbft") -> dict[str, str]:
        """VolumeSnapshotClass parameters (e.g. where the snapshot data is stored, the tags a snapshot carries);
        `purpose` is what the class's snapshots hold (cometbft, postgres-snapshot)."""
        ...

    def drill_volume_parameters(self) -> dict[str, str]:
        """StorageClass parameters of the disks the restore drills create (for the default CSI driver): the
        scratch volume of the Postgres drill and the PVC the CometBFT drill restores from a snapshot."""
        ...

    def backup_store(self, *, parent: pulumi.Resource) -> BackupStore: ...

    def workload_identity(
        self, purpose: str, k8s_service_account: str, *, parent: pulumi.Resource
    ) -> WorkloadIdentity: ...

    def allow_object_writes(self, store: BackupStore, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        """Create and read objects; never delete or overwrite them."""
        ...

    def allow_people_to_act_as(self, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        """Let the people the stack names act as this (restore) identity by hand, and nobody else: GCP, the
        sv-backups:restore.impersonators may impersonate it; AWS, nothing (people assume restoreRoleArns)."""
        ...

    def allow_object_reads(
        self, store: BackupStore, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        """List and read objects (restore, drills, replica checks); never create, delete or overwrite them.
        `label` tells this grant apart from others of the same identity (e.g. "primary", "dr-copy")."""
        ...

    def identities_secret(self, *, parent: pulumi.Resource) -> SecretSlot: ...

    def allow_secret_reads(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        """Read versions (restore, replica checks); never add, disable or destroy them."""
        ...

    def allow_secret_version_adds(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> None:
        """Add versions; never read, disable or destroy them."""
        ...

    def managed_postgres(
        self, role: str, instance: ManagedPostgres, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> PostgresEndpoint:
        """Configure a managed instance's own backups; return where (and as whom) the dump jobs connect to it.
        `identity` is the dump job's cloud identity, for instances that authenticate it without a password."""
        ...

    def snapshot_copies(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotCopies | None:
        """None where snapshots are already stored outside the primary region (GCP multi-region storage)."""
        ...

    def snapshot_creator(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotJobAccess:
        """The snapshot-set creator's identity: take snapshots of the stack's instances (and their DR copies and
        locks, where the job makes them); never delete one (Cloud SQL backup runs, EBS and RDS snapshots)."""
        ...

    def snapshot_pruner(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotJobAccess:
        """The snapshot pruner's identity: the only one that can delete the node's snapshots (and their copies)."""
        ...

    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]: ...
