"""The GCP (GKE) implementation of `components.cloud.CloudBackend`.

What survives what:
- backup sets: a configurable dual-region bucket over gcp:region and dr.region with turbo replication
  (15-minute RPO) where GCS allows the pair, else a regional bucket in each region with every object copied
  to the DR one (components/gcp/buckets.py), so losing the primary region loses no set;
- identities dumps: Secret Manager, user-managed replicas in both regions, each under its own regional key;
- Cloud SQL automated backups: stored in the DR region;
- CometBFT PD snapshots: stored in the multi-region that holds both regions, else in the DR region
  (VolumeSnapshotClass parameter);
- Postgres snapshot sets (sv-backups:snapshots): PD snapshots stored likewise, Cloud SQL on-demand backups at the
  same location; their creator cannot delete them, only their pruner can (components/gcp/snapshots.py).
Every key is a customer-managed Cloud KMS key with 90-day rotation.
"""

from __future__ import annotations

import pulumi
from pulumi_gcp import projects, secretmanager, serviceaccount, storage

from components.cloud import (
    AlertSpec,
    BackupStore,
    PostgresEndpoint,
    SecretSlot,
    SnapshotCopies,
    SnapshotJobAccess,
    WorkloadIdentity,
)
from components.gcp import alerts, buckets, cloudsql, snapshots
from components.gcp.context import GcpContext
from components.settings import CloudSqlPostgres, Settings
from rules import gcp_locations
from rules.naming import Names

# Create objects (the dumps, then manifest.json) and read them back (verification, promotion, listing).
# Neither role can delete or overwrite: GCS treats an overwrite as a delete.
OBJECT_WRITER_ROLES = ("roles/storage.objectCreator", "roles/storage.objectViewer")
SECRET_WRITER_ROLE = "roles/secretmanager.secretVersionAdder"
# Restore, drills and replica checks: list and read objects and secret versions, nothing else.
OBJECT_READER_ROLE = "roles/storage.objectViewer"
SECRET_READER_ROLE = "roles/secretmanager.secretAccessor"


