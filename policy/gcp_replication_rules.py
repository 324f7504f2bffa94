"""Rules on how backup sets survive the loss of the primary region (docs/gcp-regions.md).

A backup bucket the Postgres jobs write to either keeps its data in two regions itself (a dual-region or a
multi-region), or is regional and then every object must reach a DR bucket in `svbackups-dr-region`: an
event-driven Storage Transfer job fed by the bucket's own notifications, wired end to end (notification ->
topic -> subscription -> job, each service agent with its grant), plus a scheduled catch-up job, both into a
declared bucket in the DR region held to the same windows. A transfer job that touches backups only ever adds
objects: it never deletes (at the source or the sink) and never overwrites. A dual-region bucket replicates
itself with turbo replication, and an alert watches that replication's delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from rules.gcp_locations import MULTI_REGION_LOCATIONS, PREDEFINED_DUAL_REGIONS, bucket_region

from .props import (
    ALERT_POLICY,
    BUCKET,
    CADENCE_SECONDS,
    MIN_PRUNING_SECONDS,
    RECENT_SECONDS,
    TRANSFER_JOB,
    UNKNOWN,
    as_number,
    gcs_copies,
    get,
    iam_grants,
    labels,
)
from .rule import StackResource, resource_rule, stack_rule
from .stack_rules import dest_prefixes

NOTIFICATION = "gcp:storage/notification:Notification"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
DR_REGION_LABEL = "svbackups-dr-region"
# The service agents that do the copy (their emails end so in every project).
TRANSFER_AGENT = "@storage-transfer-service.iam.gserviceaccount.com"
GCS_AGENT = "@gs-project-accounts.iam.gserviceaccount.com"
# Roles that give each step the permission it cannot do without (objects.get on the source, objects.create on
# the sink, consuming the subscription, publishing to the topic). Bucket roles that could also delete are left
# out on purpose: bucket-writer-cannot-delete refuses them.
SOURCE_READ_ROLES = frozenset({"roles/storage.objectViewer", "roles/storage.legacyObjectReader"})
SINK_CREATE_ROLES = frozenset({"roles/storage.objectCreator"})
SUBSCRIBER_ROLES = frozenset({"roles/pubsub.subscriber", "roles/pubsub.editor", "roles/pubsub.admin"})
PUBLISHER_ROLES = frozenset({"roles/pubsub.publisher", "roles/pubsub.editor", "roles/pubsub.admin"})
# The catch-up copy must come round at least daily (STS's default repeat interval is 24 h).
MAX_CATCH_UP_SECONDS = 86400
# Object conditions that would leave part of the sets behind. minTimeElapsedSinceLastModification only delays
# a copy (the catch-up leaves the newest objects to the event stream) and is allowed up to the catch-up interval.
_PARTIAL_CONDITIONS = (
    "includePrefixes",
    "excludePrefixes",
    "maxTimeElapsedSinceLastModification",
    "lastModifiedSince",
    "lastModifiedBefore",
    "matchGlob",
)
_WINDOW_LABELS = (RECENT_SECONDS, CADENCE_SECONDS, MIN_PRUNING_SECONDS)


# --- transfer jobs only ever add objects -------------------------------------------------------------------


def _check_copy_only(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    where = f"TransferJob '{args.name}'"
    for spec_key in ("transferSpec", "replicationSpec"):
        options = get(props, spec_key, "transferOptions", default={}) or {}
        if get(props, spec_key) is None or options is UNKNOWN:
            continue
        for flag, consequence in (
            ("deleteObjectsFromSourceAfterTransfer", "deletes every backup object from the source once copied"),
            ("deleteObjectsUniqueInSink", "deletes from the sink every object the source no longer has, so a "
             "deletion (or a lifecycle rule) at the source empties the DR copy too"),
        ):  # fmt: skip
            if get(options, flag) is True:
                report(f"{where}: {spec_key}.transferOptions.{flag} is true: it {consequence}. Fix: set it to false.")
        overwrite = get(options, "overwriteWhen")
        if overwrite is not UNKNOWN and overwrite != "NEVER":
            shown = overwrite or "unset (STS then overwrites objects that differ)"
            report(
                f"{where}: {spec_key}.transferOptions.overwriteWhen is {shown}: a changed source object would "
                f"replace the backup copy at the sink. Fix: set overwriteWhen: NEVER (components/gcp/buckets.py)."
            )
        elif get(options, "overwriteObjectsAlreadyExistingInSink") is True:
            report(
                f"{where}: {spec_key}.transferOptions.overwriteObjectsAlreadyExistingInSink is true, which "
                f"contradicts overwriteWhen: NEVER. Fix: set it to false."
            )


transfer_copy_only = resource_rule(
    "transfer-copy-only",
    "Storage Transfer jobs never delete (at the source or the sink) and never overwrite objects at the sink.",
    types=[TRANSFER_JOB],
    check=_check_copy_only,
    severity=Severity.CRITICAL,
    remediation="Set transferOptions.overwriteWhen: NEVER, deleteObjectsUniqueInSink and "
    "deleteObjectsFromSourceAfterTransfer: false.",
)


# --- every set survives the primary region's loss -------------------------------------------------------


@dataclass(frozen=True)
class _Copy:
    job: StackResource
    source_path: str
    sink: str
    sink_path: str


def _tail(value) -> str | None:
    """The last path segment of a resource name (`projects/p/topics/t` -> `t`), None when unknown."""
    return value.rsplit("/", 1)[-1] if isinstance(value, str) and value else None


def _region(bucket: StackResource) -> str | None:
    location = bucket.props.get("location")
    if not isinstance(location, str):
        return None
    placement = get(bucket.props, "customPlacementConfig", "dataLocations", default=[]) or []
    return bucket_region(location, [p for p in placement if isinstance(p, str)])


def _granted(
    resources: list[StackResource], type_prefix: str, field: str, target: str, roles: frozenset, agent: str
) -> bool:
    """Some IAM member/binding/policy of `type_prefix` on `target` (matched by its last path segment), or of the
    project, gives one of `roles` to the service agent (a member unknown during preview counts)."""
    for resource in resources:
        on_target = resource.type.startswith(type_prefix) and _tail(resource.props.get(field)) == target
        if not (on_target or resource.type.startswith("gcp:projects/iAM")):
            continue
        for role, members in iam_grants(resource.props):
            if role in roles and any(m is UNKNOWN or (isinstance(m, str) and m.endswith(agent)) for m in members):
                return True
    return False


def _conditions_problem(job: StackResource, spec: dict) -> str | None:
    conditions = get(spec, "objectConditions", default={}) or {}
    if not isinstance(conditions, dict):
        return None
    partial = [c for c in _PARTIAL_CONDITIONS if conditions.get(c) not in (None, "", [], UNKNOWN)]
    delay = as_number(conditions.get("minTimeElapsedSinceLastModification"))
    if delay is not None and delay > MAX_CATCH_UP_SECONDS:
        partial.append("minTimeElapsedSinceLastModification")
    if partial:
        return (
            f"TransferJob '{job.name}' copies only part of the objects (objectConditions "
            f"{', '.join(partial)}), while every backup object must reach the DR bucket"
        )
    return None


def _event_chain_problems(resources: list[StackResource], source: str, prefixes: list[str], copy: _Copy) -> list[str]:
    """Why the events of `source` would not reach `copy.job`, or why it could not act on them."""
    job = copy.job
    stream = get(job.props, "eventStream", "name")
    if stream is UNKNOWN:
        return []
    expires = get(job.props, "eventStream", "eventStreamExpirationTime")
    problems = []
    if expires not in (None, "", UNKNOWN):
        problems.append(
            f"TransferJob '{job.name}' stops listening at {expires} (eventStream.eventStreamExpirationTime)"
        )
    subscription = next(
        (r for r in resources if r.type == SUBSCRIPTION and _tail(r.props.get("name")) == _tail(stream)), None
    )
    if subscription is None:
        return [
            *problems,
            f"TransferJob '{job.name}' reads events from '{stream}', a subscription this stack does not declare",
        ]
    topic = _tail(subscription.props.get("topic"))
    sends = [
        r
        for r in resources
        if r.type == NOTIFICATION
        and r.props.get("bucket") == source
        and _tail(r.props.get("topic")) == topic
        and r.props.get("payloadFormat") == "JSON_API_V1"
        and (not r.props.get("eventTypes") or "OBJECT_FINALIZE" in r.props["eventTypes"])
        and all(p.startswith(r.props.get("objectNamePrefix") or "") for p in prefixes)
    ]
    if not sends:
        covering = "no objectNamePrefix" if prefixes == [""] else f"an objectNamePrefix covering {prefixes}"
        problems.append(
            f"no Notification of bucket {source} sends its new objects (eventTypes OBJECT_FINALIZE, payloadFormat "
            f"JSON_API_V1, {covering}) to topic '{topic}', which subscription '{subscription.name}' reads"
        )
    if not _granted(resources, "gcp:pubsub/topicIAM", "topic", topic, PUBLISHER_ROLES, GCS_AGENT):
        problems.append(f"the Cloud Storage service agent may not publish to topic '{topic}' (roles/pubsub.publisher)")
    name = _tail(subscription.props.get("name"))
    if not _granted(resources, "gcp:pubsub/subscriptionIAM", "subscription", name, SUBSCRIBER_ROLES, TRANSFER_AGENT):
        problems.append(
            f"the Storage Transfer service agent may not read subscription '{name}' (roles/pubsub.subscriber)"
        )
    return problems


def _sink_problems(
    resources: list[StackResource], buckets: dict[str, StackResource], source: StackResource, copy: _Copy
) -> list[str]:
    sink = buckets.get(copy.sink)
    job = copy.job.name
    if sink is None:
        return [
            f"TransferJob '{job}' copies into gs://{copy.sink}, a bucket this stack does not declare, so nothing "
            f"shows it is in the DR region and protected like the primary"
        ]
    problems = []
    for bucket, roles, need in ((source, SOURCE_READ_ROLES, "read"), (sink, SINK_CREATE_ROLES, "create objects in")):
        if not _granted(resources, "gcp:storage/bucketIAM", "bucket", bucket.props["name"], roles, TRANSFER_AGENT):
            problems.append(
                f"the Storage Transfer service agent may not {need} bucket '{bucket.name}' (one of "
                f"{', '.join(sorted(roles))}, on the bucket or the project)"
            )
    dr_region = labels(source.props, "labels").get(DR_REGION_LABEL)
    sink_region, source_region = _region(sink), _region(source)
    if sink_region is not None and sink_region == source_region:
        problems.append(
            f"TransferJob '{job}' copies into bucket '{sink.name}', which is in the primary's region "
            f"{source_region}: one region's loss takes both"
        )
    elif isinstance(dr_region, str) and sink_region != dr_region:
        problems.append(
            f"TransferJob '{job}' copies into bucket '{sink.name}' in {sink_region or sink.props.get('location')}, "
            f"not in the DR region {dr_region} (label {DR_REGION_LABEL})"
        )
    source_labels, sink_labels = labels(source.props, "labels"), labels(sink.props, "labels")
    for label in _WINDOW_LABELS:
        if sink_labels.get(label) != source_labels.get(label):
            problems.append(
                f"the DR bucket '{sink.name}' has label {label}={sink_labels.get(label)}, the primary "
                f"{source_labels.get(label)}: its retention and lifecycle rules would be checked against other "
                f"windows than the sets it holds"
            )
    kms = get(copy.job.props, "transferSpec", "transferOptions", "metadataOptions", "kmsKey")
    if kms == "KMS_KEY_PRESERVE":
        problems.append(
            f"TransferJob '{job}' keeps each object's source key (metadataOptions.kmsKey KMS_KEY_PRESERVE), a key "
            f"in the primary region: losing the region loses the key to every copy"
        )
    return problems


def _check_region_loss(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    buckets = {r.props["name"]: r for r in resources if r.type == BUCKET and isinstance(r.props.get("name"), str)}
    copies: dict[str, list[_Copy]] = {}
    for resource in resources:
        if resource.type == TRANSFER_JOB and get(resource.props, "status") not in ("DISABLED", "DELETED"):
            for source, source_path, sink, sink_path in gcs_copies(resource.props):
                if isinstance(source, str) and isinstance(sink, str):
                    copies.setdefault(source, []).append(_Copy(resource, str(source_path), sink, str(sink_path)))
    for name, prefixes in sorted(dest_prefixes(resources, "gs").items()):
        source = buckets.get(name)
        # A --dest outside the stack: lifecycle-never-deletes-history and backup-coverage speak for it.
        if source is None or _region(source) is None:
            continue
        written = sorted(prefixes)
        fix = (
            "Fix: let the program declare the bucket (components/gcp/buckets.py: a dual-region where GCS allows "
            "the pair, else a regional bucket per region with the event-driven and catch-up copies)."
        )
        whole = [c for c in copies.get(name, []) if all(p.startswith(c.source_path) for p in written)]
        event = [c for c in whole if get(c.job.props, "eventStream") is not None]
        if not copies.get(name):
            report(
                f"Bucket '{source.name}' is regional ({_region(source)}) and nothing copies its objects to another "
                f"region: the primary region's loss loses every backup set. {fix}",
                source.urn,
            )
            continue
        if not whole:
            report(
                f"Bucket '{source.name}': its transfer jobs copy only a part of the bucket (source paths "
                f"{sorted({c.source_path for c in copies[name]})}), not every prefix the Postgres steps write to "
                f"({written}). {fix}",
                source.urn,
            )
            continue
        complete = []
        for copy in event:
            spec = get(copy.job.props, "transferSpec", default={}) or {}
            problems = [
                *_sink_problems(resources, buckets, source, copy),
                *filter(None, [_conditions_problem(copy.job, spec)]),
                *_event_chain_problems(resources, name, written, copy),
            ]
            if not problems:
                complete.append(copy)
            for problem in problems:
                report(f"Bucket '{source.name}' (regional, {_region(source)}): {problem}. {fix}", copy.job.urn)
        if not event:
            report(
                f"Bucket '{source.name}' is regional ({_region(source)}) and no event-driven TransferJob "
                f"(eventStream) copies its new objects to the DR bucket: sets reach the DR region late or never. "
                f"{fix}",
                source.urn,
            )
        for copy in complete:
            if not _catches_up(whole, copy):
                report(
                    f"Bucket '{source.name}' (regional, {_region(source)}): no scheduled TransferJob copies it to "
                    f"gs://{copy.sink} at least daily, so objects the event stream missed (an outage longer "
                    f"than the subscription keeps events) never reach the DR bucket. {fix}",
                    source.urn,
                )


def _catches_up(copies: list[_Copy], event: _Copy) -> bool:
    """A scheduled job, at least daily, copies every object into the event-driven copy's sink."""
    for copy in copies:
        schedule = get(copy.job.props, "schedule")
        if copy.sink != event.sink or copy.sink_path != event.sink_path or not isinstance(schedule, dict):
            continue
        interval = as_number(schedule.get("repeatInterval"))
        spec = get(copy.job.props, "transferSpec", default={}) or {}
        if (interval is None or interval <= MAX_CATCH_UP_SECONDS) and _conditions_problem(copy.job, spec) is None:
            return True
    return False


