"""How the AWS rules see an AWS stack: resource types, IAM policy documents, regions, and the joins.

An S3 bucket's settings are separate resources in pulumi-aws 7 (BucketPublicAccessBlock, BucketVersioning...),
each naming its bucket by `bucket`; an IAM role's permissions are RolePolicy / RolePolicyAttachment resources
naming it by `role`. A side resource names its subject by a value that may be known only after deployment, so
the join first follows the engine's property dependencies (the URN the value came from), then the value.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .props import K8S_SERVICE_ACCOUNT, SECRET_PURPOSE, UNKNOWN, get, labels, namespace_of
from .rule import StackResource
from .stack_rules import backup_ksas

# --- types ----------------------------------------------------------------------------------------------

S3_BUCKET = "aws:s3/bucket:Bucket"
S3_BUCKET_TYPES = frozenset({S3_BUCKET, "aws:s3/bucketV2:BucketV2"})
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP_CONTROLS = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
OBJECT_LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
# pulumi-aws 7 keeps the *V2 names of the side resources as deprecated aliases: one kind each.
_V2_ALIASES = {
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2": ENCRYPTION,
    "aws:s3/bucketVersioningV2:BucketVersioningV2": VERSIONING,
    "aws:s3/bucketObjectLockConfigurationV2:BucketObjectLockConfigurationV2": OBJECT_LOCK,
    "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2": LIFECYCLE,
    "aws:s3/bucketAclV2:BucketAclV2": BUCKET_ACL,
}
BUCKET_SIDE_TYPES = frozenset(
    {
        PUBLIC_ACCESS_BLOCK,
        OWNERSHIP_CONTROLS,
        ENCRYPTION,
        VERSIONING,
        OBJECT_LOCK,
        LIFECYCLE,
        BUCKET_POLICY,
        REPLICATION,
        BUCKET_ACL,
    }
)
KMS_KEY = "aws:kms/key:Key"
AWS_SECRET = "aws:secretsmanager/secret:Secret"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
IAM_ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
IAM_POLICY = "aws:iam/policy:Policy"
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POLICY_ATTACHMENT = "aws:iam/policyAttachment:PolicyAttachment"
RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_BACKUP_REPLICATION = "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"
LOG_METRIC_FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SNS_TOPIC = "aws:sns/topic:Topic"
SNS_TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"

# The annotation that gives a Kubernetes ServiceAccount an IAM role (IRSA, the EKS pod identity webhook).
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


def side_kind(resource_type: str) -> str:
    """A side resource's type, its deprecated *V2 alias read as the current type."""
    return _V2_ALIASES.get(resource_type, resource_type)


def tags(props: dict) -> dict:
    return labels(props, "tags")


def configured(value: Any) -> bool:
    """Set to something: a literal, or a value only known after deployment (a key created in this update)."""
    return value is UNKNOWN or (isinstance(value, str) and value.strip() != "")


def enabled(status: Any) -> bool:
    """An S3 configuration status that is on (or only known after deployment)."""
    return status is UNKNOWN or status == "Enabled"


def unset(value: Any) -> bool:
    """Not configured: absent, or the zero value providers report for unset fields in outputs."""
    return value in (None, "", 0, [], {}) and value is not False


# --- regions --------------------------------------------------------------------------------------------


def region_in(props: dict, provider: dict) -> Any:
    """The region a resource lives in: its own `region` input (pulumi-aws 7), else its provider's region; None
    when neither says (the engine gave no provider)."""
    for value in (props.get("region"), provider.get("region")):
        if value is UNKNOWN or (isinstance(value, str) and value):
            return value
    return None


def region_of(resource: StackResource) -> Any:
    return region_in(resource.props, resource.provider)


def arn_region(arn: Any) -> str | None:
    """The region field of an ARN (`arn:aws:kms:us-east-1:...`); None when it has none or is not an ARN."""
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        return None
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 3 else None


# --- IAM policy documents -------------------------------------------------------------------------------


