"""The daily history audit: a CronJob that proves, from the store alone, that the Postgres history is gap-less.

`python -m jobs audit-history` reads the complete sets' manifests (never the dumps) and checks, per migration id
and role, every gap between consecutive historical sets against the pruning windows the seal recorded, that no
migration id lost its history, and that the newest set is fresh (docs/jobs.md, "History audit"). It runs as the
read-only restore identity: it may list and read the sets, never write or delete. Its outcome events
(`kind: history`) feed a stale and a failed alert like every backup's.
"""

from __future__ import annotations

import pulumi

from components import kube_specs, readers
from components.cloud import AlertSpec, BackupStore, CloudBackend
from components.settings import Settings
from rules import retention
from rules.naming import Names

COMPONENT = "history-audit"


class HistoryAudit(pulumi.ComponentResource):
    """Inputs: settings (the postgres schedule, the audit schedule, the slack), the store. Outputs:
    `cron_job_name`, `reader` (the stack's restore identity and ServiceAccount), `alert_spec` (stale
    after a day without a passing audit, plus its run and the slack)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        store: BackupStore,
        opts: pulumi.ResourceOptions | None = None,
        reader: readers.Reader | None = None,
    ):
        super().__init__("svbackups:audit:HistoryAudit", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace

        # The stack's restore identity: the drills (components/drill.py) run as the same ServiceAccount. A DR stack
        # after failover has one already, which reads its store (components/dr.py): one reader per stack.
        if reader is None:
            self.reader = readers.declare_reader(names, namespace, COMPONENT, backend, parent=self)
            backend.allow_object_reads(store, self.reader.identity, label="audit", parent=self)
        else:
            self.reader = reader
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
        timing = settings.derived.audit  # over a full period: an audit on weekdays only waits 3 days on Monday
        self.cron_job_name = readers.read_only_cron_job(
            names,
            COMPONENT,
            namespace=namespace,
            schedule=settings.schedule.audit,
            timing=timing,
            service_account=self.reader.service_account,
            containers=[kube_specs.job_container("audit-history", settings.job_image, args)],
            parent=self,
        )
        self.alert_spec = AlertSpec(
            kind="history",
            namespace=namespace,
            cron_job=self.cron_job_name,
            stale_after=timing.stale_after(settings.monitoring.slack),
        )
        self.register_outputs({"cronJob": self.cron_job_name})
