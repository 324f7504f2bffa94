"""Rules on DR stacks (components/dr.py): the restore identity only reads, the standby backups stand by, and a
production primary has a DR region (and, checked over the repository, a DR stack: policy/repo_rules.py).

A DR stack is recognised by what it declares (a StackReference to its primary and the replica-check CronJob),
and a restore identity by its name (`<node>-dr-restore`, as the program names it): the rules below hold every
such identity, in any stack, to reading only, so the name grants nothing by itself.
"""

from __future__ import annotations

import json
from typing import Any

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from rules.gcp_locations import bucket_region

from .aws_resources import S3_BUCKET_TYPES, region_of, tags
from .props import (
    BUCKET,
    CRON_JOB,
    RESTORE_SUFFIX,
    UNKNOWN,
    backup_kind,
    check_kind,
    containers,
    get,
    iam_grants,
    is_dr_stack,
    labels,
    pod_spec,
    standby,
)
from .rule import StackResource, stack_rule
from .stack_rules import dest_prefixes

# What restores, drills and the replica check need: list and read the sets and the secret's versions.
GCP_READ_ROLES = frozenset({"roles/storage.objectViewer", "roles/secretmanager.secretAccessor"})
AWS_READ_ACTIONS = frozenset(
    {
        "s3:getobject",
        "s3:listbucket",
        "kms:decrypt",
        "secretsmanager:getsecretvalue",
        "secretsmanager:listsecretversionids",
    }
)
IAM_ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def _restore_member(member) -> bool:
    text = str(member)
    return text.startswith("serviceAccount:") and text.split(":", 1)[1].split("@", 1)[0].endswith(RESTORE_SUFFIX)


def _check_restore_read_only(
    resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation
) -> None:
    for resource in resources:
        if resource.type.startswith("gcp:") and "iam" in resource.type.lower():
            for role, members in iam_grants(resource.props):
                restore = [m for m in members if m is not UNKNOWN and _restore_member(m)]
                if restore and role not in GCP_READ_ROLES:
                    report(
                        f"{resource.type.rsplit(':', 1)[-1]} '{resource.name}': grants {role} to the restore identity "
                        f"{', '.join(map(str, restore))}, which may only read the backups "
                        f"({', '.join(sorted(GCP_READ_ROLES))}): it must be able neither to write nor to delete. "
                        f"Fix: grant it read roles only (components/dr.py).",
                        resource.urn,
                    )
                if restore and resource.type.startswith("gcp:projects/") and not resource.props.get("condition"):
                    report(
                        f"IAMMember '{resource.name}': grants {role} on the whole project to the restore identity; "
                        f"Fix: condition it on the one bucket (components/gcp/backend.py allow_object_reads).",
                        resource.urn,
                    )
    restore_roles = {
        r.props.get("name")
        for r in resources
        if r.type == IAM_ROLE and str(r.props.get("name", "")).endswith(RESTORE_SUFFIX)
    }
    for resource in resources:
        if resource.type != ROLE_POLICY or resource.props.get("role") not in restore_roles:
            continue
        document = resource.props.get("policy")
        try:
            statements = json.loads(document)["Statement"] if isinstance(document, str) else None
        except (ValueError, KeyError, TypeError):
            statements = None
        if not isinstance(statements, list):
            report(
                f"RolePolicy '{resource.name}' of the restore role: its document cannot be reviewed. Fix: a literal "
                f"JSON policy of read actions only.",
                resource.urn,
            )
            continue
        for statement in statements:
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            extra = sorted(
                a for a in actions if str(a).lower() not in AWS_READ_ACTIONS or statement.get("Effect") != "Allow"
            )
            if extra or "NotAction" in statement:
                report(
                    f"RolePolicy '{resource.name}' of the restore role {resource.props.get('role')}: allows "
                    f"{', '.join(map(str, extra)) or 'NotAction'}; the restore identity may only read the backups "
                    f"({', '.join(sorted(AWS_READ_ACTIONS))}). Fix: read actions only (components/aws/policies.py).",
                    resource.urn,
                )


dr_restore_read_only = stack_rule(
    "dr-restore-read-only",
    "The restore identity (`<node>-restore` on a primary: the audit and drills; `<node>-dr-restore` on a DR stack) "
    "may read backups and secrets, never write or delete.",
    check=_check_restore_read_only,
    severity=Severity.CRITICAL,
    remediation="Grant the restore identity read roles / actions only (components/dr.py, the backends' "
    "allow_object_reads and allow_secret_reads).",
)


