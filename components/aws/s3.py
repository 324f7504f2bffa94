"""The backup bucket on S3 and its DR replica: locked, encrypted, private, sized from the windows.

Each of the two buckets gets the same protections as separate resources (pulumi-aws 7 splits a bucket's
settings that way): Block Public Access (all four), Object Ownership BucketOwnerEnforced (no ACLs), SSE-KMS
with its region's key and S3 bucket keys, versioning, Object Lock with a default retention of the recent
window, the lifecycle rules of `rules.retention.bucket_lifecycle` plus the version clean-up S3 needs,
and a bucket policy (`policies.bucket_policy`). The primary replicates every new object to the DR bucket;
deletions (delete markers, lifecycle expirations) are not replicated: the DR bucket expires objects by its
own, identical rules.

The security settings are `retain_on_delete`: removing one from the program leaves the live bucket as it is
rather than weakening it. The buckets are `protect`ed and never `force_destroy`ed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_aws import iam, kms
from pulumi_aws import s3 as aws_s3

from components.aws import policies
from components.aws.context import AwsContext
from components.cloud import BackupStore
from components.settings import Settings
from rules import retention
from rules.naming import Names, label_value

# No one, not even the account root, can delete or overwrite a version before its retention ends (GOVERNANCE
# would let holders of s3:BypassGovernanceRetention do it). The cost is bounded: a version is locked for the
# recent window only.
DEFAULT_OBJECT_LOCK_MODE = "COMPLIANCE"
# 15 minutes is the only time S3 Replication Time Control offers.
REPLICATION_TIME_MINUTES = 15


@dataclass(frozen=True)
class S3Store:
    store: BackupStore
    bucket: aws_s3.Bucket
    key: kms.Key


DR_REGION_TAG = "svbackups-dr-region"


def declare_store(context: AwsContext, *, parent: pulumi.Resource) -> S3Store:
    settings = context.settings
    storage = settings.storage
    names = context.names
    name = context.account.apply(lambda account: names.bucket(account, storage.bucket_name))
    rules = lifecycle_rules(settings)
    tags = window_tags(settings)
    key = context.key(context.region, "bucket", parent)
    dr_key = context.key(context.dr_region, "bucket", parent)
    # The primary names the region its copy is in, as on GCS (policy: production-dr).
    primary_tags = {**tags, DR_REGION_TAG: context.dr_region}
    bucket, ready = _locked_bucket(context, "backups", name, context.region, key, rules, primary_tags, parent)
    replica, replica_ready = _locked_bucket(
        context,
        "backups-dr",
        name.apply(lambda primary: Names.replica_bucket(primary, context.dr_region)),
        context.dr_region,
        dr_key,
        rules,
        {**tags, "svbackups-replica-of": name},
        parent,
    )
    _replicate(context, bucket, key, replica, dr_key, [*ready, *replica_ready], parent)
    prefix = storage.prefix.rstrip("/")
    url = pulumi.Output.concat("s3://", bucket.bucket, "/", prefix).apply(lambda text: text.rstrip("/"))
    dr_url = pulumi.Output.concat("s3://", replica.bucket, "/", prefix).apply(lambda text: text.rstrip("/"))
    store = BackupStore(name=bucket.bucket, url=url, resource=bucket, dr_name=replica.bucket, dr_url=dr_url)
    return S3Store(store, bucket, key)


def window_tags(settings: Settings) -> dict[str, str]:
    """The windows the lifecycle rules were sized from, for the CrossGuard stack policy to check (the same
    keys and value forms as the GCS bucket's labels)."""
    storage, derived = settings.storage, settings.derived
    tags = {
        policies.NODE_TAG: settings.node.name,
        "svbackups-recent-seconds": str(int(settings.retention.recent.total_seconds())),
        "svbackups-historical-cadence-seconds": str(int(derived.postgres_historical_cadence.total_seconds())),
        "svbackups-recent-prefix": label_value(storage.prefix + retention.RECENT_TIER),
        "svbackups-historical-prefix": label_value(storage.prefix + retention.HISTORICAL_TIER),
        "managed-by": "sv-backups",
    }
    if derived.min_pruning_window is not None:
        tags["svbackups-min-pruning-seconds"] = str(int(derived.min_pruning_window.total_seconds()))
    return tags


def lifecycle_rules(settings: Settings) -> list[aws_s3.BucketLifecycleConfigurationRuleArgs]:
    """The cloud-neutral rules (rules/retention.py), then what versioning adds on S3: a noncurrent
    version (what an expiration or an overwrite leaves) is kept `softDelete` longer, like GCS soft delete,
    then removed; a delete marker left alone after that is removed too."""
    storage = settings.storage
    historical_class = storage.historical_class("aws")
    neutral = retention.bucket_lifecycle(
        storage.prefix, settings.retention.recent, None if historical_class == "STANDARD" else historical_class
    )
    rules = [_rule(rule) for rule in neutral]
    rules.append(
        aws_s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-noncurrent-versions",
            status="Enabled",
            filter=aws_s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=storage.prefix),
            noncurrent_version_expiration=aws_s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=retention.whole_days(storage.soft_delete)
            ),
        )
    )
    rules.append(
        aws_s3.BucketLifecycleConfigurationRuleArgs(
            id="remove-expired-delete-markers",
            status="Enabled",
            filter=aws_s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=storage.prefix),
            expiration=aws_s3.BucketLifecycleConfigurationRuleExpirationArgs(expired_object_delete_marker=True),
        )
    )
    return rules


