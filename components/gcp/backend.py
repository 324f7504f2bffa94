"""The GCP (GKE) implementation of `components.cloud.CloudBackend`.

What survives what:
- backup sets: a configurable dual-region bucket over gcp:region and dr.region with turbo replication
  (15-minute RPO), so losing the primary region loses no set;
- identities dumps: Secret Manager, user-managed replicas in both regions, each under its own regional key;
- Cloud SQL automated backups: stored in the DR region;
- CometBFT PD snapshots: stored in the multi-region that holds both regions (VolumeSnapshotClass parameter).
Every key is a customer-managed Cloud KMS key with 90-day rotation.
"""

from __future__ import annotations

from datetime import timedelta

import pulumi
import pulumi_gcp as gcp

from components import gcp_locations, retention
from components.cloud import AlertSpec, BackupStore, PostgresEndpoint, SecretSlot, SnapshotCopies, WorkloadIdentity
from components.gcp import alerts, cloudsql
from components.naming import Names, label_value
from components.settings import CloudSqlPostgres, Settings

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
        # None on a DR stack: it declares no bucket or secret of its own (components/dr.py).
        self.dr_region = settings.dr.region
        self.multi_region = (
            gcp_locations.dual_region(self.region, self.dr_region)
            if self.dr_region
            else gcp_locations.multi_region_of(self.region)
        )
        self._keys: dict[str, gcp.kms.CryptoKey] = {}

    # --- keys -------------------------------------------------------------------------------------------
    def _key(self, location: str, purpose: str, parent: pulumi.Resource) -> gcp.kms.CryptoKey:
        """One key ring per location and one key per purpose; CMEK keys must live where the data lives."""
        cache_key = f"{location}/{purpose}"
        if cache_key not in self._keys:
            ring = gcp.kms.KeyRing(
                self.names.resource("keys", purpose, location),
                name=self.names.resource("backups", purpose),
                location=location,
                project=self.project,
                opts=pulumi.ResourceOptions(parent=parent, protect=True),
            )
            self._keys[cache_key] = gcp.kms.CryptoKey(
                self.names.resource("key", purpose, location),
                name=self.names.resource(purpose),
                key_ring=ring.id,
                rotation_period=_seconds(KEY_ROTATION),
                purpose="ENCRYPT_DECRYPT",
                # Destroying a key destroys every backup encrypted with it.
                opts=pulumi.ResourceOptions(parent=ring, protect=True),
            )
        return self._keys[cache_key]

    def _grant_key(self, key: gcp.kms.CryptoKey, name: str, member: pulumi.Input[str], parent: pulumi.Resource):
        return gcp.kms.CryptoKeyIAMMember(
            name, crypto_key_id=key.id, role=ENCRYPTER, member=member, opts=pulumi.ResourceOptions(parent=parent)
        )

    # --- snapshots --------------------------------------------------------------------------------------
    def snapshot_class_parameters(self) -> dict[str, str]:
        # PD snapshots default to the nearest multi-region already; we pin it so that a zone or region loss
        # never takes the snapshots with it, whatever the cluster's location.
        return {"storage-locations": self.multi_region.compute}

    # --- object storage ---------------------------------------------------------------------------------
    def backup_store(self, *, parent: pulumi.Resource) -> BackupStore:
        settings = self.settings
        storage = settings.storage
        # CMEK keys must be in the bucket's location: for a dual-region, the multi-region containing it.
        key = self._key(self.multi_region.kms, "bucket", parent)
        gcs_agent = gcp.storage.get_project_service_account_output(project=self.project)
        grant = self._grant_key(
            key,
            self.names.resource("bucket-key-gcs-agent"),
            gcs_agent.email_address.apply(lambda email: f"serviceAccount:{email}"),
            parent,
        )
        recent = settings.retention.recent
        rules = retention.bucket_lifecycle(
            storage.prefix,
            recent,
            None if storage.historical_storage_class == "STANDARD" else storage.historical_storage_class,
        )
        derived = settings.derived
        labels = {
            "svbackups-node": settings.node.name,
            # The windows the lifecycle rules were sized from, for the CrossGuard stack policy to check.
            "svbackups-recent-seconds": str(int(recent.total_seconds())),
            "svbackups-historical-cadence-seconds": str(int(derived.postgres_historical_cadence.total_seconds())),
            "svbackups-recent-prefix": label_value(storage.prefix + retention.RECENT_TIER),
            "svbackups-historical-prefix": label_value(storage.prefix + retention.HISTORICAL_TIER),
        }
        if derived.min_pruning_window is not None:
            labels["svbackups-min-pruning-seconds"] = str(int(derived.min_pruning_window.total_seconds()))
        bucket_name = self.names.bucket(self.project, storage.bucket_name)
        bucket = gcp.storage.Bucket(
            self.names.resource("backups"),
            name=bucket_name,
            project=self.project,
            location=self.multi_region.gcs,
            custom_placement_config=gcp.storage.BucketCustomPlacementConfigArgs(
                data_locations=[self.region.upper(), self.dr_region.upper()]
            ),
            # Turbo replication: every object is in both regions within 15 minutes.
            rpo="ASYNC_TURBO",
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            encryption=gcp.storage.BucketEncryptionArgs(default_kms_key_name=key.id),
            # GCS does not allow Object Versioning together with a retention policy. The retention policy is
            # the stronger guarantee: no object (not even by an admin) can be deleted or replaced before it
            # is `recent` old; soft delete keeps deleted objects recoverable for `softDelete` on top.
            retention_policy=gcp.storage.BucketRetentionPolicyArgs(
                retention_period=str(retention.whole_days(recent) * 86400), is_locked=False
            ),
            soft_delete_policy=gcp.storage.BucketSoftDeletePolicyArgs(
                retention_duration_seconds=int(storage.soft_delete.total_seconds())
            ),
            lifecycle_rules=[_lifecycle_rule(rule) for rule in rules],
            labels=labels,
            force_destroy=False,
            opts=pulumi.ResourceOptions(parent=parent, protect=True, depends_on=[grant]),
        )
        return BackupStore(
            name=bucket.name,
            url=pulumi.Output.concat("gs://", bucket.name, "/", storage.prefix.rstrip("/")).apply(
                lambda url: url.rstrip("/")
            ),
            resource=bucket,
        )

    # --- identities -------------------------------------------------------------------------------------
    def workload_identity(self, purpose: str, k8s_service_account: str, *, parent: pulumi.Resource) -> WorkloadIdentity:
        account = gcp.serviceaccount.Account(
            self.names.resource(purpose, "gsa"),
            account_id=self.names.service_account_id(purpose),
            display_name=f"sv-backups {self.settings.node.name} {purpose}",
            project=self.project,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        namespace = self.settings.node.namespace
        gcp.serviceaccount.IAMMember(
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
            gcp.storage.BucketIAMMember(
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
        gcp.projects.IAMMember(
            self.names.resource("backups-reader", label),
            project=self.project,
            role=OBJECT_READER_ROLE,
            member=identity.member,
            condition=gcp.projects.IAMMemberConditionArgs(
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
        gcp.secretmanager.SecretIamMember(
            self.names.resource("identities-dump-reader", label),
            secret_id=secret.id,
            project=self.project,
            role=SECRET_READER_ROLE,
            member=identity.member,
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def identities_secret(self, *, parent: pulumi.Resource) -> SecretSlot:
        agent = gcp.projects.ServiceIdentity(
            self.names.resource("secretmanager-agent"),
            project=self.project,
            service="secretmanager.googleapis.com",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        replicas, grants = [], []
        for location in (self.region, self.dr_region):
            key = self._key(location, "secrets", parent)
            grants.append(
                self._grant_key(key, self.names.resource("secrets-key-agent", location), agent.member, parent)
            )
            replicas.append(
                gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(
                    location=location,
                    customer_managed_encryption=gcp.secretmanager.SecretReplicationUserManagedReplicaCustomerManagedEncryptionArgs(
                        kms_key_name=key.id
                    ),
                )
            )
        secret = gcp.secretmanager.Secret(
            self.names.resource("identities-dump"),
            secret_id=self.names.identities_secret(),
            project=self.project,
            replication=gcp.secretmanager.SecretReplicationArgs(
                user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(replicas=replicas)
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
        gcp.secretmanager.SecretIamMember(
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
        # PD snapshots are stored in a multi-region already (snapshot_class_parameters): nothing to copy.
        return None

    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
        return alerts.declare_alerts(self, specs, parent=parent)


def _lifecycle_rule(rule: retention.LifecycleRule) -> gcp.storage.BucketLifecycleRuleArgs:
    return gcp.storage.BucketLifecycleRuleArgs(
        action=gcp.storage.BucketLifecycleRuleActionArgs(type=rule.action, storage_class=rule.storage_class),
        condition=gcp.storage.BucketLifecycleRuleConditionArgs(
            age=rule.age_days, matches_prefixes=[rule.prefix] if rule.prefix else None
        ),
    )
