"""ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30) that bound what RBAC
cannot: a verb on a resource type is all RBAC grants, so an identity that may create pods may create *any* pod,
and one that may patch VolumeSnapshotContents may patch *any* of them, in the whole cluster.

- `pod_shape_policy`: a ServiceAccount that creates pods (the CometBFT drill's) may create only the drill's own
  probe pod: the pinned job image, no volume but its own claim (named as the pod) and emptyDir, no Secret read
  through an env var, no API token, no other ServiceAccount, a hardened securityContext. Its claims likewise:
  restored from a VolumeSnapshot into the drill's storage class, named `drill-...`.
- `content_patch_policy`: a pruner may patch a VolumeSnapshotContent only when it is the content of a snapshot
  in the node's namespace, of the node's own snapshot class, and only to change `spec.deletionPolicy`.

Each policy is matched to requests by the ServiceAccount's username (`matchConditions`), so it constrains that
identity alone and nothing the SV node or the cluster's controllers do; its binding denies (`validationActions:
[Deny]`), and a CEL error denies too (`failurePolicy: Fail`). The expressions are pure strings built here, so the
tests evaluate them against allowed and forbidden objects (tests/program/test_admission.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.admissionregistration import v1 as admission
from pulumi_kubernetes.meta import v1 as meta

from rules.naming import Names

SNAPSHOT_API_GROUP = "snapshot.storage.k8s.io"
# Every probe pod and claim the drill creates is named `drill-...` (jobs/drill_cometbft.py drill_name).
DRILL_NAME_PREFIX = "drill-"


def service_account_user(namespace: str, service_account: str) -> str:
    """The username Kubernetes gives a ServiceAccount's token: what the policies match requests on."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def _lit(value: str) -> str:
    # A CEL string literal: JSON's double-quoted escaping is CEL's for the characters names can hold.
    return json.dumps(value)


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_lit(v) for v in values) + "]"


def _same(field: str) -> str:
    """`field` (a path under object / oldObject) unchanged, including set vs unset."""
    new, old = f"object.{field}", f"oldObject.{field}"
    parent, leaf = field.rsplit(".", 1)
    has_new, has_old = f"has(object.{parent}.{leaf})", f"has(oldObject.{parent}.{leaf})"
    return f"({has_new} ? ({has_old} && {new} == {old}) : !{has_old})"


@dataclass(frozen=True)
class Validation:
    expression: str
    message: str


def _containers(body: str) -> str:
    """`body` over `c` holds for every container, init container and ephemeral container."""
    lists = ("containers", "initContainers", "ephemeralContainers")
    return " && ".join(f"(!has(object.spec.{name}) || object.spec.{name}.all(c, {body}))" for name in lists)


def pod_validations(image: str, pod_service_account: str | None = None) -> list[Validation]:
    """What a pod created by a drill's ServiceAccount must be: jobs/drill_cometbft.py pod_body's shape (one claim
    named as the pod, no ServiceAccount); with `pod_service_account`, jobs/drill_snapshots.py's (its scratch claims,
    drill-..., and that one ServiceAccount: the restore identity, which reads the store and nothing else)."""
    prefix = _lit(DRILL_NAME_PREFIX)
    if pod_service_account is None:
        claims = (
            f"(has(v.persistentVolumeClaim) && object.metadata.name.startsWith({prefix}) && "
            "v.persistentVolumeClaim.claimName == object.metadata.name)"
        )
        claims_text = "only the drill's own claim (named as the pod, drill-...)"
        account = (
            "(!has(object.spec.serviceAccountName) || object.spec.serviceAccountName == 'default') && "
            "(!has(object.spec.serviceAccount) || object.spec.serviceAccount == 'default')",
            "spec.serviceAccountName must be unset or 'default'",
        )
    else:
        claims = f"(has(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName.startsWith({prefix}))"
        claims_text = "only the drill's scratch claims (drill-...)"
        account = (
            f"has(object.spec.serviceAccountName) && object.spec.serviceAccountName == {_lit(pod_service_account)} "
            f"&& (!has(object.spec.serviceAccount) || object.spec.serviceAccount == {_lit(pod_service_account)})",
            f"spec.serviceAccountName must be {pod_service_account} (the restore identity)",
        )
    return [
        Validation(
            _containers(f"c.image == {_lit(image)}"),
            f"every container must run the pinned job image {image}",
        ),
        Validation(
            f"!has(object.spec.volumes) || object.spec.volumes.all(v, has(v.emptyDir) || {claims})",
            f"volumes: {claims_text} and emptyDir; no Secret, ConfigMap, projected, hostPath, CSI or other claim",
        ),
        Validation(
            _containers("!has(c.envFrom) && (!has(c.env) || c.env.all(e, !has(e.valueFrom)))"),
            "no env var may be read from a Secret, ConfigMap or the downward API (envFrom, env[].valueFrom)",
        ),
        Validation(
            "has(object.spec.automountServiceAccountToken) && object.spec.automountServiceAccountToken == false",
            "spec.automountServiceAccountToken must be false",
        ),
        Validation(*account),
        Validation(
            "!has(object.spec.imagePullSecrets) && "
            "!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && "
            "!(has(object.spec.hostPID) && object.spec.hostPID) && "
            "!(has(object.spec.hostIPC) && object.spec.hostIPC)",
            "no imagePullSecrets, hostNetwork, hostPID or hostIPC",
        ),
        Validation(
            "has(object.spec.securityContext) && has(object.spec.securityContext.runAsNonRoot) && "
            "object.spec.securityContext.runAsNonRoot == true && "
            "(!has(object.spec.securityContext.runAsUser) || object.spec.securityContext.runAsUser != 0) && "
            "has(object.spec.securityContext.seccompProfile) && "
            "object.spec.securityContext.seccompProfile.type == 'RuntimeDefault'",
            "spec.securityContext: runAsNonRoot true, runAsUser not 0, seccompProfile RuntimeDefault",
        ),
        Validation(
            _containers(
                "has(c.securityContext) && "
                "has(c.securityContext.allowPrivilegeEscalation) && "
                "c.securityContext.allowPrivilegeEscalation == false && "
                "has(c.securityContext.readOnlyRootFilesystem) && c.securityContext.readOnlyRootFilesystem == true && "
                "!(has(c.securityContext.privileged) && c.securityContext.privileged == true) && "
                "(!has(c.securityContext.runAsUser) || c.securityContext.runAsUser != 0) && "
                "!(has(c.securityContext.runAsNonRoot) && c.securityContext.runAsNonRoot == false) && "
                "has(c.securityContext.capabilities) && has(c.securityContext.capabilities.drop) && "
                "'ALL' in c.securityContext.capabilities.drop && !has(c.securityContext.capabilities.add)"
            ),
            "every container: allowPrivilegeEscalation false, readOnlyRootFilesystem true, not privileged, "
            "not root, capabilities drop ALL and add none",
        ),
    ]


