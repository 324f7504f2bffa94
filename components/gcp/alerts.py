"""Cloud Monitoring alerts on the jobs' outcome events (log-based metrics), per backup kind.

Per kind: a `completed` and a `failed` log-based metric, a *stale* alert (no completed run for the stale
window) and a *failed* alert (any failed run, or a Kubernetes Job that died without logging). One more for the
DR copy (components/gcp/buckets.py): with paired regional buckets, the copy to the DR bucket is *behind*; with a
dual-region bucket, its turbo replication is behind by more than `dr.maxReplicationLag`.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pulumi
from pulumi_gcp import logging, monitoring

from components.cloud import AlertSpec
from components.gcp import buckets
from components.gcp.context import GcpContext
from rules import gcp_locations, schedules

ALIGNMENT = "300s"
# Cloud Monitoring's turbo replication metric of a dual-region bucket (GAUGE, seconds, resource gcs_bucket): the
# age of the oldest object not yet replicated to the other region; every object written before that is in both.
# Google Cloud metrics list, "storage" (storage.googleapis.com/replication/*), and "Managing turbo replication"
# (cloud.google.com/storage/docs/managing-turbo-replication), which monitors the 15-minute RPO with it. Reported
# only for buckets with turbo replication (rpo ASYNC_TURBO), and computed periodically: the metric trails the
# real delay by storage.googleapis.com/replication/time_since_metrics_updated.
TURBO_MAX_DELAY = "storage.googleapis.com/replication/turbo_max_delay"


def declare_alerts(context: GcpContext, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
    """Notification channels, then per backup kind: log-based metrics and a stale and a failed alert."""
    configured = context.settings.monitoring
    channels: list[pulumi.Input[str]] = list(configured.notification_channels)
    for email in configured.notification_emails:
        channel = monitoring.NotificationChannel(
            # Named after the address, not its position: reordering the list must not replace channels.
            context.names.resource("alerts-email", hashlib.sha256(email.encode()).hexdigest()[:8]),
            project=context.project,
            type="email",
            display_name=f"sv-backups {context.settings.node.name}: {email}",
            labels={"email_address": email},
            opts=pulumi.ResourceOptions(parent=parent),
        )
        channels.append(channel.id)

    policies: list[pulumi.Resource] = []
    for spec in specs:
        # A Job event names the Job `<cron job>-<time>`, matched by prefix: leave out the Jobs of another watched
        # CronJob whose name extends this one's (sv-1-postgres-snapshot-prune is not sv-1-postgres-snapshot).
        longer = sorted({o.cron_job for o in specs if o.cron_job.startswith(f"{spec.cron_job}-")})
        policies.extend(_alerts_for(context, spec, channels, parent, longer))
    if context.layout is not None and context.layout.replica is not None:
        policies.append(_copy_behind(context, channels, parent))
    elif context.layout is not None and context.layout.kind == gcp_locations.DUAL_REGION:
        policies.append(_turbo_replication_behind(context, channels, parent))
    return policies


def _copy_behind(context: GcpContext, channels: list, parent: pulumi.Resource) -> monitoring.AlertPolicy:
    """Every new object is an event in the copy's subscription until the transfer has taken it: the age of the
    oldest one is how far the DR bucket is behind. Behind by more than the Postgres backup interval (a whole set
    not in the DR region yet) means the copy is stuck: the DR region, the transfer job or its grants."""
    node = context.settings.node.name
    subscription = buckets.copy_subscription(context.names)
    # The most frequent Postgres sets: with snapshot sets the dump sets may be weekly, but the snapshot sets'
    # manifests (and the dump objects) still must reach the DR bucket within one 4-hourly gap.
    timing = context.settings.derived.timing
    behind = min(timing[kind].largest_gap for kind in ("postgres", schedules.SNAPSHOT_KIND) if kind in timing)
    return _dr_copy_alert(
        context,
        "behind",
        title=f"DR copy behind by more than {schedules.describe(behind)}",
        condition="oldest backup object not yet copied to the DR bucket",
        metric_filter=(
            'metric.type="pubsub.googleapis.com/subscription/oldest_unacked_message_age" '
            f'AND resource.type="pubsub_subscription" AND resource.labels.subscription_id="{subscription}"'
        ),
        bound=behind,
        documentation=(
            f"Backup objects of SV node `{node}` written more than {schedules.describe(behind)} ago are not in "
            f"the DR bucket yet (subscription `{subscription}`). Backups to the primary bucket go on; the copy "
            f"catches up once the cause is fixed. Check the transfer job's failed copies in Cloud Logging and "
            f"the DR region's status; see docs/gcp-regions.md."
        ),
        channels=channels,
        parent=parent,
    )


def _turbo_replication_behind(context: GcpContext, channels: list, parent: pulumi.Resource) -> monitoring.AlertPolicy:
    """Turbo replication promises every object in both regions within 15 minutes; when the oldest object not yet
    replicated is older than `dr.maxReplicationLag` (default 1 h), the sets written since are in the primary
    region only, and that region's loss would take them."""
    node = context.settings.node.name
    bucket = buckets.primary_bucket_name(context)
    bound = context.settings.dr.max_replication_lag
    return _dr_copy_alert(
        context,
        "turbo-behind",
        title=f"dual-region replication behind by more than {schedules.describe(bound)}",
        condition="oldest backup object not yet in both regions of the dual-region bucket",
        metric_filter=(
            f'metric.type="{TURBO_MAX_DELAY}" AND resource.type="gcs_bucket" AND resource.labels.bucket_name="{bucket}"'
        ),
        bound=bound,
        documentation=(
            f"Backup objects of SV node `{node}` in the dual-region bucket `{bucket}` are not in both of its "
            f"regions after {schedules.describe(bound)} (turbo replication targets 15 minutes): until they "
            f"are, losing the primary region loses them. Backups go on; GCS catches up by itself. Check the "
            f"Cloud Storage status of both regions and the bucket's replication in Metrics Explorer "
            f"(`{TURBO_MAX_DELAY}`); see docs/gcp-regions.md."
        ),
        channels=channels,
        parent=parent,
    )


