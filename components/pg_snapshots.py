"""Ordered Postgres snapshot sets (sv-backups:snapshots, issue 17): the creator CronJob and the pruning CronJob.

The creator, `<node>-postgres-snapshot`, is shaped like the dump sets' CronJob (components/postgres.py): one
initContainer per role in ROLE_ORDER (canton-bft, apps, participant, sequencer, mediator), each running
`python -m jobs snapshot-step`; the kubelet runs them one at a time, each to completion, so the apps snapshot is
complete before the participant's is requested. `snapshot-seal`, the container, checks the steps and writes the
manifest last. Per role the step's method follows the instance's kind: a CSI VolumeSnapshot of an in-cluster
instance's PVC (inside pg_backup_start/stop with onlineBackup), an on-demand Cloud SQL backup run stored in the
multi-region (or the DR region), an RDS DB snapshot copied to the DR region under the DR key.

Who can delete what (docs/jobs-snapshots.md): the creator's ServiceAccount creates and reads VolumeSnapshots and
reads their contents; its cloud identity creates Cloud SQL backup runs, RDS snapshots and their copies, EBS copies
and locks, and deletes none. Only the pruner, `<node>-postgres-snapshot-prune`, with its own ServiceAccount and
cloud identity, deletes: VolumeSnapshots (after flipping their content to Delete: the class Retains), Cloud SQL
backup runs, EBS and RDS snapshots tagged as the node's. Where the cloud has a lock (EBS Snapshot Lock) the
creator locks every snapshot and its copy for the recent window, so not even the pruner can delete one earlier.
"""

from __future__ import annotations

from urllib.parse import quote

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.rbac import v1 as rbac

from components import admission, kube_specs
from components.cloud import AlertSpec, BackupStore, CloudBackend
from components.crds import VolumeSnapshotClass
from components.settings import InClusterPostgres, Settings
from rules import retention, schedules
from rules.naming import Names
from rules.schedules import SNAPSHOT_KIND
from rules.snapshot_sets import VOLUME_SNAPSHOT

COMPONENT = "postgres-snapshot"
PRUNE_COMPONENT = "postgres-snapshot-prune"
# The outcome events' kinds (jobs/events.py KINDS): the alerts key on them.
PRUNE_KIND = "snapshot-prune"
# The pruner runs daily: a snapshot older than the recent window lives at most a day longer (its storage is billed
# for that day), and a missed run is caught up by the next one. 03:10 UTC: away from the dump sets (01:00) and the
# other jobs' minutes.
PRUNE_SCHEDULE = "10 3 * * *"
SNAPSHOT_API_GROUP = "snapshot.storage.k8s.io"
RBAC_API_GROUP = "rbac.authorization.k8s.io"


def class_name(settings: Settings) -> str:
    """The VolumeSnapshotClass the steps use: the configured one, else the one this program declares."""
    return settings.snapshots.volume_snapshot_class or Names(settings.name_prefix).resource(COMPONENT, "class")


def in_cluster_roles(settings: Settings) -> list[str]:
    return [role for role in settings.roles if isinstance(settings.postgres[role], InClusterPostgres)]


