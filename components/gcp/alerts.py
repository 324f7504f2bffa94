"""Cloud Monitoring alerts on the jobs' outcome events (log-based metrics), per backup kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_gcp as gcp

from components import schedules
from components.cloud import AlertSpec

if TYPE_CHECKING:
    from components.gcp.backend import GcpBackend


def _seconds(value) -> str:
    return f"{int(value.total_seconds())}s"


def declare_alerts(backend: GcpBackend, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
    """Notification channels, then per backup kind: log-based metrics and a stale and a failed alert."""
    monitoring = backend.settings.monitoring
    channels: list[pulumi.Input[str]] = list(monitoring.notification_channels)
    for index, email in enumerate(monitoring.notification_emails):
        channel = gcp.monitoring.NotificationChannel(
            backend.names.resource("alerts-email", str(index)),
            project=backend.project,
            type="email",
            display_name=f"sv-backups {backend.settings.node.name}: {email}",
            labels={"email_address": email},
            opts=pulumi.ResourceOptions(parent=parent),
        )
        channels.append(channel.id)

    policies: list[pulumi.Resource] = []
    for spec in specs:
        policies.extend(_alerts_for(backend, spec, channels, parent))
    return policies


def _alerts_for(backend: GcpBackend, spec: AlertSpec, channels: list, parent: pulumi.Resource) -> list[pulumi.Resource]:
    node = backend.settings.node.name
    container_logs = (
        f'resource.type="k8s_container" AND resource.labels.namespace_name="{spec.namespace}" '
        f'AND jsonPayload.kind="{spec.kind}"'
    )
    completed = _log_metric(
        backend, spec, "completed", f'{container_logs} AND jsonPayload.event="backup.completed"', parent
    )
    # A job can die without logging (OOM kill, deadline, image pull): Kubernetes then records a Job event.
    job_events = (
        f'logName="projects/{backend.project}/logs/events" AND jsonPayload.involvedObject.kind="Job" '
        f'AND jsonPayload.involvedObject.namespace="{spec.namespace}" '
        f'AND jsonPayload.involvedObject.name:"{spec.cron_job}" '
        f'AND jsonPayload.reason=("BackoffLimitExceeded" OR "DeadlineExceeded")'
    )
    failed = _log_metric(
        backend, spec, "failed", f'({container_logs} AND jsonPayload.event="backup.failed") OR ({job_events})', parent
    )
    common = {
        "project": backend.project,
        "combiner": "OR",
        "notification_channels": channels,
        "severity": "CRITICAL",
    }
    stale = gcp.monitoring.AlertPolicy(
        backend.names.resource("alert", spec.kind, "stale"),
        display_name=f"sv-backups {node}: no {spec.kind} backup for {schedules.describe(spec.stale_after)}",
        conditions=[
            gcp.monitoring.AlertPolicyConditionArgs(
                display_name=f"no completed {spec.kind} backup",
                condition_absent=gcp.monitoring.AlertPolicyConditionConditionAbsentArgs(
                    filter=completed.name.apply(
                        lambda name: (
                            f'metric.type="logging.googleapis.com/user/{name}" AND resource.type="k8s_container"'
                        )
                    ),
                    duration=_seconds(spec.stale_after),
                    aggregations=[
                        gcp.monitoring.AlertPolicyConditionConditionAbsentAggregationArgs(
                            alignment_period="300s",
                            per_series_aligner="ALIGN_SUM",
                            cross_series_reducer="REDUCE_SUM",
                        )
                    ],
                ),
            )
        ],
        documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
            mime_type="text/markdown",
            content=(
                f"No `{spec.kind}` backup of SV node `{node}` completed for "
                f"{schedules.describe(spec.stale_after)}. "
                f"Check `kubectl -n {spec.namespace} get jobs -l app.kubernetes.io/instance={node}` and "
                f"the logs of the latest `{spec.cron_job}` job. See docs/runbook.md."
            ),
        ),
        user_labels={"svbackups-kind": spec.kind, "svbackups-alert": "stale", "svbackups-node": node},
        opts=pulumi.ResourceOptions(parent=parent),
        **common,
    )
    failed_policy = gcp.monitoring.AlertPolicy(
        backend.names.resource("alert", spec.kind, "failed"),
        display_name=f"sv-backups {node}: {spec.kind} backup failed",
        conditions=[
            gcp.monitoring.AlertPolicyConditionArgs(
                display_name=f"failed {spec.kind} backup",
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=failed.name.apply(lambda name: f'metric.type="logging.googleapis.com/user/{name}"'),
                    comparison="COMPARISON_GT",
                    threshold_value=0,
                    duration="0s",
                    aggregations=[
                        gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                            alignment_period="300s",
                            per_series_aligner="ALIGN_SUM",
                            cross_series_reducer="REDUCE_SUM",
                        )
                    ],
                ),
            )
        ],
        documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
            mime_type="text/markdown",
            content=(
                f"A `{spec.kind}` backup run of SV node `{node}` failed. The job's log line with "
                f'`"event": "backup.failed"` says why; no partial backup is ever marked complete.'
            ),
        ),
        user_labels={"svbackups-kind": spec.kind, "svbackups-alert": "failed", "svbackups-node": node},
        opts=pulumi.ResourceOptions(parent=parent),
        **common,
    )
    return [stale, failed_policy]


def _log_metric(backend: GcpBackend, spec: AlertSpec, outcome: str, log_filter: str, parent: pulumi.Resource):
    return gcp.logging.Metric(
        backend.names.resource("metric", spec.kind, outcome),
        name=backend.names.log_metric(spec.kind, outcome),
        project=backend.project,
        filter=log_filter,
        metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
            metric_kind="DELTA",
            value_type="INT64",
            unit="1",
            display_name=f"sv-backups {spec.kind} backups {outcome}",
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
