"""Stack rules on the IAM side of an AWS stack: what the backup jobs' roles may do, who may assume them (IRSA),
and who may read or delete the identities secret.

A job role is the IAM role a backup CronJob's ServiceAccount is annotated with (eks.amazonaws.com/role-arn), or
any role of the stack that Kubernetes ServiceAccount tokens may assume; its permissions are every RolePolicy and
attached policy that names it.
"""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, Severity, StackValidationArgs, StackValidationPolicy

from .aws_resources import (
    IAM_ROLE,
    SECRET_POLICY,
    Statement,
    allows,
    covers,
    identities_secrets,
    is_everyone,
    job_roles,
    pod_roles,
    policy_document,
    refers_to,
    role_policies,
    service_account_key,
    unset,
)
from .props import (
    RESTORE_SUFFIX,
    UNKNOWN,
    get,
    require_known,
)
from .rule import StackResource, stack_rule
from .stack_rules import backup_ksas

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
)
SECRET_WRITER_ACTION = "secretsmanager:PutSecretValue"
# Reading the node's keys back, and losing them: no job may, only the restore roles.
SECRET_GUARDED_ACTIONS = ("secretsmanager:GetSecretValue", "secretsmanager:DeleteSecret")


def _check_roles_cannot_delete(
    resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation
) -> None:
    job_role_urns = {r.urn for r in pod_roles(resources)}
    for role in (r for r in resources if r.type == IAM_ROLE):
        policies = role_policies(role, resources)
        # An unconditional Deny in any of the role's policies wins over every Allow (IAM's evaluation order).
        denials = [
            s
            for p in policies
            if isinstance(p.statements, list)
            for s in p.statements
            if s.effect == "Deny" and not s.conditions and s.not_actions is None
        ]
        for policy in policies:
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
            denied = [
                a
                for a in DESTRUCTIVE_S3_ACTIONS
                if any(allows(s, a) for s in statements) and not any(covers(d.actions, a) for d in denials)
            ]
            if denied:
                report(
                    f"{where} allows {', '.join(denied)}: the role can delete backups or lift their protection "
                    f"(versioning, Object Lock, lifecycle, bucket policy), and only lifecycle rules may delete "
                    f"backups. Fix: allow only what the jobs call (s3:PutObject, s3:GetObject, s3:ListBucket, "
                    f"s3:AbortMultipartUpload...), never s3:Delete*, s3:Put*Configuration, s3:PutBucketPolicy, "
                    f"s3:BypassGovernanceRetention, 's3:*' or '*'.",
                    policy.source.urn,
                )
            if role.urn not in job_role_urns:
                continue
            escalations = [a for a in ESCALATION_ACTIONS if any(allows(s, a) for s in statements)]
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
    for role in pod_roles(resources):
        if str(role.props.get("name", "")).endswith(RESTORE_SUFFIX):
            continue  # a DR stack's restore role reads the dumps back: dr-restore-read-only holds it to that
        for policy in role_policies(role, resources):
            if not isinstance(policy.statements, list):
                continue  # aws-roles-cannot-delete reports what cannot be reviewed
            for statement in policy.statements:
                if statement.effect != "Allow":
                    continue
                where = f"IAM role '{role.name}': {policy.what} {statement.sid}"
                named = [
                    str(a)
                    for a in statement.actions
                    if str(a).lower().startswith("secretsmanager:") and str(a).lower() != SECRET_WRITER_ACTION.lower()
                ]
                # Wildcards and NotAction: what they let through of the actions that read or destroy the dumps.
                extra = sorted({*named, *(a for a in SECRET_GUARDED_ACTIONS if allows(statement, a))})
                if extra:
                    report(
                        f"{where} allows {', '.join(extra)}. The identities writer may only add versions: reading "
                        f"(GetSecretValue) returns the node's private keys, and deleting, rotating or changing the "
                        f"policy can destroy the stored dumps. Fix: allow {SECRET_WRITER_ACTION} only.",
                        policy.source.urn,
                    )
                if allows(statement, SECRET_WRITER_ACTION) and (
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
    for ksa, arn, role in job_roles(resources):
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
    for role in pod_roles(resources):
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


def _check_secret_policy(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    policies = [r for r in resources if r.type == SECRET_POLICY]
    for secret in identities_secrets(resources):
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
    # Exactly one exemption, by role ARN: a Deny without one would lock the restore roles out too.
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


POLICIES: list[StackValidationPolicy] = [
    aws_roles_cannot_delete,
    aws_secret_writer_put_only,
    irsa_trust_backup_ksa,
    aws_identities_secret_policy,
]
