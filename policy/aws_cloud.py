"""The AWS profile of the cloud-neutral rules (`coverage_rules.py`, the cadence rule): CloudWatch alarms as the
backup alerts, the tagged S3 bucket as the store, the tagged Secrets Manager secret for identities dumps."""

from __future__ import annotations

from .aws_resources import (
    LOG_METRIC_FILTER,
    METRIC_ALARM,
    identities_secrets,
    s3_buckets,
    tags,
)
from .clouds import BackupAlert, Cloud
from .props import (
    RECENT_SECONDS,
    SECRET_PURPOSE,
    UNKNOWN,
    get,
)
from .rule import StackResource

# --- the AWS profile of the cloud-neutral rules -------------------------------------------------------------

ALERT_KIND, ALERT_TYPE = "svbackups-kind", "svbackups-alert"


def _alarm_metrics(alarm: StackResource) -> list[tuple]:
    """(namespace, metric name) the alarm watches, directly or through its metric queries."""
    metrics = [(alarm.props.get("namespace"), alarm.props.get("metricName"))]
    for query in alarm.props.get("metricQueries") or []:
        if isinstance(query, dict) and isinstance(query.get("metric"), dict):
            metrics.append((get(query, "metric", "namespace"), get(query, "metric", "metricName")))
    return [m for m in metrics if m != (None, None)]


# The job event each alert type counts (docs/contracts.md section 3): a stale alarm fires when no run completed.
_ALERT_EVENTS = {"stale": "backup.completed", "failed": "backup.failed"}


def _counted_events(resources: list[StackResource]) -> dict[tuple, list]:
    """(namespace, metric name) -> the filter patterns of the LogMetricFilters that produce that metric."""
    found: dict[tuple, list] = {}
    for resource in resources:
        if resource.type == LOG_METRIC_FILTER:
            metric = (
                get(resource.props, "metricTransformation", "namespace"),
                get(resource.props, "metricTransformation", "name"),
            )
            found.setdefault(metric, []).append(resource.props.get("pattern"))
    return found


def _aws_alerts(resources: list[StackResource]) -> list[BackupAlert]:
    produced = _counted_events(resources)
    found = []
    for alarm in resources:
        alarm_tags = tags(alarm.props)
        if alarm.type != METRIC_ALARM or ALERT_KIND not in alarm_tags:
            continue
        kind, alert_type = alarm_tags.get(ALERT_KIND), alarm_tags.get(ALERT_TYPE)
        where = f"MetricAlarm '{alarm.name}'"
        defects = []
        if alarm.props.get("actionsEnabled") is False:
            defects.append(
                f"{where}: actionsEnabled is false, so the {kind} {alert_type} alarm never notifies anyone. Fix: "
                f"remove actions_enabled=False."
            )
        missing = alarm.props.get("treatMissingData")
        if alert_type == "stale" and missing not in ("breaching", UNKNOWN):
            defects.append(
                f"{where}: treatMissingData is {missing or 'unset (missing)'}: when the {kind} job stops running "
                f"it logs nothing, its metric has no data, and the stale alarm stays quiet. Fix: set "
                f"treat_missing_data='breaching'."
            )
        event = _ALERT_EVENTS.get(alert_type)
        metrics = [m for m in _alarm_metrics(alarm) if UNKNOWN not in m]
        patterns = [p for m in metrics for p in produced.get(m, [])]
        counts = any(p is UNKNOWN or (isinstance(p, str) and f'"{kind}"' in p and f'"{event}"' in p) for p in patterns)
        if not counts and (metrics or not _alarm_metrics(alarm)):
            shown = ", ".join("/".join(map(str, m)) for m in metrics) or "no metric"
            defects.append(
                f"{where}: watches {shown}, which no LogMetricFilter of this stack fills with the {kind} jobs' "
                f"'{event}' events, so the {alert_type} alarm does not follow the {kind} backups. Fix: alarm on the "
                f'metric of the LogMetricFilter matching kind "{kind}" and event "{event}" '
                f"(components/aws/alerts.py)."
            )
        actions = alarm.props.get("alarmActions")
        notifies = None if actions is UNKNOWN else bool(actions)
        found.append(BackupAlert(alarm, kind, alert_type, defects, notifies))
    return found


def _aws_missing_alert(kind: str, alert_type: str, what: str) -> str:
    return (
        f"No enabled CloudWatch MetricAlarm tagged {ALERT_KIND}={kind}, {ALERT_TYPE}={alert_type}: nobody is told "
        f"about {what} of {kind}. Fix: declare it with components/monitoring.py BackupAlerts (one stale and one "
        f"failed alarm per backup kind)."
    )


def _aws_silent_alert(alert: BackupAlert) -> str:
    return (
        f"MetricAlarm '{alert.resource.name}': no alarmActions, so the alarm only shows in the CloudWatch console. "
        f"Fix: set sv-backups:monitoring.notificationChannels (SNS topic ARNs) or notificationEmails."
    )


def _aws_stores(resources: list[StackResource]) -> list[tuple[StackResource, dict]]:
    return [
        (b.resource, tags(b.resource.props)) for b in s3_buckets(resources) if RECENT_SECONDS in tags(b.resource.props)
    ]


def _aws_missing_store_label(bucket: StackResource, label: str) -> str:
    return (
        f"Bucket '{bucket.name}': tag {label} is missing, so the lifecycle rules cannot be checked against the "
        f"windows. Fix: declare the bucket through the AWS backend's backup_store() (components/aws/), which tags "
        f"it with the windows."
    )


def _aws_missing_backups(resources: list[StackResource]) -> list[str]:
    missing = []
    if not _aws_stores(resources):
        missing.append(
            f"No S3 bucket tagged {RECENT_SECONDS}: the backup bucket is missing or untagged, so the lifecycle "
            f"rules cannot be checked against the windows. Fix: declare it with the AWS backend's backup_store() "
            f"(components/aws/)."
        )
    if not identities_secrets(resources):
        missing.append(
            f"No Secrets Manager secret tagged {SECRET_PURPOSE}=identities: identities dumps have nowhere to go (or "
            f"the policies cannot recognise it). Fix: declare it with the AWS backend's identities_secret() "
            f"(components/aws/)."
        )
    return missing


AWS = Cloud(
    name="aws",
    packages=("aws",),
    url_schemes=("s3", "awssm"),
    alerts=_aws_alerts,
    missing_alert=_aws_missing_alert,
    silent_alert=_aws_silent_alert,
    missing_backups=_aws_missing_backups,
    stores=_aws_stores,
    missing_store_label=_aws_missing_store_label,
)