class PostgresSnapshots(pulumi.ComponentResource):
    """Inputs: settings (instances, sv-backups:snapshots), the backup store. Outputs: `cron_job_name`,
    `service_account_name`, `snapshot_class_name` (None without in-cluster roles), `alert` (stale and failed
    snapshot sets, kind postgres-snapshots)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        store: BackupStore,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("svbackups:pgsnapshots:PostgresSnapshots", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        labels = names.labels(COMPONENT)
        sa_name = names.resource(COMPONENT)
        child = pulumi.ResourceOptions(parent=self)
        volumes = in_cluster_roles(settings)

        self.snapshot_class_name: str | None = None
        if volumes:
            self.snapshot_class_name = class_name(settings)
            if settings.snapshots.volume_snapshot_class is None:
                # Retain: deleting a VolumeSnapshot (by hand, or with its namespace) never deletes the disk
                # snapshot; only the pruner flips a content to Delete first. The parameters store the snapshot
                # where the primary region's loss cannot take it (GCP) and tag it as the node's (AWS).
                VolumeSnapshotClass(
                    names.resource(COMPONENT, "class"),
                    metadata=meta.ObjectMetaArgs(name=self.snapshot_class_name, labels=labels),
                    driver=settings.snapshots.driver or backend.default_snapshot_driver,
                    deletion_policy="Retain",
                    parameters=backend.snapshot_class_parameters(COMPONENT),
                    opts=child,
                )

        access = backend.snapshot_creator(sa_name, parent=self)
        backend.allow_object_writes(store, access.identity, parent=self)
        service_account = core.ServiceAccount(
            names.resource(COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name,
                namespace=namespace,
                labels=labels,
                annotations=access.identity.service_account_annotations,
            ),
            # The Kubernetes API is needed only for volume snapshots.
            automount_service_account_token=bool(volumes),
            opts=child,
        )
        if volumes:
            pvcs = sorted(
                {
                    name
                    for role in volumes
                    for name in (settings.postgres[role].pvc, settings.postgres[role].wal_pvc)
                    if name
                }
            )
            _bind(
                names,
                COMPONENT,
                namespace,
                labels,
                sa_name,
                rules=[
                    # Create and watch its snapshots; never delete them (the pruner's Role has that verb).
                    rbac.PolicyRuleArgs(
                        api_groups=[SNAPSHOT_API_GROUP],
                        resources=["volumesnapshots"],
                        verbs=["create", "get", "list", "watch"],
                    ),
                    rbac.PolicyRuleArgs(
                        api_groups=[""], resources=["persistentvolumeclaims"], resource_names=pvcs, verbs=["get"]
                    ),
                ],
                # The disk snapshot's handle (recorded in the step, and what an EBS copy and lock act on) is in
                # the cluster-scoped VolumeSnapshotContent: read only.
                content_verbs=["get"],
                parent=self,
            )

        built = [self._step(role, access.role_args.get(role, []), store, settings) for role in settings.roles]
        steps = [step for step, _ in built]
        seal_args = [
            "snapshot-seal",
            "--dest",
            store.url,
            *_set_args(settings),
            "--roles",
            ",".join(settings.roles),
        ]
        seal = kube_specs.job_container("seal", settings.job_image, seal_args, env=[kube_specs.pod_name_env()])
        self.cron_job_name = names.resource(COMPONENT)
        batch.CronJob(
            self.cron_job_name,
            metadata=meta.ObjectMetaArgs(
                name=self.cron_job_name,
                namespace=namespace,
                labels=kube_specs.cron_job_labels(labels, standby=settings.standby),
            ),
            spec=kube_specs.cron_job_spec(
                schedule=settings.snapshots.schedule,
                timing=settings.derived.timing[SNAPSHOT_KIND],
                labels=labels,
                service_account=service_account.metadata.name,
                init_containers=steps,
                containers=[seal],
                extra_volumes=[volume for _, step_volumes in built for volume in step_volumes],
                automount_token=bool(volumes),
                suspend=settings.standby,
            ),
            opts=child,
        )
        self.service_account_name = sa_name
        self.alert = AlertSpec(
            kind=SNAPSHOT_KIND,
            namespace=namespace,
            cron_job=self.cron_job_name,
            stale_after=settings.derived.timing[SNAPSHOT_KIND].stale_after(settings.monitoring.slack),
        )
        self.register_outputs(
            {
                "cronJob": self.cron_job_name,
                "serviceAccount": sa_name,
                **({"snapshotClass": self.snapshot_class_name} if self.snapshot_class_name else {}),
            }
        )

    @staticmethod
    def _step(role: str, cloud_args: list[pulumi.Input[str]], store: BackupStore, settings: Settings):
        instance = settings.postgres[role]
        env = [kube_specs.pod_name_env()]
        password = None
        args: list[pulumi.Input[str]] = ["snapshot-step", "--role", role, "--dest", store.url, *_set_args(settings)]
        if isinstance(instance, InClusterPostgres):
            args += [
                "--method",
                VOLUME_SNAPSHOT,
                "--namespace",
                settings.node.namespace,
                "--pvc",
                instance.pvc,
                *(["--wal-pvc", instance.wal_pvc] if instance.wal_pvc else []),
                "--snapshot-class",
                class_name(settings),
            ]
            if settings.snapshots.online_backup:
                # pg_backup_start/stop in one session around the snapshot, as the dump steps connect: the password
                # a read-only file of the instance's Secret, never in the environment, args, logs or Pulumi state.
                user = quote(instance.user, safe="")
                password = kube_specs.password_file(role, instance.password_secret, "postgresPassword")
                args += ["--online", "--pg", f"postgresql://{user}@{instance.host}:{instance.port}/postgres"]
                args += password.args
                env += [
                    core.EnvVarArgs(name="PGCONNECT_TIMEOUT", value="30"),
                    core.EnvVarArgs(name="PGAPPNAME", value=f"sv-backups-snapshot-{role}"),
                    # Inside the cluster network: TLS if the server offers it, as the dump steps.
                    core.EnvVarArgs(name="PGSSLMODE", value="prefer"),
                ]
            args += cloud_args  # EBS: the DR copy and the lock
        else:
            args += cloud_args  # the managed instance's method and where its copy goes
        container = kube_specs.job_container(
            role, settings.job_image, args, env=env, extra_mounts=password.mounts if password else ()
        )
        return container, list(password.volumes) if password else []


class SnapshotPruning(pulumi.ComponentResource):
    """Inputs: settings (the recent window, sv-backups:snapshots.historical), the backup store. Outputs:
    `cron_job_name`, `service_account_name`, `alert` (stale and failed pruning, kind snapshot-prune)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        store: BackupStore,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("svbackups:pgsnapshots:SnapshotPruning", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        labels = names.labels(PRUNE_COMPONENT)
        sa_name = names.resource(PRUNE_COMPONENT)
        child = pulumi.ResourceOptions(parent=self)
        volumes = in_cluster_roles(settings)

        access = backend.snapshot_pruner(sa_name, parent=self)
        # The manifests to decide on, and `pruned/<role>.json` written create-only: no object is ever deleted.
        backend.allow_object_writes(store, access.identity, parent=self)
        service_account = core.ServiceAccount(
            names.resource(PRUNE_COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name,
                namespace=namespace,
                labels=labels,
                annotations=access.identity.service_account_annotations,
            ),
            automount_service_account_token=bool(volumes),
            opts=child,
        )
        if volumes:
            _bind(
                names,
                PRUNE_COMPONENT,
                namespace,
                labels,
                sa_name,
                rules=[
                    rbac.PolicyRuleArgs(
                        api_groups=[SNAPSHOT_API_GROUP], resources=["volumesnapshots"], verbs=["get", "list", "delete"]
                    )
                ],
                # The class Retains: the pruner flips the content to Delete, then deletes the VolumeSnapshot.
                content_verbs=["get", "patch"],
                parent=self,
            )
            # Admission holds the patch to this node's snapshot contents of its class, deletionPolicy only.
            classes = [class_name(settings)]
            admission.content_patch_policy(names, PRUNE_COMPONENT, namespace, sa_name, classes, labels, parent=self)
        derived = settings.derived
        args: list[pulumi.Input[str]] = [
            "prune-snapshots",
            "--dest",
            store.url,
            "--migration-id",
            str(settings.node.migration_id),
            "--keep-recent",
            retention.format_duration(settings.retention.recent),
        ]
        if derived.snapshot_historical_cadence is not None:
            args += ["--historical-cadence", retention.format_duration(derived.snapshot_historical_cadence)]
        if volumes:
            args += ["--namespace", namespace]
        args += access.args
        container = kube_specs.job_container("prune", settings.job_image, args)
        timing = schedules.check_timing(PRUNE_SCHEDULE, schedules.MAX_CHECK_RUN)
        self.cron_job_name = names.resource(PRUNE_COMPONENT)
        batch.CronJob(
            self.cron_job_name,
            metadata=meta.ObjectMetaArgs(
                name=self.cron_job_name,
                namespace=namespace,
                labels=kube_specs.cron_job_labels(labels, standby=settings.standby),
            ),
            spec=kube_specs.cron_job_spec(
                schedule=PRUNE_SCHEDULE,
                timing=timing,
                labels=labels,
                service_account=service_account.metadata.name,
                containers=[container],
                automount_token=bool(volumes),
                suspend=settings.standby,
            ),
            opts=child,
        )
        self.service_account_name = sa_name
        self.alert = AlertSpec(
            kind=PRUNE_KIND,
            namespace=namespace,
            cron_job=self.cron_job_name,
            stale_after=timing.stale_after(settings.monitoring.slack),
        )
        self.register_outputs({"cronJob": self.cron_job_name, "serviceAccount": sa_name})


def _set_args(settings: Settings) -> list[str]:
    """The set a step or seal works on: the pod's name (SET_ID) under the migration id (and serial id, LSU)."""
    return [
        "--set-id",
        "$(SET_ID)",
        "--migration-id",
        str(settings.node.migration_id),
        *(["--serial-id", str(settings.node.serial_id)] if settings.node.lsu else []),
    ]


def _bind(
    names: Names,
    component: str,
    namespace: str,
    labels: dict[str, str],
    sa_name: str,
    *,
    rules: list[rbac.PolicyRuleArgs],
    content_verbs: list[str],
    parent: pulumi.Resource,
) -> None:
    """A Role with `rules` in the node's namespace and a ClusterRole with `content_verbs` on VolumeSnapshotContents
    (cluster-scoped), each bound to the ServiceAccount `sa_name` alone."""
    child = pulumi.ResourceOptions(parent=parent)
    role = rbac.Role(
        names.resource(component, "role"),
        metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
        rules=rules,
        opts=child,
    )
    subjects = [rbac.SubjectArgs(kind="ServiceAccount", name=sa_name, namespace=namespace)]
    rbac.RoleBinding(
        names.resource(component, "rolebinding"),
        metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
        role_ref=rbac.RoleRefArgs(api_group=RBAC_API_GROUP, kind="Role", name=role.metadata.name),
        subjects=subjects,
        opts=child,
    )
    contents = names.cluster_scoped(namespace, component, "contents")
    cluster_role = rbac.ClusterRole(
        names.resource(component, "contents"),
        metadata=meta.ObjectMetaArgs(name=contents, labels=labels),
        rules=[
            rbac.PolicyRuleArgs(
                api_groups=[SNAPSHOT_API_GROUP], resources=["volumesnapshotcontents"], verbs=content_verbs
            )
        ],
        opts=child,
    )
    rbac.ClusterRoleBinding(
        names.resource(component, "contents-binding"),
        metadata=meta.ObjectMetaArgs(name=contents, labels=labels),
        role_ref=rbac.RoleRefArgs(api_group=RBAC_API_GROUP, kind="ClusterRole", name=cluster_role.metadata.name),
        subjects=subjects,
        opts=child,
    )
