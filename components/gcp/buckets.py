"""The backup buckets, laid out by rules/gcp_locations.py so that no set is lost with one region.

- dual-region (both regions in one multi-region): one configurable dual-region bucket with turbo replication;
  GCS itself keeps every object in both regions within 15 minutes.
- paired regional (any other pair, e.g. Zurich + Frankfurt, or two continents): a regional bucket in each
  region, each under a key in its own region, with the same lifecycle rules, retention policy, soft delete,
  public access prevention, uniform access and labels; every object the jobs write to the primary bucket is
  copied to the DR bucket by Storage Transfer Service (STS).

The copy, and why this way: the primary bucket publishes an OBJECT_FINALIZE notification per new object to a
Pub/Sub topic; an event-driven STS job reads the topic's subscription and copies each object to the DR bucket,
never overwriting and never deleting there. The backup writers stay exactly as they are, create-only on the
primary bucket and with no access to the DR bucket, and a DR-region outage never slows or fails a primary
backup: events wait in the subscription (up to 7 days) and the copy catches up. A daily catch-up transfer (same
source, sink and options) copies whatever the event stream missed (an outage longer than the subscription
keeps events, objects written before the stream started), so the DR bucket converges to the primary whatever
happened. Writing both copies from the jobs was the alternative: it would give each writer rights in the DR
region and make every backup wait on, or fail with, the DR region. STS's managed cross-bucket replication was
the other: it wants legacyBucketOwner on the source and creates its Pub/Sub resources outside this program,
where the policy pack cannot see them.

The STS service agent gets only what the copy needs: read on the source bucket, create (and list, to skip what
is there) on the DR bucket, subscriber on the subscription. The GCS service agent gets publisher on the topic
and encrypter/decrypter on each bucket key.
"""

from __future__ import annotations

import pulumi
from pulumi_gcp import kms, projects, pubsub, storage

from components.cloud import BackupStore
from components.gcp.context import GcpContext
from rules import retention
from rules.gcp_locations import BucketPlacement
from rules.naming import Names, label_value

# What STS needs on each side (storage-transfer docs, "Configure access to a sink/source: Cloud Storage"):
# buckets.get and objects.list on both, objects.get on the source, objects.create on the sink. None of these
# roles can delete or overwrite an object.
TRANSFER_SOURCE_ROLES = ("roles/storage.objectViewer", "roles/storage.legacyBucketReader")
TRANSFER_SINK_ROLES = ("roles/storage.objectCreator", "roles/storage.legacyBucketReader")
# Pub/Sub keeps an unacknowledged event at most 7 days: the event-driven copy can catch up on an outage that
# long by itself; the daily catch-up transfer covers anything longer.
EVENT_RETENTION = "604800s"
# STS's recommended acknowledgement deadline for event-driven transfers.
EVENT_ACK_DEADLINE_SECONDS = 300
# The catch-up transfer runs daily at this time (UTC) and leaves objects younger than an hour to the event
# stream, so the two never race for the same new object. A start date in the past makes STS start on the day
# after creation; a constant keeps the plan stable.
CATCH_UP_INTERVAL = "86400s"
CATCH_UP_START_DATE = (2025, 1, 1)
CATCH_UP_TIME_UTC = (3, 30)
CATCH_UP_MIN_AGE = "3600s"
DR_REGION_LABEL = "svbackups-dr-region"


def copy_subscription(names: Names) -> str:
    """The subscription the event-driven copy reads (its backlog is the copy's lag: components/gcp/alerts.py)."""
    return names.resource("backups", "to-dr")


def primary_bucket_name(context: GcpContext) -> str:
    """The name of the bucket the jobs write to (its turbo replication is watched: components/gcp/alerts.py)."""
    return context.names.bucket(context.project, context.settings.storage.bucket_name)


