"""Cloud SQL: adopt an existing instance and size its own backups from the retention settings.

An adopted instance is declared with `import_` and `ignore_changes` on every field but its backup
configuration and deletion protection: on import Pulumi keeps the live values of ignored fields, so adopting
an instance changes nothing else (README "Adopting Cloud SQL instances").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_gcp as gcp

from components import retention
from components.cloud import PostgresEndpoint
from components.settings import CloudSqlPostgres

if TYPE_CHECKING:
    from components.gcp.backend import GcpBackend

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


def adopt_instance(
    backend: GcpBackend, role: str, instance: CloudSqlPostgres, *, parent: pulumi.Resource
) -> PostgresEndpoint:
    """Manage an existing Cloud SQL instance's backup configuration and deletion protection, nothing else."""
    # Private IP still crosses the VPC: require TLS (Cloud SQL always offers it).
    if not instance.adopt:
        return PostgresEndpoint(pulumi.Output.from_input(instance.host), sslmode="require")
    recent_days = retention.whole_days(backend.settings.retention.recent)
    region = instance.region or backend.region
    adopted = gcp.sql.DatabaseInstance(
        backend.names.resource(role, "cloudsql"),
        name=instance.instance,
        project=backend.project,
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
                location=backend.dr_region,
            ),
        ),
        opts=pulumi.ResourceOptions(
            parent=parent,
            import_=f"projects/{backend.project}/instances/{instance.instance}",
            ignore_changes=CLOUDSQL_IGNORED_FIELDS,
            protect=True,
            # Removing it from this program must never delete a production database.
            retain_on_delete=True,
        ),
    )
    host = pulumi.Output.from_input(instance.host) if instance.host else adopted.private_ip_address
    return PostgresEndpoint(host, sslmode="require")
