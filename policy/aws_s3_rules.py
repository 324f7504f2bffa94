"""Stack rules on the S3 buckets: what a bucket only shows with its side resources (public access block, ownership,
encryption, versioning, Object Lock, bucket policy, replication, lifecycle).

Which buckets hold backups is read from what the jobs do: the Postgres CronJob's `--dest s3://<bucket>/<prefix>`
names the primary store, its replication rule the DR copy. The windows come from the tags the program puts on the
primary bucket (CrossGuard stack policies see resources, not stack outputs), as on GCP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pulumi_policy import ReportViolation, Severity, StackValidationArgs, StackValidationPolicy

from rules.retention import HISTORICAL_TIER, RECENT_TIER

from .aws_resources import (
    BUCKET_ACL,
    BUCKET_POLICY,
    ENCRYPTION,
    LIFECYCLE,
    OBJECT_LOCK,
    OWNERSHIP_CONTROLS,
    PUBLIC_ACCESS_BLOCK,
    REPLICATION,
    VERSIONING,
    S3Bucket,
    Statement,
    action_matches,
    arn_region,
    bucket_arn,
    configured,
    covers,
    enabled,
    is_everyone,
    job_roles,
    policy_document,
    region_of,
    replication_targets,
    role_policies,
    s3_buckets,
    tags,
    unset,
)
from .props import (
    RECENT_SECONDS,
    UNKNOWN,
    as_number,
    describe_seconds,
    get,
    require_known,
)
from .rule import ADVISORY, StackResource, stack_rule
from .stack_rules import dest_prefixes

DAY = 86400


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
                # A bucket the jobs write to is a store, never a copy: what replicates into it (or a rule
                # replicating a bucket to itself) must not exempt it from the store's rules.
                if target is primary.bucket or target.name in dests:
                    continue
                copy = found.setdefault(target.resource.urn, BackupBucket(target))
                copy.source = copy.source or primary.bucket
                copy.prefixes |= primary.prefixes
                if copy.window is None:
                    copy.window = primary.window
    return list(found.values())


def _foreign_key(key, region) -> bool:
    """A KMS key ARN of another region than `region` (S3 can only use a key of the bucket's own region)."""
    return isinstance(region, str) and arn_region(key) not in (None, region)


# --- public access, ownership, encryption, versioning ---------------------------------------------------

_BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _check_public_access(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in s3_buckets(resources):
        blocks = bucket.of(PUBLIC_ACCESS_BLOCK)
        if not blocks:
            report(
                f"{bucket.shown}: no BucketPublicAccessBlock, so one bucket policy or ACL can publish the node's "
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
                    f"{bucket.shown}: BucketPublicAccessBlock '{block.name}' leaves {', '.join(off)} off, so a "
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
                f"{bucket.shown}: object ownership is {shown}, so object ACLs stay in force and an object "
                f"written by another account is owned by it. Fix: declare aws.s3.BucketOwnershipControls with "
                f"rule.objectOwnership 'BucketOwnerEnforced' (ACLs disabled, the bucket owner owns every object).",
                bucket.resource.urn,
            )
        acls = [a.name for a in bucket.of(BUCKET_ACL)]
        inline = bucket.resource.props.get("acl")
        if acls or inline not in (None, "", "private") or not unset(bucket.resource.props.get("grants")):
            report(
                f"{bucket.shown}: ACLs are declared ({', '.join(acls) or inline or 'grants'}); with "
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
                f"{bucket.shown}: no BucketServerSideEncryptionConfiguration, so objects are encrypted with S3's "
                f"own keys (SSE-S3) that the operator cannot revoke or audit. Fix: declare "
                f"aws.s3.BucketServerSideEncryptionConfiguration with sseAlgorithm 'aws:kms', kmsMasterKeyId a "
                f"customer-managed key of the bucket's region, and bucketKeyEnabled true.",
                bucket.resource.urn,
            )
        for config in configs:
            rules = [r for r in config.props.get("rules") or [] if isinstance(r, dict)]
            if not rules:
                report(f"{bucket.shown}: '{config.name}' has no rule. Fix: add the SSE-KMS rule.", config.urn)
            for rule in rules:
                default = get(rule, "applyServerSideEncryptionByDefault", default={}) or {}
                algorithm, key = get(default, "sseAlgorithm"), get(default, "kmsMasterKeyId")
                problems = []
                if algorithm not in ("aws:kms", "aws:kms:dsse", UNKNOWN):
                    problems.append(f"sseAlgorithm is {algorithm or 'unset'} (not SSE-KMS)")
                elif not configured(key):
                    problems.append("kmsMasterKeyId is unset, so S3 uses the AWS-managed key aws/s3")
                elif isinstance(key, str) and _AWS_MANAGED_S3_KEY.search(key):
                    problems.append(f"kmsMasterKeyId is the AWS-managed key {key}")
                elif _foreign_key(key, region_of(bucket.resource)):
                    problems.append(f"kmsMasterKeyId {key} is a key of {arn_region(key)}, not of the bucket's region")
                if rule.get("bucketKeyEnabled") is not True and rule.get("bucketKeyEnabled") is not UNKNOWN:
                    problems.append("bucketKeyEnabled is not true (a KMS request per object: cost and throttling)")
                if problems:
                    report(
                        f"{bucket.shown}: encryption '{config.name}': {'; '.join(problems)}. Fix: sseAlgorithm "
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


MIN_SOFT_DELETE_DAYS = 7


def _check_versioning(resources: list[StackResource], args: StackValidationArgs, report: ReportViolation) -> None:
    minimum = float(args.get_config().get("minSoftDeleteDays", MIN_SOFT_DELETE_DAYS))
    for bucket in s3_buckets(resources):
        statuses = [get(v.props, "versioningConfiguration", "status") for v in bucket.of(VERSIONING)]
        if not statuses or any(not enabled(s) for s in statuses):
            shown = ", ".join(map(str, statuses)) or "no BucketVersioning"
            report(
                f"{bucket.shown}: versioning is {shown}; without versions an overwrite or a delete destroys the "
                f"set, and S3 Object Lock and replication require versioning. Fix: declare aws.s3.BucketVersioning "
                f"with versioningConfiguration.status 'Enabled'.",
                bucket.resource.urn,
            )
        for rule in _lifecycle_rules(bucket):
            if rule.enabled and rule.noncurrent_days is not None and rule.noncurrent_days < minimum:
                report(
                    f"{bucket.shown}: {rule.shown} removes noncurrent versions after {rule.noncurrent_days:g} "
                    f"days: a set deleted or overwritten by mistake is gone for good before anyone notices (the S3 "
                    f"counterpart of GCS soft delete). Fix: set noncurrentVersionExpiration.noncurrentDays to at "
                    f"least {minimum:g} (sv-backups:storage.softDelete).",
                    rule.source.urn,
                )


s3_versioning_enabled = stack_rule(
    "s3-versioning-enabled",
    "Every S3 bucket has versioning enabled and keeps noncurrent versions (what a delete or overwrite leaves) for "
    "at least 7 days.",
    check=_check_versioning,
    severity=Severity.CRITICAL,
    remediation="Declare aws.s3.BucketVersioning with versioningConfiguration.status Enabled; expire noncurrent "
    "versions after 7 days or more.",
    config={
        "minSoftDeleteDays": {
            "type": "number",
            "minimum": MIN_SOFT_DELETE_DAYS,
            "default": MIN_SOFT_DELETE_DAYS,
            "description": "Smallest allowed noncurrentVersionExpiration.noncurrentDays, in days (at least 7).",
        }
    },
)


# --- Object Lock --------------------------------------------------------------------------------------------

_LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


def _check_object_lock(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for backup in _backup_buckets(resources):
        bucket = backup.bucket
        where = bucket.shown + (f" (DR copy of {backup.source.resource.name})" if backup.source else "")
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
            report(f"{bucket.shown}: '{source.name}' policy is not an IAM policy document. Fix: write it as JSON.")
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
                f"{bucket.shown}: plain-HTTP requests are allowed (the bucket {shown}): credentials and "
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

# What no writer may do to a backup bucket; the bucket policy must deny each to every job role. The first three
# act on objects (bucket/*), the others on the bucket itself.
WRITER_DENIED_S3_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
)
_BUCKET_LEVEL_ACTIONS = frozenset({"s3:PutLifecycleConfiguration", "s3:PutBucketPolicy"})
# How a Deny to Principal '*' names the roles it applies to (aws:PrincipalArn): exactly, or by wildcard pattern.
_EXACT_OPERATORS = ("ArnEquals", "StringEquals")
_PATTERN_OPERATORS = ("ArnLike", "StringLike")


def _denies_to(statement: Statement, role_arn: str, action: str) -> bool:
    """Whether a Deny statement applies to `role_arn` for `action`, with no condition that could switch it off."""
    if statement.effect != "Deny" or not covers(statement.actions, action):
        return False
    keys = {key for entries in statement.conditions.values() for key in entries}
    if keys - {"aws:principalarn"}:
        return False  # a further condition (TLS, a tag...) would leave the action open when it does not hold
    named = statement.principals or {}
    if not is_everyone(named):
        return role_arn in named.get("AWS", []) and not statement.conditions
    if not statement.conditions:
        return True
    exact = [v for op in _EXACT_OPERATORS for v in statement.condition(op, "aws:PrincipalArn") or []]
    patterns = [v for op in _PATTERN_OPERATORS for v in statement.condition(op, "aws:PrincipalArn") or []]
    return role_arn in exact or any(action_matches(p, role_arn) for p in patterns)


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
    writers = [(ksa, arn) for ksa, arn, role in job_roles(resources) if _grants_s3(role, resources)]
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
                    _denies_to(s, str(arn), action)
                    and _covers_resources(
                        s,
                        bucket,
                        objects=action not in _BUCKET_LEVEL_ACTIONS,
                        bucket_itself=action in _BUCKET_LEVEL_ACTIONS,
                    )
                    for s in statements
                )
            ]
            if open_actions:
                report(
                    f"{bucket.shown}: its bucket policy does not deny {', '.join(open_actions)} to the job role "
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
                f"{bucket.shown}: backups are not replicated to another region ({detail}): losing the region "
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
    if not enabled(rule.get("status")):
        problems.append(f"{where} is {rule.get('status')}")
    prefix = _rule_prefix(rule)
    if prefix is not UNKNOWN and not all(p.startswith(prefix) for p in prefixes or {""}):
        problems.append(f"{where} only replicates '{prefix}', not the sets under {sorted(prefixes)}")
    tagged = get(rule, "filter", "tag") or get(rule, "filter", "and", "tags")
    if tagged:
        problems.append(f"{where} only replicates objects tagged {tagged}, and the jobs tag none")
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
        if None in (here, there):
            problems.append(
                f"{where} replicates to {target.resource.name}, and the region of "
                f"{(bucket if here is None else target).resource.name} cannot be told (no region input, no provider "
                f"region)"
            )
        elif here == there:
            problems.append(f"{where} replicates to {target.resource.name} in the same region {here}")
    if get(rule, "sourceSelectionCriteria", "sseKmsEncryptedObjects", "status") not in ("Enabled", UNKNOWN):
        problems.append(f"{where} skips SSE-KMS objects (sourceSelectionCriteria.sseKmsEncryptedObjects not Enabled)")
    replica_key = get(rule, "destination", "encryptionConfiguration", "replicaKmsKeyId")
    if not configured(replica_key):
        problems.append(f"{where} has no destination.encryptionConfiguration.replicaKmsKeyId")
    for target in targets:
        if _foreign_key(replica_key, region_of(target.resource)):
            problems.append(
                f"{where} encrypts replicas with {replica_key}, a key of {arn_region(replica_key)}, not of the DR "
                f"bucket's region"
            )
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
                        _rule_prefix(rule),
                        enabled(rule.get("status")),
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
                    rule.get("prefix") or "",
                    rule.get("enabled") is not False,
                    as_number(get(rule, "expiration", "days")),
                    get(rule, "expiration", "date"),
                    as_number(get(rule, "noncurrentVersionExpiration", "days")),
                    [t for t in rule.get("transitions") or [] if isinstance(t, dict)],
                )
            )
    return found