def declare_store(context: GcpContext, *, parent: pulumi.Resource) -> BackupStore:
    settings = context.settings
    store_config = settings.storage
    layout = context.layout
    names = context.names
    name = primary_bucket_name(context)
    gcs_agent = storage.get_project_service_account_output(project=context.project).email_address.apply(
        lambda email: f"serviceAccount:{email}"
    )
    if layout.replica is None:
        key = context.key(layout.primary.kms_location, "bucket", parent)
        grant = context.grant_key(key, names.resource("bucket-key-gcs-agent"), gcs_agent, parent)
        bucket = _bucket(context, names.resource("backups"), name, layout.primary, key, grant, _labels(context), parent)
        # The bucket spans both regions: it is its own DR copy.
        return BackupStore(name=bucket.name, url=_url(bucket, store_config.prefix), resource=bucket)

    labels = _labels(context)
    buckets = []
    for logical, bucket_name, placement in (
        (names.resource("backups"), name, layout.primary),
        (names.resource("backups", "dr"), names.dr_bucket(name), layout.replica),
    ):
        key = context.key(placement.kms_location, "bucket", parent)
        grant = context.grant_key(
            key, names.resource("bucket-key-gcs-agent", placement.kms_location), gcs_agent, parent
        )
        buckets.append(_bucket(context, logical, bucket_name, placement, key, grant, labels, parent))
    primary, replica = buckets
    _replicate(context, primary, replica, gcs_agent, parent=parent)
    return BackupStore(
        name=primary.name,
        url=_url(primary, store_config.prefix),
        resource=primary,
        dr_name=replica.name,
        dr_url=_url(replica, store_config.prefix),
    )


def _labels(context: GcpContext) -> dict[str, str]:
    settings = context.settings
    store_config = settings.storage
    recent = settings.retention.recent
    derived = settings.derived
    labels = {
        "svbackups-node": settings.node.name,
        # The windows the lifecycle rules were sized from, for the CrossGuard stack policy to check.
        "svbackups-recent-seconds": str(int(recent.total_seconds())),
        "svbackups-historical-cadence-seconds": str(int(derived.postgres_historical_cadence.total_seconds())),
        "svbackups-recent-prefix": label_value(store_config.prefix + retention.RECENT_TIER),
        "svbackups-historical-prefix": label_value(store_config.prefix + retention.HISTORICAL_TIER),
        # The region the stack declared for its DR copy (a dual-region holds both; policy: production-dr).
        DR_REGION_LABEL: context.dr_region,
    }
    if derived.min_pruning_window is not None:
        labels["svbackups-min-pruning-seconds"] = str(int(derived.min_pruning_window.total_seconds()))
    return labels


def _bucket(
    context: GcpContext,
    logical_name: str,
    bucket_name: str,
    placement: BucketPlacement,
    key: kms.CryptoKey,
    grant: pulumi.Resource,
    labels: dict[str, str],
    parent: pulumi.Resource,
) -> storage.Bucket:
    store_config = context.settings.storage
    recent = context.settings.retention.recent
    historical_class = store_config.historical_class("gcp")
    rules = retention.bucket_lifecycle(
        store_config.prefix, recent, None if historical_class == "STANDARD" else historical_class
    )
    dual = bool(placement.data_locations)
    return storage.Bucket(
        logical_name,
        name=bucket_name,
        project=context.project,
        location=placement.location,
        custom_placement_config=storage.BucketCustomPlacementConfigArgs(data_locations=list(placement.data_locations))
        if dual
        else None,
        # Turbo replication: every object is in both regions of the dual-region within 15 minutes.
        rpo="ASYNC_TURBO" if dual else None,
        storage_class="STANDARD",
        uniform_bucket_level_access=True,
        public_access_prevention="enforced",
        encryption=storage.BucketEncryptionArgs(default_kms_key_name=key.id),
        # GCS does not allow Object Versioning together with a retention policy. The retention policy is
        # the stronger guarantee: no object (not even by an admin) can be deleted or replaced before it
        # is `recent` old; soft delete keeps deleted objects recoverable for `softDelete` on top.
        retention_policy=storage.BucketRetentionPolicyArgs(
            retention_period=str(retention.whole_days(recent) * 86400), is_locked=False
        ),
        soft_delete_policy=storage.BucketSoftDeletePolicyArgs(
            retention_duration_seconds=int(store_config.soft_delete.total_seconds())
        ),
        lifecycle_rules=[_lifecycle_rule(rule) for rule in rules],
        labels=labels,
        force_destroy=False,
        opts=pulumi.ResourceOptions(parent=parent, protect=True, depends_on=[grant]),
    )


