"""The disaster-recovery stack: what must exist in the DR region for the day the primary region or cluster is gone.

A DR stack (`sv-backups:role: dr`; its provider region is the DR region, its kube context the DR cluster) reads
the primary stack's *outputs* through a StackReference and declares only resources in the DR region or in
global IAM, so it can be deployed while the primary region is down:
- a restore identity that may list and read the DR copy of the sets and the identities secret, and may neither
  write nor delete anything (restores, drills and the replica check run as it);
- the replica check: a CronJob running `python -m jobs check-replica` that compares the primary's complete sets
  and secret versions with the DR copy, and an alert when a complete set has not reached the DR copy within
  `dr.maxReplicationLag` (or the check itself stops passing);
- the backup CronJobs of the DR cluster, writing to the DR copy, suspended until `dr.failover: true`; their
  stale/failed alerts are declared with them at failover (before it they would page for backups that are meant
  not to run).

The replica targets themselves (the DR bucket and its key, the secret's DR replica) belong to the primary stack:
replication is configured together with its destination, so they must exist when the primary is created, and a
DR stack that the primary depended on would make the two stacks a cycle. They live in the DR region all the
same and outlive the primary region.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from components import kube_specs, retention, schedules
from components.cloud import AlertSpec, BackupStore, CloudBackend, SecretSlot
from components.naming import Names
from components.settings import Settings

RESTORE_COMPONENT = "restore"
CHECK_COMPONENT = "replica-check"
# The outputs of the primary stack a DR stack reads (components/program.py exports them).
PRIMARY_OUTPUTS = (
    "backupBucket",
    "backupUrl",
    "drBackupBucket",
    "drBackupUrl",
    "identitiesSecret",
    "identitiesSecretUrl",
    "drIdentitiesSecret",
    "drIdentitiesSecretUrl",
)


class DisasterRecovery(pulumi.ComponentResource):
    """Inputs: DR-stack settings (`dr.primaryStack`, `dr.failover`, `dr.maxReplicationLag`, `dr.checkSchedule`).
    Outputs: `store` (the DR copy the DR cluster restores from and, after failover, writes to), `secret` (the
    identities secret as seen from the DR region), `restore_service_account`, `check_cron_job_name`,
    `alert_specs` (what the DR stack alerts on)."""

    def __init__(
        self, name: str, settings: Settings, backend: CloudBackend, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("svbackups:dr:DisasterRecovery", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        child = pulumi.ResourceOptions(parent=self)

        primary = pulumi.StackReference(names.resource("primary"), stack_name=settings.dr.primary_stack, opts=child)

        def out(name: str) -> pulumi.Output:
            assert name in PRIMARY_OUTPUTS, name
            return primary.require_output(name)

        primary_store = BackupStore(name=out("backupBucket"), url=out("backupUrl"), resource=None)
        self.store = BackupStore(name=out("drBackupBucket"), url=out("drBackupUrl"), resource=None)
        primary_secret = SecretSlot(id=out("identitiesSecret"), url=out("identitiesSecretUrl"), resource=None)
        self.secret = SecretSlot(id=out("drIdentitiesSecret"), url=out("drIdentitiesSecretUrl"), resource=None)

        # One reader for restores, drills and the replica check; it reads the primary too, to compare.
        labels = names.labels(RESTORE_COMPONENT)
        sa_name = names.resource(RESTORE_COMPONENT)
        reader = backend.workload_identity("restore", sa_name, parent=self)
        backend.allow_object_reads(self.store, reader, label="dr-copy", parent=self)
        backend.allow_object_reads(primary_store, reader, label="primary", parent=self)
        backend.allow_secret_reads(self.secret, reader, label="dr-copy", parent=self)
        backend.allow_secret_reads(primary_secret, reader, label="primary", parent=self)
        core.ServiceAccount(
            names.resource(RESTORE_COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name, namespace=namespace, labels=labels, annotations=reader.service_account_annotations
            ),
            automount_service_account_token=False,
            opts=child,
        )

        timing = schedules.schedule_timing(settings.dr.check_schedule)
        lag = retention.format_duration(settings.dr.max_replication_lag)
        check_labels = names.labels(CHECK_COMPONENT)
        args = [
            "check-replica",
            primary_store.url,
            self.store.url,
            "--max-lag",
            lag,
            "--secret-src",
            primary_secret.url,
            "--secret-dst",
            self.secret.url,
            # Lifecycle rules expire recent sets on each side at their own pace: near expiry is not a gap.
            "--recent-retention",
            retention.format_duration(settings.retention.recent),
        ]
        self.check_cron_job_name = names.resource(CHECK_COMPONENT)
        batch.CronJob(
            names.resource(CHECK_COMPONENT),
            metadata=meta.ObjectMetaArgs(name=self.check_cron_job_name, namespace=namespace, labels=check_labels),
            spec=kube_specs.cron_job_spec(
                schedule=settings.dr.check_schedule,
                timing=timing,
                labels=check_labels,
                service_account=sa_name,
                containers=[kube_specs.job_container("check-replica", settings.job_image, args)],
            ),
            opts=child,
        )
        # Stale when no check has passed for the lag bound plus a check interval and run: a set that missed the
        # bound fails the check itself, so this also covers a check that no longer runs.
        self.alert_specs = [
            AlertSpec(
                kind="replica",
                namespace=namespace,
                cron_job=self.check_cron_job_name,
                stale_after=timing.largest_gap + timing.latest_finish + settings.dr.max_replication_lag,
            )
        ]
        self.restore_service_account = sa_name
        self.register_outputs(
            {
                "drBackupUrl": self.store.url,
                "identitiesSecretUrl": self.secret.url,
                "restoreServiceAccount": sa_name,
                "replicaCheckCronJob": self.check_cron_job_name,
            }
        )