def _dr_copy_alert(
    context: GcpContext,
    suffix: str,
    *,
    title: str,
    condition: str,
    metric_filter: str,
    bound: timedelta,
    documentation: str,
    channels: list,
    parent: pulumi.Resource,
) -> monitoring.AlertPolicy:
    """A critical alert when an age metric of the DR copy (seconds) exceeds `bound`: the copy is that far behind."""
    node = context.settings.node.name
    return monitoring.AlertPolicy(
        context.names.resource("alert", "dr-copy", suffix),
        project=context.project,
        display_name=f"sv-backups {node}: {title}",
        combiner="OR",
        conditions=[
            monitoring.AlertPolicyConditionArgs(
                display_name=condition,
                condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=metric_filter,
                    comparison="COMPARISON_GT",
                    threshold_value=int(bound.total_seconds()),
                    duration="0s",
                    aggregations=[
                        monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                            alignment_period=ALIGNMENT, per_series_aligner="ALIGN_MAX"
                        )
                    ],
                ),
            )
        ],
        notification_channels=channels,
        severity="CRITICAL",
        documentation=monitoring.AlertPolicyDocumentationArgs(mime_type="text/markdown", content=documentation),
        # Both are the one `dr-copy` / `behind` alert of their layout (policy: copy chain, replication alert).
        user_labels={"svbackups-kind": "dr-copy", "svbackups-alert": "behind", "svbackups-node": node},
        opts=pulumi.ResourceOptions(parent=parent),
    )


