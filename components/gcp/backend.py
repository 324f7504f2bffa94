"""The GCP (GKE) implementation of `components.cloud.CloudBackend`.

What survives what:
- backup sets: a configurable dual-region bucket over gcp:region and dr.region with turbo replication
  (15-minute RPO) where GCS allows the pair, else a regional bucket in each region with every object copied
  to the DR one (components/gcp/buckets.py), so losing the primary region loses no set;
- identities dumps: Secret Manager, user-managed replicas in both regions, each under its own regional key;
- Cloud SQL automated backups: stored in the DR region;
- CometBFT PD snapshots: stored in the multi-region that holds both regions, else in the DR region
  (VolumeSnapshotClass parameter).
Every key is a customer-managed Cloud KMS key with 90-day rotation.
"""

from __future__ import annotations

from datetime import timedelta

import pulumi
from pulumi_gcp import kms, projects, secretmanager, serviceaccount, storage

from components.cloud import AlertSpec, BackupStore, PostgresEndpoint, SecretSlot, SnapshotCopies, WorkloadIdentity
from components.gcp import alerts, buckets, cloudsql
from components.settings import CloudSqlPostgres, Settings
from rules import gcp_locations
from rules.naming import Names

ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
# Create objects (the dumps, then manifest.json) and read them back (verification, promotion, listing).
# Neither role can delete or overwrite: GCS treats an overwrite as a delete.
OBJECT_WRITER_ROLES = ("roles/storage.objectCreator", "roles/storage.objectViewer")
SECRET_WRITER_ROLE = "roles/secretmanager.secretVersionAdder"
# Restore, drills and replica checks: list and read objects and secret versions, nothing else.
OBJECT_READER_ROLE = "roles/storage.objectViewer"
SECRET_READER_ROLE = "roles/secretmanager.secretAccessor"
KEY_ROTATION = timedelta(days=90)