class GcpBackend:
    name = "gcp"
    default_snapshot_driver = "pd.csi.storage.gke.io"

    def __init__(self, settings: Settings):
        region, dr_region = settings.gcp.region, settings.dr.region
        # What the parts (buckets, cloudsql, alerts) read; the keys are declared through it (GcpContext.key).
        self.context = GcpContext(
            settings=settings,
            names=Names(settings.name_prefix),
            project=settings.gcp.project,
            region=region,
            dr_region=dr_region,
            layout=gcp_locations.storage_layout(region, dr_region) if dr_region else None,
        )

    # --- snapshots --------------------------------------------------------------------------------------
    def drill_volume_parameters(self) -> dict[str, str]:
        # Balanced PD: SSD-backed, so a restore is not throttled by a standard disk's IOPS; deleted with the pod.
        return {"type": "pd-balanced"}

    def snapshot_class_parameters(self, purpose: str = "cometbft") -> dict[str, str]:
        # PD snapshots default to the multi-region nearest the disk, which for Zurich or London is the region
        # itself. We pin where they are stored so that the primary region's loss never takes them with it: the
        # multi-region holding both regions where there is one, else the DR region (a restore there is local).
        # A DR stack's cluster has no second region of its own: the multi-region holding its region, if any.
        # The same for every purpose (CometBFT, Postgres snapshot sets).
        return {"storage-locations": snapshots.snapshot_location(self.context)}

    # --- object storage ---------------------------------------------------------------------------------
    def backup_store(self, *, parent: pulumi.Resource) -> BackupStore:
        return buckets.declare_store(self.context, parent=parent)

    # --- identities -------------------------------------------------------------------------------------
    def workload_identity(self, purpose: str, k8s_service_account: str, *, parent: pulumi.Resource) -> WorkloadIdentity:
        account = serviceaccount.Account(
            self.context.names.resource(purpose, "gsa"),
            account_id=self.context.names.service_account_id(purpose),
            display_name=f"sv-backups {self.context.settings.node.name} {purpose}",
            project=self.context.project,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        namespace = self.context.settings.node.namespace
        serviceaccount.IAMMember(
            self.context.names.resource(purpose, "workload-identity"),
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{self.context.project}.svc.id.goog[{namespace}/{k8s_service_account}]",
            opts=pulumi.ResourceOptions(parent=account),
        )
        return WorkloadIdentity(
            member=account.email.apply(lambda email: f"serviceAccount:{email}"),
            service_account_annotations={"iam.gke.io/gcp-service-account": account.email},
            resource=account,
        )

    def allow_people_to_act_as(self, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        # Token creator on this one service account (not the project): the people named get exactly its reads, for
        # as long as their short-lived impersonated tokens last; the account has no key to leak.
        for member in self.context.settings.restore.impersonators:
            serviceaccount.IAMMember(
                self.context.names.resource("restore-impersonator", member.split(":", 1)[1]),
                service_account_id=identity.resource.name,
                role="roles/iam.serviceAccountTokenCreator",
                member=member,
                opts=pulumi.ResourceOptions(parent=parent),
            )

    def allow_object_writes(self, store: BackupStore, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        for role in OBJECT_WRITER_ROLES:
            storage.BucketIAMMember(
                self.context.names.resource("backups", role.rsplit(".", 1)[-1].lower()),
                bucket=store.name,
                role=role,
                member=identity.member,
                opts=pulumi.ResourceOptions(parent=parent),
            )

    def allow_object_reads(
        self, store: BackupStore, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        if store.resource is None:
            # A store this stack reads from another stack's outputs (a DR stack's view of its primary's buckets)
            # may live in another project: a project binding here, conditioned on it, would grant nothing there
            # (policy `gcp-reader-grant-where-resource-lives`). The grant goes on the bucket itself, by the name
            # the primary exports. Once declared it has no diff: a later `pulumi up` while the primary region is
            # down does not touch it (a first deployment then needs the bucket's metadata reachable).
            storage.BucketIAMMember(
                self.context.names.resource("backups-reader", label),
                bucket=store.name,
                role=OBJECT_READER_ROLE,
                member=identity.member,
                opts=pulumi.ResourceOptions(parent=parent),
            )
            return
        # The stack's own bucket, in its own project: granted in the project's IAM policy, conditioned on the
        # one bucket, so that the grant never depends on the bucket's own policy being writable.
        projects.IAMMember(
            self.context.names.resource("backups-reader", label),
            project=self.context.project,
            role=OBJECT_READER_ROLE,
            member=identity.member,
            condition=projects.IAMMemberConditionArgs(
                title=f"sv-backups {label} sets only",
                # The bucket itself (objects.list) and its objects; not another bucket sharing the prefix.
                expression=store.name.apply(
                    lambda bucket: (
                        f'resource.name == "projects/_/buckets/{bucket}" || '
                        f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/")'
                    )
                ),
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def allow_secret_reads(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        secretmanager.SecretIamMember(
            self.context.names.resource("identities-dump-reader", label),
            secret_id=secret.id,
            # A secret of another stack is named by its full id (projects/<its project>/secrets/...), which says
            # where it lives; this stack's project would name a secret that does not exist.
            project=self.context.project if secret.resource is not None else None,
            role=SECRET_READER_ROLE,
            member=identity.member,
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def identities_secret(self, *, parent: pulumi.Resource) -> SecretSlot:
        agent = projects.ServiceIdentity(
            self.context.names.resource("secretmanager-agent"),
            project=self.context.project,
            service="secretmanager.googleapis.com",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        replicas, grants = [], []
        for location in (self.context.region, self.context.dr_region):
            key = self.context.key(location, "secrets", parent)
            grants.append(
                self.context.grant_key(
                    key, self.context.names.resource("secrets-key-agent", location), agent.member, parent
                )
            )
            replicas.append(
                secretmanager.SecretReplicationUserManagedReplicaArgs(
                    location=location,
                    customer_managed_encryption=secretmanager.SecretReplicationUserManagedReplicaCustomerManagedEncryptionArgs(
                        kms_key_name=key.id
                    ),
                )
            )
        secret = secretmanager.Secret(
            self.context.names.resource("identities-dump"),
            secret_id=self.context.names.identities_secret(),
            project=self.context.project,
            replication=secretmanager.SecretReplicationArgs(
                user_managed=secretmanager.SecretReplicationUserManagedArgs(replicas=replicas)
            ),
            labels={"svbackups-purpose": "identities", "svbackups-node": self.context.settings.node.name},
            # Deleting the secret deletes every stored identities dump: the node's keys.
            opts=pulumi.ResourceOptions(parent=parent, protect=True, depends_on=grants),
        )
        return SecretSlot(
            id=secret.id,
            url=pulumi.Output.concat("gcpsm://projects/", self.context.project, "/secrets/", secret.secret_id),
            resource=secret,
        )

    def allow_secret_version_adds(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> None:
        secretmanager.SecretIamMember(
            self.context.names.resource("identities-dump-version-adder"),
            secret_id=secret.id,
            project=self.context.project,
            role=SECRET_WRITER_ROLE,
            member=identity.member,
            opts=pulumi.ResourceOptions(parent=parent),
        )

    # --- managed Postgres and alerts: their own modules ----------------------------------------------
    def managed_postgres(
        self, role: str, instance: CloudSqlPostgres, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> PostgresEndpoint:
        return cloudsql.cloudsql_endpoint(self.context, role, instance, identity, parent=parent)

    def snapshot_copies(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotCopies | None:
        # PD snapshots are stored outside the primary region already (snapshot_class_parameters): nothing to copy.
        return None

    def snapshot_creator(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotJobAccess:
        identity = self.workload_identity(snapshots.CREATOR_PURPOSE, k8s_service_account, parent=parent)
        return snapshots.snapshot_creator(self.context, identity, parent=parent)

    def snapshot_pruner(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotJobAccess:
        identity = self.workload_identity(snapshots.PRUNER_PURPOSE, k8s_service_account, parent=parent)
        return snapshots.snapshot_pruner(self.context, identity, parent=parent)

    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
        return alerts.declare_alerts(self.context, specs, parent=parent)
