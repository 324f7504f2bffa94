"""Cloud SQL: adopt an existing instance, size its own backups from the retention settings, and let the dump job
log in without a password where the stack gives the instance no password secret.

An adopted instance is declared with `import_` and `ignore_changes` on every field but its backup
configuration and deletion protection: on import Pulumi keeps the live values of ignored fields, so adopting
an instance changes nothing else (README "Adopting Cloud SQL instances").

IAM database authentication (docs/cloudsql-iam.md): the Cloud SQL Auth Proxy runs as a native sidecar of the
dump pod, authenticates as the job's Google service account (Workload Identity) and logs it in as that
account's IAM database user; the job connects to the proxy on 127.0.0.1 and holds no secret at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
from pulumi_gcp import projects, sql
from pulumi_kubernetes.core import v1 as core

from components import kube_specs
from components.cloud import PostgresEndpoint, WorkloadIdentity
from components.gcp.context import GcpContext
from components.settings import CloudSqlPostgres
from rules import retention

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
DATABASE_FLAGS_FIELD = "settings.databaseFlags"
# An IAM-auth instance manages its database flags (to keep cloudsql.iam_authentication on), but only as the
# live flags plus that one (`with_iam_authentication`): every other field stays ignored as above.
CLOUDSQL_IAM_IGNORED_FIELDS = [f for f in CLOUDSQL_IGNORED_FIELDS if f != DATABASE_FLAGS_FIELD]

IAM_AUTH_FLAG = "cloudsql.iam_authentication"
IAM_USER_TYPE = "CLOUD_IAM_SERVICE_ACCOUNT"
# cloudsql.client: connect through the proxy (instances.get, instances.connect); cloudsql.instanceUser: log in
# as an IAM database user (instances.login). Both granted on one instance only (see `instance_condition`).
IAM_LOGIN_ROLES = ("roles/cloudsql.client", "roles/cloudsql.instanceUser")
SERVICE_ACCOUNT_DOMAIN = ".gserviceaccount.com"

# The Cloud SQL Auth Proxy v2, pinned by release and by the digest of its multi-architecture image index, so
# the binary that carries the database traffic is the one reviewed. It runs as a native sidecar (an
# initContainer with restartPolicy Always): Kubernetes 1.29 or later (GKE 1.29+); an older API server drops
# the field and the proxy would block the pod's init sequence until the Job's deadline.
CLOUD_SQL_PROXY_IMAGE = (
    "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.25.4"
    "@sha256:88501f0a695a586988add1b8a206fdf3f29f9a1a3deeb9b45ef2b1481ea6be83"
)
# One proxy per instance, each on its own loopback port fixed by the role (the pod is its own network
# namespace: nothing else listens there), so a role's port never moves when another role is added.
PROXY_PORT_BASE = 15432
# Each role's proxy port offset: roles are appended, never inserted, so no stack's ports move (not ROLES' order).
PROXY_ROLES = ("apps", "participant", "sequencer", "mediator", "canton-bft")
PROXY_HEALTH_PORT_BASE = 9801
# The proxy only relays bytes (TLS to the instance, plain on loopback): little memory, and at most about a
# core while pg_dump streams a large table.
PROXY_RESOURCES = kube_specs.Resources("100m", "64Mi", "1", "256Mi")
# /startup answers 200 once the listener is up and the connection test (a real dial of the instance as the
# job's identity) passed; the kubelet starts the first dump step only then. Two minutes, then a restart.
STARTUP_PERIOD_SECONDS = 2
STARTUP_FAILURES = 60


def iam_database_user(email: str) -> str:
    """The IAM database user of a Google service account: Cloud SQL names it by the account's email without
    the `.gserviceaccount.com` domain (`sv-1-pg-backup@sv-prod-project.iam`)."""
    if not email.endswith(SERVICE_ACCOUNT_DOMAIN):
        raise ValueError(f"{email!r} is not a Google service account email (...{SERVICE_ACCOUNT_DOMAIN})")
    return email.removesuffix(SERVICE_ACCOUNT_DOMAIN)


def instance_resource_name(project: str, instance: str) -> str:
    return f"projects/{project}/instances/{instance}"


def instance_condition(project: str, instance: str) -> str:
    """The IAM condition that limits a project-level grant to one Cloud SQL instance. Cloud SQL has no
    instance-level IAM policy; Google's documented form ("Use IAM Conditions", Cloud SQL) names the instance by
    resource.name and its type."""
    return (
        f"resource.name == '{instance_resource_name(project, instance)}' "
        f"&& resource.type == 'sqladmin.googleapis.com/Instance'"
    )


def with_iam_authentication(flags: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The instance's live database flags with cloudsql.iam_authentication on and every other flag as it is.

    Cloud SQL replaces the whole flag list on every update, so declaring only our flag would drop the
    operator's own (max_connections, ...). The live list is read in the same run, just before the update."""
    kept = [{"name": f["name"], "value": f["value"]} for f in flags if f["name"] != IAM_AUTH_FLAG]
    return sorted([*kept, {"name": IAM_AUTH_FLAG, "value": "on"}], key=lambda f: f["name"])