def _seconds(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


class GcpBackend:
    name = "gcp"
    default_snapshot_driver = "pd.csi.storage.gke.io"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.names = Names(settings.name_prefix)
        self.project = settings.gcp.project
        self.region = settings.gcp.region
        # None on a DR stack: it declares no bucket or secret of its own (components/dr.py), so no layout either.
        self.dr_region = settings.dr.region
        self.layout = gcp_locations.storage_layout(self.region, self.dr_region) if self.dr_region else None
        self._keys: dict[str, kms.CryptoKey] = {}

    # --- keys -------------------------------------------------------------------------------------------
    def key(self, location: str, purpose: str, parent: pulumi.Resource) -> kms.CryptoKey:
        """One key ring per location and one key per purpose; CMEK keys must live where the data lives."""
        cache_key = f"{location}/{purpose}"
        if cache_key not in self._keys:
            ring = kms.KeyRing(
                self.names.resource("keys", purpose, location),
                name=self.names.resource("backups", purpose),
                location=location,
                project=self.project,
                opts=pulumi.ResourceOptions(parent=parent, protect=True),
            )
            self._keys[cache_key] = kms.CryptoKey(
                self.names.resource("key", purpose, location),
                name=self.names.resource(purpose),
                key_ring=ring.id,
                rotation_period=_seconds(KEY_ROTATION),
                purpose="ENCRYPT_DECRYPT",
                # Destroying a key destroys every backup encrypted with it.
                opts=pulumi.ResourceOptions(parent=ring, protect=True),
            )
        return self._keys[cache_key]

    def grant_key(self, key: kms.CryptoKey, name: str, member: pulumi.Input[str], parent: pulumi.Resource):
        return kms.CryptoKeyIAMMember(
            name, crypto_key_id=key.id, role=ENCRYPTER, member=member, opts=pulumi.ResourceOptions(parent=parent)
        )

    # --- snapshots --------------------------------------------------------------------------------------
    def drill_volume_parameters(self) -> dict[str, str]:
        # Balanced PD: SSD-backed, so a restore is not throttled by a standard disk's IOPS; deleted with the pod.
        return {"type": "pd-balanced"}

    def snapshot_class_parameters(self) -> dict[str, str]:
        # PD snapshots default to the multi-region nearest the disk, which for Zurich or London is the region
        # itself. We pin where they are stored so that the primary region's loss never takes them with it: the
        # multi-region holding both regions where there is one, else the DR region (a restore there is local).
        # A DR stack's cluster has no second region of its own: the multi-region holding its region, if any.
        if self.layout is None:
            return {"storage-locations": gcp_locations.standalone_snapshot_location(self.region)}
        return {"storage-locations": self.layout.snapshot_location}

    # --- object storage ---------------------------------------------------------------------------------
    def backup_store(self, *, parent: pulumi.Resource) -> BackupStore:
        return buckets.declare_store(self, parent=parent)

    # --- identities -------------------------------------------------------------------------------------
    def workload_identity(self, purpose: str, k8s_service_account: str, *, parent: pulumi.Resource) -> WorkloadIdentity:
        account = serviceaccount.Account(
            self.names.resource(purpose, "gsa"),
            account_id=self.names.service_account_id(purpose),
            display_name=f"sv-backups {self.settings.node.name} {purpose}",
            project=self.project,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        namespace = self.settings.node.namespace
        serviceaccount.IAMMember(
            self.names.resource(purpose, "workload-identity"),
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{self.project}.svc.id.goog[{namespace}/{k8s_service_account}]",
            opts=pulumi.ResourceOptions(parent=account),
        )
        return WorkloadIdentity(
            member=account.email.apply(lambda email: f"serviceAccount:{email}"),
            service_account_annotations={"iam.gke.io/gcp-service-account": account.email},
            resource=account,
        )

    def allow_object_writes(self, store: BackupStore, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        for role in OBJECT_WRITER_ROLES:
            storage.BucketIAMMember(
                self.names.resource("backups", role.rsplit(".", 1)[-1].lower()),
                bucket=store.name,
                role=role,
                member=identity.member,
                opts=pulumi.ResourceOptions(parent=parent),
            )

    def allow_object_reads(
        self, store: BackupStore, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        # Granted in the project's IAM policy, conditioned on the one bucket, not in the bucket's own policy:
        # a DR stack must be deployable while the primary region (and its bucket's metadata) is unreachable.
        projects.IAMMember(
            self.names.resource("backups-reader", label),
            project=self.project,
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
            self.names.resource("identities-dump-reader", label),
            secret_id=secret.id,
            project=self.project,
            role=SECRET_READER_ROLE,
            member=identity.member,
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def identities_secret(self, *, parent: pulumi.Resource) -> SecretSlot:
        agent = projects.ServiceIdentity(
            self.names.resource("secretmanager-agent"),
            project=self.project,
            service="secretmanager.googleapis.com",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        replicas, grants = [], []
        for location in (self.region, self.dr_region):
            key = self.key(location, "secrets", parent)
            grants.append(self.grant_key(key, self.names.resource("secrets-key-agent", location), agent.member, parent))
            replicas.append(
                secretmanager.SecretReplicationUserManagedReplicaArgs(
                    location=location,
                    customer_managed_encryption=secretmanager.SecretReplicationUserManagedReplicaCustomerManagedEncryptionArgs(
                        kms_key_name=key.id
                    ),
                )
            )
        secret = secretmanager.Secret(
            self.names.resource("identities-dump"),
            secret_id=self.names.identities_secret(),
            project=self.project,
            replication=secretmanager.SecretReplicationArgs(
                user_managed=secretmanager.SecretReplicationUserManagedArgs(replicas=replicas)
            ),
            labels={"svbackups-purpose": "identities", "svbackups-node": self.settings.node.name},
            # Deleting the secret deletes every stored identities dump: the node's keys.
            opts=pulumi.ResourceOptions(parent=parent, protect=True, depends_on=grants),
        )
        return SecretSlot(
            id=secret.id,
            url=pulumi.Output.concat("gcpsm://projects/", self.project, "/secrets/", secret.secret_id),
            resource=secret,
        )

    def allow_secret_version_adds(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> None:
        secretmanager.SecretIamMember(
            self.names.resource("identities-dump-version-adder"),
            secret_id=secret.id,
            project=self.project,
            role=SECRET_WRITER_ROLE,
            member=identity.member,
            opts=pulumi.ResourceOptions(parent=parent),
        )

    # --- managed Postgres and alerts: their own modules ----------------------------------------------
    def managed_postgres(
        self, role: str, instance: CloudSqlPostgres, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> PostgresEndpoint:
        return cloudsql.cloudsql_endpoint(self, role, instance, identity, parent=parent)

    def snapshot_copies(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotCopies | None:
        # PD snapshots are stored outside the primary region already (snapshot_class_parameters): nothing to copy.
        return None

    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
        return alerts.declare_alerts(self, specs, parent=parent)
