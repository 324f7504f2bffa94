"""Stack rules: properties no single resource shows.

The windows the lifecycle rules must honour are labels on the backup bucket (CrossGuard stack policies see
resources, not stack outputs); the historical cadence the seal step will really use is recomputed from the
Postgres CronJob's own arguments with the same function the job runs (components/retention.py).
"""

from __future__ import annotations

from datetime import timedelta

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from components.naming import label_value
from components.retention import parse_duration, postgres_historical_cadence

from .props import (
    ALERT_POLICY,
    BACKUP_COMPONENTS,
    BACKUP_KINDS,
    BUCKET,
    CADENCE_SECONDS,
    COMPONENT_LABEL,
    CRON_JOB,
    HISTORICAL_PREFIX,
    MIN_PRUNING_SECONDS,
    RECENT_PREFIX,
    RECENT_SECONDS,
    SECRET,
    SECRET_PURPOSE,
    SNAPSHOT_CLASS,
    UNKNOWN,
    as_number,
    backup_kind,
    containers,
    describe_seconds,
    get,
    labels,
    pod_spec,
)
from .rule import ADVISORY, StackResource, stack_rule

DAY = 86400
_NONCURRENT_ONLY = ("daysSinceNoncurrentTime", "numNewerVersions", "noncurrentTimeBefore")


def _backup_buckets(resources: list[StackResource]) -> list[StackResource]:
    """Buckets carrying the program's window labels: the backup store(s)."""
    return [r for r in resources if r.type == BUCKET and RECENT_SECONDS in labels(r.props, "labels")]


def _lifecycle(bucket: StackResource) -> list[tuple[int, dict]]:
    rules = bucket.props.get("lifecycleRules")
    return [(i, r) for i, r in enumerate(rules) if isinstance(r, dict)] if isinstance(rules, list) else []


def _deletes_live_objects(rule: dict) -> bool:
    """A Delete rule that can remove current (live) objects; rules limited to noncurrent versions cannot."""
    if get(rule, "action", "type") != "Delete":
        return False
    condition = get(rule, "condition", default={}) or {}
    if not isinstance(condition, dict):
        return True
    if condition.get("withState") == "ARCHIVED":
        return False
    # Stack policies see the provider's outputs too, where unset conditions read 0 or "".
    return not any(condition.get(field) not in (None, 0, "", UNKNOWN) for field in _NONCURRENT_ONLY)


def _rule_prefixes(rule: dict) -> list[str]:
    """The prefixes a rule matches; a rule without matchesPrefixes matches every object ('')."""
    found = get(rule, "condition", "matchesPrefixes")
    if isinstance(found, list) and found:
        return [p if isinstance(p, str) else "" for p in found]
    return [""]


def _overlaps(rule_prefix: str, tier_label: str) -> bool:
    """Whether objects under `rule_prefix` and under the tier (given as its label form) can coincide."""
    prefix = label_value(rule_prefix)
    return tier_label.startswith(prefix) or prefix.startswith(tier_label)


def _describe_rule(index: int, rule: dict) -> str:
    condition = get(rule, "condition", default={}) or {}
    shown = {k: v for k, v in condition.items() if v not in (None, [], UNKNOWN)} if isinstance(condition, dict) else {}
    return f"lifecycle rule #{index} (Delete, {shown or 'no condition'})"


def _require_label(bucket: StackResource, label: str, report: ReportViolation) -> str | None:
    value = labels(bucket.props, "labels").get(label)
    if value in (None, "", UNKNOWN):
        report(
            f"Bucket '{bucket.name}': label {label} is missing, so the lifecycle rules cannot be checked "
            f"against the windows. Fix: declare the bucket through components/gcp.py backup_store(), which "
            f"labels it with the windows.",
            bucket.urn,
        )
        return None
    return value


# --- lifecycle: history -------------------------------------------------------------------------------


def _check_history_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _backup_buckets(resources):
        historical = _require_label(bucket, HISTORICAL_PREFIX, report)
        if historical is None:
            continue
        for index, rule in _lifecycle(bucket):
            if not _deletes_live_objects(rule):
                continue
            hits = [p for p in _rule_prefixes(rule) if _overlaps(p, historical)]
            if hits:
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes live objects under "
                    f"'{hits[0] or '(every prefix)'}', which includes the historical sets ({HISTORICAL_PREFIX}="
                    f"{historical}). "
                    f"Historical sets are kept from genesis, per migration id, and never expire by age. "
                    f"Fix: limit the rule with matchesPrefixes to the recent tier ('<prefix>recent/'), or to "
                    f"noncurrent objects (withState: ARCHIVED).",
                    bucket.urn,
                )


