"""Stack rules on the AWS resources: what one S3 bucket, IAM role or RDS instance only shows with its side
resources (public access block, versioning, Object Lock, lifecycle, bucket policy, replication; role policies;
automated-backup replication), and the AWS profile of the cloud-neutral rules (`coverage_rules.py`).

Which buckets hold backups is read from what the jobs do: the Postgres CronJob's `--dest s3://<bucket>/<prefix>`
names the primary store, its replication rule the DR copy. The windows come from the tags the program puts on
the primary bucket (CrossGuard stack policies see resources, not stack outputs), as on GCP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pulumi_policy import ReportViolation, Severity, StackValidationArgs, StackValidationPolicy

from components.retention import HISTORICAL_TIER, RECENT_TIER

from .aws_resources import (
    AWS_SECRET,
    BUCKET_ACL,
    BUCKET_POLICY,
    ENCRYPTION,
    IAM_ROLE,
    LIFECYCLE,
    LOG_METRIC_FILTER,
    METRIC_ALARM,
    OBJECT_LOCK,
    OWNERSHIP_CONTROLS,
    PUBLIC_ACCESS_BLOCK,
    RDS_BACKUP_REPLICATION,
    RDS_INSTANCE,
    REPLICATION,
    VERSIONING,
    S3Bucket,
    Statement,
    action_matches,
    annotated_role,
    bucket_arn,
    covers,
    is_everyone,
    policy_document,
    refers_to,
    region_of,
    replication_targets,
    role_policies,
    s3_buckets,
    service_account_key,
    tags,
    unset,
)
from .clouds import BackupAlert, Cloud
from .props import (
    K8S_SERVICE_ACCOUNT,
    RECENT_SECONDS,
    SECRET_PURPOSE,
    UNKNOWN,
    as_number,
    describe_seconds,
    get,
    require_known,
)
from .rule import ADVISORY, StackResource, stack_rule
from .stack_rules import backup_ksas, dest_prefixes

DAY = 86400


def _configured(value) -> bool:
    return value is UNKNOWN or (isinstance(value, str) and value.strip() != "")


def _enabled(status) -> bool:
    """An S3 configuration status that is on (or only known after deployment)."""
    return status is UNKNOWN or status == "Enabled"


# --- which buckets hold backups -------------------------------------------------------------------------


@dataclass
class BackupBucket:
    """A bucket that holds backup sets: the jobs' store (`--dest`), or the DR copy a store replicates to."""

    bucket: S3Bucket
    # The prefixes the Postgres steps write under (for a DR copy: its source's; replication keeps keys).
    prefixes: set[str] = field(default_factory=set)
    window: float | None = None  # the recent window, seconds (svbackups-recent-seconds)
    source: S3Bucket | None = None  # the bucket that replicates to this one


def _replication_rules(bucket: S3Bucket) -> list[tuple[StackResource, int, dict]]:
    return [
        (config, index, rule)
        for config in bucket.of(REPLICATION)
        for index, rule in enumerate(config.props.get("rules") or [])
        if isinstance(rule, dict)
    ]


def _backup_buckets(resources: list[StackResource], buckets: list[S3Bucket] | None = None) -> list[BackupBucket]:
    """The stores (tagged with the windows, or named by a Postgres `--dest s3://`) and the buckets they replicate
    to, each with the prefixes the jobs write under and the recent window."""
    buckets = s3_buckets(resources) if buckets is None else buckets
    dests = dest_prefixes(resources, "s3")
    found: dict[str, BackupBucket] = {}
    for bucket in buckets:
        window = as_number(tags(bucket.resource.props).get(RECENT_SECONDS))
        if window is not None or bucket.name in dests:
            found[bucket.resource.urn] = BackupBucket(bucket, set(dests.get(bucket.name, ())), window)
    for primary in list(found.values()):
        for config, _index, rule in _replication_rules(primary.bucket):
            for target in replication_targets(primary.bucket, buckets, rule, config):
                copy = found.setdefault(target.resource.urn, BackupBucket(target))
                copy.source = copy.source or primary.bucket
                copy.prefixes |= primary.prefixes
                if copy.window is None:
                    copy.window = primary.window
    return list(found.values())


def _where(bucket: S3Bucket) -> str:
    return bucket.shown


# --- public access, ownership, encryption, versioning ---------------------------------------------------

_BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _check_public_access(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in s3_buckets(resources):
        blocks = bucket.of(PUBLIC_ACCESS_BLOCK)
        if not blocks:
            report(
                f"{_where(bucket)}: no BucketPublicAccessBlock, so one bucket policy or ACL can publish the node's "
                f"backups. Fix: declare aws.s3.BucketPublicAccessBlock with {', '.join(_BLOCK_FLAGS)} all true.",
                bucket.resource.urn,
            )
        for block in blocks:
            off = [
                flag
                for flag in _BLOCK_FLAGS
                if block.props.get(flag) is not True and block.props.get(flag) is not UNKNOWN
            ]
            if off:
                report(
                    f"{_where(bucket)}: BucketPublicAccessBlock '{block.name}' leaves {', '.join(off)} off, so a "
                    f"public policy or ACL would take effect. Fix: set all four of {', '.join(_BLOCK_FLAGS)} true.",
                    block.urn,
                )


s3_block_public_access = stack_rule(
    "s3-block-public-access",
    "Every S3 bucket has a BucketPublicAccessBlock with all four settings on.",
    check=_check_public_access,
    severity=Severity.CRITICAL,
    remediation="Declare aws.s3.BucketPublicAccessBlock(blockPublicAcls, blockPublicPolicy, ignorePublicAcls, "
    "restrictPublicBuckets = true) for every bucket.",
)


def _check_ownership(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in s3_buckets(resources):
        controls = bucket.of(OWNERSHIP_CONTROLS)
        owners = [get(c.props, "rule", "objectOwnership") for c in controls]
        if not controls or any(o not in ("BucketOwnerEnforced", UNKNOWN) for o in owners):
            shown = ", ".join(map(str, owners)) or "no BucketOwnershipControls"
            report(
                f"{_where(bucket)}: object ownership is {shown}, so object ACLs stay in force and an object "
                f"written by another account is owned by it. Fix: declare aws.s3.BucketOwnershipControls with "
                f"rule.objectOwnership 'BucketOwnerEnforced' (ACLs disabled, the bucket owner owns every object).",
                bucket.resource.urn,
            )
        acls = [a.name for a in bucket.of(BUCKET_ACL)]
        inline = bucket.resource.props.get("acl")
        if acls or inline not in (None, "", "private") or not unset(bucket.resource.props.get("grants")):
            report(
                f"{_where(bucket)}: ACLs are declared ({', '.join(acls) or inline or 'grants'}); with "
                f"BucketOwnerEnforced ACLs are disabled and access is decided by IAM and the bucket policy only. "
                f"Fix: remove the BucketAcl, acl and grants.",
                bucket.resource.urn,
            )


s3_bucket_owner_enforced = stack_rule(
    "s3-bucket-owner-enforced",
    "Every S3 bucket has Object Ownership BucketOwnerEnforced (ACLs disabled) and no ACL.",
    check=_check_ownership,
    remediation="Declare aws.s3.BucketOwnershipControls with objectOwnership BucketOwnerEnforced; remove ACLs.",
)

_AWS_MANAGED_S3_KEY = re.compile(r"(^|:)alias/aws/s3$")


def _check_bucket_cmk(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in s3_buckets(resources):
        configs = bucket.of(ENCRYPTION)
        if not configs:
            report(
                f"{_where(bucket)}: no BucketServerSideEncryptionConfiguration, so objects are encrypted with S3's "
                f"own keys (SSE-S3) that the operator cannot revoke or audit. Fix: declare "
                f"aws.s3.BucketServerSideEncryptionConfiguration with sseAlgorithm 'aws:kms', kmsMasterKeyId a "
                f"customer-managed key of the bucket's region, and bucketKeyEnabled true.",
                bucket.resource.urn,
            )
        for config in configs:
            rules = [r for r in config.props.get("rules") or [] if isinstance(r, dict)]
            if not rules:
                report(f"{_where(bucket)}: '{config.name}' has no rule. Fix: add the SSE-KMS rule.", config.urn)
            for rule in rules:
                default = get(rule, "applyServerSideEncryptionByDefault", default={}) or {}
                algorithm, key = get(default, "sseAlgorithm"), get(default, "kmsMasterKeyId")
                problems = []
                if algorithm not in ("aws:kms", "aws:kms:dsse", UNKNOWN):
                    problems.append(f"sseAlgorithm is {algorithm or 'unset'} (not SSE-KMS)")
                elif not _configured(key):
                    problems.append("kmsMasterKeyId is unset, so S3 uses the AWS-managed key aws/s3")
                elif isinstance(key, str) and _AWS_MANAGED_S3_KEY.search(key):
                    problems.append(f"kmsMasterKeyId is the AWS-managed key {key}")
                if rule.get("bucketKeyEnabled") is not True and rule.get("bucketKeyEnabled") is not UNKNOWN:
                    problems.append("bucketKeyEnabled is not true (a KMS request per object: cost and throttling)")
                if problems:
                    report(
                        f"{_where(bucket)}: encryption '{config.name}': {'; '.join(problems)}. Fix: sseAlgorithm "
                        f"'aws:kms', kmsMasterKeyId the ARN of a customer-managed aws.kms.Key in the bucket's "
                        f"region, bucketKeyEnabled true.",
                        config.urn,
                    )


s3_bucket_cmk = stack_rule(
    "s3-bucket-cmk",
    "Every S3 bucket encrypts with SSE-KMS under a customer-managed key (not aws/s3), with S3 bucket keys.",
    check=_check_bucket_cmk,
    remediation="Declare aws.s3.BucketServerSideEncryptionConfiguration: sseAlgorithm aws:kms, kmsMasterKeyId a "
    "customer-managed key, bucketKeyEnabled true.",
)


def _check_versioning(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in s3_buckets(resources):
        statuses = [get(v.props, "versioningConfiguration", "status") for v in bucket.of(VERSIONING)]
        if not statuses or any(not _enabled(s) for s in statuses):
            shown = ", ".join(map(str, statuses)) or "no BucketVersioning"
            report(
                f"{_where(bucket)}: versioning is {shown}; without versions an overwrite or a delete destroys the "
                f"set, and S3 Object Lock and replication require versioning. Fix: declare aws.s3.BucketVersioning "
                f"with versioningConfiguration.status 'Enabled'.",
                bucket.resource.urn,
            )


s3_versioning_enabled = stack_rule(
    "s3-versioning-enabled",
    "Every S3 bucket has versioning enabled.",
    check=_check_versioning,
    severity=Severity.CRITICAL,
    remediation="Declare aws.s3.BucketVersioning with versioningConfiguration.status Enabled.",
)


# --- Object Lock --------------------------------------------------------------------------------------------

_LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


def _check_object_lock(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for backup in _backup_buckets(resources):
        bucket = backup.bucket
        where = _where(bucket) + (f" (DR copy of {backup.source.resource.name})" if backup.source else "")
        enabled = bucket.resource.props.get("objectLockEnabled")
        if enabled is not True and enabled is not UNKNOWN:
            report(
                f"{where}: objectLockEnabled is {enabled}; Object Lock can only be turned on when a bucket is "
                f"created, and without it any principal with delete rights destroys backups at once. Fix: create "
                f"the bucket with object_lock_enabled=True.",
                bucket.resource.urn,
            )
        locks = bucket.of(OBJECT_LOCK)
        if not locks:
            report(
                f"{where}: no BucketObjectLockConfiguration, so new objects get no default retention. Fix: declare "
                f"aws.s3.BucketObjectLockConfiguration with rule.defaultRetention (mode COMPLIANCE or GOVERNANCE, "
                f"days >= the recent window).",
                bucket.resource.urn,
            )
        for lock in locks:
            _check_lock(where, lock, backup.window, report)


def _check_lock(where: str, lock: StackResource, window: float | None, report: ReportViolation) -> None:
    state = lock.props.get("objectLockEnabled")
    if state not in (None, "", "Enabled", UNKNOWN):
        report(f"{where}: '{lock.name}' has objectLockEnabled {state}. Fix: set it to 'Enabled'.", lock.urn)
    retention = get(lock.props, "rule", "defaultRetention", default={}) or {}
    mode = get(retention, "mode")
    if mode not in (*_LOCK_MODES, UNKNOWN):
        report(
            f"{where}: '{lock.name}' has default retention mode {mode or 'unset'}, so new object versions are not "
            f"locked. Fix: set rule.defaultRetention.mode to COMPLIANCE (nobody can delete early) or GOVERNANCE.",
            lock.urn,
        )
    days, years = as_number(get(retention, "days")), as_number(get(retention, "years"))
    if UNKNOWN in (get(retention, "days"), get(retention, "years")):
        return
    seconds = (days or 0) * DAY + (years or 0) * 365 * DAY
    if window is None:
        report(
            f"{where}: no tag {RECENT_SECONDS} on the bucket (or on the bucket that replicates to it), so the "
            f"default retention cannot be checked against the recent window. Fix: declare the bucket with "
            f"components/aws/ backup_store(), which tags it with the windows.",
            lock.urn,
        )
    elif seconds < window:
        report(
            f"{where}: '{lock.name}' locks new versions for {describe_seconds(seconds) if seconds else 'no time'}, "
            f"less than the recent window {describe_seconds(window)} ({RECENT_SECONDS}): a recent set can be "
            f"deleted before its window ends. Fix: set rule.defaultRetention.days to at least "
            f"{whole_days_of(window)}.",
            lock.urn,
        )


def whole_days_of(seconds: float) -> int:
    return -(-int(seconds) // DAY)


s3_object_lock = stack_rule(
    "s3-object-lock",
    "Backup buckets (and their DR copies) have S3 Object Lock on, with a default retention of at least the recent "
    "window.",
    check=_check_object_lock,
    severity=Severity.CRITICAL,
    remediation="Create the bucket with objectLockEnabled and declare aws.s3.BucketObjectLockConfiguration with "
    "defaultRetention.days >= the recent window.",
)


# --- bucket policy ------------------------------------------------------------------------------------------


def _bucket_statements(bucket: S3Bucket, report: ReportViolation) -> list[Statement] | None:
    """Every statement of the bucket's policies (BucketPolicy resources and the inline `policy`); None when
    there is none. A policy that is no policy document is reported."""
    statements: list[Statement] = []
    sources = [(p, p.props.get("policy")) for p in bucket.of(BUCKET_POLICY)]
    if not unset(bucket.resource.props.get("policy")):
        sources.append((bucket.resource, bucket.resource.props["policy"]))
    for source, raw in sources:
        parsed = require_known(policy_document(raw), f"{source.name}.policy")
        if parsed is None:
            report(f"{_where(bucket)}: '{source.name}' policy is not an IAM policy document. Fix: write it as JSON.")
            continue
        statements.extend(parsed)
    return statements if sources else None


def _covers_resources(statement: Statement, bucket: S3Bucket, *, objects: bool, bucket_itself: bool) -> bool:
    arn = bucket_arn(bucket.name)
    if arn is None:
        return True  # the name is only known after deployment: the statement was built from it
    wanted = ([f"{arn}/any-object"] if objects else []) + ([arn] if bucket_itself else [])
    return all(covers(statement.resources, target) for target in wanted)


def _is_tls_deny(statement: Statement, bucket: S3Bucket) -> bool:
    insecure = [
        value
        for operator in ("Bool", "BoolIfExists")
        for value in statement.condition(operator, "aws:SecureTransport") or []
    ]
    return (
        statement.effect == "Deny"
        and is_everyone(statement.principals)
        and covers(statement.actions, "s3:GetObject")
        and covers(statement.actions, "s3:PutObject")
        and covers(statement.actions, "s3:ListBucket")
        and _covers_resources(statement, bucket, objects=True, bucket_itself=True)
        and any(str(v).lower() == "false" for v in insecure)
        and set(statement.conditions) <= {"Bool", "BoolIfExists"}
    )


def _check_tls(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in s3_buckets(resources):
        statements = _bucket_statements(bucket, report)
        if statements is None or not any(_is_tls_deny(s, bucket) for s in statements):
            shown = "has no bucket policy" if statements is None else "has no statement that denies it"
            report(
                f"{_where(bucket)}: plain-HTTP requests are allowed (the bucket {shown}): credentials and "
                f"backups could cross the network unencrypted. Fix: add to its aws.s3.BucketPolicy a statement "
                f"Effect Deny, Principal '*', Action 's3:*', Resource the bucket and bucket/*, Condition "
                f"{{Bool: {{aws:SecureTransport: 'false'}}}}.",
                bucket.resource.urn,
            )


s3_tls_only = stack_rule(
    "s3-tls-only",
    "Every S3 bucket's policy denies requests that do not use TLS.",
    check=_check_tls,
    remediation="Add a Deny statement for s3:* with Condition Bool aws:SecureTransport false to the bucket policy.",
)

# What no writer may do to a backup bucket; the bucket policy must deny each to every job role.
WRITER_DENIED_S3_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:BypassGovernanceRetention",
)
_PRINCIPAL_ARN_OPERATORS = ("ArnEquals", "ArnLike", "StringEquals", "StringLike")


def _denies_to(statement: Statement, role_arn: str, action: str) -> bool:
    """Whether a Deny statement applies to `role_arn` for `action`, with no condition that could switch it off."""
    if statement.effect != "Deny" or not covers(statement.actions, action):
        return False
    keys = {key for entries in statement.conditions.values() for key in entries}
    if keys - {"aws:principalarn"}:
        return False  # a further condition (TLS, a tag...) would leave the action open when it does not hold
    named = statement.principals or {}
    if is_everyone(named):
        patterns = [
            v for operator in _PRINCIPAL_ARN_OPERATORS for v in statement.condition(operator, "aws:PrincipalArn") or []
        ]
        return not statement.conditions or any(action_matches(p, role_arn) for p in patterns)
    return role_arn in named.get("AWS", []) and not statement.conditions


def _job_roles(resources: list[StackResource]) -> list[tuple[StackResource, object, StackResource | None]]:
    """(ServiceAccount, IRSA role ARN it is annotated with, the stack's role of that ARN or None) for every
    backup ServiceAccount that has an IRSA role."""
    roles = [r for r in resources if r.type == IAM_ROLE]
    ksas = backup_ksas(resources)
    found = []
    for resource in resources:
        if resource.type == K8S_SERVICE_ACCOUNT and service_account_key(resource) in ksas:
            arn, role = annotated_role(resource, roles)
            if arn is not None:
                found.append((resource, arn, role))
    return found


def _grants_s3(role: StackResource | None, resources: list[StackResource]) -> bool:
    """Whether a role's own policies allow any S3 action (or cannot be read, so they might)."""
    if role is None:
        return True
    for policy in role_policies(role, resources):
        if policy.statements is None or policy.statements is UNKNOWN:
            return True
        if any(
            s.effect == "Allow"
            and (s.not_actions is not None or any(str(a).lower().startswith(("s3:", "*")) for a in s.actions))
            for s in policy.statements
        ):
            return True
    return False


def _check_writer_deletes_denied(
    resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation
) -> None:
    writers = [(ksa, arn) for ksa, arn, role in _job_roles(resources) if _grants_s3(role, resources)]
    for backup in _backup_buckets(resources):
        if backup.source is not None:
            continue  # the DR copy is written by S3 replication only
        bucket = backup.bucket
        statements = _bucket_statements(bucket, report) or []
        for ksa, arn in writers:
            arn = require_known(arn, f"{ksa.name}.metadata.annotations")
            open_actions = [
                action
                for action in WRITER_DENIED_S3_ACTIONS
                if not any(
                    _denies_to(s, str(arn), action) and _covers_resources(s, bucket, objects=True, bucket_itself=False)
                    for s in statements
                )
            ]
            if open_actions:
                report(
                    f"{_where(bucket)}: its bucket policy does not deny {', '.join(open_actions)} to the job role "
                    f"{arn} (ServiceAccount '{get(ksa.props, 'metadata', 'name')}'): one policy attached to that "
                    f"role later would let a backup job delete or unprotect backups. Fix: add a Deny statement for "
                    f"those actions on the bucket and bucket/*, Principal '*' with Condition ArnLike "
                    f"aws:PrincipalArn the job roles (and no other condition).",
                    bucket.resource.urn,
                )


s3_writer_deletes_denied = stack_rule(
    "s3-writer-deletes-denied",
    "The backup bucket's policy denies deletes (and lifecycle, policy and lock bypass changes) to every job role.",
    check=_check_writer_deletes_denied,
    severity=Severity.CRITICAL,
    remediation="Deny s3:DeleteObject, s3:DeleteObjectVersion, s3:PutLifecycleConfiguration, s3:PutBucketPolicy and "
    "s3:BypassGovernanceRetention to the job roles (aws:PrincipalArn) in the bucket policy.",
)


# --- replication ----------------------------------------------------------------------------------------


def _rule_prefix(rule: dict):
    """The key prefix a replication or lifecycle rule applies to ('' for the whole bucket)."""
    for path in (("filter", "prefix"), ("filter", "and", "prefix"), ("prefix",)):
        value = get(rule, *path)
        if value is UNKNOWN:
            return UNKNOWN
        if isinstance(value, str) and value:
            return value
    return ""


def _check_replication(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    buckets = s3_buckets(resources)
    for backup in _backup_buckets(resources, buckets):
        if backup.source is not None:
            continue
        bucket = backup.bucket
        good, problems = False, []
        for config, index, rule in _replication_rules(bucket):
            found = _replication_problems(bucket, buckets, backup.prefixes, config, index, rule)
            if not found:
                good = True
            problems.extend(found)
        if not good:
            detail = "; ".join(problems) or "no aws.s3.BucketReplicationConfig names it"
            report(
                f"{_where(bucket)}: backups are not replicated to another region ({detail}): losing the region "
                f"loses every set. Fix: declare aws.s3.BucketReplicationConfig with an Enabled rule over the whole "
                f"bucket to a bucket of this stack in sv-backups:dr.region, with "
                f"sourceSelectionCriteria.sseKmsEncryptedObjects Enabled, destination.encryptionConfiguration."
                f"replicaKmsKeyId that region's key, and deleteMarkerReplication Disabled.",
                bucket.resource.urn,
            )


def _replication_problems(
    bucket: S3Bucket, buckets: list[S3Bucket], prefixes: set[str], config: StackResource, index: int, rule: dict
) -> list[str]:
    where = f"'{config.name}' rule #{index}"
    problems = []
    if not _enabled(rule.get("status")):
        problems.append(f"{where} is {rule.get('status')}")
    prefix = _rule_prefix(rule)
    if prefix is not UNKNOWN and not all(p.startswith(prefix) for p in prefixes or {""}):
        problems.append(f"{where} only replicates '{prefix}', not the sets under {sorted(prefixes)}")
    targets = replication_targets(bucket, buckets, rule, config)
    if not targets:
        problems.append(
            f"{where} replicates to {get(rule, 'destination', 'bucket')}, which is not a bucket of this stack (so "
            f"its Object Lock, key and public access block are unchecked)"
        )
    for target in targets:
        here, there = region_of(bucket.resource), region_of(target.resource)
        if UNKNOWN in (here, there):
            continue
        if here == there:
            problems.append(f"{where} replicates to {target.resource.name} in the same region {here or '(default)'}")
    if get(rule, "sourceSelectionCriteria", "sseKmsEncryptedObjects", "status") not in ("Enabled", UNKNOWN):
        problems.append(f"{where} skips SSE-KMS objects (sourceSelectionCriteria.sseKmsEncryptedObjects not Enabled)")
    if not _configured(get(rule, "destination", "encryptionConfiguration", "replicaKmsKeyId")):
        problems.append(f"{where} has no destination.encryptionConfiguration.replicaKmsKeyId")
    if get(rule, "deleteMarkerReplication", "status") == "Enabled":
        problems.append(f"{where} replicates delete markers, so a delete in the primary hides the DR copy too")
    return problems


s3_replication_to_dr = stack_rule(
    "s3-replication-to-dr",
    "The backup bucket replicates every object, SSE-KMS ones included, to a bucket of the stack in another region, "
    "without delete markers.",
    check=_check_replication,
    severity=Severity.CRITICAL,
    remediation="Declare aws.s3.BucketReplicationConfig to the DR bucket (sv-backups:dr.region) with "
    "sseKmsEncryptedObjects Enabled, replicaKmsKeyId, deleteMarkerReplication Disabled.",
)


# --- lifecycle ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleRule:
    """An S3 lifecycle rule read from a BucketLifecycleConfiguration (or the bucket's inline lifecycleRules)."""

    source: StackResource
    index: int
    rule: dict
    prefix: object
    enabled: bool
    expire_days: float | None
    expire_date: object
    noncurrent_days: float | None
    transitions: list

    @property
    def shown(self) -> str:
        return f"lifecycle rule #{self.index} of '{self.source.name}'"

    @property
    def expires_live(self) -> bool:
        """Expires current objects (on a versioned bucket: a delete marker, then the version goes noncurrent)."""
        return self.enabled and (bool(self.expire_days) or not unset(self.expire_date))


def _lifecycle_rules(bucket: S3Bucket) -> list[LifecycleRule]:
    found = []
    for config in bucket.of(LIFECYCLE):
        for index, rule in enumerate(config.props.get("rules") or []):
            if isinstance(rule, dict):
                found.append(
                    LifecycleRule(
                        config,
                        index,
                        rule,
                        _rule_prefix(rule),
                        _enabled(rule.get("status")),
                        as_number(get(rule, "expiration", "days")),
                        get(rule, "expiration", "date"),
                        as_number(get(rule, "noncurrentVersionExpiration", "noncurrentDays")),
                        [t for t in rule.get("transitions") or [] if isinstance(t, dict)],
                    )
                )
    # The deprecated inline form (and what providers report for it): the same rules in the older shape.
    for index, rule in enumerate(bucket.resource.props.get("lifecycleRules") or []):
        if isinstance(rule, dict):
            found.append(
                LifecycleRule(
                    bucket.resource,
                    index,
                    rule,
                    rule.get("prefix") or "",
                    rule.get("enabled") is not False,
                    as_number(get(rule, "expiration", "days")),
                    get(rule, "expiration", "date"),
                    as_number(get(rule, "noncurrentVersionExpiration", "days")),
                    [t for t in rule.get("transitions") or [] if isinstance(t, dict)],
                )
            )
    return found


MIN_NONCURRENT_DAYS = 7


def _check_history_kept(resources: list[StackResource], args: StackValidationArgs, report: ReportViolation) -> None:
    minimum = float(args.get_config().get("minNoncurrentDays", MIN_NONCURRENT_DAYS))
    for backup in _backup_buckets(resources):
        bucket = backup.bucket
        prefixes = sorted(backup.prefixes)
        for rule in _lifecycle_rules(bucket):
            if rule.enabled and rule.noncurrent_days is not None and rule.noncurrent_days < minimum:
                report(
                    f"{_where(bucket)}: {rule.shown} removes noncurrent versions after {rule.noncurrent_days:g} "
                    f"days: a set deleted or hidden by mistake is gone for good before anyone notices (the S3 "
                    f"analogue of soft delete). Fix: set noncurrentVersionExpiration.noncurrentDays to at least "
                    f"{minimum:g} (sv-backups:storage.softDelete).",
                    rule.source.urn,
                )
            if not rule.expires_live:
                continue
            if len(prefixes) != 1:
                where = (
                    "no Postgres CronJob writes to it (no --dest s3://" + str(bucket.name) + "/...)"
                    if not prefixes
                    else f"the Postgres steps write to several prefixes {prefixes}"
                )
                report(
                    f"{_where(bucket)}: {rule.shown} expires live objects, and {where}, so the recent tier it may "
                    f"expire cannot be derived; it may be deleting historical sets. Fix: point every Postgres "
                    f"step's --dest at s3://<bucket>/<prefix> with one prefix (components/postgres.py), or remove "
                    f"the expiration.",
                    rule.source.urn,
                )
                continue
            tier = prefixes[0] + RECENT_TIER
            prefix = require_known(rule.prefix, f"{rule.source.name}.rules[{rule.index}].filter.prefix")
            if not str(prefix).startswith(tier):
                report(
                    f"{_where(bucket)}: {rule.shown} expires live objects under '{prefix or '(every prefix)'}', "
                    f"which is not inside the recent tier '{tier}' (the Postgres CronJob writes to --dest "
                    f"s3://{backup.source.name if backup.source else bucket.name}/{prefixes[0]}), so it can delete "
                    f"historical sets ('{prefixes[0] + HISTORICAL_TIER}'): they are kept from genesis, per migration "
                    f"id, and never expire by age. Fix: limit the rule with filter.prefix to '{tier}' (or below it), "
                    f"or expire noncurrent versions only (noncurrentVersionExpiration).",
                    rule.source.urn,
                )


s3_lifecycle_never_deletes_history = stack_rule(
    "s3-lifecycle-never-deletes-history",
    "S3 lifecycle rules on the backup buckets expire live objects only inside the recent tier '<prefix>recent/' "
    "the Postgres CronJob writes to, and keep noncurrent versions for at least 7 days.",
    check=_check_history_kept,
    severity=Severity.CRITICAL,
    remediation="Give every Expiration a filter.prefix inside '<prefix>recent/' (from the Postgres --dest "
    "s3://<bucket>/<prefix>); set noncurrentVersionExpiration.noncurrentDays >= 7.",
    config={
        "minNoncurrentDays": {
            "type": "number",
            "minimum": MIN_NONCURRENT_DAYS,
            "default": MIN_NONCURRENT_DAYS,
            "description": "Smallest allowed noncurrentVersionExpiration.noncurrentDays (at least 7).",
        }
    },
)


def _check_recent_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for backup in _backup_buckets(resources):
        bucket, window = backup.bucket, backup.window
        tiers = sorted(p + RECENT_TIER for p in backup.prefixes)
        if not tiers or window is None:
            continue  # s3-lifecycle-never-deletes-history refuses expirations on a bucket no --dest names
        days = whole_days_of(window)
        exact = False
        for rule in _lifecycle_rules(bucket):
            overlapping = any(
                rule.prefix is UNKNOWN or t.startswith(str(rule.prefix)) or str(rule.prefix).startswith(t)
                for t in tiers
            )
            if not rule.expires_live or not overlapping:
                continue
            if not unset(rule.expire_date):
                report(
                    f"{_where(bucket)}: {rule.shown} expires recent sets on a date ({rule.expire_date}), not by "
                    f"their age, so a set can go before the recent window {describe_seconds(window)} ends. Fix: use "
                    f"expiration.days = {days}.",
                    rule.source.urn,
                )
            elif rule.expire_days != days:
                early = rule.expire_days < days
                report(
                    f"{_where(bucket)}: {rule.shown} expires recent sets after {rule.expire_days:g} days, but the "
                    f"recent window is {describe_seconds(window)} ({RECENT_SECONDS}): "
                    + (
                        "sets go before their window ends"
                        if early
                        else "sets stay (and are billed) past it, and "
                        "the window the reviewers approved is not the one that runs"
                    )
                    + f". Fix: set expiration.days to {days} (sv-backups:retention.recent).",
                    rule.source.urn,
                )
            elif rule.prefix in tiers:
                exact = True
        if not exact:
            report(
                f"{_where(bucket)}: no enabled lifecycle rule expires the recent tier {', '.join(tiers)} after "
                f"{days} days, so recent sets are never removed (and a DR copy keeps every one: S3 does not "
                f"replicate lifecycle expirations). Fix: declare an Expiration of {days} days with filter.prefix "
                f"'{tiers[0]}' (components/retention.py bucket_lifecycle).",
                bucket.resource.urn,
            )


s3_lifecycle_keeps_recent_window = stack_rule(
    "s3-lifecycle-keeps-recent-window",
    "The recent tier of every backup bucket (and DR copy) expires after exactly the recent window.",
    check=_check_recent_kept,
    remediation="Expire '<prefix>recent/' after exactly the recent window in days (components/retention.py).",
)

# Minimum storage durations (days) of the colder S3 classes: an object removed earlier is billed as if it stayed.
_MIN_STORAGE_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30, "GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}


def _check_storage_classes(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for backup in _backup_buckets(resources):
        rules = _lifecycle_rules(backup.bucket)
        expiring = [r for r in rules if r.expires_live and r.expire_days]
        for rule in rules:
            for transition in rule.transitions:
                target = transition.get("storageClass")
                if not rule.enabled or target not in _MIN_STORAGE_DAYS:
                    continue
                moved_at = as_number(transition.get("days")) or 0
                for expiry in expiring:
                    a, b = str(rule.prefix), str(expiry.prefix)
                    if (a.startswith(b) or b.startswith(a)) and 0 < expiry.expire_days - moved_at < _MIN_STORAGE_DAYS[
                        target
                    ]:
                        report(
                            f"{_where(backup.bucket)}: {rule.shown} moves '{a or '*'}' objects to {target} at "
                            f"{moved_at:g} days, and {expiry.shown} expires them at {expiry.expire_days:g} days, "
                            f"before {target}'s {_MIN_STORAGE_DAYS[target]}-day minimum storage duration: "
                            f"early-deletion fees, and every restore of those sets pays retrieval. Fix: move only "
                            f"objects that stay longer (historical sets), or keep them in STANDARD.",
                            rule.source.urn,
                        )


s3_storage_class_transitions = stack_rule(
    "s3-storage-class-transitions",
    "S3 storage class transitions are the operator's choice; they should not move objects that are expired "
    "before the colder class's minimum storage duration.",
    check=_check_storage_classes,
    level=ADVISORY,
    severity=Severity.LOW,
    remediation="Transition only historical sets (never expired) to STANDARD_IA/GLACIER_IR/GLACIER/DEEP_ARCHIVE.",
)


# --- IAM: what the job roles may do -----------------------------------------------------------------------

# Whoever holds one of these can delete backups, or lift what keeps them: no role of the stack may be allowed
# any of them (AWS's own list of object deletions, lock and protection changes, and delete replication).
DESTRUCTIVE_S3_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersionTagging",
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutReplicationConfiguration",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketAcl",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
    "s3:ReplicateDelete",
)
# Actions that would let a job role become another principal or rewrite permissions (the AWS analogue of the
# GCP act-as roles), or destroy the keys every backup is encrypted with.
ESCALATION_ACTIONS = (
    "iam:PassRole",
    "iam:CreatePolicyVersion",
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:CreateAccessKey",
    "sts:AssumeRole",
    "kms:ScheduleKeyDeletion",
    "kms:DisableKey",
    "kms:PutKeyPolicy",
    "kms:CreateGrant",
)
SECRET_WRITER_ACTION = "secretsmanager:PutSecretValue"


def _federated(role: StackResource) -> bool:
    """A role that web identities (Kubernetes ServiceAccount tokens) may assume."""
    statements = policy_document(role.props.get("assumeRolePolicy"))
    if not isinstance(statements, list):
        return False
    return any(
        "Federated" in (s.principals or {}) or covers(s.actions, "sts:AssumeRoleWithWebIdentity")
        for s in statements
        if s.effect == "Allow"
    )


def _pod_roles(resources: list[StackResource]) -> list[StackResource]:
    """The roles backup pods act as: those a backup ServiceAccount is annotated with, and every role of the stack
    that web identities may assume."""
    found = {role.urn: role for _ksa, _arn, role in _job_roles(resources) if role is not None}
    for resource in resources:
        if resource.type == IAM_ROLE and _federated(resource):
            found.setdefault(resource.urn, resource)
    return list(found.values())


def _allows(statement: Statement, action: str) -> bool:
    if statement.effect != "Allow":
        return False
    if statement.not_actions is not None:
        return not covers(statement.not_actions, action)
    return covers(statement.actions, action)


def _check_roles_cannot_delete(
    resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation
) -> None:
    pod_roles = {r.urn for r in _pod_roles(resources)}
    for role in (r for r in resources if r.type == IAM_ROLE):
        for policy in role_policies(role, resources):
            where = f"IAM role '{role.name}': {policy.what}"
            if policy.statements is None:
                report(
                    f"{where} cannot be reviewed here (an AWS-managed or foreign policy, or not a policy "
                    f"document): it may allow deleting backups. Fix: grant the role's permissions as policies of "
                    f"this stack (components/aws/policies.py).",
                    policy.source.urn,
                )
                continue
            statements = require_known(policy.statements, f"{policy.source.name}.policy")
            denied = [a for a in DESTRUCTIVE_S3_ACTIONS if any(_allows(s, a) for s in statements)]
            if denied:
                report(
                    f"{where} allows {', '.join(denied)}: the role can delete backups or lift their protection "
                    f"(versioning, Object Lock, lifecycle, bucket policy), and only lifecycle rules may delete "
                    f"backups. Fix: allow only what the jobs call (s3:PutObject, s3:GetObject, s3:ListBucket, "
                    f"s3:AbortMultipartUpload...), never s3:Delete*, s3:Put*Configuration, s3:PutBucketPolicy, "
                    f"s3:BypassGovernanceRetention, 's3:*' or '*'.",
                    policy.source.urn,
                )
            if role.urn not in pod_roles:
                continue
            escalations = [a for a in ESCALATION_ACTIONS if any(_allows(s, a) for s in statements)]
            wildcards = sorted(
                {
                    str(a)
                    for s in statements
                    if s.effect == "Allow"
                    for a in (s.actions if s.not_actions is None else ["NotAction"])
                    if a == "NotAction" or str(a) == "*" or str(a).endswith(":*")
                }
            )
            if escalations or wildcards:
                shown = ", ".join([*wildcards, *escalations])
                report(
                    f"{where} allows {shown} to a backup job: a whole service (or every action but some), or acting "
                    f"as another principal, rewriting permissions or destroying keys, which reaches past what the "
                    f"job does. Fix: list the job's actions one by one (components/aws/policies.py).",
                    policy.source.urn,
                )


aws_roles_cannot_delete = stack_rule(
    "aws-roles-cannot-delete",
    "No IAM role of the stack may delete backups or lift their protection; backup job roles get no service-wide "
    "wildcard, no NotAction, no role chaining, IAM writes or key destruction.",
    check=_check_roles_cannot_delete,
    severity=Severity.CRITICAL,
    remediation="Grant the job roles only the actions the jobs call (components/aws/policies.py).",
)


def _whole_service(resource) -> bool:
    """A resource pattern that names every secret (or everything) rather than one secret."""
    return resource == "*" or (isinstance(resource, str) and resource.split(":")[-1] in ("*", "secret:*"))


def _check_secret_writer(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for role in _pod_roles(resources):
        for policy in role_policies(role, resources):
            if not isinstance(policy.statements, list):
                continue  # aws-roles-cannot-delete reports what cannot be reviewed
            for statement in policy.statements:
                if statement.effect != "Allow":
                    continue
                where = f"IAM role '{role.name}': {policy.what} {statement.sid}"
                patterns = statement.actions if statement.not_actions is None else ["NotAction"]
                extra = [
                    str(a)
                    for a in patterns
                    if str(a).lower().startswith("secretsmanager:") and str(a).lower() != SECRET_WRITER_ACTION.lower()
                ]
                if extra:
                    report(
                        f"{where} allows {', '.join(extra)}. The identities writer may only add versions: reading "
                        f"(GetSecretValue) returns the node's private keys, and deleting, rotating or changing the "
                        f"policy can destroy the stored dumps. Fix: allow {SECRET_WRITER_ACTION} only.",
                        policy.source.urn,
                    )
                if _allows(statement, SECRET_WRITER_ACTION) and (
                    statement.not_resources is not None or any(_whole_service(r) for r in statement.resources)
                ):
                    report(
                        f"{where} allows {SECRET_WRITER_ACTION} on {statement.resources or 'NotResource'}, i.e. on "
                        f"every secret: a backup job could overwrite any secret of the account. Fix: name the "
                        f"identities secret's ARN as the Resource.",
                        policy.source.urn,
                    )


aws_secret_writer_put_only = stack_rule(
    "aws-secret-writer-put-only",
    "Backup job roles may add versions to the identities secret (secretsmanager:PutSecretValue on that secret) and "
    "no other Secrets Manager action.",
    check=_check_secret_writer,
    severity=Severity.CRITICAL,
    remediation=f"Allow only {SECRET_WRITER_ACTION}, on the identities secret's ARN.",
)


# --- IRSA: who may act as a job role ------------------------------------------------------------------------

_OIDC_PROVIDER = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/(?P<issuer>[^*?\s]+)$")
_SUBJECT = re.compile(r"^system:serviceaccount:(?P<ns>[^:*?]+):(?P<sa>[^:*?]+)$")
_AUDIENCE = "sts.amazonaws.com"


def _check_irsa(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    ksas = backup_ksas(resources)
    annotated = {}
    for ksa, arn, role in _job_roles(resources):
        annotated[service_account_key(ksa)] = role
        if role is None and arn is not UNKNOWN:
            report(
                f"ServiceAccount '{get(ksa.props, 'metadata', 'name')}': annotated with IAM role {arn}, which this "
                f"stack does not declare, so who may assume it and what it may do cannot be checked. Fix: declare "
                f"the job's role in this stack (components/aws/).",
                ksa.urn,
            )
    fix = (
        "Fix: trust exactly one principal {Federated: <the cluster's OIDC provider ARN>} for "
        "sts:AssumeRoleWithWebIdentity, with Condition StringEquals {<issuer>:sub: "
        "'system:serviceaccount:<namespace>:<ksa>', <issuer>:aud: 'sts.amazonaws.com'}, <ksa> the "
        "serviceAccountName of the role's backup CronJob (components/aws/policies.py irsa_trust)."
    )
    for role in _pod_roles(resources):
        statements = require_known(policy_document(role.props.get("assumeRolePolicy")), f"{role.name}.assumeRolePolicy")
        if statements is None:
            report(f"IAM role '{role.name}': assumeRolePolicy is not a policy document. {fix}", role.urn)
            continue
        for statement in statements:
            if statement.effect != "Allow":
                continue
            problem = _trust_problem(statement, role, ksas, annotated)
            if problem:
                report(
                    f"IAM role '{role.name}' (a backup job's role): trust {statement.sid} {problem}; that lets "
                    f"others act as the backup writer. {fix}",
                    role.urn,
                )


def _trust_problem(statement: Statement, role: StackResource, ksas: set, annotated: dict) -> str | None:
    if statement.not_principals is not None:
        return "uses NotPrincipal (everyone but the listed principals)"
    principals = statement.principals or {}
    federated = principals.get("Federated", [])
    if set(principals) != {"Federated"} or len(federated) != 1:
        return f"trusts {principals or 'no principal'}, not exactly one OIDC provider"
    provider = require_known(federated[0], f"{role.name}.assumeRolePolicy.Principal.Federated")
    match = _OIDC_PROVIDER.match(str(provider))
    if match is None:
        return f"trusts {provider}, which is not an IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/...)"
    if [str(a).lower() for a in statement.actions] != ["sts:assumerolewithwebidentity"]:
        return f"allows {statement.actions}, not exactly sts:AssumeRoleWithWebIdentity"
    issuer = match["issuer"]
    subjects = statement.condition("StringEquals", f"{issuer}:sub")
    audiences = statement.condition("StringEquals", f"{issuer}:aud")
    if not subjects or len(subjects) != 1:
        return (
            f"does not limit {issuer}:sub with StringEquals to exactly one value (found {subjects or 'none'}): "
            f"any ServiceAccount of the cluster (or several) may assume it"
        )
    if audiences != [_AUDIENCE]:
        return f"does not require StringEquals {issuer}:aud = {_AUDIENCE} (found {audiences or 'none'})"
    subject = _SUBJECT.match(str(subjects[0]))
    if subject is None:
        return f"names subject '{subjects[0]}', not system:serviceaccount:<namespace>:<name>"
    key = (subject["ns"], subject["sa"])
    if subject["sa"] == "default":
        return f"names the 'default' ServiceAccount of namespace '{subject['ns']}', which every pod without one runs as"
    if key not in ksas:
        return (
            f"names ServiceAccount '{'/'.join(key)}', which no backup CronJob runs as (they run as "
            f"{sorted('/'.join(k) for k in ksas) or 'none'})"
        )
    owner = annotated.get(key)
    if owner is not None and owner.urn != role.urn:
        return (
            f"names ServiceAccount '{'/'.join(key)}', which is annotated with role '{owner.name}': that job would get "
            f"this role's rights on top of its own"
        )
    return None


irsa_trust_backup_ksa = stack_rule(
    "irsa-trust-backup-ksa",
    "Only its backup CronJob's own Kubernetes ServiceAccount can assume a backup job's IAM role: one OIDC provider, "
    "sts:AssumeRoleWithWebIdentity, StringEquals on :sub (one system:serviceaccount:<ns>:<ksa>) and :aud.",
    check=_check_irsa,
    severity=Severity.CRITICAL,
    remediation="Trust the cluster's OIDC provider with StringEquals <issuer>:sub = "
    "system:serviceaccount:<namespace>:<ksa> and <issuer>:aud = sts.amazonaws.com (components/aws/policies.py).",
)


# --- the identities secret's resource policy ----------------------------------------------------------------

_NAMED_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[^*?]+$")
_EXEMPTING = ("ArnNotEquals", "ArnNotLike", "StringNotEquals", "StringNotLike")
SECRET_GUARDED_ACTIONS = ("secretsmanager:GetSecretValue", "secretsmanager:DeleteSecret")


def _identities_secrets(resources: list[StackResource]) -> list[StackResource]:
    return [r for r in resources if r.type == AWS_SECRET and tags(r.props).get(SECRET_PURPOSE) == "identities"]


def _check_secret_policy(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    policies = [r for r in resources if r.type == "aws:secretsmanager/secretPolicy:SecretPolicy"]
    for secret in _identities_secrets(resources):
        sources = [p for p in policies if refers_to(p, "secretArn", secret, secret.props.get("name"))]
        documents = [(p.name, p.props.get("policy")) for p in sources]
        if not unset(secret.props.get("policy")):
            documents.append((secret.name, secret.props.get("policy")))
        statements = []
        for name, raw in documents:
            parsed = require_known(policy_document(raw), f"{name}.policy")
            statements.extend(parsed or [])
        open_actions = [a for a in SECRET_GUARDED_ACTIONS if not any(_guards(s, a) for s in statements)]
        if open_actions:
            report(
                f"Secret '{secret.name}' (identities dumps): no resource policy statement denies "
                f"{', '.join(open_actions)} to everyone but named restore roles, so any principal of the account "
                f"that IAM allows (an admin, a broad role) can read the node's private keys or delete every dump. "
                f"Fix: attach an aws.secretsmanager.SecretPolicy with Effect Deny, Principal '*', those actions, and "
                f"Condition ArnNotLike aws:PrincipalArn [the restore roles] (sv-backups:aws.restoreRoleArns).",
                secret.urn,
            )


def _guards(statement: Statement, action: str) -> bool:
    """A Deny of `action` to everyone, exempting only named roles by aws:PrincipalArn."""
    if statement.effect != "Deny" or not is_everyone(statement.principals) or not covers(statement.actions, action):
        return False
    keys = {(op, key) for op, entries in statement.conditions.items() for key in entries}
    if not keys:
        return True
    if len(keys) != 1 or next(iter(keys))[1] != "aws:principalarn" or next(iter(keys))[0] not in _EXEMPTING:
        return False
    exempted = next(iter(statement.conditions.values()))["aws:principalarn"]
    return bool(exempted) and all(v is UNKNOWN or _NAMED_ROLE.match(str(v)) for v in exempted)


aws_identities_secret_policy = stack_rule(
    "aws-identities-secret-policy",
    "The identities secret's resource policy denies reading and deleting it to everyone but named restore roles.",
    check=_check_secret_policy,
    severity=Severity.CRITICAL,
    remediation="Attach a SecretPolicy denying secretsmanager:GetSecretValue and DeleteSecret to Principal '*' "
    "with Condition ArnNotLike aws:PrincipalArn the restore roles.",
)


# --- RDS automated backups ------------------------------------------------------------------------------

MIN_REPLICATED_RETENTION_DAYS = 7


def _check_rds_replication(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    replications = [r for r in resources if r.type == RDS_BACKUP_REPLICATION]
    for instance in (r for r in resources if r.type == RDS_INSTANCE):
        identifier = instance.props.get("identifier")
        found = [
            r
            for r in replications
            if refers_to(r, "sourceDbInstanceArn", instance)
            or (isinstance(identifier, str) and str(r.props.get("sourceDbInstanceArn")).endswith(f":db:{identifier}"))
        ]
        where = f"RDS instance '{instance.name}' ({identifier})"
        good = False
        problems = []
        for replication in found:
            here, there = region_of(instance), region_of(replication)
            days = as_number(replication.props.get("retentionPeriod"))
            if UNKNOWN not in (here, there) and here == there:
                problems.append(f"'{replication.name}' replicates to its own region {here or '(default)'}")
            elif days is not None and days < MIN_REPLICATED_RETENTION_DAYS:
                problems.append(f"'{replication.name}' keeps replicated backups {days:g} days")
            else:
                good = True
        if not good:
            report(
                f"{where}: its automated backups are not replicated to another region "
                f"({'; '.join(problems) or 'no InstanceAutomatedBackupsReplication names it'}): losing the region "
                f"loses them. Fix: declare aws.rds.InstanceAutomatedBackupsReplication in sv-backups:dr.region with "
                f"sourceDbInstanceArn the instance's ARN and retentionPeriod >= {MIN_REPLICATED_RETENTION_DAYS}.",
                instance.urn,
            )


rds_backups_replicated = stack_rule(
    "rds-backups-replicated",
    "Every RDS instance's automated backups are replicated to another region (at least 7 days).",
    check=_check_rds_replication,
    severity=Severity.CRITICAL,
    remediation="Declare aws.rds.InstanceAutomatedBackupsReplication in the DR region for each instance.",
)


# --- the AWS profile of the cloud-neutral rules -------------------------------------------------------------

ALERT_KIND, ALERT_TYPE = "svbackups-kind", "svbackups-alert"


def _alarm_metrics(alarm: StackResource) -> list[tuple]:
    """(namespace, metric name) the alarm watches, directly or through its metric queries."""
    metrics = [(alarm.props.get("namespace"), alarm.props.get("metricName"))]
    for query in alarm.props.get("metricQueries") or []:
        if isinstance(query, dict) and isinstance(query.get("metric"), dict):
            metrics.append((get(query, "metric", "namespace"), get(query, "metric", "metricName")))
    return [m for m in metrics if m != (None, None)]


def _aws_alerts(resources: list[StackResource]) -> list[BackupAlert]:
    produced = {
        (get(f.props, "metricTransformation", "namespace"), get(f.props, "metricTransformation", "name"))
        for f in resources
        if f.type == LOG_METRIC_FILTER
    }
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
        metrics = _alarm_metrics(alarm)
        unfed = [m for m in metrics if UNKNOWN not in m and m not in produced]
        if not metrics or unfed:
            shown = ", ".join("/".join(map(str, m)) for m in unfed) or "no metric"
            defects.append(
                f"{where}: watches {shown}, which no LogMetricFilter of this stack produces, so it never sees a "
                f"{kind} backup event. Fix: alarm on the metric of the LogMetricFilter that counts the jobs' "
                f"'backup.completed' / 'backup.failed' events (components/monitoring.py BackupAlerts)."
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
    if not _identities_secrets(resources):
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

POLICIES: list[StackValidationPolicy] = [
    s3_block_public_access,
    s3_bucket_owner_enforced,
    s3_bucket_cmk,
    s3_versioning_enabled,
    s3_object_lock,
    s3_tls_only,
    s3_writer_deletes_denied,
    s3_replication_to_dr,
    s3_lifecycle_never_deletes_history,
    s3_lifecycle_keeps_recent_window,
    s3_storage_class_transitions,
    aws_roles_cannot_delete,
    aws_secret_writer_put_only,
    irsa_trust_backup_ksa,
    aws_identities_secret_policy,
    rds_backups_replicated,
]
