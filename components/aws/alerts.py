"""CloudWatch alarms on the jobs' outcome events, per backup kind, notifying an encrypted SNS topic.

EKS container logs reach CloudWatch Logs through Container Insights (the amazon-cloudwatch-observability
add-on's Fluent Bit), in the log group `/aws/containerinsights/<cluster>/application`; its Kubernetes filter
parses a JSON log line into `log_processed` and adds `kubernetes.namespace_name`. Per kind: a metric filter
counting `backup.completed` and one counting `backup.failed` (docs/contracts.md section 3), a *stale* alarm
(no completed run for the stale window; no data at all, e.g. the cluster is gone, counts as stale) and a
*failed* alarm. Alarms, topic and key are account resources: they outlive the cluster they watch.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

import pulumi
from pulumi_aws import cloudwatch, sns

from components.aws import policies
from components.aws.context import AwsContext
from components.cloud import AlertSpec
from rules import schedules

METRIC_NAMESPACE = "SvBackups"
FAILED_PERIOD = timedelta(minutes=5)
# CloudWatch evaluates at most 7 days of data for an alarm (one day for periods under an hour).
MAX_ALARM_WINDOW = timedelta(days=7)


def log_group(cluster: str) -> str:
    """Where Container Insights puts the cluster's application (container) logs."""
    return f"/aws/containerinsights/{cluster}/application"


def event_pattern(namespace: str, kind: str, event: str) -> str:
    """A CloudWatch Logs JSON filter pattern matching one outcome event of one kind in the node's namespace."""
    return (
        f'{{ ($.kubernetes.namespace_name = "{namespace}") && ($.log_processed.kind = "{kind}") '
        f'&& ($.log_processed.event = "{event}") }}'
    )


def stale_period_seconds(stale_after: timedelta) -> int:
    """One alarm period as long as the stale window (whole minutes, as CloudWatch requires): the alarm fires
    when that window, sliding, holds no completed run."""
    if stale_after > MAX_ALARM_WINDOW:
        raise ValueError(
            f"a stale window of {schedules.describe(stale_after)} is longer than the "
            f"{schedules.describe(MAX_ALARM_WINDOW)} a CloudWatch alarm can evaluate; "
            "lower sv-backups:monitoring.slack"
        )
    return math.ceil(stale_after / timedelta(minutes=1)) * 60


def declare_alerts(context: AwsContext, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
    """The topic (with its key and e-mail subscriptions), then per backup kind: metric filters and a stale
    and a failed alarm."""
    names, region = context.names, context.region
    monitoring = context.settings.monitoring
    # CloudWatch itself encrypts what its alarms publish to the topic: the key lets it.
    key = context.key(region, "alerts", parent, policies.cloudwatch_uses_key())
    topic = sns.Topic(
        names.resource("alerts"),
        name=names.resource("backup-alerts"),
        display_name=f"sv-backups {context.node}",
        kms_master_key_id=key.arn,
        region=region,
        tags=context.tags("alerts"),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    sns.TopicPolicy(
        names.resource("alerts", "policy"),
        arn=topic.arn,
        policy=pulumi.Output.all(context.account, topic.arn).apply(
            lambda args: policies.to_json(policies.topic_policy(context.partition, args[0], region, args[1]))
        ),
        region=region,
        opts=pulumi.ResourceOptions(parent=topic),
    )
    for email in monitoring.notification_emails:
        # Named after the address, not its position: reordering the list must not replace subscriptions.
        # SNS mails a confirmation link first; the address receives alarms once it is confirmed.
        sns.TopicSubscription(
            names.resource("alerts-email", hashlib.sha256(email.encode()).hexdigest()[:8]),
            topic=topic.arn,
            protocol="email",
            endpoint=email,
            region=region,
            opts=pulumi.ResourceOptions(parent=topic),
        )
    actions: list[pulumi.Input[str]] = [topic.arn, *monitoring.notification_channels]
    alarms: list[pulumi.Resource] = []
    for spec in specs:
        alarms.extend(_alarms_for(context, spec, actions, parent))
    return alarms


def _alarms_for(context: AwsContext, spec: AlertSpec, actions: list, parent: pulumi.Resource) -> list[pulumi.Resource]:
    names, node = context.names, context.node
    group = log_group(context.cluster.cluster_name)
    metrics = {
        outcome: _metric_filter(context, spec, outcome, event, group, parent)
        for outcome, event in (("completed", "backup.completed"), ("failed", "backup.failed"))
    }
    stale_for = schedules.describe(spec.stale_after)
    stale = cloudwatch.MetricAlarm(
        names.resource("alarm", spec.kind, "stale"),
        name=f"sv-backups-{node}-{spec.kind}-stale",
        alarm_description=(
            f"No {spec.run_name} ({spec.kind}) of SV node {node} completed for {stale_for}. Check "
            f"`kubectl -n {spec.namespace} get jobs -l app.kubernetes.io/instance={node}` and the logs of the "
            f"latest {spec.cron_job} job. See docs/runbook.md."
        ),
        namespace=METRIC_NAMESPACE,
        metric_name=metrics["completed"],
        statistic="Sum",
        period=stale_period_seconds(spec.stale_after),
        evaluation_periods=1,
        comparison_operator="LessThanThreshold",
        threshold=1,
        # No data means no completed run (and no logs at all when the cluster is gone): that is staleness.
        treat_missing_data="breaching",
        alarm_actions=actions,
        ok_actions=actions,
        region=context.region,
        tags={**context.tags("alerts"), "svbackups-kind": spec.kind, "svbackups-alert": "stale"},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    failed = cloudwatch.MetricAlarm(
        names.resource("alarm", spec.kind, "failed"),
        name=f"sv-backups-{node}-{spec.kind}-failed",
        alarm_description=(
            f"A {spec.run_name} ({spec.kind}) of SV node {node} failed. The job's log line with "
            f'"event": "backup.failed" says why; no partial backup is ever marked complete. See docs/runbook.md.'
        ),
        namespace=METRIC_NAMESPACE,
        metric_name=metrics["failed"],
        statistic="Sum",
        period=int(FAILED_PERIOD.total_seconds()),
        evaluation_periods=1,
        comparison_operator="GreaterThanThreshold",
        threshold=0,
        treat_missing_data="notBreaching",
        alarm_actions=actions,
        region=context.region,
        tags={**context.tags("alerts"), "svbackups-kind": spec.kind, "svbackups-alert": "failed"},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return [stale, failed]


def _metric_filter(
    context: AwsContext, spec: AlertSpec, outcome: str, event: str, group: str, parent: pulumi.Resource
) -> str:
    metric = context.names.log_metric(spec.kind, outcome)
    cloudwatch.LogMetricFilter(
        context.names.resource("metric", spec.kind, outcome),
        name=metric,
        log_group_name=group,
        pattern=event_pattern(spec.namespace, spec.kind, event),
        metric_transformation=cloudwatch.LogMetricFilterMetricTransformationArgs(
            name=metric, namespace=METRIC_NAMESPACE, value="1", unit="Count"
        ),
        region=context.region,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return metric