def proxy_ports(role: str) -> tuple[int, int]:
    """(database port, health-check port) of the role's proxy on the pod's loopback."""
    index = PROXY_ROLES.index(role)
    return PROXY_PORT_BASE + index, PROXY_HEALTH_PORT_BASE + index


def proxy_sidecar(role: str, connection_name: pulumi.Input[str]) -> core.ContainerArgs:
    """The Cloud SQL Auth Proxy for one instance, as a hardened native sidecar."""
    port, health_port = proxy_ports(role)
    return core.ContainerArgs(
        name=f"cloudsql-proxy-{role}",
        image=CLOUD_SQL_PROXY_IMAGE,
        image_pull_policy="IfNotPresent",
        # Native sidecar: started before the next initContainer, kept running through the dump steps and the
        # seal, stopped by the kubelet once the main container has exited. It never holds the Job open, and
        # its exit code does not count for the pod's phase.
        restart_policy="Always",
        args=[
            # Log in as the pod's Google service account (Workload Identity); no password exists anywhere.
            "--auto-iam-authn",
            # Splice instances live on the VPC; never fall back to a public IP.
            "--private-ip",
            # Loopback only: no other pod may use this identity's connection.
            "--address=127.0.0.1",
            f"--port={port}",
            # Probes come from the kubelet to the pod IP: the health server listens on every interface and
            # serves only /startup, /readiness and /liveness (no metrics, no admin endpoints).
            "--health-check",
            "--http-address=0.0.0.0",
            f"--http-port={health_port}",
            # Dial the instance before reporting started: a missing grant or flag fails here, before any dump.
            "--run-connection-test",
            # The kubelet stops the sidecar with SIGTERM when the pod is done: that is a normal end.
            "--exit-zero-on-sigterm",
            "--structured-logs",
            connection_name,
        ],
        resources=PROXY_RESOURCES.args(),
        # The proxy image runs as the same numeric non-root user (65532) and writes nothing to disk.
        security_context=kube_specs.container_security_context(),
        startup_probe=core.ProbeArgs(
            http_get=core.HTTPGetActionArgs(path="/startup", port=health_port),
            period_seconds=STARTUP_PERIOD_SECONDS,
            failure_threshold=STARTUP_FAILURES,
            timeout_seconds=STARTUP_PERIOD_SECONDS,
        ),
    )


def cloudsql_endpoint(
    context: GcpContext,
    role: str,
    instance: CloudSqlPostgres,
    identity: WorkloadIdentity,
    *,
    parent: pulumi.Resource,
) -> PostgresEndpoint:
    """Manage an adopted instance's backup configuration and deletion protection (nothing else), and return how
    the dump job reaches it: with the password from its k8s Secret, or as its service account's IAM user."""
    if instance.iam_auth:
        return _iam_endpoint(context, role, instance, identity, parent)
    # Private IP still crosses the VPC: require TLS (Cloud SQL always offers it).
    if not instance.adopt:
        return PostgresEndpoint(pulumi.Output.from_input(instance.host), sslmode="require")
    adopted = _adopt(context, role, instance, parent)
    host = pulumi.Output.from_input(instance.host) if instance.host else adopted.private_ip_address
    return PostgresEndpoint(host, sslmode="require")


