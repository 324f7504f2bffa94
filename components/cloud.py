"""The small interface behind which each cloud's specifics live.

Every backup concern (identities, Postgres sets, CometBFT, storage, alerts) is written once against this
Protocol; `components/gcp.py` implements it for GKE + GCP (AWS comes as another implementation). A backend
declares its resources as children of the component that asks (`parent`), so the resource tree reads by
concern, not by cloud.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import pulumi

from components.settings import CloudSqlPostgres, Settings


@dataclass(frozen=True)
class BackupStore:
    """Where backup sets go. `url` is what the jobs take as --dest (e.g. gs://bucket/prefix)."""

    name: pulumi.Output[str]
    url: pulumi.Output[str]
    resource: pulumi.Resource


@dataclass(frozen=True)
class WorkloadIdentity:
    """A cloud identity that one Kubernetes ServiceAccount acts as."""

    member: pulumi.Output[str]  # how IAM bindings name it
    service_account_annotations: dict[str, pulumi.Input[str]]
    resource: pulumi.Resource


@dataclass(frozen=True)
class SecretSlot:
    """The secret-manager entry holding identities dumps. `url` is what dump-identities takes as --secret."""

    id: pulumi.Output[str]
    url: pulumi.Output[str]
    resource: pulumi.Resource


@dataclass(frozen=True)
class PostgresEndpoint:
    """Where the dump jobs connect to a managed instance, and how (libpq sslmode)."""

    host: pulumi.Output[str]
    sslmode: str


@dataclass(frozen=True)
class AlertSpec:
    """One backup kind to watch: stale after `stale_after` without a completed run, or failed."""

    kind: str  # postgres | cometbft | identities
    namespace: str
    cron_job: str
    stale_after: timedelta


class CloudBackend(Protocol):
    name: str
    default_snapshot_driver: str

    def snapshot_class_parameters(self) -> dict[str, str]:
        """VolumeSnapshotClass parameters (e.g. where the snapshot data is stored)."""
        ...

    def backup_store(self, *, parent: pulumi.Resource) -> BackupStore: ...

    def workload_identity(
        self, purpose: str, k8s_service_account: str, *, parent: pulumi.Resource
    ) -> WorkloadIdentity: ...

    def allow_object_writes(self, store: BackupStore, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        """Create and read objects; never delete or overwrite them."""
        ...

    def identities_secret(self, *, parent: pulumi.Resource) -> SecretSlot: ...

    def allow_secret_version_adds(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> None:
        """Add versions; never read, disable or destroy them."""
        ...

    def managed_postgres(self, role: str, instance: CloudSqlPostgres, *, parent: pulumi.Resource) -> PostgresEndpoint:
        """Configure a managed instance's own backups; return where the dump jobs connect to it."""
        ...

    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]: ...


def backend_for(settings: Settings) -> CloudBackend:
    # Imported lazily: a stack only pays for (and needs) its own cloud's provider SDK.
    if settings.cloud == "gcp":
        from components.gcp import GcpBackend

        return GcpBackend(settings)
    raise ValueError(f"sv-backups:cloud {settings.cloud!r} has no backend")