def _url(bucket: storage.Bucket, prefix: str) -> pulumi.Output[str]:
    return pulumi.Output.concat("gs://", bucket.name, "/", prefix.rstrip("/")).apply(lambda url: url.rstrip("/"))


def _lifecycle_rule(rule: retention.LifecycleRule) -> storage.BucketLifecycleRuleArgs:
    return storage.BucketLifecycleRuleArgs(
        action=storage.BucketLifecycleRuleActionArgs(type=rule.action, storage_class=rule.storage_class),
        condition=storage.BucketLifecycleRuleConditionArgs(
            age=rule.age_days, matches_prefixes=[rule.prefix] if rule.prefix else None
        ),
    )


# --- the copy to the DR bucket ----------------------------------------------------------------------------


def _replicate(
    context: GcpContext,
    primary: storage.Bucket,
    replica: storage.Bucket,
    gcs_agent: pulumi.Output[str],
    *,
    parent: pulumi.Resource,
) -> None:
    """Notifications of the primary bucket -> topic -> subscription -> event-driven STS job, and the daily
    catch-up job; each principal with only the grants its step needs."""
    names, project = context.names, context.project
    prefix = context.settings.storage.prefix
    child = pulumi.ResourceOptions(parent=parent)

    # The events name objects (set ids, roles, database names), not their contents; they are kept under the
    # operator's key all the same, and only in the primary region: with that region gone there is nothing
    # left to copy from.
    events_key = context.key(context.region, "events", parent)
    pubsub_agent = projects.ServiceIdentity(
        names.resource("pubsub-agent"), project=project, service="pubsub.googleapis.com", opts=child
    )
    events_key_grant = context.grant_key(
        events_key, names.resource("events-key-pubsub-agent"), pubsub_agent.member, parent
    )
    topic = pubsub.Topic(
        names.resource("backups", "events"),
        name=names.resource("backups", "events"),
        project=project,
        kms_key_name=events_key.id,
        message_storage_policy=pubsub.TopicMessageStoragePolicyArgs(allowed_persistence_regions=[context.region]),
        labels={"svbackups-node": context.settings.node.name},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[events_key_grant]),
    )
    publisher = pubsub.TopicIAMMember(
        names.resource("backups-events", "gcs-publisher"),
        project=project,
        topic=topic.name,
        role="roles/pubsub.publisher",
        member=gcs_agent,
        opts=child,
    )
    notification = storage.Notification(
        names.resource("backups", "new-objects"),
        bucket=primary.name,
        topic=topic.id,
        payload_format="JSON_API_V1",
        # New objects only: deletions (lifecycle) must not reach the DR bucket, which applies its own rules.
        event_types=["OBJECT_FINALIZE"],
        object_name_prefix=prefix or None,
        # GCS checks that its service agent may publish before it accepts the notification.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[publisher]),
    )
    subscription = pubsub.Subscription(
        copy_subscription(names),
        name=copy_subscription(names),
        project=project,
        topic=topic.id,
        ack_deadline_seconds=EVENT_ACK_DEADLINE_SECONDS,
        message_retention_duration=EVENT_RETENTION,
        # A subscription expires after 31 idle days by default; this one must outlive quiet periods.
        expiration_policy=pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
        labels={"svbackups-node": context.settings.node.name},
        opts=child,
    )

    transfer_agent = storage.get_transfer_project_service_account_output(project=project).member
    subscriber = pubsub.SubscriptionIAMMember(
        names.resource("backups-to-dr", "transfer-subscriber"),
        project=project,
        subscription=subscription.name,
        role="roles/pubsub.subscriber",
        member=transfer_agent,
        opts=child,
    )
    bucket_grants: list[pulumi.Resource] = []
    for bucket, side, roles in (
        (primary, "backups", TRANSFER_SOURCE_ROLES),
        (replica, "backups-dr", TRANSFER_SINK_ROLES),
    ):
        for role in roles:
            bucket_grants.append(
                storage.BucketIAMMember(
                    names.resource(side, "transfer", role.rsplit(".", 1)[-1].lower()),
                    bucket=bucket.name,
                    role=role,
                    member=transfer_agent,
                    opts=child,
                )
            )

    spec = storage.TransferJobTransferSpecArgs(
        gcs_data_source=storage.TransferJobTransferSpecGcsDataSourceArgs(bucket_name=primary.name, path=prefix or None),
        gcs_data_sink=storage.TransferJobTransferSpecGcsDataSinkArgs(bucket_name=replica.name, path=prefix or None),
        transfer_options=_copy_only(),
    )
    node = context.settings.node.name
    # STS checks its access to the source, the sink and the subscription when a job is created.
    storage.TransferJob(
        names.resource("backups", "to-dr"),
        description=f"sv-backups {node}: copy every new backup object to the DR bucket (event-driven)",
        project=project,
        event_stream=storage.TransferJobEventStreamArgs(
            name=pulumi.Output.concat("projects/", project, "/subscriptions/", subscription.name)
        ),
        transfer_spec=spec,
        logging_config=_failed_copies_logged(),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[*bucket_grants, subscriber, notification]),
    )
    start_year, start_month, start_day = CATCH_UP_START_DATE
    hours, minutes = CATCH_UP_TIME_UTC
    storage.TransferJob(
        names.resource("backups", "to-dr", "catch-up"),
        description=f"sv-backups {node}: daily catch-up copy of backup objects missing in the DR bucket",
        project=project,
        schedule=storage.TransferJobScheduleArgs(
            schedule_start_date=storage.TransferJobScheduleScheduleStartDateArgs(
                year=start_year, month=start_month, day=start_day
            ),
            start_time_of_day=storage.TransferJobScheduleStartTimeOfDayArgs(
                hours=hours, minutes=minutes, seconds=0, nanos=0
            ),
            repeat_interval=CATCH_UP_INTERVAL,
        ),
        transfer_spec=storage.TransferJobTransferSpecArgs(
            gcs_data_source=spec.gcs_data_source,
            gcs_data_sink=spec.gcs_data_sink,
            object_conditions=storage.TransferJobTransferSpecObjectConditionsArgs(
                min_time_elapsed_since_last_modification=CATCH_UP_MIN_AGE
            ),
            transfer_options=_copy_only(),
        ),
        logging_config=_failed_copies_logged(),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=bucket_grants),
    )


