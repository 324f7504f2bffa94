"""The ordered Postgres sets: one CronJob whose pod backs up every instance, apps strictly before participant.

Kubernetes runs a pod's initContainers one at a time, each to completion, in order; a failing one stops the
pod. So `apps` (an initContainer) has finished before `participant` (the next one) starts: the SV rule "the
apps backup completes before the participant backup starts" is enforced by the kubelet, and the seal step
checks the recorded times once more before it marks the set complete.
"""

from __future__ import annotations

from urllib.parse import quote

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from components import kube_specs
from components.cloud import BackupStore, CloudBackend, PostgresEndpoint
from components.settings import InClusterPostgres, Settings
from rules import retention
from rules.naming import FOUR_HOURLY_BY_LABEL, Names

COMPONENT = "postgres-backup"
# The snapshot sets' component (components/pg_snapshots.py COMPONENT), named here to keep the import one-way.
SNAPSHOT_COMPONENT = "postgres-snapshot"


class PostgresBackups(pulumi.ComponentResource):
    """Inputs: settings (instances, schedule, windows), the backup store. Outputs: `cron_job_name`,
    `service_account_name`, `hosts` (role -> host the dumps connect to), `setup_sql` (role -> SQL an admin runs
    once on that instance, for roles that log in without a password)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        store: BackupStore,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("svbackups:postgres:PostgresBackups", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        labels = names.labels(COMPONENT)
        sa_name = names.resource(COMPONENT)

        identity = backend.workload_identity("pg-backup", sa_name, parent=self)
        backend.allow_object_writes(store, identity, parent=self)
        service_account = core.ServiceAccount(
            names.resource(COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name, namespace=namespace, labels=labels, annotations=identity.service_account_annotations
            ),
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.hosts: dict[str, pulumi.Output[str]] = {}
        # role -> SQL an admin runs once on that role's instance (e.g. the GRANT for an IAM database user).
        self.setup_sql: dict[str, list[pulumi.Input[str]]] = {}
        sidecars, steps, volumes = [], [], []
        for role in settings.roles:
            instance = settings.postgres[role]
            if isinstance(instance, InClusterPostgres):
                # Inside the cluster network: TLS if the server offers it (Splice's charts do not by default).
                endpoint = PostgresEndpoint(pulumi.Output.from_input(instance.host), sslmode="prefer")
            else:
                endpoint = backend.managed_postgres(role, instance, identity, parent=self)
            self.hosts[role] = endpoint.host
            if endpoint.operator_sql:
                self.setup_sql[role] = list(endpoint.operator_sql)
            sidecars.extend(endpoint.sidecars)
            step, step_volumes = self._step_container(role, instance, endpoint, store, settings)
            steps.append(step)
            volumes.extend(step_volumes)

        seal_args = [
            "seal-set",
            "--dest",
            store.url,
            "--set-id",
            "$(SET_ID)",
            "--migration-id",
            str(settings.node.migration_id),
            # Under logical synchronizer upgrades the manifest records the serial id (rules/manifest.py v3).
            *(["--serial-id", str(settings.node.serial_id)] if settings.node.lsu else []),
            "--roles",
            ",".join(settings.roles),
            *_pruning_flags(settings),
        ]
        seal = kube_specs.job_container("seal", settings.job_image, seal_args, env=[kube_specs.pod_name_env()])

        self.cron_job = batch.CronJob(
            names.resource(COMPONENT),
            metadata=meta.ObjectMetaArgs(
                name=names.resource(COMPONENT),
                namespace=namespace,
                labels=kube_specs.cron_job_labels(labels, standby=settings.standby) | _duty_label(settings),
            ),
            spec=kube_specs.cron_job_spec(
                schedule=settings.schedule.postgres,
                timing=settings.derived.timing["postgres"],
                labels=labels,
                service_account=service_account.metadata.name,
                # Native sidecars first: the kubelet starts each before the next initContainer, so every
                # connection they carry is up before the first dump step runs.
                init_containers=[*sidecars, *steps],
                containers=[seal],
                extra_volumes=volumes,
                suspend=settings.standby,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.cron_job_name = names.resource(COMPONENT)
        self.service_account_name = sa_name
        outputs = {"cronJob": self.cron_job_name, "serviceAccount": sa_name, "hosts": self.hosts}
        if self.setup_sql:
            outputs["setupSql"] = self.setup_sql
        self.register_outputs(outputs)

    @staticmethod
    def _step_container(role, instance, endpoint: PostgresEndpoint, store: BackupStore, settings: Settings):
        db_args: list[pulumi.Input[str]] = []
        # A URI's user part is percent-encoded: an IAM database user has an '@' (sa@project.iam).
        user = _uri_part(endpoint.user if endpoint.user is not None else instance.user)
        port = str(endpoint.port or instance.port)
        for database in instance.databases:
            db_args += [
                "--db",
                pulumi.Output.concat(role, "=postgresql://", user, "@", endpoint.host, ":", port, "/", database),
            ]
        # The password is a read-only file of the instance's Secret, which the step turns into a private libpq
        # passfile: never in the pod's environment, args, logs or Pulumi state (policy no-password-env).
        password = (
            kube_specs.password_file(role, instance.password_secret, "postgresPassword") if endpoint.password else None
        )
        env = [
            kube_specs.pod_name_env(),
            core.EnvVarArgs(name="PGCONNECT_TIMEOUT", value="30"),
            core.EnvVarArgs(name="PGAPPNAME", value=f"sv-backups-{role}"),
            core.EnvVarArgs(name="PGSSLMODE", value=endpoint.sslmode),
        ]
        args = [
            "backup-step",
            "--role",
            role,
            "--dest",
            store.url,
            "--set-id",
            "$(SET_ID)",
            "--migration-id",
            str(settings.node.migration_id),
            # Compression threads sized to the container's CPU limit, not to the node's core count.
            "--zstd-threads",
            kube_specs.DUMP_RESOURCES.cpu_limit,
            *db_args,
            *_database_check_flags(role, settings),
            *(password.args if password else ()),
        ]
        container = kube_specs.job_container(
            role,
            settings.job_image,
            args,
            env=env,
            resources=kube_specs.DUMP_RESOURCES,
            extra_mounts=password.mounts if password else (),
        )
        return container, list(password.volumes) if password else []


def _database_check_flags(role: str, settings: Settings) -> list[str]:
    """The step fails when its server has a database nobody backs up or ignores (rules/databases.py). It knows
    its own databases; these flags add the other roles' on a shared server and the ignored ones (of every role on
    that server), and are left out when empty, so a stack without either plans as it always did."""
    shared = settings.server_roles(role)
    others = sorted({db for r in shared if r != role for db in settings.postgres[r].databases})
    ignored = sorted({db for r in shared for db in settings.postgres[r].ignore_databases})
    flags = []
    if others:
        flags += ["--server-also-backs-up", ",".join(others)]
    if ignored:
        flags += ["--ignore-databases", ",".join(ignored)]
    return flags


def _uri_part(value: pulumi.Input[str]) -> pulumi.Input[str]:
    if isinstance(value, str):
        return quote(value, safe="")
    return pulumi.Output.from_input(value).apply(lambda text: quote(text, safe=""))


def _duty_label(settings: Settings) -> dict[str, str]:
    """With snapshot sets, they take the 4-hourly backups and the dump sets run on a sparser schedule: the label
    names the CronJob that carries the duty (components/pg_snapshots.py)."""
    if settings.snapshots is None:
        return {}
    return {FOUR_HOURLY_BY_LABEL: Names(settings.name_prefix).resource(SNAPSHOT_COMPONENT)}


def _pruning_flags(settings: Settings) -> list[str]:
    """The seal step derives the historical cadence from these with the same function the program uses
    (rules.retention.postgres_historical_cadence); the schedule's gap only when it is not the 4 h every stack had
    before snapshot sets allowed sparser dump schedules, so those stacks' args stay as they were."""
    flags = []
    if settings.retention.participant_pruning:
        flags += ["--participant-pruning", retention.format_duration(settings.retention.participant_pruning)]
    if settings.retention.sequencer_pruning:
        flags += ["--sequencer-pruning", retention.format_duration(settings.retention.sequencer_pruning)]
    gap = settings.derived.postgres_schedule_gap
    if gap != retention.SV_SCHEDULE_GAP:
        flags += ["--schedule-gap", retention.format_duration(gap)]
    return flags
