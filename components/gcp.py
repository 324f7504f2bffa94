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

from components import gcp_locations, retention, schedules
from components.cloud import AlertSpec, BackupStore, PostgresEndpoint, SecretSlot, WorkloadIdentity
from components.naming import Names, label_value
from components.settings import CloudSqlPostgres, Settings

ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
# Create objects (the dumps, then manifest.json) and read them back (verification, promotion, listing).
# Neither role can delete or overwrite: GCS treats an overwrite as a delete.
OBJECT_WRITER_ROLES = ("roles/storage.objectCreator", "roles/storage.objectViewer")
SECRET_WRITER_ROLE = "roles/secretmanager.secretVersionAdder"
KEY_ROTATION = timedelta(days=90)
# Cloud SQL keeps at most 7 days of transaction logs outside Enterprise Plus.
MAX_TRANSACTION_LOG_DAYS = 7
MAX_RETAINED_BACKUPS = 365
# Fields of an adopted Cloud SQL instance that this program must never change: everything but its backup
# configuration and deletion protection. On import Pulumi keeps the live values of ignored fields, so
# adopting an instance touches nothing else (see README "Adopting Cloud SQL instances").
CLOUDSQL_IGNORED_FIELDS = [
    "databaseVersion",
    "region",
    "rootPassword",
    "encryptionKeyName",
    "masterInstanceName",
    "replicaConfiguration",
    "maintenanceVersion",
    "instanceType",
    "settings.tier",
    "settings.edition",
    "settings.activationPolicy",
    "settings.availabilityType",
    "settings.collation",
    "settings.connectorEnforcement",
    "settings.databaseFlags",
    "settings.dataCacheConfig",
    "settings.denyMaintenancePeriod",
    "settings.diskAutoresize",
    "settings.diskAutoresizeLimit",
    "settings.diskSize",
    "settings.diskType",
    "settings.insightsConfig",
    "settings.ipConfiguration",
    "settings.locationPreference",
    "settings.maintenanceWindow",
    "settings.passwordValidationPolicy",
    "settings.pricingPlan",
    "settings.timeZone",
    "settings.userLabels",
    "settings.advancedMachineFeatures",
    "settings.enableGoogleMlIntegration",
    "settings.enableDataplexIntegration",
    "settings.backupConfiguration.startTime",
    "settings.backupConfiguration.backupTier",
    "settings.connectionPoolConfigs",
    "settings.dataDiskProvisionedIops",
    "settings.dataDiskProvisionedThroughput",
    "settings.retainBackupsOnDelete",
    "settings.finalBackupConfig",
    "settings.autoUpgradeEnabled",
    "settings.readPoolAutoScaleConfig",
    "replicaNames",
    "nodeCount",
]


