"""RDS: adopt an existing PostgreSQL instance, size its automated backups from the windows, copy them to DR.

An adopted instance is declared with `import_` and `ignore_changes` on every input but its backup settings
and deletion protection: on import Pulumi keeps the live values of ignored inputs, so adopting an instance
changes nothing else (docs/aws.md "Adopting RDS instances"). Its automated backups (daily snapshots plus
transaction logs: point-in-time restore within the retention period) are replicated to dr.region under a
key of that region.
"""

from __future__ import annotations

from datetime import timedelta

import pulumi
from pulumi_aws import rds

from components.aws.context import AwsContext
from components.cloud import PostgresEndpoint
from components.settings import RdsPostgres
from rules import retention

MIN_BACKUP_RETENTION_DAYS = 7
MAX_BACKUP_RETENTION_DAYS = 35  # the most RDS allows
# The inputs this program manages on an adopted instance; `identifier` and `region` say which instance it is.
RDS_MANAGED_FIELDS = (
    "identifier",
    "region",
    "backupRetentionPeriod",
    "backupWindow",
    "copyTagsToSnapshot",
    "deleteAutomatedBackups",
    "deletionProtection",
)
# Every other input of aws.rds.Instance (pulumi-aws 7.51): never changed by this program.
# tests/program/test_aws_components.py checks that this list and RDS_MANAGED_FIELDS cover the SDK's inputs.
RDS_IGNORED_FIELDS = [
    "allocatedStorage",
    "allowMajorVersionUpgrade",
    "applyImmediately",
    "autoMinorVersionUpgrade",
    "availabilityZone",
    "backupTarget",
    "blueGreenUpdate",
    "caCertIdentifier",
    "characterSetName",
    "customIamInstanceProfile",
    "customerOwnedIpEnabled",
    "databaseInsightsMode",
    "dbName",
    "dbSubnetGroupName",
    "dedicatedLogVolume",
    "domain",
    "domainAuthSecretArn",
    "domainDnsIps",
    "domainFqdn",
    "domainIamRoleName",
    "domainOu",
    "enabledCloudwatchLogsExports",
    "engine",
    "engineLifecycleSupport",
    "engineVersion",
    "finalSnapshotIdentifier",
    "iamDatabaseAuthenticationEnabled",
    "identifierPrefix",
    "instanceClass",
    "iops",
    "kmsKeyId",
    "licenseModel",
    "maintenanceWindow",
    "manageMasterUserPassword",
    "masterUserSecretKmsKeyId",
    "maxAllocatedStorage",
    "monitoringInterval",
    "monitoringRoleArn",
    "multiAz",
    "ncharCharacterSetName",
    "networkType",
    "optionGroupName",
    "parameterGroupName",
    "password",
    "passwordWo",
    "passwordWoVersion",
    "performanceInsightsEnabled",
    "performanceInsightsKmsKeyId",
    "performanceInsightsRetentionPeriod",
    "port",
    "publiclyAccessible",
    "replicaMode",
    "replicateSourceDb",
    "restoreToPointInTime",
    "s3Import",
    "skipFinalSnapshot",
    "snapshotIdentifier",
    "storageEncrypted",
    "storageThroughput",
    "storageType",
    "tags",
    "timezone",
    "upgradeStorageConfig",
    "username",
    "vpcSecurityGroupIds",
    "warningEventCategories",
]


def backup_retention_days(recent: timedelta) -> int:
    """One daily automated backup per day of the recent window, at least a week, at most what RDS allows."""
    return min(MAX_BACKUP_RETENTION_DAYS, max(MIN_BACKUP_RETENTION_DAYS, retention.whole_days(recent)))


def adopt_instance(
    context: AwsContext, role: str, instance: RdsPostgres, *, parent: pulumi.Resource
) -> PostgresEndpoint:
    """Manage an existing RDS instance's backup settings and deletion protection, nothing else.

    TLS is required ("require": encrypted, server not verified). verify-full would also need the RDS CA bundle
    in the job image and PGSSLROOTCERT; inside the VPC, to the instance's private endpoint, encryption is the
    property we need (as for Cloud SQL over private IP)."""
    if not instance.adopt:
        return PostgresEndpoint(pulumi.Output.from_input(instance.host), sslmode="require")
    names = context.names
    days = backup_retention_days(context.settings.retention.recent)
    adopted = rds.Instance(
        names.resource(role, "rds"),
        identifier=instance.instance,
        region=instance.region or context.region,
        # Required by the SDK; used only if the instance had to be created, which import never does.
        instance_class=instance.instance_class,
        engine="postgres",
        backup_retention_period=days,
        backup_window=instance.backup_window,
        copy_tags_to_snapshot=True,
        # Deleting the instance (by anyone) keeps its automated backups until they expire.
        delete_automated_backups=False,
        deletion_protection=True,
        opts=pulumi.ResourceOptions(
            parent=parent,
            import_=instance.instance,
            ignore_changes=RDS_IGNORED_FIELDS,
            protect=True,
            # Removing it from this program must never delete a production database.
            retain_on_delete=True,
        ),
    )
    # Every input of a replication is fixed at creation: a new retention replaces it. Stopping a replication
    # keeps the backups already in dr.region until they expire; only one replication per instance and region
    # may exist, hence delete before replace (and not under the protected instance, which would block that).
    rds.InstanceAutomatedBackupsReplication(
        names.resource(role, "rds-backups-dr"),
        source_db_instance_arn=adopted.arn,
        kms_key_id=context.key(context.dr_region, "rds", parent).arn,
        retention_period=days,
        region=context.dr_region,
        opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),
    )
    host = pulumi.Output.from_input(instance.host) if instance.host else adopted.address
    return PostgresEndpoint(host, sslmode="require")
