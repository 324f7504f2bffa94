"""The weekly restore drills: a backup is only worth its restore, so a primary stack restores its newest one of
each kind on a schedule, as the read-only restore identity, and alerts when a drill fails or stops passing.

One CronJob per backup kind, not one for all three: each has its own outcome events (`kind: drill-postgres`,
`drill-cometbft`, `drill-identities`) and so its own stale and failed alerts (a Postgres drill that fails does not
hide an identities drill that passes, or the reverse), and each pod gets only what its drill needs:
- Postgres (`python -m jobs drill-restore`): starts a scratch PostgreSQL in the pod (initdb/pg_ctl of the job
  image's server binaries) on a generic ephemeral volume mounted at /scratch, restores the newest complete set
  into it and verifies it against the manifest; reports the restore time (RTO) and the set's age (RPO). The
  volume is a real disk (PD / EBS) of `drill.scratchSize`, created for the pod and deleted with it. Not an
  emptyDir: that lives on the node's own disk, which the kubelet, the images and the SV node's pods share; a
  restore of hundreds of GB there would push the node into DiskPressure and evict the SV node's own pods, and an
  emptyDir's sizeLimit is only enforced by evicting the pod after the disk already filled.
- CometBFT (`drill-cometbft`): creates a PVC from the newest VolumeSnapshot, mounts it in a probe pod, deletes
  both. The only drill that talks to the Kubernetes API: its own ServiceAccount (no cloud identity: it reads no
  backup object) with exactly that RBAC, and the only one with an API token mounted.
- Identities (`drill-identities`): reads the newest version of the identities secret and checks its shape.
- Snapshot sets (`drill-snapshots`, with snapshot sets of in-cluster instances): restores the newest complete set's
  VolumeSnapshots into scratch PVCs under a scratch PostgreSQL pod (prepare-datadir, then a server per role that
  must reach consistency, hold the config's databases and keep the apps-before-participant order), deletes them.
  Its own ServiceAccount with a token and no cloud identity, like CometBFT's; the pods it creates read the store as
  the restore identity, without a token. Managed roles are not restored in scratch (docs/drills.md).

The Postgres and identities drills run as the restore identity's ServiceAccount (components/readers.py), which may
read the sets and the secret and can neither write nor delete them. DR stacks declare no drills: their copy is
compared object by object with the primary's complete sets by the replica check (checksums, every 30 minutes),
so a passing drill of the primary store and a passing replica check together prove the DR copy restorable,
without a weekly restore in a standby cluster that has no VolumeSnapshots of its own before failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.rbac import v1 as rbac
from pulumi_kubernetes.storage import v1 as storage

from components import admission, kube_specs, pg_snapshots, readers
from components.cloud import AlertSpec, BackupStore, CloudBackend, SecretSlot
from components.readers import Reader
from components.settings import Settings
from rules import retention, schedules
from rules.naming import LABEL_PREFIX, MANAGED_BY, Names
from rules.schedules import SNAPSHOT_KIND

# The snapshot sets' VolumeSnapshots are named `pg-<role>-<set>-...` (jobs/pgsnap_volume.py snapshot_name).
PG_SNAPSHOT_PREFIX = "pg-"
COMPONENTS = {
    "postgres": "drill-postgres",
    "cometbft": "drill-cometbft",
    "identities": "drill-identities",
    "snapshots": "drill-postgres-snapshots",
}
# The outcome events' kinds are the component names (docs/contracts.md section 3).
EVENT_KINDS = dict(COMPONENTS)
SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/scratch"
# pg_restore -j within a database; the drill pod's CPU limit is two cores (DRILL_RESOURCES).
RESTORE_JOBS = 2
# A restore is CPU-bound (decompression, index builds) and the scratch server needs its shared buffers and
# work memory besides the restore's own.
DRILL_RESOURCES = kube_specs.Resources("1", "1Gi", "2", "4Gi")
# How long the CometBFT drill waits for the PVC to bind and the probe pod to mount it; the Job's deadline adds the
# time to delete both (a disk created from a snapshot takes minutes on PD and EBS).
COMETBFT_TIMEOUT = timedelta(minutes=30)
COMETBFT_CLEANUP = timedelta(minutes=5)
IDENTITIES_DEADLINE = timedelta(minutes=10)
# The labels the snapshot job puts on every VolumeSnapshot it takes (jobs/cometbft.py MIGRATION_ID_LABEL): the
# drill restores the newest snapshot of the current migration id taken by sv-backups.
MIGRATION_ID_LABEL = f"{LABEL_PREFIX}/migration-id"
# Exactly what `drill-cometbft` calls. No resourceNames: Kubernetes cannot restrict `create` (or `list`) by name,
# and the PVC and probe pod are named per run by the job; the namespace and the verbs bound it.
COMETBFT_RBAC = (
    ("snapshot.storage.k8s.io", "volumesnapshots", ("get", "list")),
    ("", "persistentvolumeclaims", ("create", "get", "delete")),
    ("", "pods", ("create", "get", "delete")),
)

# The snapshot sets' drill (`drill-snapshots`, with snapshot sets of in-cluster instances): its pod creates the
# scratch PVCs from the VolumeSnapshots and the pick and scratch pods, reads the snapshots, deletes what it made.
# Its own ServiceAccount, token, no cloud identity; the pick and scratch pods it creates run as the restore
# identity's ServiceAccount without a token (they read the store). No resourceNames, as for CometBFT: the job names
# its PVCs and pods per run.
SNAPSHOTS_RBAC = (
    ("snapshot.storage.k8s.io", "volumesnapshots", ("get",)),
    ("", "persistentvolumeclaims", ("create", "get", "delete")),
    ("", "pods", ("create", "get", "delete")),
)
# Per pod the job waits for (the pick pod, then the scratch pod: disks from the snapshots, prepare-datadir, WAL
# replay, start); the Job's deadline is both plus the cleanup.
SNAPSHOTS_TIMEOUT = timedelta(minutes=90)
SNAPSHOTS_CLEANUP = timedelta(minutes=10)


@dataclass(frozen=True)
class DrillJob:
    kind: str  # postgres | cometbft | identities | snapshots
    cron_job: str
    alert: AlertSpec


class RestoreDrill(pulumi.ComponentResource):
    """Inputs: settings (`schedule.drill`, `drill.*`, the postgres timing and slack), the store and secret to
    restore from, the stack's restore `reader`. Outputs: `jobs` (per kind: CronJob name and alert spec),
    `storage_class` (the class the drills' disks use, when the program declares it)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        store: BackupStore,
        secret: SecretSlot,
        reader: Reader,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("svbackups:drill:RestoreDrill", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        drill = settings.drill
        schedule = settings.schedule.drill
        slack = settings.monitoring.slack
        fmt = retention.format_duration
        self.storage_class = self._storage_class(names, settings, backend)
        scratch_class = drill.storage_class or self.storage_class
        snapshot_class = drill.cometbft_storage_class or self.storage_class

        # Postgres: the newest complete set must be as fresh as the audit demands of it (schedule gap, a run's
        # start window and deadline, the slack): an older one fails the drill (RPO).
        backend.allow_secret_reads(secret, reader.identity, label="drill", parent=self)
        postgres = settings.derived.timing["postgres"]
        postgres_timing = settings.derived.drill
        scratch = core.VolumeArgs(
            name=SCRATCH_VOLUME,
            ephemeral=core.EphemeralVolumeSourceArgs(
                volume_claim_template=core.PersistentVolumeClaimTemplateArgs(
                    metadata=meta.ObjectMetaArgs(labels=names.labels(COMPONENTS["postgres"])),
                    spec=core.PersistentVolumeClaimSpecArgs(
                        access_modes=["ReadWriteOnce"],
                        storage_class_name=scratch_class,
                        resources=core.VolumeResourceRequirementsArgs(requests={"storage": drill.scratch_size}),
                    ),
                )
            ),
        )
        restore_args = [
            "drill-restore",
            store.url,
            "--scratch-dir",
            SCRATCH_DIR,
            "--max-age",
            fmt(postgres.stale_after(slack)),
            "--jobs",
            str(RESTORE_JOBS),
            "--json",
        ]
        restore = kube_specs.job_container(
            "drill-restore",
            settings.job_image,
            restore_args,
            resources=DRILL_RESOURCES,
            extra_mounts=[core.VolumeMountArgs(name=SCRATCH_VOLUME, mount_path=SCRATCH_DIR)],
        )
        jobs = [
            self._job(
                names,
                "postgres",
                namespace=namespace,
                schedule=schedule,
                timing=postgres_timing,
                service_account=reader.service_account,
                container=restore,
                extra_volumes=[scratch],
                slack=slack,
            )
        ]

        if settings.cometbft is not None:  # a DABFT stack's canton-bft state is drilled with the Postgres set
            jobs.append(self._cometbft_job(names, settings, namespace, schedule, snapshot_class, slack))
        if settings.snapshots is not None and pg_snapshots.in_cluster_roles(settings):
            jobs.append(self._snapshots_job(names, settings, store, reader, namespace, schedule, snapshot_class, slack))

        # Identities: read the newest version as the restore identity (never logged: the job checks its shape).
        jobs.append(
            self._job(
                names,
                "identities",
                namespace=namespace,
                schedule=schedule,
                timing=schedules.check_timing(schedule, IDENTITIES_DEADLINE),
                service_account=reader.service_account,
                container=kube_specs.job_container(
                    "drill-identities", settings.job_image, ["drill-identities", secret.url, "--json"]
                ),
                slack=slack,
            )
        )
        self.jobs = jobs
        self.register_outputs(
            {"cronJobs": {job.kind: job.cron_job for job in jobs}, "storageClass": self.storage_class}
        )

    def _cometbft_job(
        self, names: Names, settings: Settings, namespace: str, schedule: str, snapshot_class: str | None, slack
    ) -> DrillJob:
        """CometBFT: its own ServiceAccount, RBAC and API token; no cloud identity."""
        fmt = retention.format_duration
        cometbft_sa = self._api_service_account(names, namespace, "cometbft", COMETBFT_RBAC)
        # Its Role may create any pod or claim: admission holds it to the probe pod's and claim's shape.
        admission.pod_shape_policy(
            names, COMPONENTS["cometbft"], namespace, cometbft_sa, image=settings.job_image,
            storage_class=snapshot_class, source_pvc=settings.cometbft.pvc, labels=names.labels(COMPONENTS["cometbft"]),
            parent=self,
        )  # fmt: skip
        snapshot_labels = {**MANAGED_BY, MIGRATION_ID_LABEL: str(settings.node.migration_id)}
        selector = ",".join(f"{key}={value}" for key, value in snapshot_labels.items())
        cometbft_args = [
            "drill-cometbft",
            "--namespace",
            namespace,
            "--selector",
            selector,
            "--storage-class",
            snapshot_class,
            # The job image is pinned and reviewed already; the probe only mounts the volume and lists it.
            "--probe-image",
            settings.job_image,
            "--timeout",
            fmt(COMETBFT_TIMEOUT),
            "--json",
        ]
        return self._job(
            names,
            "cometbft",
            namespace=namespace,
            schedule=schedule,
            timing=schedules.check_timing(schedule, COMETBFT_TIMEOUT + COMETBFT_CLEANUP),
            service_account=cometbft_sa,
            container=kube_specs.job_container("drill-cometbft", settings.job_image, cometbft_args),
            automount_token=True,
            slack=slack,
        )

    def _snapshots_job(
        self,
        names: Names,
        settings: Settings,
        store: BackupStore,
        reader: Reader,
        namespace: str,
        schedule: str,
        snapshot_class: str | None,
        slack: timedelta,
    ) -> DrillJob:
        """Snapshot sets: the newest set's in-cluster roles restored into scratch PVCs under a scratch PostgreSQL
        pod (jobs/drill_snapshots.py). Managed roles (Cloud SQL, RDS) are not restored here (docs/drills.md)."""
        fmt = retention.format_duration
        sa_name = self._api_service_account(names, namespace, "snapshots", SNAPSHOTS_RBAC)
        # Its Role may create any pod or claim: admission holds it to the scratch pods' and claims' shape (pods as
        # the restore identity only, claims from the snapshot sets' VolumeSnapshots only).
        admission.pod_shape_policy(
            names, COMPONENTS["snapshots"], namespace, sa_name, image=settings.job_image,
            storage_class=snapshot_class, source_pvc=None, labels=names.labels(COMPONENTS["snapshots"]), parent=self,
            pod_service_account=reader.service_account, snapshots=PG_SNAPSHOT_PREFIX, snapshots_what="a snapshot-set",
        )  # fmt: skip
        args: list[pulumi.Input[str]] = [
            "drill-snapshots",
            "--dest",
            store.url,
            "--namespace",
            namespace,
            "--migration-id",
            str(settings.node.migration_id),
        ]
        # The databases to find in each restored server: the stack's config, as the dump CronJob's --db flags.
        for role in pg_snapshots.in_cluster_roles(settings):
            instance = settings.postgres[role]
            args += ["--databases", f"{role}={','.join(instance.databases)}", "--user", f"{role}={instance.user}"]
        args += [
            "--image",
            settings.job_image,
            # The pick and scratch pods read the store (manifest, WAL) as the restore identity, without a token.
            "--service-account",
            reader.service_account,
            *(["--storage-class", snapshot_class] if snapshot_class else []),
            "--timeout",
            fmt(SNAPSHOTS_TIMEOUT),
            # The newest set must be as fresh as its stale alert demands (RPO).
            "--max-age",
            fmt(settings.derived.timing[SNAPSHOT_KIND].stale_after(slack)),
            "--json",
        ]
        return self._job(
            names,
            "snapshots",
            namespace=namespace,
            schedule=schedule,
            timing=schedules.check_timing(schedule, 2 * SNAPSHOTS_TIMEOUT + SNAPSHOTS_CLEANUP),
            service_account=sa_name,
            container=kube_specs.job_container("drill-snapshots", settings.job_image, args),
            automount_token=True,
            slack=slack,
        )

    def _storage_class(self, names: Names, settings: Settings, backend: CloudBackend) -> str | None:
        """A class for the drills' disks, unless both are configured: its provisioner is the snapshot class's CSI
        driver (a PVC restored from a snapshot must be), it binds where the pod runs and deletes with its claim."""
        drill = settings.drill
        if drill.storage_class and drill.cometbft_storage_class:
            return None
        driver = (settings.cometbft.driver if settings.cometbft else None) or backend.default_snapshot_driver
        name = names.cluster_scoped(settings.node.namespace, "drill")
        storage.StorageClass(
            names.resource("drill", "storage-class"),
            metadata=meta.ObjectMetaArgs(name=name, labels=names.labels("drill")),
            provisioner=driver,
            # The backend's parameters are for its default driver; another driver gets its own defaults.
            parameters=backend.drill_volume_parameters() if driver == backend.default_snapshot_driver else None,
            reclaim_policy="Delete",
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return name

    def _api_service_account(self, names: Names, namespace: str, kind: str, access) -> str:
        """A drill's own ServiceAccount for the Kubernetes API: no cloud identity, one Role granting `access`."""
        component = COMPONENTS[kind]
        sa_name = names.resource(component)
        labels = names.labels(component)
        child = pulumi.ResourceOptions(parent=self)
        core.ServiceAccount(
            names.resource(component, "sa"),
            metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
            automount_service_account_token=False,  # the drill pod asks for its token; nothing else gets one
            opts=child,
        )
        role = rbac.Role(
            names.resource(component, "role"),
            metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
            rules=[
                rbac.PolicyRuleArgs(api_groups=[group], resources=[resource], verbs=list(verbs))
                for group, resource, verbs in access
            ],
            opts=child,
        )
        rbac.RoleBinding(
            names.resource(component, "rolebinding"),
            metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
            role_ref=rbac.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=role.metadata.name),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=sa_name, namespace=namespace)],
            opts=child,
        )
        return sa_name

    def _job(
        self,
        names: Names,
        kind: str,
        *,
        namespace: str,
        schedule: str,
        timing: schedules.Timing,
        service_account: str,
        container: core.ContainerArgs,
        slack: timedelta,
        extra_volumes: tuple[core.VolumeArgs, ...] | list[core.VolumeArgs] = (),
        automount_token: bool = False,
    ) -> DrillJob:
        cron_job = readers.read_only_cron_job(
            names,
            COMPONENTS[kind],
            namespace=namespace,
            schedule=schedule,
            timing=timing,
            service_account=service_account,
            containers=[container],
            extra_volumes=extra_volumes,
            automount_token=automount_token,
            parent=self,
        )
        # Stale: no passing drill for one drill interval, plus how late a run may start and finish, plus the slack.
        alert = AlertSpec(
            kind=EVENT_KINDS[kind],
            namespace=namespace,
            cron_job=cron_job,
            stale_after=timing.stale_after(slack),
        )
        return DrillJob(kind=kind, cron_job=cron_job, alert=alert)
