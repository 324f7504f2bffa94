"""The daily history audit: a CronJob that proves, from the store alone, that the Postgres history is gap-less.

`python -m jobs audit-history` reads the complete sets' manifests (never the dumps) and checks, per migration id
and role, every gap between consecutive historical sets against the pruning windows the seal recorded, that no
migration id lost its history, and that the newest set is fresh (docs/jobs.md, "History audit"). It runs as the
read-only restore identity: it may list and read the sets, never write or delete. Its outcome events
(`kind: history`) feed a stale and a failed alert like every backup's.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from components import kube_specs, retention, schedules
from components.cloud import AlertSpec, BackupStore, CloudBackend
from components.naming import Names
from components.settings import Settings

COMPONENT = "history-audit"
# The read-only identity restores and checks run as (components/dr.py names a DR stack's the same way).
READER_PURPOSE = "restore"


class HistoryAudit(pulumi.ComponentResource):
    """Inputs: settings (the postgres schedule, the audit schedule, the slack), the store. Outputs:
    `cron_job_name`, `alert_spec` (stale after a day without a passing audit, plus its run and the slack)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        store: BackupStore,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("svbackups:audit:HistoryAudit", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        labels = names.labels(COMPONENT)
        sa_name = names.resource(COMPONENT)
        child = pulumi.ResourceOptions(parent=self)

        reader = backend.workload_identity(READER_PURPOSE, sa_name, parent=self)
        backend.allow_object_reads(store, reader, label="audit", parent=self)
        core.ServiceAccount(
            names.resource(COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name, namespace=namespace, labels=labels, annotations=reader.service_account_annotations
            ),
            automount_service_account_token=False,
            opts=child,
        )
        postgres = settings.derived.timing["postgres"]
        fmt = retention.format_duration
        # Fresh: the newest complete set is at most one schedule gap old, plus how late a run may finish and
        # the operator's slack. The pruning windows come from the manifests the seal wrote (no window flags).
        args = [
            "audit-history",
            store.url,
            "--interval",
            fmt(postgres.largest_gap),
            "--slack",
            fmt(postgres.latest_finish + settings.monitoring.slack),
            "--json",
        ]
        timing = schedules.schedule_timing(settings.schedule.audit)
        self.cron_job_name = names.resource(COMPONENT)
        batch.CronJob(
            names.resource(COMPONENT),
            metadata=meta.ObjectMetaArgs(name=self.cron_job_name, namespace=namespace, labels=labels),
            spec=kube_specs.cron_job_spec(
                schedule=settings.schedule.audit,
                timing=timing,
                labels=labels,
                service_account=sa_name,
                containers=[kube_specs.job_container("audit-history", settings.job_image, args)],
            ),
            opts=child,
        )
        self.alert_spec = AlertSpec(
            kind="history",
            namespace=namespace,
            cron_job=self.cron_job_name,
            stale_after=timing.largest_gap + timing.latest_finish + settings.monitoring.slack,
        )
        self.register_outputs({"cronJob": self.cron_job_name})