def _rule(rule: retention.LifecycleRule) -> aws_s3.BucketLifecycleConfigurationRuleArgs:
    where = aws_s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=rule.prefix)
    if rule.action == "Delete":
        # On a versioned bucket this makes the current version noncurrent (a delete marker on top); the
        # version itself goes with expire-noncurrent-versions, after its Object Lock retention has ended.
        return aws_s3.BucketLifecycleConfigurationRuleArgs(
            id=f"expire-{_slug(rule.prefix)}",
            status="Enabled",
            filter=where,
            expiration=aws_s3.BucketLifecycleConfigurationRuleExpirationArgs(days=rule.age_days),
        )
    if rule.action == "SetStorageClass":
        return aws_s3.BucketLifecycleConfigurationRuleArgs(
            id=f"{_slug(rule.prefix)}-to-{rule.storage_class.lower().replace('_', '-')}",
            status="Enabled",
            filter=where,
            transitions=[
                aws_s3.BucketLifecycleConfigurationRuleTransitionArgs(
                    days=rule.age_days, storage_class=rule.storage_class
                )
            ],
        )
    if rule.action == "AbortIncompleteMultipartUpload":
        return aws_s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-uploads",
            status="Enabled",
            filter=where,
            abort_incomplete_multipart_upload=aws_s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=rule.age_days
            ),
        )
    raise ValueError(f"lifecycle action {rule.action!r} has no S3 form")


def _slug(prefix: str) -> str:
    return prefix.strip("/").replace("/", "-") or "all"


def _locked_bucket(
    context: AwsContext,
    part: str,
    bucket_name: pulumi.Input[str],
    region: str,
    key: kms.Key,
    rules: list[aws_s3.BucketLifecycleConfigurationRuleArgs],
    tags: dict[str, pulumi.Input[str]],
    parent: pulumi.Resource,
) -> tuple[aws_s3.Bucket, list[pulumi.Resource]]:
    """A bucket with every protection; returns it and the settings replication must wait for."""
    names, settings = context.names, context.settings
    bucket = aws_s3.Bucket(
        names.resource(part),
        bucket=bucket_name,
        # Only at creation: Object Lock cannot be turned on for an existing bucket without AWS support.
        object_lock_enabled=True,
        force_destroy=False,
        region=region,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent, protect=True),
    )
    kept = pulumi.ResourceOptions(parent=bucket, retain_on_delete=True)
    aws_s3.BucketPublicAccessBlock(
        names.resource(part, "public-access-block"),
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        region=region,
        opts=kept,
    )
    aws_s3.BucketOwnershipControls(
        names.resource(part, "ownership"),
        bucket=bucket.id,
        rule=aws_s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        region=region,
        opts=kept,
    )
    encryption = aws_s3.BucketServerSideEncryptionConfiguration(
        names.resource(part, "encryption"),
        bucket=bucket.id,
        rules=[
            aws_s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws_s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=key.arn
                ),
                # One data key per bucket instead of a KMS request per object: cheaper, and fewer KMS calls.
                bucket_key_enabled=True,
            )
        ],
        region=region,
        opts=kept,
    )
    versioning = aws_s3.BucketVersioning(
        names.resource(part, "versioning"),
        bucket=bucket.id,
        versioning_configuration=aws_s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
        region=region,
        opts=kept,
    )
    after_versioning = pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(depends_on=[versioning]))
    aws_s3.BucketObjectLockConfiguration(
        names.resource(part, "object-lock"),
        bucket=bucket.id,
        object_lock_enabled="Enabled",
        rule=aws_s3.BucketObjectLockConfigurationRuleArgs(
            default_retention=aws_s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(
                mode=settings.storage.object_lock_mode or DEFAULT_OBJECT_LOCK_MODE,
                days=retention.whole_days(settings.retention.recent),
            )
        ),
        region=region,
        opts=after_versioning,
    )
    aws_s3.BucketLifecycleConfiguration(
        names.resource(part, "lifecycle"), bucket=bucket.id, rules=rules, region=region, opts=after_versioning
    )
    policy = aws_s3.BucketPolicy(
        names.resource(part, "policy"),
        bucket=bucket.id,
        policy=pulumi.Output.all(context.account, bucket.arn, key.arn).apply(
            lambda args: policies.to_json(
                policies.bucket_policy(
                    args[1], args[2], policies.jobs_role_pattern(context.partition, args[0], context.node)
                )
            )
        ),
        region=region,
        opts=kept,
    )
    return bucket, [versioning, encryption, policy]