lifecycle_never_deletes_history = stack_rule(
    "lifecycle-never-deletes-history",
    "No bucket lifecycle rule deletes historical backup sets by age.",
    check=_check_history_kept,
    severity=Severity.CRITICAL,
    remediation="Give every Delete lifecycle rule a matchesPrefixes inside '<prefix>recent/'.",
)


# --- lifecycle: recent window -------------------------------------------------------------------------


def _check_recent_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _backup_buckets(resources):
        recent_label = _require_label(bucket, RECENT_PREFIX, report)
        window = as_number(labels(bucket.props, "labels").get(RECENT_SECONDS))
        if recent_label is None or window is None:
            continue
        for index, rule in _lifecycle(bucket):
            if not _deletes_live_objects(rule) or not any(_overlaps(p, recent_label) for p in _rule_prefixes(rule)):
                continue
            condition = get(rule, "condition", default={}) or {}
            by_date = [f for f in ("createdBefore", "customTimeBefore", "daysSinceCustomTime") if condition.get(f)]
            age = as_number(condition.get("age"))
            if by_date:
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes recent sets by "
                    f"{by_date[0]}, not by their age, so a set can go before the recent window "
                    f"{describe_seconds(window)} ends. Fix: use condition.age >= {_days(window)}.",
                    bucket.urn,
                )
            elif age is None or age * DAY < window:
                shown = "no age (immediately)" if age is None else f"{age:g} days"
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes recent sets after {shown}, "
                    f"before the recent window {describe_seconds(window)} ({RECENT_SECONDS}). Fix: set "
                    f"condition.age to at least {_days(window)} days (sv-backups:retention.recent).",
                    bucket.urn,
                )