def _alerts_for(
    context: GcpContext, spec: AlertSpec, channels: list, parent: pulumi.Resource, others: list[str] = ()
) -> list[pulumi.Resource]:
    node = context.settings.node.name
    container_logs = (
        f'resource.type="k8s_container" AND resource.labels.namespace_name="{spec.namespace}" '
        f'AND jsonPayload.kind="{spec.kind}"'
    )
    completed = _log_metric(
        context, spec, "completed", f'{container_logs} AND jsonPayload.event="backup.completed"', parent
    )
    # A job can die without logging (OOM kill, deadline, image pull): Kubernetes then records a Job event.
    job_events = (
        f'logName="projects/{context.project}/logs/events" AND jsonPayload.involvedObject.kind="Job" '
        f'AND jsonPayload.involvedObject.namespace="{spec.namespace}" '
        f'AND jsonPayload.involvedObject.name:"{spec.cron_job}" '
        + "".join(f'AND NOT jsonPayload.involvedObject.name:"{other}" ' for other in others)
        + 'AND jsonPayload.reason=("BackoffLimitExceeded" OR "DeadlineExceeded")'
    )
    failed = _log_metric(
        context, spec, "failed", f'({container_logs} AND jsonPayload.event="backup.failed") OR ({job_events})', parent
    )
    stale_for = schedules.describe(spec.stale_after)
    stale = _policy(
        context,
        spec,
        "stale",
        title=f"no {spec.run_name} for {stale_for}",
        condition=monitoring.AlertPolicyConditionArgs(
            display_name=f"no completed {spec.run_name}",
            condition_absent=monitoring.AlertPolicyConditionConditionAbsentArgs(
                filter=completed.name.apply(
                    lambda name: f'metric.type="logging.googleapis.com/user/{name}" AND resource.type="k8s_container"'
                ),
                duration=f"{int(spec.stale_after / timedelta(seconds=1))}s",
                aggregations=[_sum_aggregation(monitoring.AlertPolicyConditionConditionAbsentAggregationArgs)],
            ),
        ),
        documentation=(
            f"No {spec.run_name} (`{spec.kind}`) of SV node `{node}` completed for {stale_for}. "
            f"Check `kubectl -n {spec.namespace} get jobs -l app.kubernetes.io/instance={node}` and "
            f"the logs of the latest `{spec.cron_job}` job. See docs/runbook.md."
        ),
        channels=channels,
        parent=parent,
    )
    failed_policy = _policy(
        context,
        spec,
        "failed",
        title=f"{spec.run_name} failed",
        condition=monitoring.AlertPolicyConditionArgs(
            display_name=f"failed {spec.run_name}",
            condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                filter=failed.name.apply(lambda name: f'metric.type="logging.googleapis.com/user/{name}"'),
                comparison="COMPARISON_GT",
                threshold_value=0,
                duration="0s",
                aggregations=[_sum_aggregation(monitoring.AlertPolicyConditionConditionThresholdAggregationArgs)],
            ),
        ),
        documentation=(
            f"A {spec.run_name} (`{spec.kind}`) of SV node `{node}` failed. The job's log line with "
            f'`"event": "backup.failed"` says why; no partial backup is ever marked complete. See docs/runbook.md.'
        ),
        channels=channels,
        parent=parent,
    )
    return [stale, failed_policy]


def _sum_aggregation(args_class):
    return args_class(alignment_period=ALIGNMENT, per_series_aligner="ALIGN_SUM", cross_series_reducer="REDUCE_SUM")


def _policy(
    context: GcpContext,
    spec: AlertSpec,
    alert: str,
    *,
    title: str,
    condition: monitoring.AlertPolicyConditionArgs,
    documentation: str,
    channels: list,
    parent: pulumi.Resource,
) -> monitoring.AlertPolicy:
    node = context.settings.node.name
    return monitoring.AlertPolicy(
        context.names.resource("alert", spec.kind, alert),
        project=context.project,
        display_name=f"sv-backups {node}: {title}",
        combiner="OR",
        conditions=[condition],
        notification_channels=channels,
        severity="CRITICAL",
        documentation=monitoring.AlertPolicyDocumentationArgs(mime_type="text/markdown", content=documentation),
        user_labels={"svbackups-kind": spec.kind, "svbackups-alert": alert, "svbackups-node": node},
        opts=pulumi.ResourceOptions(parent=parent),
    )


def _log_metric(context: GcpContext, spec: AlertSpec, outcome: str, log_filter: str, parent: pulumi.Resource):
    return logging.Metric(
        context.names.resource("metric", spec.kind, outcome),
        name=context.names.log_metric(spec.kind, outcome),
        project=context.project,
        filter=log_filter,
        metric_descriptor=logging.MetricMetricDescriptorArgs(
            metric_kind="DELTA",
            value_type="INT64",
            unit="1",
            display_name=f"sv-backups {spec.kind} backups {outcome}",
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
