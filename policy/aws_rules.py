"""Rules on the AWS resources: the identities secret, RDS instances and their backups' replication, resource
policies."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .aws_resources import (
    AWS_SECRET,
    BUCKET_POLICY,
    IAM_ROLE,
    KMS_KEY,
    KMS_KEY_POLICY,
    RDS_BACKUP_REPLICATION,
    RDS_INSTANCE,
    S3_BUCKET_TYPES,
    SECRET_POLICY,
    SNS_TOPIC,
    SNS_TOPIC_POLICY,
    Statement,
    allows,
    arn_region,
    configured,
    is_everyone,
    job_roles,
    policy_document,
    refers_to,
    region_in,
    region_of,
    role_policies,
    s3_buckets,
    service_account_key,
    tags,
)
from .props import (
    SECRET_PURPOSE,
    SNAPSHOT_CLASS,
    UNKNOWN,
    as_number,
    get,
    is_dr_stack,
    namespace_of,
    path_segments,
    plain,
    pod_spec,
)
from .rule import StackResource, resource_rule, stack_rule
from .stack_rules import cometbft_steps, dest_prefixes, one_flag


def _region(props: dict, args: ResourceValidationArgs):
    return region_in(props, plain(args.provider.props) if getattr(args, "provider", None) is not None else {})


# --- the identities secret ------------------------------------------------------------------------------

_AWS_MANAGED_SECRET_KEY = re.compile(r"(^|:)alias/aws/secretsmanager$")


def _customer_key(value) -> bool:
    return configured(value) and not (isinstance(value, str) and _AWS_MANAGED_SECRET_KEY.search(value))


def _check_identities_secret(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if tags(props).get(SECRET_PURPOSE) != "identities":
        return
    where = f"Secret '{args.name}' (identities dumps)"
    primary = _region(props, args)
    if isinstance(primary, str) and arn_region(props.get("kmsKeyId")) not in (None, primary):
        report(
            f"{where}: kmsKeyId {props.get('kmsKeyId')} is a key of {arn_region(props.get('kmsKeyId'))}, not of the "
            f"secret's region {primary}. Fix: use the customer-managed key of {primary}."
        )
    if not _customer_key(props.get("kmsKeyId")):
        report(
            f"{where}: kmsKeyId is {props.get('kmsKeyId') or 'unset'}, so the node's private keys are encrypted "
            f"with the AWS-managed key aws/secretsmanager, which the operator cannot restrict, revoke or audit "
            f"apart from the account. Fix: set kms_key_id to a customer-managed aws.kms.Key of the secret's region."
        )
    replicas = props.get("replicas")
    if replicas is UNKNOWN:
        return
    replicas = [r for r in replicas or [] if isinstance(r, dict)]
    elsewhere = [r for r in replicas if r.get("region") is UNKNOWN or (r.get("region") and r.get("region") != primary)]
    if not elsewhere:
        shown = ", ".join(str(r.get("region")) for r in replicas) or "none"
        report(
            f"{where}: no replica in another region than {primary or 'its own'} (replicas: {shown}); a region loss "
            f"would lose every identities dump. Fix: add replicas=[{{region: sv-backups:dr.region, kms_key_id: "
            f"that region's key}}]."
        )
    for replica in replicas:
        key, region = replica.get("kmsKeyId"), replica.get("region")
        if isinstance(region, str) and arn_region(key) not in (None, region):
            report(
                f"{where}: the replica in {region} names kmsKeyId {key}, a key of {arn_region(key)}: each replica "
                f"must be encrypted by a key of its own region. Fix: use the customer-managed key of {region}."
            )
        if not _customer_key(replica.get("kmsKeyId")):
            report(
                f"{where}: the replica in {replica.get('region')} has kmsKeyId {replica.get('kmsKeyId') or 'unset'} "
                f"(the AWS-managed key). Fix: give every replica a customer-managed key of its own region."
            )
    window = as_number(props.get("recoveryWindowInDays"))
    if window is not None and window < 7:
        report(
            f"{where}: recoveryWindowInDays is {window:g}; 0 deletes the secret, and every dump in it, at once "
            f"with no way back. Fix: leave it unset (30 days) or set 7 to 30."
        )


aws_identities_secret_cmk_replicated = resource_rule(
    "aws-identities-secret-cmk-replicated",
    "The identities-dump secret is encrypted with a customer-managed KMS key and replicated to another region "
    "under that region's own customer-managed key.",
    types=[AWS_SECRET],
    check=_check_identities_secret,
    severity=Severity.CRITICAL,
    remediation="Set kmsKeyId to a customer-managed key and add a replica in the DR region with its own key.",
)


# --- RDS ------------------------------------------------------------------------------------------------

MIN_BACKUP_RETENTION_DAYS = 7
# What ignoreChanges must never cover on an RDS instance: the backup settings and their protections. Every
# other field of an adopted instance is the operator's, and is expected to be ignored.
RDS_PROTECTED_FIELDS = (
    "backupRetentionPeriod",
    "backupWindow",
    "deletionProtection",
    "copyTagsToSnapshot",
    "deleteAutomatedBackups",
)
# Inputs this program may set without ignoring them: the backup settings, the instance's identity, and the
# provider-only fields that act on delete.
RDS_MANAGED_FIELDS = frozenset(
    {*RDS_PROTECTED_FIELDS, "identifier", "region", "skipFinalSnapshot", "finalSnapshotIdentifier", "applyImmediately"}
)


def _ignores(path: str, field: str) -> bool:
    """Whether an ignoreChanges path covers a top-level input (the input itself, or `*`)."""
    segments = path_segments(path)
    return len(segments) == 1 and segments[0] in ("*", field)


def _check_rds(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    where = f"RDS instance '{args.name}' ({props.get('identifier')})"
    minimum = float(args.get_config().get("minRetentionDays", MIN_BACKUP_RETENTION_DAYS))
    raw = props.get("backupRetentionPeriod")
    days = as_number(raw)
    if raw is not UNKNOWN and (days is None or days < minimum):
        report(
            f"{where}: backupRetentionPeriod is {raw if raw is not None else 'unset'}; automated backups (and "
            f"point-in-time recovery) must reach back at least {minimum:g} days, and 0 turns them off. Fix: set "
            f"backup_retention_period >= {minimum:g} (the program sizes it from sv-backups:retention.recent)."
        )
    for field, consequence in (
        ("deletionProtection", "the instance, and with it its automated backups, can be deleted by one API call"),
        ("copyTagsToSnapshot", "snapshots lose the instance's tags (owner, node), and tag-based access and audits"),
    ):
        if props.get(field) is not True and props.get(field) is not UNKNOWN:
            report(f"{where}: {field} is {props.get(field)}: {consequence}. Fix: set {field}: true.")
    if props.get("deleteAutomatedBackups") is not False and props.get("deleteAutomatedBackups") is not UNKNOWN:
        report(
            f"{where}: deleteAutomatedBackups is {props.get('deleteAutomatedBackups', 'unset (true)')}: deleting the "
            f"instance deletes its automated backups too. Fix: set delete_automated_backups=False."
        )
    options = args.opts
    if not getattr(options, "protect", False):
        report(
            f"{where}: the resource option protect is off, so a `pulumi destroy` or a replacement deletes the "
            f"database. Fix: declare it with protect=True (and retain_on_delete=True)."
        )
    ignored = [str(i) for i in getattr(options, "ignore_changes", None) or []]
    for path in ignored:
        hidden = ", ".join(f for f in RDS_PROTECTED_FIELDS if _ignores(path, f))
        if hidden:
            report(
                f"{where}: the resource option ignoreChanges has '{path}', which covers {hidden}: Pulumi then keeps "
                f"whatever the live instance has, so a console change turning backups or deletion protection off "
                f"is never reverted. Fix: remove '{path}' from ignore_changes; only fields other than "
                f"{', '.join(RDS_PROTECTED_FIELDS)} may be ignored."
            )
    unmanaged = sorted(
        key for key in props if key not in RDS_MANAGED_FIELDS and not any(_ignores(i, key) for i in ignored)
    )
    if unmanaged:
        report(
            f"{where}: sets {', '.join(unmanaged)} without ignoring changes to them, so `pulumi up` rewrites the "
            f"adopted database's own settings (class, storage, engine...) to this program's values. Fix: add them "
            f"to ignore_changes; the program manages the backup settings and deletion protection only."
        )


rds_backups_protected = resource_rule(
    "rds-backups-protected",
    "RDS instances keep automated backups at least 7 days, have deletion protection, copy tags to snapshots, keep "
    "automated backups when deleted, are protected, and ignore changes to every field but those.",
    types=[RDS_INSTANCE],
    check=_check_rds,
    severity=Severity.CRITICAL,
    remediation="Set backupRetentionPeriod >= 7, deletionProtection, copyTagsToSnapshot, deleteAutomatedBackups "
    "false, protect=True, and ignore_changes on every other field.",
    config={
        "minRetentionDays": {
            "type": "number",
            "minimum": MIN_BACKUP_RETENTION_DAYS,
            "maximum": 35,
            "default": MIN_BACKUP_RETENTION_DAYS,
            "description": "Smallest allowed backupRetentionPeriod, in days (7 to 35, the RDS maximum).",
        }
    },
)


# --- resource policies ----------------------------------------------------------------------------------

# Condition keys that limit a statement to principals or sources of named accounts, organisations or
# resources: a statement to Principal '*' with one of them (under a positive operator) is not public.
_LIMITING_KEYS = frozenset(
    {
        "aws:principalarn",
        "aws:principalaccount",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:sourceaccount",
        "aws:sourcearn",
        "aws:sourceowner",
        "aws:sourceorgid",
        "aws:sourcevpc",
        "aws:sourcevpce",
        "aws:userid",
        "kms:calleraccount",
    }
)
_LIMITING_OPERATORS = ("StringEquals", "StringLike", "ArnEquals", "ArnLike")

# Resource type -> the inputs holding a resource policy (or a trust policy: who may assume a role).
_POLICY_INPUTS = {
    BUCKET_POLICY: ("policy",),
    SECRET_POLICY: ("policy",),
    AWS_SECRET: ("policy",),
    KMS_KEY: ("policy",),
    SNS_TOPIC: ("policy",),
    SNS_TOPIC_POLICY: ("policy",),
    KMS_KEY_POLICY: ("policy",),
    IAM_ROLE: ("assumeRolePolicy",),
    **{t: ("policy",) for t in S3_BUCKET_TYPES},
}


def _public(statement: Statement) -> bool:
    if statement.effect != "Allow" or not (is_everyone(statement.principals) or statement.not_principals):
        return False
    return not any(
        key in _LIMITING_KEYS
        for operator, entries in statement.conditions.items()
        if operator.removeprefix("ForAnyValue:").removeprefix("ForAllValues:") in _LIMITING_OPERATORS
        for key in entries
    )


def _check_public_policies(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    for key in _POLICY_INPUTS[args.resource_type]:
        statements = policy_document(props.get(key))
        if not isinstance(statements, list):
            continue  # unknown until deployed, or no document: the owning rules report unreadable policies
        for statement in statements:
            if _public(statement):
                report(
                    f"{args.resource_type.rsplit(':', 1)[-1]} '{args.name}': {key} {statement.sid} allows "
                    f"{statement.actions or statement.not_actions} to any principal of any account (Principal '*' "
                    f"with no condition limiting it to this account or organisation). Fix: name the principals, or "
                    f"add a condition on aws:PrincipalAccount / aws:SourceAccount / aws:PrincipalArn."
                )


aws_no_public_policies = resource_rule(
    "aws-no-public-policies",
    "No AWS resource policy or role trust policy allows anything to Principal '*' without limiting it to named "
    "accounts, organisations or sources.",
    types=_POLICY_INPUTS,
    check=_check_public_policies,
    severity=Severity.CRITICAL,
    remediation="Name the principals, or limit Principal '*' with aws:PrincipalAccount / aws:SourceAccount.",
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
            if UNKNOWN not in (here, there) and None in (here, there):
                problems.append(f"the region of '{replication.name}' or of the instance cannot be told")
            elif UNKNOWN not in (here, there) and here == there:
                problems.append(f"'{replication.name}' replicates to its own region {here}")
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


# --- CometBFT snapshots --------------------------------------------------------------------------------

# CSI drivers whose snapshots live in one region only: a kept snapshot is a backup once copied out of it.
REGIONAL_SNAPSHOT_DRIVERS = frozenset({"ebs.csi.aws.com"})


def _check_cometbft_copies(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    drivers = {get(r.props, "metadata", "name"): r.props.get("driver") for r in resources if r.type == SNAPSHOT_CLASS}
    # The primary region: where the store the Postgres jobs write to lives (the cluster's region).
    dests = dest_prefixes(resources, "s3")
    store_regions = {region_of(b.resource) for b in s3_buckets(resources) if b.name in dests}
    roles = {service_account_key(ksa): role for ksa, _arn, role in job_roles(resources)}
    if is_dr_stack(resources):
        return  # a DR stack's snapshots stay in its region: the primary region may be the one that is gone
    for job, step in cometbft_steps(resources):
        if step is None or drivers.get(one_flag(step, "--class")) not in REGIONAL_SNAPSHOT_DRIVERS:
            continue
        where = f"CronJob '{job.name}' (snapshot-cometbft step)"
        region, key = one_flag(step, "--copy-to-region"), one_flag(step, "--copy-kms-key")
        problems = []
        if region is None:
            problems.append("no --copy-to-region, so every kept EBS snapshot stays in the cluster's region")
        elif region in store_regions:
            problems.append(f"--copy-to-region {region} is the cluster's own region (that of the backup store)")
        if key is None:
            problems.append("no --copy-kms-key, so the copies are not encrypted with a key of the DR region")
        elif isinstance(region, str) and arn_region(key) not in (None, region):
            problems.append(f"--copy-kms-key {key} is a key of {arn_region(key)}, not of {region}")
        spec = pod_spec(job.props)
        role = roles.get((namespace_of(job.props), spec.get("serviceAccountName") or "default"))
        if role is not None and not any(
            isinstance(p.statements, list) and any(allows(s, "ec2:CopySnapshot") for s in p.statements)
            for p in role_policies(role, resources)
        ):
            problems.append(f"its role '{role.name}' may not ec2:CopySnapshot, so every copy fails")
        if problems:
            report(
                f"{where}: {'; '.join(problems)}. EBS snapshots are regional: a region loss loses every CometBFT "
                f"snapshot that was not copied. Fix: pass --copy-to-region sv-backups:dr.region and --copy-kms-key "
                f"that region's key, and allow the job's role ec2:CopySnapshot (components/aws/backend.py "
                f"snapshot_copies).",
                job.urn,
            )


cometbft_snapshots_copied = stack_rule(
    "cometbft-snapshots-copied",
    "CometBFT snapshots of a regional CSI driver (EBS) are copied to another region, under that region's key, by "
    "a job role allowed to copy them.",
    check=_check_cometbft_copies,
    severity=Severity.CRITICAL,
    remediation="Pass --copy-to-region and --copy-kms-key to snapshot-cometbft and allow ec2:CopySnapshot.",
)


rds_backups_replicated = stack_rule(
    "rds-backups-replicated",
    "Every RDS instance's automated backups are replicated to another region (at least 7 days).",
    check=_check_rds_replication,
    severity=Severity.CRITICAL,
    remediation="Declare aws.rds.InstanceAutomatedBackupsReplication in the DR region for each instance.",
)


POLICIES = [
    aws_identities_secret_cmk_replicated,
    aws_no_public_policies,
    rds_backups_protected,
    rds_backups_replicated,
    cometbft_snapshots_copied,
]
