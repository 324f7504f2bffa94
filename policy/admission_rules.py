"""Grants RBAC cannot narrow, and the admission policies that must narrow them (components/admission.py).

RBAC grants a verb on a resource type: an identity that may create pods may create *any* pod in the namespace
(mount any Secret, run as any ServiceAccount), and one that may patch VolumeSnapshotContents may patch any in the
cluster. Every such grant the stack declares must be matched, for the ServiceAccount it is bound to, by a
ValidatingAdmissionPolicy whose binding denies (`validationActions: [Deny]`), whose failures deny
(`failurePolicy` not Ignore) and which has validations at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pulumi_policy import ReportViolation, StackValidationArgs

from .props import UNKNOWN, get, namespace_of
from .rule import StackResource, stack_rule

ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
VAP = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
VAP_BINDING = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"


@dataclass(frozen=True)
class Guarded:
    group: str
    resource: str
    verbs: frozenset[str]  # RBAC verbs that need an admission bound
    operation: str  # the admission operation those verbs arrive as
    what: str  # for the message
    fix: str


GUARDED = (
    Guarded("", "pods", frozenset({"create", "*"}), "CREATE", "create pods (mount any Secret, run as any "
            "ServiceAccount of the namespace)", "components/admission.py pod_shape_policy"),
    Guarded("snapshot.storage.k8s.io", "volumesnapshotcontents", frozenset({"patch", "update", "*"}), "UPDATE",
            "patch any VolumeSnapshotContent of the cluster", "components/admission.py content_patch_policy"),
)  # fmt: skip


def _grants(rule: dict, guarded: Guarded) -> bool:
    groups = rule.get("apiGroups") or [""]
    resources = rule.get("resources") or []
    verbs = set(rule.get("verbs") or [])
    return (
        (guarded.group in groups or "*" in groups)
        and (guarded.resource in resources or "*" in resources)
        and bool(verbs & guarded.verbs)
    )


def _subjects(resources: list[StackResource], role: StackResource) -> list[tuple[str, str | None, str | None]]:
    """(kind, namespace, name) of every subject bound to `role` by a binding of this stack."""
    name = get(role.props, "metadata", "name")
    cluster = role.type == CLUSTER_ROLE
    found = []
    for binding in resources:
        if binding.type not in (ROLE_BINDING, CLUSTER_ROLE_BINDING):
            continue
        ref = get(binding.props, "roleRef", default={}) or {}
        if ref.get("name") != name or (ref.get("kind") == "ClusterRole") != cluster:
            continue
        if not cluster and namespace_of(binding.props) != namespace_of(role.props):
            continue
        for subject in get(binding.props, "subjects", default=[]) or []:
            if isinstance(subject, dict):
                default_ns = namespace_of(binding.props) if binding.type == ROLE_BINDING else None
                found.append((subject.get("kind"), subject.get("namespace") or default_ns, subject.get("name")))
    return found


def _names_user(expression: str, user: str) -> bool:
    return any(f"request.userInfo.username == {quoted}" in expression for quoted in (json.dumps(user), f"'{user}'"))


def _matches(rule: dict, guarded: Guarded) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return value in values or "*" in values

    return (
        has("apiGroups", guarded.group) and has("resources", guarded.resource) and has("operations", guarded.operation)
    )


def _bound(resources: list[StackResource], guarded: Guarded, user: str, namespace: str | None) -> bool:
    """Some policy of the stack checks `user`'s `guarded` requests, and a binding denies on its failures."""
    bindings = [r for r in resources if r.type == VAP_BINDING]
    for policy in resources:
        if policy.type != VAP:
            continue
        spec = get(policy.props, "spec", default={}) or {}
        if spec.get("failurePolicy") == "Ignore" or not spec.get("validations"):
            continue
        rules = get(spec, "matchConstraints", "resourceRules", default=[]) or []
        if not any(isinstance(r, dict) and _matches(r, guarded) for r in rules):
            continue
        conditions = spec.get("matchConditions") or []
        if not any(_names_user(str(c.get("expression", "")), user) for c in conditions if isinstance(c, dict)):
            continue
        name = get(policy.props, "metadata", "name")
        for binding in bindings:
            bspec = get(binding.props, "spec", default={}) or {}
            if bspec.get("policyName") not in (name, UNKNOWN) or "Deny" not in (bspec.get("validationActions") or []):
                continue
            selected = get(bspec, "matchResources", "namespaceSelector", "matchLabels", default=None)
            if namespace is None or not selected or selected.get("kubernetes.io/metadata.name") == namespace:
                return True
    return False


def _check(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    for role in resources:
        if role.type not in (ROLE, CLUSTER_ROLE):
            continue
        rules = [r for r in get(role.props, "rules", default=[]) or [] if isinstance(r, dict)]
        for guarded in GUARDED:
            if not any(_grants(rule, guarded) for rule in rules):
                continue
            kind = role.type.rsplit(":", 1)[-1]
            # A Role's pods are its namespace's; a ClusterRole's requests may come from anywhere.
            scope = namespace_of(role.props) if role.type == ROLE else None
            for subject_kind, namespace, name in _subjects(resources, role):
                who = f"{subject_kind} {namespace + '/' if namespace else ''}{name}"
                if subject_kind != "ServiceAccount":
                    report(
                        f"{kind} '{role.name}' lets {who} {guarded.what}; admission can bound only a ServiceAccount "
                        f"of this stack. Fix: bind it to the job's own ServiceAccount ({guarded.fix}).",
                        role.urn,
                    )
                    continue
                user = f"system:serviceaccount:{namespace}:{name}"
                if not _bound(resources, guarded, user, scope if guarded.resource == "pods" else None):
                    report(
                        f"{kind} '{role.name}' lets {who} {guarded.what}, and no ValidatingAdmissionPolicy of the "
                        f"stack matches its {guarded.operation} requests on {guarded.resource} "
                        f"(matchConditions on request.userInfo.username == '{user}', failurePolicy Fail, a binding "
                        f"with validationActions [Deny]). Fix: {guarded.fix}.",
                        role.urn,
                    )


admission_bounds_rbac = stack_rule(
    "admission-bounds-rbac",
    "Every Role or ClusterRole that lets a ServiceAccount create pods or patch VolumeSnapshotContents is narrowed, "
    "for that ServiceAccount, by a ValidatingAdmissionPolicy bound with Deny (RBAC cannot say which pods or "
    "which contents).",
    check=_check,
    remediation="Declare the job's admission policy with it (components/admission.py, docs/security.md).",
)

POLICIES = [admission_bounds_rbac]