def _copy_only() -> storage.TransferJobTransferSpecTransferOptionsArgs:
    """Copy what is missing; never overwrite, never delete (at the sink or at the source)."""
    return storage.TransferJobTransferSpecTransferOptionsArgs(
        overwrite_when="NEVER",
        overwrite_objects_already_existing_in_sink=False,
        delete_objects_unique_in_sink=False,
        delete_objects_from_source_after_transfer=False,
        metadata_options=storage.TransferJobTransferSpecTransferOptionsMetadataOptionsArgs(
            # The DR bucket's own key (in the DR region) and its own class; the source's creation time is kept
            # as customTime, so a check can tell how long after the primary the copy landed.
            kms_key="KMS_KEY_DESTINATION_BUCKET_DEFAULT",
            storage_class="STORAGE_CLASS_DESTINATION_BUCKET_DEFAULT",
            time_created="TIME_CREATED_PRESERVE_AS_CUSTOM_TIME",
        ),
    )


def _failed_copies_logged() -> storage.TransferJobLoggingConfigArgs:
    # Every failed listing or copy is an ERROR entry in Cloud Logging (docs/gcp-regions.md shows the query).
    return storage.TransferJobLoggingConfigArgs(log_actions=["FIND", "COPY"], log_action_states=["FAILED"])