# The CometBFT snapshot job names each snapshot `<pvc>-<unix time>`, the PVC name cut to leave room for the
# suffix within Kubernetes' 253 characters (jobs/cometbft.py snapshot_name).
_MAX_NAME, _TIME_SUFFIX = 253, 11


def snapshot_prefix(pvc: str) -> str:
    """What every CometBFT snapshot of `pvc` is named with: the drill may restore those and no other snapshot of
    the namespace (the Postgres volumes' snapshot sets live there too)."""
    keep = _MAX_NAME - _TIME_SUFFIX
    return f"{pvc}-" if len(pvc) <= keep else pvc[:keep]


def claim_validations(
    storage_class: str | None, source_pvc: str | None, *, snapshots: str | None = None, what: str = "a CometBFT"
) -> list[Validation]:
    """What a claim created by a drill's ServiceAccount must be: jobs/drill_cometbft.py pvc_body's shape, restored
    from a snapshot of the CometBFT PVC `source_pvc`; or, given `snapshots` (a name prefix), from those snapshots
    only (the snapshot sets' `pg-<role>-...`, jobs/pgsnap_volume.py snapshot_name). Without `storage_class` the
    claim takes the cluster's default class (no storageClassName)."""
    prefix = snapshots if snapshots is not None else snapshot_prefix(source_pvc or "")
    source = "{0}.kind == 'VolumeSnapshot' && has({0}.apiGroup) && {0}.apiGroup == " + _lit(SNAPSHOT_API_GROUP)
    if storage_class is None:
        klass = Validation("!has(object.spec.storageClassName)", "spec.storageClassName: the default class only")
    else:
        klass = Validation(
            f"has(object.spec.storageClassName) && object.spec.storageClassName == {_lit(storage_class)}",
            f"spec.storageClassName must be the drill's class {storage_class}",
        )
    return [
        Validation(f"object.metadata.name.startsWith({_lit(DRILL_NAME_PREFIX)})", "the claim's name must be drill-..."),
        klass,
        Validation(
            "has(object.spec.dataSource) && " + source.format("object.spec.dataSource") + " && "
            "(!has(object.spec.dataSourceRef) || " + source.format("object.spec.dataSourceRef") + ")",
            "the claim must be restored from a VolumeSnapshot (spec.dataSource); no other source",
        ),
        Validation(
            f"has(object.spec.dataSource) && object.spec.dataSource.name.startsWith({_lit(prefix)})",
            f"the claim must be restored from {what} snapshot ({prefix}...), not another snapshot of the namespace",
        ),
        Validation("!has(object.spec.volumeName)", "spec.volumeName: the claim may not bind an existing volume"),
    ]