def _seconds(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


class GcpBackend:
    name = "gcp"
    default_snapshot_driver = "pd.csi.storage.gke.io"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.names = Names(settings.node.name)
        self.project = settings.gcp.project
        self.region = settings.gcp.region
        self.dr_region = settings.dr.region
        # Validated in settings: both regions are in one multi-region.
        self.multi_region = gcp_locations.dual_region(self.region, self.dr_region)
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

    # --- managed Postgres -------------------------------------------------------------------------------
    def managed_postgres(self, role: str, instance: CloudSqlPostgres, *, parent: pulumi.Resource) -> PostgresEndpoint:
        # Private IP still crosses the VPC: require TLS (Cloud SQL always offers it).
        if not instance.adopt:
            return PostgresEndpoint(pulumi.Output.from_input(instance.host), sslmode="require")
        recent_days = retention.whole_days(self.settings.retention.recent)
        region = instance.region or self.region
        adopted = gcp.sql.DatabaseInstance(
            self.names.resource(role, "cloudsql"),
            name=instance.instance,
            project=self.project,
            region=region,
            database_version=instance.database_version,
            deletion_protection=True,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier=instance.tier,
                deletion_protection_enabled=True,
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=True,
                    point_in_time_recovery_enabled=True,
                    transaction_log_retention_days=min(MAX_TRANSACTION_LOG_DAYS, recent_days),
                    # Standard automated backups run once a day; one per day of the recent window. The
                    # 4-hourly ordered sets come from the Postgres CronJob, as for in-cluster instances.
                    backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                        retained_backups=min(MAX_RETAINED_BACKUPS, max(7, recent_days)),
                        retention_unit="COUNT",
                    ),
                    # Stored outside the primary region: they survive its loss.
                    location=self.dr_region,
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=parent,
                import_=f"projects/{self.project}/instances/{instance.instance}",
                ignore_changes=CLOUDSQL_IGNORED_FIELDS,
                protect=True,
                # Removing it from this program must never delete a production database.
                retain_on_delete=True,
            ),
        )
        host = pulumi.Output.from_input(instance.host) if instance.host else adopted.private_ip_address
        return PostgresEndpoint(host, sslmode="require")

    # --- alerts -----------------------------------------------------------------------------------------
    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
        monitoring = self.settings.monitoring
        channels: list[pulumi.Input[str]] = list(monitoring.notification_channels)
        for index, email in enumerate(monitoring.notification_emails):
            channel = gcp.monitoring.NotificationChannel(
                self.names.resource("alerts-email", str(index)),
                project=self.project,
                type="email",
                display_name=f"sv-backups {self.settings.node.name}: {email}",
                labels={"email_address": email},
                opts=pulumi.ResourceOptions(parent=parent),
            )
            channels.append(channel.id)

        policies: list[pulumi.Resource] = []
        for spec in specs:
            policies.extend(self._alerts_for(spec, channels, parent))
        return policies

    def _alerts_for(self, spec: AlertSpec, channels: list, parent: pulumi.Resource) -> list[pulumi.Resource]:
        node = self.settings.node.name
        container_logs = (
            f'resource.type="k8s_container" AND resource.labels.namespace_name="{spec.namespace}" '
            f'AND jsonPayload.kind="{spec.kind}"'
        )
        completed = self._log_metric(
            spec, "completed", f'{container_logs} AND jsonPayload.event="backup.completed"', parent
        )
        # A job can die without logging (OOM kill, deadline, image pull): Kubernetes then records a Job event.
        job_events = (
            f'logName="projects/{self.project}/logs/events" AND jsonPayload.involvedObject.kind="Job" '
            f'AND jsonPayload.involvedObject.namespace="{spec.namespace}" '
            f'AND jsonPayload.involvedObject.name:"{spec.cron_job}" '
            f'AND jsonPayload.reason=("BackoffLimitExceeded" OR "DeadlineExceeded")'
        )
        failed = self._log_metric(
            spec, "failed", f'({container_logs} AND jsonPayload.event="backup.failed") OR ({job_events})', parent
        )
        common = {
            "project": self.project,
            "combiner": "OR",
            "notification_channels": channels,
            "severity": "CRITICAL",
        }
        stale = gcp.monitoring.AlertPolicy(
            self.names.resource("alert", spec.kind, "stale"),
            display_name=f"sv-backups {node}: no {spec.kind} backup for {schedules.describe(spec.stale_after)}",
            conditions=[
                gcp.monitoring.AlertPolicyConditionArgs(
                    display_name=f"no completed {spec.kind} backup",
                    condition_absent=gcp.monitoring.AlertPolicyConditionConditionAbsentArgs(
                        filter=completed.name.apply(
                            lambda name: (
                                f'metric.type="logging.googleapis.com/user/{name}" AND resource.type="k8s_container"'
                            )
                        ),
                        duration=_seconds(spec.stale_after),
                        aggregations=[
                            gcp.monitoring.AlertPolicyConditionConditionAbsentAggregationArgs(
                                alignment_period="300s",
                                per_series_aligner="ALIGN_SUM",
                                cross_series_reducer="REDUCE_SUM",
                            )
                        ],
                    ),
                )
            ],
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                mime_type="text/markdown",
                content=(
                    f"No `{spec.kind}` backup of SV node `{node}` completed for "
                    f"{schedules.describe(spec.stale_after)}. "
                    f"Check `kubectl -n {spec.namespace} get jobs -l app.kubernetes.io/instance={node}` and "
                    f"the logs of the latest `{spec.cron_job}` job. See docs/runbook.md."
                ),
            ),
            user_labels={"svbackups-kind": spec.kind, "svbackups-alert": "stale", "svbackups-node": node},
            opts=pulumi.ResourceOptions(parent=parent),
            **common,
        )
        failed_policy = gcp.monitoring.AlertPolicy(
            self.names.resource("alert", spec.kind, "failed"),
            display_name=f"sv-backups {node}: {spec.kind} backup failed",
            conditions=[
                gcp.monitoring.AlertPolicyConditionArgs(
                    display_name=f"failed {spec.kind} backup",
                    condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                        filter=failed.name.apply(lambda name: f'metric.type="logging.googleapis.com/user/{name}"'),
                        comparison="COMPARISON_GT",
                        threshold_value=0,
                        duration="0s",
                        aggregations=[
                            gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                                alignment_period="300s",
                                per_series_aligner="ALIGN_SUM",
                                cross_series_reducer="REDUCE_SUM",
                            )
                        ],
                    ),
                )
            ],
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                mime_type="text/markdown",
                content=(
                    f"A `{spec.kind}` backup run of SV node `{node}` failed. The job's log line with "
                    f'`"event": "backup.failed"` says why; no partial backup is ever marked complete.'
                ),
            ),
            user_labels={"svbackups-kind": spec.kind, "svbackups-alert": "failed", "svbackups-node": node},
            opts=pulumi.ResourceOptions(parent=parent),
            **common,
        )
        return [stale, failed_policy]

    def _log_metric(self, spec: AlertSpec, outcome: str, log_filter: str, parent: pulumi.Resource):
        return gcp.logging.Metric(
            self.names.resource("metric", spec.kind, outcome),
            name=self.names.log_metric(spec.kind, outcome),
            project=self.project,
            filter=log_filter,
            metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                metric_kind="DELTA",
                value_type="INT64",
                unit="1",
                display_name=f"sv-backups {spec.kind} backups {outcome}",
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )


def _lifecycle_rule(rule: retention.LifecycleRule) -> gcp.storage.BucketLifecycleRuleArgs:
    return gcp.storage.BucketLifecycleRuleArgs(
        action=gcp.storage.BucketLifecycleRuleActionArgs(type=rule.action, storage_class=rule.storage_class),
        condition=gcp.storage.BucketLifecycleRuleConditionArgs(
            age=rule.age_days, matches_prefixes=[rule.prefix] if rule.prefix else None
        ),
    )