def _replicate(
    context: AwsContext,
    source: aws_s3.Bucket,
    source_key: kms.Key,
    destination: aws_s3.Bucket,
    destination_key: kms.Key,
    depends_on: list[pulumi.Resource],
    parent: pulumi.Resource,
) -> None:
    names = context.names
    role = iam.Role(
        names.resource("backups", "replication-role"),
        name=names.resource("backups-replication"),
        path=policies.service_path(context.node),
        description=f"sv-backups {context.node}: S3 replication of the backup bucket to {context.dr_region}",
        assume_role_policy=context.account.apply(
            lambda account: policies.to_json(policies.service_trust("s3.amazonaws.com", account))
        ),
        tags=context.tags("replication"),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    role_policy = iam.RolePolicy(
        names.resource("backups", "replication"),
        role=role.name,
        policy=pulumi.Output.all(source.arn, destination.arn, source_key.arn, destination_key.arn).apply(
            lambda arns: policies.to_json(policies.replication(*arns, context.region, context.dr_region))
        ),
        opts=pulumi.ResourceOptions(parent=role),
    )
    rtc = context.cluster.replication_time_control
    minutes = aws_s3.BucketReplicationConfigRuleDestinationReplicationTimeTimeArgs(minutes=REPLICATION_TIME_MINUTES)
    threshold = aws_s3.BucketReplicationConfigRuleDestinationMetricsEventThresholdArgs(minutes=REPLICATION_TIME_MINUTES)
    aws_s3.BucketReplicationConfig(
        names.resource("backups", "replication"),
        bucket=source.id,
        role=role.arn,
        rules=[
            aws_s3.BucketReplicationConfigRuleArgs(
                id="dr-copy",
                status="Enabled",
                priority=1,
                filter=aws_s3.BucketReplicationConfigRuleFilterArgs(prefix=context.settings.storage.prefix),
                # Deletions stay where they happen: a delete marker never hides a set in the DR copy.
                delete_marker_replication=aws_s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(
                    status="Disabled"
                ),
                source_selection_criteria=aws_s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
                    sse_kms_encrypted_objects=aws_s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(
                        status="Enabled"
                    )
                ),
                destination=aws_s3.BucketReplicationConfigRuleDestinationArgs(
                    bucket=destination.arn,
                    encryption_configuration=aws_s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                        replica_kms_key_id=destination_key.arn
                    ),
                    # Replication Time Control needs replication metrics; both are billed, so both follow it.
                    replication_time=aws_s3.BucketReplicationConfigRuleDestinationReplicationTimeArgs(
                        status="Enabled", time=minutes
                    )
                    if rtc
                    else None,
                    metrics=aws_s3.BucketReplicationConfigRuleDestinationMetricsArgs(
                        status="Enabled", event_threshold=threshold
                    )
                    if rtc
                    else None,
                ),
            )
        ],
        region=context.region,
        opts=pulumi.ResourceOptions(parent=source, retain_on_delete=True, depends_on=[*depends_on, role_policy]),
    )
