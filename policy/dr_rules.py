"""Rules on DR stacks (components/dr.py): the restore identity only reads, and the standby backups stand by.

A DR stack is recognised by what it declares (a StackReference to its primary and the replica-check CronJob),
and a restore identity by its name (`<node>-dr-restore`, as the program names it): the rules below hold every
such identity, in any stack, to reading only, so the name grants nothing by itself.
"""

from __future__ import annotations

import json

from pulumi_policy import ReportViolation, Severity, StackValidationArgs

from .props import (
    CRON_JOB,
    RESTORE_SUFFIX,
    UNKNOWN,
    backup_kind,
    check_kind,
    containers,
    get,
    iam_grants,
    is_dr_stack,
    pod_spec,
    standby,
)
from .rule import StackResource, stack_rule

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

POLICIES = [dr_restore_read_only, dr_standby]