backup_bucket_survives_region_loss = stack_rule(
    "backup-bucket-survives-region-loss",
    "Every bucket the Postgres jobs write to keeps its objects in two regions: a dual- or multi-region bucket, or "
    "a regional bucket whose every object an event-driven Storage Transfer job (wired from the bucket's "
    "notifications) and a daily catch-up job copy into a declared bucket in the DR region with the same windows.",
    check=_check_region_loss,
    severity=Severity.CRITICAL,
    remediation="Declare the buckets with components/gcp/buckets.py (dual-region, or paired regional buckets with "
    "the event-driven and catch-up transfers).",
)


# --- a dual-region bucket's replication is watched ----------------------------------------------------------

# Cloud Monitoring's turbo replication metric (components/gcp/alerts.py TURBO_MAX_DELAY, where its source is
# cited): the age of the oldest object not yet in both regions. GCS reports it for turbo-replicated buckets only.
TURBO_MAX_DELAY = "storage.googleapis.com/replication/turbo_max_delay"
TURBO_RPO = "ASYNC_TURBO"
# The alert may not wait longer than the SV backup interval: a DR copy a whole set behind is what it must catch.
MAX_LAG_SECONDS = 4 * 3600
_FIRING = ("COMPARISON_GT", "COMPARISON_GE")


