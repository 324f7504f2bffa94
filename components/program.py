"""The whole program: settings in, every backup resource declared, the operator's outputs exported."""

from __future__ import annotations

import pulumi

from components import retention
from components.backends import backend_for
from components.cometbft import CometbftSnapshots
from components.identities import IdentityBackups
from components.monitoring import BackupAlerts, alert_specs
from components.postgres import PostgresBackups
from components.settings import Settings
from components.storage import BackupStorage


class SvBackups(pulumi.ComponentResource):
    """Everything one SV node needs backed up. Inputs: validated `Settings`. Outputs: the components."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("svbackups:index:SvBackups", name, None, opts)
        backend = backend_for(settings)
        child = pulumi.ResourceOptions(parent=self)
        self.storage = BackupStorage("storage", settings, backend, child)
        self.postgres = PostgresBackups("postgres", settings, backend, self.storage.store, child)
        self.identities = IdentityBackups("identities", settings, backend, child)
        self.cometbft = CometbftSnapshots("cometbft", settings, backend, child)
        cron_jobs = {
            "postgres": self.postgres.cron_job_name,
            "cometbft": self.cometbft.cron_job_name,
            "identities": self.identities.cron_job_name,
        }
        self.alerts = BackupAlerts("alerts", alert_specs(settings, cron_jobs), backend, child)
        self.register_outputs(
            {
                "backupUrl": self.storage.store.url,
                "identitiesSecret": self.identities.secret_id,
                "cronJobs": cron_jobs,
                "snapshotClass": self.cometbft.snapshot_class_name,
            }
        )


def declare(settings: Settings) -> SvBackups:
    node = SvBackups(settings.node.name, settings)
    derived = settings.derived
    fmt = retention.format_duration
    pulumi.export(
        "node",
        {"name": settings.node.name, "namespace": settings.node.namespace, "migrationId": settings.node.migration_id},
    )
    pulumi.export("backupBucket", node.storage.store.name)
    pulumi.export("backupUrl", node.storage.store.url)
    pulumi.export("recentSetsUrl", node.storage.recent_url)
    pulumi.export("historicalSetsUrl", node.storage.historical_url)
    pulumi.export("identitiesSecret", node.identities.secret_id)
    pulumi.export("identitiesSecretUrl", node.identities.secret_url)
    pulumi.export(
        "cronJobs",
        {
            "postgres": node.postgres.cron_job_name,
            "cometbft": node.cometbft.cron_job_name,
            "identities": node.identities.cron_job_name,
        },
    )
    pulumi.export("snapshotClass", node.cometbft.snapshot_class_name)
    pulumi.export(
        "schedules",
        {
            "postgres": settings.schedule.postgres,
            "cometbft": settings.schedule.cometbft,
            "identities": settings.schedule.identities,
        },
    )
    pulumi.export("postgresRoles", settings.roles)
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
            "cometbftRetentionWindow": fmt(derived.cometbft_retention_window),
            "cometbftHistoricalCadence": fmt(derived.cometbft_historical_cadence),
            "postgresRunDeadline": fmt(derived.timing["postgres"].deadline),
            "largestScheduleGaps": {kind: fmt(t.largest_gap) for kind, t in derived.timing.items()},
            "runDeadlines": {kind: fmt(t.deadline) for kind, t in derived.timing.items()},
            "startWindows": {kind: fmt(t.start_window) for kind, t in derived.timing.items()},
        },
    )
    pulumi.export("drRegion", settings.dr.region)
    pulumi.export("jobImage", settings.job_image)
    return node
