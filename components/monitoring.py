"""Alerts for every backup kind: stale (no completed run for longer than the schedule allows) and failed.

Alerts live in the cloud's monitoring (Cloud Monitoring on GCP), not in a Prometheus inside the cluster: an
alert about backups must keep working when the cluster it protects is gone. The jobs log one JSON event per
outcome (docs/contracts.md section 3); GKE ships container logs to Cloud Logging by default, so log-based
metrics need no exporter, Pushgateway or scrape config.
"""

from __future__ import annotations

import pulumi

from components.cloud import AlertSpec, CloudBackend
from components.settings import BACKUP_KINDS, Settings


def alert_specs(settings: Settings, cron_jobs: dict[str, str]) -> list[AlertSpec]:
    """Stale after the largest gap between runs + how late a run may start + its deadline + the slack."""
    timing = settings.derived.timing
    return [
        AlertSpec(
            kind=kind,
            namespace=settings.node.namespace,
            cron_job=cron_jobs[kind],
            stale_after=timing[kind].stale_after(settings.monitoring.slack),
        )
        for kind in BACKUP_KINDS
        if kind in cron_jobs  # a DABFT stack has no cometbft CronJob
    ]


class BackupAlerts(pulumi.ComponentResource):
    """Inputs: the alert specs. Outputs: `policies` (one stale and one failed alert per backup kind)."""

    def __init__(
        self, name: str, specs: list[AlertSpec], backend: CloudBackend, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("svbackups:monitoring:BackupAlerts", name, None, opts)
        self.policies = backend.backup_alerts(specs, parent=self)
        self.register_outputs({"policies": [p.urn for p in self.policies]})