def _dual_region(bucket: StackResource) -> bool:
    """A dual-region bucket (configurable over two regions, or predefined such as NAM4): where turbo applies."""
    location = bucket.props.get("location")
    if not isinstance(location, str):
        return False
    placement = get(bucket.props, "customPlacementConfig", "dataLocations", default=[]) or []
    distinct = {p.upper() for p in placement if isinstance(p, str)}
    return location.upper() in PREDEFINED_DUAL_REGIONS or (
        location.upper() in MULTI_REGION_LOCATIONS and len(distinct) == 2
    )


def _watches(condition: dict, bucket: str) -> bool:
    """The condition's filter reads the turbo delay metric of this bucket (an unknown filter counts)."""
    query = get(condition, "conditionThreshold", "filter")
    if query is UNKNOWN:
        return True
    return (
        isinstance(query, str)
        and f'metric.type="{TURBO_MAX_DELAY}"' in query
        and f'resource.labels.bucket_name="{bucket}"' in query
    )


def _alert_defects(alert: StackResource, condition: dict, bound: float) -> list[str]:
    where = f"AlertPolicy '{alert.name}'"
    threshold = get(condition, "conditionThreshold", default={}) or {}
    defects = []
    if alert.props.get("enabled") is False:
        defects.append(f"{where} is disabled (enabled: false)")
    comparison = threshold.get("comparison")
    if comparison is not UNKNOWN and comparison not in _FIRING:
        defects.append(f"{where} fires on comparison {comparison}, not when the delay grows above a bound")
    value = as_number(threshold.get("thresholdValue"))
    if threshold.get("thresholdValue") is not UNKNOWN and (value is None or value <= 0 or value > bound):
        defects.append(
            f"{where} fires only above {threshold.get('thresholdValue')!r} s of delay; the bound is at most "
            f"{int(bound)} s (maxLagSeconds)"
        )
    # Whom it notifies is alert-notification-channels' question (coverage_rules.py), for this alert as for every
    # other: one rule, mandatory on production stacks by their policy config, advisory elsewhere.
    return defects