def _strings(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    """One statement of an IAM policy document, every list-or-string field as a list."""

    index: int
    effect: str
    actions: list = field(default_factory=list)
    not_actions: list | None = None
    resources: list = field(default_factory=list)
    not_resources: list | None = None
    # Principal type -> values ({"AWS": [...], "Federated": [...], "Service": [...]}); {"*": ["*"]} for "*".
    principals: dict[str, list] | None = None
    not_principals: dict[str, list] | None = None
    # Operator -> condition key (lower case: IAM condition keys are case-insensitive) -> values.
    conditions: dict[str, dict[str, list]] = field(default_factory=dict)

    @property
    def sid(self) -> str:
        return f"statement #{self.index}"

    def condition(self, operator: str, key: str) -> list | None:
        return self.conditions.get(operator, {}).get(key.lower())


def _principals(value: Any) -> dict[str, list] | None:
    if value is None:
        return None
    if value == "*":
        return {"*": ["*"]}
    if isinstance(value, dict):
        return {str(k): _strings(v) for k, v in value.items()}
    return {"?": _strings(value)}


def policy_document(value: Any) -> list[Statement] | None:
    """The statements of a policy document (a JSON string or an object); UNKNOWN when only known after
    deployment, None when it is not a policy document at all."""
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    raw = value.get("Statement")
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list):
        return None
    statements = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            return None
        conditions = {}
        for operator, entries in (item.get("Condition") or {}).items():
            if isinstance(entries, dict):
                conditions[str(operator)] = {str(k).lower(): _strings(v) for k, v in entries.items()}
        statements.append(
            Statement(
                index=index,
                effect=str(item.get("Effect")),
                actions=_strings(item.get("Action")),
                not_actions=_strings(item["NotAction"]) if "NotAction" in item else None,
                resources=_strings(item.get("Resource")),
                not_resources=_strings(item["NotResource"]) if "NotResource" in item else None,
                principals=_principals(item.get("Principal")),
                not_principals=_principals(item.get("NotPrincipal")),
                conditions=conditions,
            )
        )
    return statements


def action_matches(pattern: Any, action: str) -> bool:
    """IAM action matching: case-insensitive, `*` and `?` wildcards."""
    return isinstance(pattern, str) and fnmatch.fnmatchcase(action.lower(), pattern.lower())


def covers(patterns: Iterable, action: str) -> bool:
    return any(action_matches(p, action) for p in patterns)


def is_everyone(principals: dict[str, list] | None) -> bool:
    """Principal "*" or {"AWS": "*"}: any identity of any account."""
    return bool(principals) and any(v == "*" for values in principals.values() for v in values)


# --- joins ----------------------------------------------------------------------------------------------


def refers_to(side: StackResource, key: str, subject: StackResource, *values: Any) -> bool:
    """Whether `side`'s input `key` names `subject`: its value came from `subject` (a property dependency), or it
    equals one of `values` (the subject's name, id or ARN as the program wrote them)."""
    if subject.urn in side.property_dependencies.get(key, ()):
        return True
    value = side.props.get(key)
    return value is not UNKNOWN and value is not None and any(value == v for v in values if v not in (None, UNKNOWN))


def bucket_arn(name: Any) -> str | None:
    return f"arn:aws:s3:::{name}" if isinstance(name, str) and name else None


_BUCKET_ARN = re.compile(r"^arn:aws[a-z-]*:s3:::(?P<name>[^/*]+)$")


def bucket_name_of_arn(arn: Any) -> str | None:
    match = _BUCKET_ARN.match(arn) if isinstance(arn, str) else None
    return match["name"] if match else None


@dataclass
class S3Bucket:
    """A bucket and the side resources that configure it."""

    resource: StackResource
    side: dict[str, list[StackResource]] = field(default_factory=dict)

    @property
    def name(self) -> Any:
        """The bucket's name (its `bucket` input): None when auto-named, UNKNOWN when known after deployment."""
        return self.resource.props.get("bucket")

    @property
    def shown(self) -> str:
        """How messages name it: the Pulumi name, and the bucket name when it is known."""
        name = self.name
        return f"Bucket '{self.resource.name}'" + (f" ({name})" if isinstance(name, str) and name != "" else "")

    def of(self, kind: str) -> list[StackResource]:
        return self.side.get(kind, [])


def s3_buckets(resources: list[StackResource]) -> list[S3Bucket]:
    """Every S3 bucket of the stack with the side resources that name it."""
    buckets = [S3Bucket(r) for r in resources if r.type in S3_BUCKET_TYPES]
    for resource in resources:
        kind = side_kind(resource.type)
        if kind not in BUCKET_SIDE_TYPES:
            continue
        for bucket in buckets:
            if refers_to(resource, "bucket", bucket.resource, bucket.name, bucket_arn(bucket.name)):
                bucket.side.setdefault(kind, []).append(resource)
    return buckets


def replication_targets(source: S3Bucket, buckets: list[S3Bucket], rule: dict, config: StackResource) -> list:
    """The stack's buckets a replication rule's destination names (by ARN, or by the value's origin)."""
    arn = get(rule, "destination", "bucket")
    name = bucket_name_of_arn(arn)
    if name is not None:
        return [b for b in buckets if b.name == name]
    if arn is UNKNOWN:
        # The destination's ARN is an output: the rules' inputs came from these buckets.
        origins = set(config.property_dependencies.get("rules", ()))
        return [b for b in buckets if b.resource.urn in origins and b is not source]
    return []


# --- IAM roles of the backup jobs ------------------------------------------------------------------------


def role_names(role: StackResource) -> tuple:
    """How other resources name a role: by its name (which is also its id)."""
    name = role.props.get("name")
    return (name,) if isinstance(name, str) and name else ()