def content_validations(namespace: str, snapshot_classes: Sequence[str]) -> list[Validation]:
    """A pruner's patch of a VolumeSnapshotContent: its own snapshot's content, deletionPolicy only."""
    unchanged = [
        "spec.driver",
        "spec.source",
        "spec.volumeSnapshotRef",
        "spec.volumeSnapshotClassName",
        "spec.sourceVolumeMode",
        "metadata.labels",
        "metadata.annotations",
        "metadata.finalizers",
    ]
    return [
        Validation(
            "has(oldObject.spec.volumeSnapshotRef.namespace) && "
            f"oldObject.spec.volumeSnapshotRef.namespace == {_lit(namespace)}",
            f"only the contents of VolumeSnapshots in namespace {namespace}",
        ),
        Validation(
            "has(oldObject.spec.volumeSnapshotClassName) && "
            f"oldObject.spec.volumeSnapshotClassName in {_list(snapshot_classes)}",
            f"only the contents of snapshots of class {', '.join(snapshot_classes)}",
        ),
        Validation(
            " && ".join(_same(field) for field in unchanged),
            "only spec.deletionPolicy may change",
        ),
        Validation(
            "object.spec.deletionPolicy == 'Delete'",
            "spec.deletionPolicy may only be set to Delete (the pruner's one change)",
        ),
    ]


def _policy(
    names: Names,
    resource_name: str,
    name: str,
    labels: dict[str, str],
    *,
    users: Sequence[str],
    rules: list[admission.NamedRuleWithOperationsArgs],
    validations: list[Validation],
    namespace: str | None,
    parent: pulumi.Resource,
) -> None:
    child = pulumi.ResourceOptions(parent=parent)
    user_expr = " || ".join(f"request.userInfo.username == {_lit(user)}" for user in users)
    policy = admission.ValidatingAdmissionPolicy(
        resource_name,
        metadata=meta.ObjectMetaArgs(name=name, labels=labels),
        spec=admission.ValidatingAdmissionPolicySpecArgs(
            failure_policy="Fail",
            match_constraints=admission.MatchResourcesArgs(resource_rules=rules),
            # Only this identity's requests: the SV node and the cluster's controllers are never evaluated.
            match_conditions=[admission.MatchConditionArgs(name="identity", expression=user_expr)],
            validations=[admission.ValidationArgs(expression=v.expression, message=v.message) for v in validations],
        ),
        opts=child,
    )
    selector = meta.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace}) if namespace else None
    admission.ValidatingAdmissionPolicyBinding(
        f"{resource_name}-binding",
        metadata=meta.ObjectMetaArgs(name=name, labels=labels),
        spec=admission.ValidatingAdmissionPolicyBindingSpecArgs(
            policy_name=policy.metadata.name,
            validation_actions=["Deny"],
            match_resources=admission.MatchResourcesArgs(namespace_selector=selector) if selector else None,
        ),
        opts=child,
    )


def pod_shape_policy(
    names: Names,
    component: str,
    namespace: str,
    service_account: str,
    *,
    image: str,
    storage_class: str | None,
    source_pvc: str | None,
    labels: dict[str, str],
    parent: pulumi.Resource,
    pod_service_account: str | None = None,
    snapshots: str | None = None,
    snapshots_what: str = "a CometBFT",
) -> None:
    """Two policies on the ServiceAccount's requests in `namespace`: pods of the drill's shape, claims of its
    (`pod_service_account`, `snapshots`: the snapshot sets' drill, see pod_validations and claim_validations)."""
    users = [service_account_user(namespace, service_account)]
    ops = ["CREATE", "UPDATE"]
    _policy(
        names,
        names.resource(component, "pod-admission"),
        names.cluster_scoped(namespace, component, "pods"),
        labels,
        users=users,
        rules=[
            admission.NamedRuleWithOperationsArgs(
                api_groups=[""], api_versions=["v1"], operations=ops, resources=["pods"]
            )
        ],
        validations=pod_validations(image, pod_service_account),
        namespace=namespace,
        parent=parent,
    )
    _policy(
        names,
        names.resource(component, "claim-admission"),
        names.cluster_scoped(namespace, component, "claims"),
        labels,
        users=users,
        rules=[
            admission.NamedRuleWithOperationsArgs(
                api_groups=[""], api_versions=["v1"], operations=ops, resources=["persistentvolumeclaims"]
            )
        ],
        validations=claim_validations(storage_class, source_pvc, snapshots=snapshots, what=snapshots_what),
        namespace=namespace,
        parent=parent,
    )


def content_patch_policy(
    names: Names,
    component: str,
    namespace: str,
    service_account: str,
    snapshot_classes: Sequence[str],
    labels: dict[str, str],
    *,
    parent: pulumi.Resource,
) -> None:
    """The pruner `service_account` may patch only its own snapshots' contents, and only their deletionPolicy.
    VolumeSnapshotContents are cluster-scoped: the binding selects no namespace."""
    _policy(
        names,
        names.resource(component, "content-admission"),
        names.cluster_scoped(namespace, component, "contents"),
        labels,
        users=[service_account_user(namespace, service_account)],
        rules=[
            admission.NamedRuleWithOperationsArgs(
                api_groups=[SNAPSHOT_API_GROUP],
                api_versions=["*"],
                # A patch arrives as UPDATE; the ClusterRole grants no create or delete on contents.
                operations=["UPDATE"],
                resources=["volumesnapshotcontents"],
            )
        ],
        validations=content_validations(namespace, snapshot_classes),
        namespace=None,
        parent=parent,
    )