def _check_history_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for backup in _backup_buckets(resources):
        bucket = backup.bucket
        prefixes = sorted(backup.prefixes)
        for rule in _lifecycle_rules(bucket):
            if not rule.expires_live:
                continue
            if len(prefixes) != 1:
                where = (
                    "no Postgres CronJob writes to it (no --dest s3://" + str(bucket.name) + "/...)"
                    if not prefixes
                    else f"the Postgres steps write to several prefixes {prefixes}"
                )
                report(
                    f"{bucket.shown}: {rule.shown} expires live objects, and {where}, so the recent tier it may "
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
                    f"{bucket.shown}: {rule.shown} expires live objects under '{prefix or '(every prefix)'}', "
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
    "the Postgres CronJob writes to, never historical backup sets.",
    check=_check_history_kept,
    severity=Severity.CRITICAL,
    remediation="Give every Expiration a filter.prefix inside '<prefix>recent/' (from the Postgres --dest "
    "s3://<bucket>/<prefix>).",
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
                    f"{bucket.shown}: {rule.shown} expires recent sets on a date ({rule.expire_date}), not by "
                    f"their age, so a set can go before the recent window {describe_seconds(window)} ends. Fix: use "
                    f"expiration.days = {days}.",
                    rule.source.urn,
                )
            elif rule.expire_days != days:
                early = rule.expire_days < days
                report(
                    f"{bucket.shown}: {rule.shown} expires recent sets after {rule.expire_days:g} days, but the "
                    f"recent window is {describe_seconds(window)} ({RECENT_SECONDS}): "
                    + ("sets go before their window ends" if early else "sets stay (and are billed) past it")
                    + f". Fix: set expiration.days to {days} (sv-backups:retention.recent).",
                    rule.source.urn,
                )
            elif rule.prefix in tiers:
                exact = True
        if not exact:
            report(
                f"{bucket.shown}: no enabled lifecycle rule expires the recent tier {', '.join(tiers)} after "
                f"{days} days, so recent sets are never removed (and a DR copy keeps every one: S3 does not "
                f"replicate lifecycle expirations). Fix: declare an Expiration of {days} days with filter.prefix "
                f"'{tiers[0]}' (rules/retention.py bucket_lifecycle).",
                bucket.resource.urn,
            )


s3_lifecycle_keeps_recent_window = stack_rule(
    "s3-lifecycle-keeps-recent-window",
    "The recent tier of every backup bucket (and DR copy) expires after exactly the recent window.",
    check=_check_recent_kept,
    remediation="Expire '<prefix>recent/' after exactly the recent window in days (rules/retention.py).",
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
                moved_at, minimum = as_number(transition.get("days")) or 0, _MIN_STORAGE_DAYS[target]
                for expiry in expiring:
                    a, b = str(rule.prefix), str(expiry.prefix)
                    if (a.startswith(b) or b.startswith(a)) and 0 < expiry.expire_days - moved_at < minimum:
                        report(
                            f"{backup.bucket.shown}: {rule.shown} moves '{a or '*'}' objects to {target} at "
                            f"{moved_at:g} days, and {expiry.shown} expires them at {expiry.expire_days:g} days, "
                            f"before {target}'s {minimum}-day minimum storage duration: "
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
]