def names_role(arn: Any, role: StackResource) -> bool:
    """Whether a role ARN is this role's: `...:role<path><name>` with the role's path ('/' unless set)."""
    name, path = role.props.get("name"), role.props.get("path") or "/"
    return isinstance(arn, str) and isinstance(name, str) and bool(name) and arn.endswith(f":role{path}{name}")


def annotated_role(ksa: StackResource, roles: list[StackResource]) -> tuple[Any, StackResource | None]:
    """(the IRSA role ARN a Kubernetes ServiceAccount is annotated with, the stack's role it names or None)."""
    arn = labels(ksa.props, "metadata", "annotations").get(IRSA_ANNOTATION)
    if arn in (None, ""):
        return None, None
    for role in roles:
        if names_role(arn, role) or (arn is UNKNOWN and role.urn in ksa.property_dependencies.get("metadata", ())):
            return arn, role
    return arn, None


@dataclass
class RolePolicy:
    """One permissions policy a role has: where it comes from and its statements (None: not reviewable)."""

    source: StackResource
    what: str  # "inline policy 'x'", "attached policy 'y'"
    statements: Any


def role_policies(role: StackResource, resources: list[StackResource]) -> list[RolePolicy]:
    """Every permissions policy of `role`: inline (RolePolicy, inlinePolicies), and attached managed policies
    (RolePolicyAttachment, PolicyAttachment, managedPolicyArns); one the stack does not declare has statements
    None (AWS managed or foreign: this pack cannot review it)."""
    names = role_names(role)
    managed = {r.urn: r for r in resources if r.type == IAM_POLICY}
    found: list[RolePolicy] = []
    for index, inline in enumerate(role.props.get("inlinePolicies") or []):
        if isinstance(inline, dict) and not unset(inline.get("policy")):
            found.append(
                RolePolicy(role, f"inline policy '{inline.get('name', index)}'", policy_document(inline["policy"]))
            )
    attached: list[tuple[StackResource, str, Any]] = []
    for arn in role.props.get("managedPolicyArns") or []:
        attached.append((role, "managedPolicyArns", arn))
    for resource in resources:
        if resource.type == ROLE_POLICY and refers_to(resource, "role", role, *names):
            found.append(
                RolePolicy(resource, f"RolePolicy '{resource.name}'", policy_document(resource.props.get("policy")))
            )
        elif _attaches(resource, role, names):
            attached.append((resource, "policyArn", resource.props.get("policyArn")))
    for source, key, arn in attached:
        origins = set(source.property_dependencies.get(key, ()))
        declared = next(
            (
                p
                for p in managed.values()
                if p.urn in origins or (isinstance(arn, str) and arn.rsplit("/", 1)[-1] == p.props.get("name"))
            ),
            None,
        )
        if declared is not None:
            found.append(
                RolePolicy(source, f"attached policy '{declared.name}'", policy_document(declared.props.get("policy")))
            )
        else:
            found.append(RolePolicy(source, f"attached managed policy {arn}", None))
    return found


def _attaches(resource: StackResource, role: StackResource, names: tuple) -> bool:
    """Whether `resource` attaches a managed policy to `role`."""
    if resource.type == ROLE_POLICY_ATTACHMENT:
        return refers_to(resource, "role", role, *names)
    if resource.type == POLICY_ATTACHMENT:
        listed = resource.props.get("roles") if isinstance(resource.props.get("roles"), list) else []
        return role.urn in resource.property_dependencies.get("roles", ()) or any(n in listed for n in names)
    return False


def service_account_key(ksa: StackResource) -> tuple[str, Any]:
    return namespace_of(ksa.props), get(ksa.props, "metadata", "name")


def job_roles(resources: list[StackResource]) -> list[tuple[StackResource, object, StackResource | None]]:
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


def federated(role: StackResource) -> bool:
    """A role that web identities (Kubernetes ServiceAccount tokens) may assume."""
    statements = policy_document(role.props.get("assumeRolePolicy"))
    if not isinstance(statements, list):
        return False
    return any(
        "Federated" in (s.principals or {}) or covers(s.actions, "sts:AssumeRoleWithWebIdentity")
        for s in statements
        if s.effect == "Allow"
    )


def pod_roles(resources: list[StackResource]) -> list[StackResource]:
    """The roles backup pods act as: those a backup ServiceAccount is annotated with, and every role of the stack
    that web identities may assume."""
    found = {role.urn: role for _ksa, _arn, role in job_roles(resources) if role is not None}
    for resource in resources:
        if resource.type == IAM_ROLE and federated(resource):
            found.setdefault(resource.urn, resource)
    return list(found.values())


def allows(statement: Statement, action: str) -> bool:
    if statement.effect != "Allow":
        return False
    if statement.not_actions is not None:
        return not covers(statement.not_actions, action)
    return covers(statement.actions, action)


def identities_secrets(resources: list[StackResource]) -> list[StackResource]:
    return [r for r in resources if r.type == AWS_SECRET and tags(r.props).get(SECRET_PURPOSE) == "identities"]