def _days(seconds: float) -> int:
    return -(-int(seconds) // DAY)


lifecycle_keeps_recent_window = stack_rule(
    "lifecycle-keeps-recent-window",
    "Bucket lifecycle rules keep every recent backup set for at least the configured recent window.",
    check=_check_recent_kept,
    remediation="Set the recent tier's Delete rule to condition.age >= the recent window in days.",
)


# --- historical cadence vs pruning ----------------------------------------------------------------------


def _seal_windows(resources: list[StackResource]) -> tuple[StackResource | None, dict[str, timedelta]]:
    """The pruning windows the Postgres seal step is started with (--participant-pruning, --sequencer-pruning)."""
    for resource in resources:
        if resource.type != CRON_JOB or backup_kind(resource.props) != "postgres":
            continue
        for _kind, container in containers(pod_spec(resource.props)):
            if container.get("name") != "seal":
                continue
            args = [a for a in container.get("args") or [] if isinstance(a, str)]
            windows = {}
            for flag, key in (("--participant-pruning", "participant"), ("--sequencer-pruning", "sequencer")):
                if flag in args[:-1]:
                    try:
                        windows[key] = parse_duration(args[args.index(flag) + 1])
                    except ValueError:
                        continue
            return resource, windows
    return None, {}


def _check_cadence(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _backup_buckets(resources):
        values = labels(bucket.props, "labels")
        cadence = as_number(values.get(CADENCE_SECONDS))
        pruning = as_number(values.get(MIN_PRUNING_SECONDS))
        if cadence is None:
            _require_label(bucket, CADENCE_SECONDS, report)
        elif pruning is not None and cadence >= pruning:
            report(
                f"Bucket '{bucket.name}': historical sets are kept every {describe_seconds(cadence)} "
                f"({CADENCE_SECONDS}), not strictly more often than the smallest pruning window "
                f"{describe_seconds(pruning)} ({MIN_PRUNING_SECONDS}): pruned history would fall between two "
                f"kept sets. Fix: keep historical sets more often than the smallest of "
                f"sv-backups:retention.participantPruning / sequencerPruning (the program uses half).",
                bucket.urn,
            )
    job, windows = _seal_windows(resources)
    if job is not None and windows:
        used = postgres_historical_cadence(windows.get("participant"), windows.get("sequencer"))
        smallest = min(windows.values())
        if used >= smallest:
            report(
                f"CronJob '{job.name}': the seal step promotes a historical set every "
                f"{describe_seconds(used.total_seconds())} (from its --participant-pruning/--sequencer-pruning), "
                f"not strictly more often than the smallest pruning window "
                f"{describe_seconds(smallest.total_seconds())}. Fix: lengthen "
                f"sv-backups:retention.participantPruning / sequencerPruning (the cadence is half the smallest "
                f"window, at least 1h).",
                job.urn,
            )


historical_cadence_within_pruning = stack_rule(
    "historical-cadence-within-pruning",
    "Historical backups are kept strictly more often than the smallest participant/sequencer pruning window.",
    check=_check_cadence,
    severity=Severity.CRITICAL,
    remediation="Keep the historical cadence below the smallest pruning window (components/retention.py).",
)


# --- alerts ---------------------------------------------------------------------------------------------

ALERT_TYPES = ("stale", "failed")


def _backup_alerts(resources: list[StackResource]) -> list[StackResource]:
    return [r for r in resources if r.type == ALERT_POLICY and "svbackups-kind" in labels(r.props, "userLabels")]


def _check_alerts(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    present = set()
    for alert in _backup_alerts(resources):
        user_labels = labels(alert.props, "userLabels")
        if alert.props.get("enabled") is False:
            report(
                f"AlertPolicy '{alert.name}': enabled is false, so the {user_labels.get('svbackups-kind')} "
                f"{user_labels.get('svbackups-alert')} alert never fires. Fix: remove enabled: false.",
                alert.urn,
            )
            continue
        present.add((user_labels.get("svbackups-kind"), user_labels.get("svbackups-alert")))
    for kind in BACKUP_KINDS:
        for alert_type in ALERT_TYPES:
            if (kind, alert_type) not in present:
                what = (
                    "no completed backup for longer than the schedule allows"
                    if alert_type == "stale"
                    else "a failed backup run"
                )
                report(
                    f"No enabled AlertPolicy with userLabels svbackups-kind={kind}, svbackups-alert={alert_type}: "
                    f"nobody is told about {what} of {kind}. Fix: declare it with components/monitoring.py "
                    f"BackupAlerts (one stale and one failed alert per backup kind)."
                )


alerts_per_backup_kind = stack_rule(
    "alerts-per-backup-kind",
    "Every backup kind (postgres, cometbft, identities) has an enabled stale alert and failed alert.",
    check=_check_alerts,
    severity=Severity.HIGH,
    remediation="Declare the alerts with components/monitoring.py BackupAlerts.",
)


def _check_channels(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for alert in _backup_alerts(resources):
        channels = alert.props.get("notificationChannels")
        if channels is not UNKNOWN and not channels:
            report(
                f"AlertPolicy '{alert.name}': no notificationChannels, so the alert only shows in the console. "
                f"Fix: set sv-backups:monitoring.notificationChannels or notificationEmails.",
                alert.urn,
            )


alert_notification_channels = stack_rule(
    "alert-notification-channels",
    "Backup alerts notify someone (at least one notification channel).",
    check=_check_channels,
    level=ADVISORY,
    severity=Severity.MEDIUM,
    remediation="Set sv-backups:monitoring.notificationChannels or notificationEmails.",
)


# --- coverage -------------------------------------------------------------------------------------------


def _check_coverage(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    kinds = {backup_kind(r.props) for r in resources if r.type == CRON_JOB}
    for component, kind in BACKUP_COMPONENTS.items():
        if kind not in kinds:
            report(
                f"No CronJob labelled {COMPONENT_LABEL}={component}: the {kind} backup never runs (or the "
                f"policies cannot recognise it). Fix: declare it with its component (components/) and keep the "
                f"label."
            )
    if not _backup_buckets(resources):
        report(
            f"No bucket labelled {RECENT_SECONDS}: the backup bucket is missing or unlabelled, so the lifecycle "
            f"rules cannot be checked against the windows. Fix: declare it with components/gcp.py backup_store()."
        )
    if not any(r.type == SECRET and labels(r.props, "labels").get(SECRET_PURPOSE) == "identities" for r in resources):
        report(
            f"No Secret Manager secret labelled {SECRET_PURPOSE}=identities: identities dumps have nowhere to go "
            f"(or the policies cannot recognise it). Fix: declare it with components/gcp.py identities_secret()."
        )
    if not any(r.type == SNAPSHOT_CLASS for r in resources):
        report(
            "No VolumeSnapshotClass: CometBFT snapshots have no class with deletionPolicy Retain. Fix: declare "
            "it with components/cometbft.py."
        )


backup_coverage = stack_rule(
    "backup-coverage",
    "The stack declares every backup: the three CronJobs, the labelled backup bucket, the identities secret, "
    "the snapshot class.",
    check=_check_coverage,
    severity=Severity.CRITICAL,
    remediation="Declare the stack with components/program.py SvBackups.",
)

POLICIES = [
    lifecycle_never_deletes_history,
    lifecycle_keeps_recent_window,
    historical_cadence_within_pruning,
    alerts_per_backup_kind,
    backup_coverage,
    alert_notification_channels,
]