def _adopt(
    context: GcpContext,
    role: str,
    instance: CloudSqlPostgres,
    parent: pulumi.Resource,
    database_flags: pulumi.Input[Sequence[sql.DatabaseInstanceSettingsDatabaseFlagArgs]] | None = None,
) -> sql.DatabaseInstance:
    recent_days = retention.whole_days(context.settings.retention.recent)
    region = instance.region or context.region
    return sql.DatabaseInstance(
        context.names.resource(role, "cloudsql"),
        name=instance.instance,
        project=context.project,
        region=region,
        database_version=instance.database_version,
        deletion_protection=True,
        settings=sql.DatabaseInstanceSettingsArgs(
            tier=instance.tier,
            deletion_protection_enabled=True,
            database_flags=database_flags,
            backup_configuration=sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                enabled=True,
                point_in_time_recovery_enabled=True,
                transaction_log_retention_days=min(MAX_TRANSACTION_LOG_DAYS, recent_days),
                # Standard automated backups run once a day; one per day of the recent window. The
                # 4-hourly ordered sets come from the Postgres CronJob, as for in-cluster instances.
                backup_retention_settings=sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                    retained_backups=min(MAX_RETAINED_BACKUPS, max(7, recent_days)),
                    retention_unit="COUNT",
                ),
                # Stored outside the primary region: they survive its loss.
                location=context.dr_region,
            ),
        ),
        opts=pulumi.ResourceOptions(
            parent=parent,
            import_=f"projects/{context.project}/instances/{instance.instance}",
            ignore_changes=CLOUDSQL_IGNORED_FIELDS if database_flags is None else CLOUDSQL_IAM_IGNORED_FIELDS,
            protect=True,
            # Removing it from this program must never delete a production database.
            retain_on_delete=True,
        ),
    )


def _iam_endpoint(
    context: GcpContext, role: str, instance: CloudSqlPostgres, identity: WorkloadIdentity, parent: pulumi.Resource
) -> PostgresEndpoint:
    project = context.project
    user = identity.member.apply(lambda member: iam_database_user(member.removeprefix("serviceAccount:")))
    if instance.adopt:
        live = sql.get_database_instance_output(
            name=instance.instance, project=project, opts=pulumi.InvokeOutputOptions(parent=parent)
        )
        flags = live.settings.apply(
            lambda settings: [
                sql.DatabaseInstanceSettingsDatabaseFlagArgs(name=f["name"], value=f["value"])
                for f in with_iam_authentication(_live_flags(settings))
            ]
        )
        adopted = _adopt(context, role, instance, parent, database_flags=flags)
        connection_name = adopted.connection_name
        sql.User(
            context.names.resource(role, "cloudsql-iam-user"),
            name=user,
            instance=adopted.name,
            project=project,
            type=IAM_USER_TYPE,
            opts=pulumi.ResourceOptions(parent=parent),
        )
    else:
        # Another owner manages the instance: the flag and the IAM user are the operator's steps there
        # (docs/cloudsql-iam.md); the grants below touch only IAM, not the instance.
        connection_name = f"{project}:{instance.region or context.region}:{instance.instance}"
    for login_role in IAM_LOGIN_ROLES:
        projects.IAMMember(
            context.names.resource(role, "cloudsql", login_role.rsplit(".", 1)[-1].lower()),
            project=project,
            role=login_role,
            member=identity.member,
            condition=projects.IAMMemberConditionArgs(
                title=f"sv-backups {role} backup",
                description=f"The {role} backup job logs in to Cloud SQL instance {instance.instance} only.",
                expression=instance_condition(project, instance.instance),
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )
    port, _ = proxy_ports(role)
    return PostgresEndpoint(
        pulumi.Output.from_input("127.0.0.1"),
        # The proxy speaks plain PostgreSQL on the pod's loopback, which never leaves the pod, and carries it
        # to the instance over TLS 1.3 with a certificate bound to the job's identity.
        sslmode="disable",
        port=port,
        user=user,
        password=False,
        sidecars=[proxy_sidecar(role, connection_name)],
        operator_sql=[grant_statement(user)],
    )


def grant_statement(user: pulumi.Input[str]) -> pulumi.Output[str]:
    """The one GRANT an instance admin runs so the IAM user can dump every table, view and sequence."""
    return pulumi.Output.concat('GRANT pg_read_all_data TO "', user, '";')


def _live_flags(settings) -> list[dict[str, str]]:
    """The flags of a getDatabaseInstance result's `settings` (a list of one)."""
    for setting in settings or []:
        return [{"name": f.name, "value": f.value} for f in setting.database_flags or []]
    return []