def _check_standby(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    jobs = [r for r in resources if r.type == CRON_JOB and backup_kind(r.props) is not None]
    waiting = [j for j in jobs if standby(j.props)]
    if not is_dr_stack(resources):
        for job in waiting:
            report(
                f"CronJob '{job.name}': labelled standby, but this is not a DR stack (no StackReference to a "
                f"primary and no replica check): a primary's backups never stand by. Fix: remove the label and "
                f"suspend.",
                job.urn,
            )
        return
    if waiting and len(waiting) != len(jobs):
        running = sorted(j.name for j in jobs if not standby(j.props))
        report(
            f"DR stack: the backup CronJobs {sorted(j.name for j in waiting)} stand by while {running} run; a DR "
            f"cluster either stands by (before failover) or runs every backup (after it). Fix: set "
            f"sv-backups:dr.failover and let the program label them all alike."
        )
    for job in resources:
        if job.type != CRON_JOB or check_kind(job.props) != "replica":
            continue
        if get(job.props, "spec", "suspend") is True:
            report(
                f"CronJob '{job.name}': the replica check is suspended, so nobody learns that the DR copy fell "
                f"behind. Fix: remove spec.suspend.",
                job.urn,
            )
        commands = [c.get("args", [None])[0] for _kind, c in containers(pod_spec(job.props))]
        if "check-replica" not in commands:
            report(
                f"CronJob '{job.name}': runs {commands}, not check-replica. Fix: declare it with components/dr.py.",
                job.urn,
            )


dr_standby = stack_rule(
    "dr-standby",
    "A DR stack's backup CronJobs all stand by (suspended) until failover, its replica check runs, and only a DR "
    "stack has standby CronJobs.",
    check=_check_standby,
    severity=Severity.HIGH,
    remediation="Let components/program.py declare the DR stack (sv-backups:role: dr, sv-backups:dr.failover).",
)


# --- a production primary declares its DR region (its DR stack: policy/repo_rules.py) ---------------------

PRODUCTION_DR = "production-dr"
REQUIRE_DR_STACK = "requireDrStack"
# The label (GCS) or tag (S3) with which the program names the DR region on the bucket the jobs write to.
DR_REGION_LABEL = "svbackups-dr-region"


def _primary_stores(resources: list[StackResource]) -> list[tuple[StackResource, dict, Any, set]]:
    """The buckets the Postgres jobs write to: (bucket, its labels or tags, its own region (None for a GCS
    dual-region), the regions the bucket's data is in or the stack's other buckets are in)."""
    found = []
    gcs = {r.props.get("name"): r for r in resources if r.type == BUCKET}
    gcs_regions = {
        bucket_region(str(r.props.get("location")), get(r.props, "customPlacementConfig", "dataLocations") or [])
        for r in gcs.values()
        if isinstance(r.props.get("location"), str)
    }
    for name in sorted(dest_prefixes(resources, "gs")):
        bucket = gcs.get(name)
        if bucket is None or not isinstance(bucket.props.get("location"), str):
            continue
        placement = get(bucket.props, "customPlacementConfig", "dataLocations", default=[]) or []
        own = bucket_region(bucket.props["location"], placement)
        held = {str(p).lower() for p in placement} if own is None else gcs_regions - {None}
        found.append((bucket, labels(bucket.props, "labels"), own, held))
    s3 = {r.props.get("bucket"): r for r in resources if r.type in S3_BUCKET_TYPES}
    s3_regions = {region_of(r) for r in s3.values()}
    for name in sorted(dest_prefixes(resources, "s3")):
        bucket = s3.get(name)
        if bucket is not None:
            found.append((bucket, tags(bucket.props), region_of(bucket), s3_regions))
    return found


def _check_production_dr(resources: list[StackResource], args: StackValidationArgs, report: ReportViolation) -> None:
    if not (args.get_config() or {}).get(REQUIRE_DR_STACK):
        return
    if is_dr_stack(resources):
        report(
            f"This is a DR stack, and the policy config requires it to have a DR stack of its own ({PRODUCTION_DR}."
            f"{REQUIRE_DR_STACK}): a DR stack stands in for its primary, which carries that requirement. Fix: set "
            f"{REQUIRE_DR_STACK} in the primary's policy config, not the DR stack's."
        )
        return
    for bucket, marks, own, held in _primary_stores(resources):
        where = f"Bucket '{bucket.name}'"
        region = marks.get(DR_REGION_LABEL)
        fix = (
            "Fix: set sv-backups:dr.region (the program labels the bucket with it and keeps a copy there) and "
            "declare the DR stack (stacks/Pulumi.<stack>-dr.yaml, sv-backups:role: dr)."
        )
        if region is UNKNOWN:
            continue
        if not isinstance(region, str) or not region:
            report(
                f"{where}: a production stack's backup bucket names no DR region (label/tag {DR_REGION_LABEL}), so "
                f"nothing shows where its sets survive the primary region's loss and where its DR stack runs. {fix}",
                bucket.urn,
            )
            continue
        primary = own if own is not None else bucket.provider.get("region")
        if isinstance(primary, str) and region == primary.lower():
            report(f"{where}: its DR region {region} is its own region {primary}. {fix}", bucket.urn)
        elif region not in held:
            report(
                f"{where}: names DR region {region}, but none of the stack's copies of the sets is there (they are "
                f"in {', '.join(sorted(map(str, held))) or 'no known region'}). {fix}",
                bucket.urn,
            )


production_dr = stack_rule(
    PRODUCTION_DR,
    "With requireDrStack (production stacks): the bucket the jobs write to names a DR region other than its own, "
    "where the stack keeps a copy of the sets; the offline check also requires a DR stack file in the repository "
    "whose dr.primaryStack is this stack, deployed in that region (policy/repo_rules.py).",
    check=_check_production_dr,
    severity=Severity.HIGH,
    remediation="Set sv-backups:dr.region and add stacks/Pulumi.<stack>-dr.yaml (sv-backups:role: dr, "
    "sv-backups:dr.primaryStack: <org>/sv-backups/<stack>) in the DR region.",
    config={
        REQUIRE_DR_STACK: {
            "type": "boolean",
            "default": False,
            "description": "This stack is production: it must declare a DR region and have a DR stack.",
        }
    },
)

POLICIES = [dr_restore_read_only, dr_standby, production_dr]
