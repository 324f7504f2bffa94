"""The disaster-recovery stack: what must exist in the DR region for the day the primary region or cluster is gone.

A DR stack (`sv-backups:role: dr`; its provider region is the DR region, its kube context the DR cluster) reads
the primary stack's *outputs* through a StackReference and declares only resources in the DR region or in
global IAM, so it can be deployed while the primary region is down:
- a restore identity that may list and read the DR copy of the sets and the identities secret, and may neither
  write nor delete anything (restores, drills and the replica check run as it); granted on the primary's buckets
  and secrets themselves, so that a DR stack in a project of its own reads them (components/gcp/backend.py);
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

import functools
from typing import Any

import pulumi

from components import kube_specs, readers
from components.cloud import AlertSpec, BackupStore, CloudBackend, SecretSlot
from components.settings import Settings
from rules import dr_pairing, retention
from rules.naming import Names

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
    `alert_specs` (what the DR stack alerts on), `failover_facts` (stack outputs scripts/failover.py reads)."""

    def __init__(
        self, name: str, settings: Settings, backend: CloudBackend, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("svbackups:dr:DisasterRecovery", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        child = pulumi.ResourceOptions(parent=self)

        primary = pulumi.StackReference(names.resource("primary"), stack_name=settings.dr.primary_stack, opts=child)
        # Every value read from the primary waits on the pairing check, so a DR stack naming another node (or
        # migration id) than its primary fails before it declares anything from the primary's outputs.
        paired = pulumi.Output.all(primary.get_output("node"), primary.get_output("synchronizer")).apply(
            functools.partial(_check_pairing, settings)
        )

        def out(name: str) -> pulumi.Output:
            assert name in PRIMARY_OUTPUTS, name
            return pulumi.Output.all(primary.require_output(name), paired).apply(lambda values: values[0])

        primary_store = BackupStore(name=out("backupBucket"), url=out("backupUrl"), resource=None)
        self.store = BackupStore(name=out("drBackupBucket"), url=out("drBackupUrl"), resource=None)
        primary_secret = SecretSlot(id=out("identitiesSecret"), url=out("identitiesSecretUrl"), resource=None)
        self.secret = SecretSlot(id=out("drIdentitiesSecret"), url=out("drIdentitiesSecretUrl"), resource=None)

        # One reader for restores and the replica check; it reads the primary too, to compare.
        reader = readers.declare_reader(names, namespace, RESTORE_COMPONENT, backend, parent=self)
        sa_name = reader.service_account
        self.reader = reader  # after failover the audit and the drills run as it too (components/program.py)
        backend.allow_object_reads(self.store, reader.identity, label="dr-copy", parent=self)
        backend.allow_object_reads(primary_store, reader.identity, label="primary", parent=self)
        backend.allow_secret_reads(self.secret, reader.identity, label="dr-copy", parent=self)
        backend.allow_secret_reads(primary_secret, reader.identity, label="primary", parent=self)

        timing = settings.derived.dr_check  # over a full period, as any check's (rules/schedules.py)
        lag = retention.format_duration(settings.dr.max_replication_lag)
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
        self.check_cron_job_name = readers.read_only_cron_job(
            names,
            CHECK_COMPONENT,
            namespace=namespace,
            schedule=settings.dr.check_schedule,
            timing=timing,
            service_account=sa_name,
            containers=[kube_specs.job_container("check-replica", settings.job_image, args)],
            parent=self,
        )
        self.alert_specs = [
            AlertSpec(
                kind="replica",
                namespace=namespace,
                cron_job=self.check_cron_job_name,
                stale_after=timing.stale_after(settings.dr.max_replication_lag),
            )
        ]
        self.restore_service_account = sa_name
        self.failover_facts = _failover_facts(settings, primary)
        self.register_outputs(
            {
                "drBackupUrl": self.store.url,
                "identitiesSecretUrl": self.secret.url,
                "restoreServiceAccount": sa_name,
                "replicaCheckCronJob": self.check_cron_job_name,
            }
        )


def _check_pairing(settings: Settings, primary: list[Any]) -> bool:
    primary_node, primary_synchronizer = primary
    stack = settings.dr.primary_stack
    problems = dr_pairing.node_mismatches(settings.node.identity(), primary_node, stack)
    problems += dr_pairing.synchronizer_mismatches(settings.synchronizer, primary_synchronizer, stack)
    if problems:
        raise pulumi.RunError("the DR stack does not match its primary:\n" + "\n".join(problems))
    return True


def _failover_facts(settings: Settings, primary: pulumi.StackReference) -> dict[str, pulumi.Input]:
    """What scripts/failover.py needs besides the DR copy, as stack outputs (jobs/failover_plan.py
    resolve_facts reads them; its flags still win): the cloud, and where the CometBFT snapshot copies are.

    GCP: PD snapshots are global resources of the project the primary's cluster took them in, stored in the
    multi-region or the DR region (components/gcp/backend.py), so the primary's project (its `project` output;
    a primary planned before that output existed falls back to this stack's project). AWS: the snapshot job
    copies each EBS snapshot to the DR region, which is this stack's own region. A DABFT node has no CometBFT
    volume: no cometbft facts, and `synchronizer: dabft` so failover skips that step (canton-bft is a database)."""
    # Failover prints `kubectl --context <kubeContext>` and `pulumi ... --stack <stack>`: never the current ones.
    pinned: dict[str, pulumi.Input] = {"stack": pulumi.get_stack()}
    kube_context = pulumi.Config("kubernetes").get("context")
    if kube_context:
        pinned["kubeContext"] = kube_context
    if settings.dabft:
        return {**pinned, "cloud": settings.cloud, "region": settings.region, "synchronizer": settings.synchronizer}
    cometbft: dict[str, pulumi.Input] = {"pvc": settings.cometbft.pvc}
    if settings.gcp is not None:
        own = settings.gcp.project
        cometbft["snapshotProject"] = primary.get_output("project").apply(lambda project: project or own)
    else:
        cometbft["snapshotRegion"] = settings.region
    return {**pinned, "cloud": settings.cloud, "region": settings.region, "cometbft": cometbft}
