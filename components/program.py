"""The whole program: settings in, every backup resource declared, the operator's outputs exported.

A primary stack declares the backup store and every backup of the node; a DR stack (`sv-backups:role: dr`)
declares the same backups for the DR cluster, standing by, around the primary's DR copy (components/dr.py).
"""

from __future__ import annotations

import pulumi

from components import scanner_skips
from components.audit import HistoryAudit
from components.backends import backend_for
from components.cometbft import CometbftSnapshots
from components.dr import DisasterRecovery
from components.drill import RestoreDrill
from components.identities import IdentityBackups
from components.monitoring import BackupAlerts, alert_specs
from components.pg_snapshots import PRUNE_KIND, PRUNE_SCHEDULE, PostgresSnapshots, SnapshotPruning
from components.postgres import PostgresBackups
from components.settings import Settings
from components.storage import BackupStorage, tier_urls
from rules import retention
from rules.schedules import SNAPSHOT_KIND

# The keys of the drills' CronJobs in the `cronJobs` output (next to `historyAudit`).
DRILL_OUTPUTS = {
    "postgres": "drillPostgres",
    "cometbft": "drillCometbft",
    "identities": "drillIdentities",
    "snapshots": "drillPostgresSnapshots",
}


class SvBackups(pulumi.ComponentResource):
    """Everything one SV node needs backed up. Inputs: validated `Settings`. Outputs: the components; `store`
    and `secret` are where the sets and identities dumps go (on a DR stack: the primary's DR copies)."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("svbackups:index:SvBackups", name, None, opts)
        backend = backend_for(settings)
        child = pulumi.ResourceOptions(parent=self)
        self.storage: BackupStorage | None = None
        self.dr: DisasterRecovery | None = None
        self.audit: HistoryAudit | None = None
        self.drill: RestoreDrill | None = None
        if settings.role == "dr":
            self.dr = DisasterRecovery("dr", settings, backend, child)
            self.store, secret = self.dr.store, self.dr.secret
        else:
            self.storage = BackupStorage("storage", settings, backend, child)
            self.store, secret = self.storage.store, None
        self.postgres = PostgresBackups("postgres", settings, backend, self.store, child)
        self.identities = IdentityBackups("identities", settings, backend, child, slot=secret)
        # A DABFT node has no CometBFT node: its ordering state is the Postgres set's canton-bft role.
        self.cometbft = None if settings.dabft else CometbftSnapshots("cometbft", settings, backend, child)
        # After the dump sets and CometBFT: the DR keys their copies use are declared (and parented) there first.
        self.snapshots: PostgresSnapshots | None = None
        self.snapshot_pruning: SnapshotPruning | None = None
        if settings.snapshots is not None:
            self.snapshots = PostgresSnapshots("pg-snapshots", settings, backend, self.store, child)
            self.snapshot_pruning = SnapshotPruning("pg-snapshot-pruning", settings, backend, self.store, child)
        self.cron_jobs = {
            "postgres": self.postgres.cron_job_name,
            **({"cometbft": self.cometbft.cron_job_name} if self.cometbft else {}),
            "identities": self.identities.cron_job_name,
            **(
                {SNAPSHOT_KIND: self.snapshots.cron_job_name, PRUNE_KIND: self.snapshot_pruning.cron_job_name}
                if self.snapshots is not None
                else {}
            ),
        }
        # Standby CronJobs do not run: alerting on them would page until failover.
        specs = [] if settings.standby else alert_specs(settings, self.cron_jobs)
        if self.snapshots is not None and not settings.standby:
            specs += [self.snapshots.alert, self.snapshot_pruning.alert]
        if self.dr is not None:
            specs += self.dr.alert_specs
        if self.dr is None or not settings.standby:
            # The primary audits its own store's history daily. A DR stack's copy is checked by check-replica until
            # failover; after it (dr.failover: true) the DR stack is the primary: its store takes the node's sets,
            # and it audits and drills them as the primary did.
            reader = self.dr.reader if self.dr is not None else None
            self.audit = HistoryAudit("audit", settings, backend, self.store, child, reader=reader)
            specs.append(self.audit.alert_spec)
            if settings.drill.enabled:
                # Weekly restores of the newest backup of each kind, as the audit's read-only identity. A DR
                # stack has none: its copy is checked against the primary's by check-replica (components/drill.py).
                self.drill = RestoreDrill(
                    "drill", settings, backend, self.store, self.identities.slot, self.audit.reader, child
                )
                specs += [job.alert for job in self.drill.jobs]
        self.alerts = BackupAlerts("alerts", specs, backend, child)
        self.register_outputs(
            {
                "backupUrl": self.store.url,
                "identitiesSecret": self.identities.secret_id,
                "cronJobs": self.cron_jobs,
                **({"snapshotClass": self.cometbft.snapshot_class_name} if self.cometbft else {}),
                **(
                    {"postgresSnapshotClass": self.snapshots.snapshot_class_name}
                    if self.snapshots is not None and self.snapshots.snapshot_class_name
                    else {}
                ),
            }
        )


def declare(settings: Settings) -> SvBackups:
    # Every CronJob carries the scanner checks it does not meet on purpose, with the reason (scanner_skips.py).
    node = SvBackups(
        settings.name_prefix, settings, pulumi.ResourceOptions(transformations=[scanner_skips.transformation])
    )
    derived = settings.derived
    fmt = retention.format_duration
    store = node.store
    recent_url, historical_url = tier_urls(store.url, settings.node.migration_id)
    pulumi.export("node", settings.node.identity())
    pulumi.export("backupBucket", store.name)
    pulumi.export("backupUrl", store.url)
    pulumi.export("recentSetsUrl", recent_url)
    pulumi.export("historicalSetsUrl", historical_url)
    pulumi.export("identitiesSecret", node.identities.secret_id)
    pulumi.export("identitiesSecretUrl", node.identities.secret_url)
    checks = {"historyAudit": node.audit.cron_job_name} if node.audit else {}
    if node.drill is not None:
        checks |= {DRILL_OUTPUTS[job.kind]: job.cron_job for job in node.drill.jobs}
    pulumi.export("cronJobs", {**node.cron_jobs, **checks})
    if node.cometbft is not None:
        pulumi.export("snapshotClass", node.cometbft.snapshot_class_name)
    if settings.dabft:
        pulumi.export("synchronizer", settings.synchronizer)
    pulumi.export(
        "schedules",
        {
            "postgres": settings.schedule.postgres,
            **({"cometbft": settings.schedule.cometbft} if node.cometbft is not None else {}),
            "identities": settings.schedule.identities,
            "audit": settings.schedule.audit,
            **({"drill": settings.schedule.drill} if node.drill is not None else {}),
            **(
                {SNAPSHOT_KIND: settings.snapshots.schedule, PRUNE_KIND: PRUNE_SCHEDULE}
                if node.snapshots is not None
                else {}
            ),
        },
    )
    if node.snapshots is not None:
        # What restore and the operator read: where the snapshot sets' snapshots are and how they are kept.
        pulumi.export(
            "snapshotSets",
            {
                "snapshotClass": node.snapshots.snapshot_class_name,
                "historical": settings.snapshots.historical,
                "onlineBackup": settings.snapshots.online_backup,
                **(
                    {"historicalCadence": fmt(derived.snapshot_historical_cadence)}
                    if derived.snapshot_historical_cadence is not None
                    else {}
                ),
            },
        )
    pulumi.export("postgresRoles", settings.roles)
    # The backup kinds this stack runs (no cometbft on a DABFT stack).
    timing = {kind: t for kind, t in derived.timing.items() if kind in node.cron_jobs}
    cometbft_windows = (
        {
            "cometbftRetentionWindow": fmt(derived.cometbft_retention_window),
            "cometbftHistoricalCadence": fmt(derived.cometbft_historical_cadence),
        }
        if node.cometbft is not None
        else {}
    )
    if node.postgres.setup_sql:
        # What an instance admin runs once so a passwordless (IAM) login can dump every table.
        pulumi.export("postgresSetupSql", node.postgres.setup_sql)
    pulumi.export(
        "windows",
        {
            "recent": fmt(settings.retention.recent),
            "participantPruning": fmt(settings.retention.participant_pruning)
            if settings.retention.participant_pruning
            else None,
            "sequencerPruning": fmt(settings.retention.sequencer_pruning)
            if settings.retention.sequencer_pruning
            else None,
            "postgresHistoricalCadence": fmt(derived.postgres_historical_cadence),
            **cometbft_windows,
            "postgresRunDeadline": fmt(derived.timing["postgres"].deadline),
            "largestScheduleGaps": {kind: fmt(t.largest_gap) for kind, t in timing.items()},
            "runDeadlines": {kind: fmt(t.deadline) for kind, t in timing.items()},
            "startWindows": {kind: fmt(t.start_window) for kind, t in timing.items()},
        },
    )
    pulumi.export("jobImage", settings.job_image)
    pulumi.export("role", settings.role)
    if node.dr is None:
        # What a DR stack reads (components/dr.py PRIMARY_OUTPUTS): the copies in the DR region. Where one
        # bucket or secret spans both regions, the DR copy is that same bucket or secret.
        secret = node.identities
        pulumi.export("drRegion", settings.dr.region)
        pulumi.export("drBackupBucket", store.dr_name if store.dr_name is not None else store.name)
        pulumi.export("drBackupUrl", store.dr_url if store.dr_url is not None else store.url)
        pulumi.export("drIdentitiesSecret", secret.dr_secret_id)
        pulumi.export("drIdentitiesSecretUrl", secret.dr_secret_url)
        if settings.gcp is not None:
            # Where the CometBFT PD snapshots are: a DR stack passes it on to failover (components/dr.py).
            pulumi.export("project", settings.gcp.project)
    else:
        pulumi.export("primaryStack", settings.dr.primary_stack)
        pulumi.export("standby", settings.standby)
        pulumi.export("restoreServiceAccount", node.dr.restore_service_account)
        pulumi.export("replicaCheckCronJob", node.dr.check_cron_job_name)
        for key, value in node.dr.failover_facts.items():
            pulumi.export(key, value)
    return node