def _check_turbo_alert(resources: list[StackResource], args: StackValidationArgs, report: ReportViolation) -> None:
    bound = as_number((args.get_config() or {}).get("maxLagSeconds")) or MAX_LAG_SECONDS
    buckets = {r.props["name"]: r for r in resources if r.type == BUCKET and isinstance(r.props.get("name"), str)}
    fix = (
        "Fix: let the program declare the bucket and its alerts (components/gcp/buckets.py rpo ASYNC_TURBO, "
        "components/gcp/alerts.py; the bound is sv-backups:dr.maxReplicationLag)."
    )
    for name in sorted(dest_prefixes(resources, "gs")):
        bucket = buckets.get(name)
        if bucket is None or not _dual_region(bucket):
            continue
        where = f"Bucket '{bucket.name}' (dual-region)"
        rpo = bucket.props.get("rpo")
        if rpo is not UNKNOWN and rpo != TURBO_RPO:
            report(
                f"{where}: rpo is {rpo or 'unset (DEFAULT)'}: default replication copies only 99.9% of new objects "
                f"to the second region within an hour (all within 12 h), and GCS reports no {TURBO_MAX_DELAY} to "
                f"alert on. {fix}",
                bucket.urn,
            )
        watching = [
            (alert, condition)
            for alert in resources
            if alert.type == ALERT_POLICY
            for condition in (alert.props.get("conditions") or [])
            if isinstance(condition, dict) and _watches(condition, name)
        ]
        defects = [_alert_defects(alert, condition, bound) for alert, condition in watching]
        if not watching:
            report(
                f"{where}: no AlertPolicy watches its replication ({TURBO_MAX_DELAY} of bucket {name}), so nobody "
                f"learns that sets written since are in the primary region only. {fix}",
                bucket.urn,
            )
        elif all(defects):
            for (alert, _condition), found in zip(watching, defects, strict=True):
                report(
                    f"{where}: its replication alert would not tell anyone in time: {'; '.join(found)}. {fix}",
                    alert.urn,
                )


dual_region_replication_alert = stack_rule(
    "dual-region-replication-alert",
    "Every dual-region bucket the Postgres jobs write to uses turbo replication, and an enabled AlertPolicy "
    "fires when its replication delay (storage.googleapis.com/replication/turbo_max_delay) "
    "exceeds a bound of at most the backup interval.",
    check=_check_turbo_alert,
    severity=Severity.HIGH,
    remediation="Declare the bucket with components/gcp/buckets.py (rpo ASYNC_TURBO) and its alert with "
    "components/gcp/alerts.py (threshold sv-backups:dr.maxReplicationLag).",
    config={
        "maxLagSeconds": {
            "type": "integer",
            "minimum": 900,
            "maximum": MAX_LAG_SECONDS,
            "default": MAX_LAG_SECONDS,
            "description": "Largest allowed alert threshold on the replication delay, in seconds (900, turbo's "
            "15-minute target, to 14400, the backup interval).",
        }
    },
)

POLICIES = [transfer_copy_only, backup_bucket_survives_region_loss, dual_region_replication_alert]
