"""Rules on the restore drills (components/drill.py): they only read, they restore onto a sized ephemeral disk,
and the one drill that talks to the Kubernetes API gets exactly the access it needs and nothing else.

A drill CronJob is recognised by its component label (`drill-postgres`, `drill-cometbft`, `drill-identities`,
`drill-postgres-snapshots`). That every primary stack has one per backup kind (the snapshot sets' drill where
snapshot sets take VolumeSnapshots, `volume_snapshot_sets`) is `restore-drill-coverage` (coverage_rules.py); that
each has its stale and failed alerts is `alerts-per-backup-kind`.

The two drills that talk to the Kubernetes API (CometBFT, snapshot sets) run as their own ServiceAccounts with no
cloud identity and one Role of exactly what their job calls. The snapshot sets' drill creates pods that read the
store (the newest set's manifest, prepare-datadir's WAL): those run as the ServiceAccount its `--service-account`
names, which is held to the restore identity like the drills' own.
"""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .aws_resources import IRSA_ANNOTATION
from .props import (
    CRON_JOB,
    GKE_SA_ANNOTATION,
    K8S_SERVICE_ACCOUNT,
    RESTORE_SUFFIX,
    UNKNOWN,
    backup_kind,
    containers,
    drill_kind,
    flag_values,
    get,
    labels,
    namespace_of,
    pod_spec,
    require_known,
)
from .rule import StackResource, resource_rule, stack_rule

ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
# What `python -m jobs drill-cometbft` calls, per (API group, resource): nothing more may be granted.
COMETBFT_DRILL_ACCESS = {
    ("snapshot.storage.k8s.io", "volumesnapshots"): frozenset({"get", "list"}),
    ("", "persistentvolumeclaims"): frozenset({"create", "get", "delete"}),
    ("", "pods"): frozenset({"create", "get", "delete"}),
}
# What `python -m jobs drill-snapshots` calls: the VolumeSnapshots are only read (restore_volume checks them).
SNAPSHOTS_DRILL_ACCESS = {
    ("snapshot.storage.k8s.io", "volumesnapshots"): frozenset({"get"}),
    ("", "persistentvolumeclaims"): frozenset({"create", "get", "delete"}),
    ("", "pods"): frozenset({"create", "get", "delete"}),
}
# Per drill kind with a token: what its Role may grant, and how the message names it.
API_DRILLS = {
    "cometbft": (
        COMETBFT_DRILL_ACCESS,
        "CometBFT drill",
        "drill-cometbft",
        "get/list volumesnapshots; create/get/delete persistentvolumeclaims and pods",
        "COMETBFT_RBAC",
    ),
    "postgres-snapshots": (
        SNAPSHOTS_DRILL_ACCESS,
        "snapshot sets' drill",
        "drill-snapshots",
        "get volumesnapshots; create/get/delete persistentvolumeclaims and pods",
        "SNAPSHOTS_RBAC",
    ),
}
SNAPSHOT_SET_COMPONENT = "postgres-snapshots"


def volume_snapshot_sets(resources: list[StackResource]) -> bool:
    """The stack takes snapshot sets with VolumeSnapshots (a snapshot-step of an in-cluster instance): the ones the
    snapshot sets' drill restores. Managed roles alone (Cloud SQL, RDS) are not drilled in scratch (docs/drills.md)."""
    for job in resources:
        if job.type != CRON_JOB or backup_kind(job.props) != SNAPSHOT_SET_COMPONENT:
            continue
        for _field, container in containers(pod_spec(job.props)):
            if "volume-snapshot" in flag_values(container, "--method"):
                return True
    return False


def _ksa(job: StackResource) -> tuple[str, str]:
    spec = pod_spec(job.props)
    return namespace_of(job.props), spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def _service_accounts(resources: list[StackResource]) -> dict[tuple[str, str], StackResource]:
    return {
        (namespace_of(r.props), get(r.props, "metadata", "name")): r for r in resources if r.type == K8S_SERVICE_ACCOUNT
    }


def _cloud_identity(account: StackResource | None) -> tuple[str, str] | None:
    """(annotation, the identity's name) a ServiceAccount acts as: a GCP account id or an IAM role name."""
    if account is None:
        return None
    annotations = labels(account.props, "metadata", "annotations")
    for key in (GKE_SA_ANNOTATION, IRSA_ANNOTATION):
        if key in annotations:
            value = require_known(annotations[key], f"{account.name}.metadata.annotations")
            text = str(value)
            name = text.split("@", 1)[0] if key == GKE_SA_ANNOTATION else text.rsplit("/", 1)[-1]
            return key, name
    return None


# --- read only ----------------------------------------------------------------------------------------------


def _check_read_only(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    writers = {_ksa(r) for r in resources if r.type == CRON_JOB and backup_kind(r.props) is not None}
    accounts = _service_accounts(resources)
    for job in resources:
        kind = drill_kind(job.props) if job.type == CRON_JOB else None
        if kind is None:
            continue
        for _field, container in containers(pod_spec(job.props)) if kind == "postgres-snapshots" else []:
            for account in flag_values(container, "--service-account"):
                if account is UNKNOWN:
                    continue
                made = (namespace_of(job.props), str(account))
                made_identity = _cloud_identity(accounts.get(made))
                if made in writers or (made_identity is not None and not made_identity[1].endswith(RESTORE_SUFFIX)):
                    why = (
                        "which a backup CronJob runs as"
                        if made in writers
                        else f"which acts as '{made_identity[1]}', not a restore identity"
                    )
                    report(
                        f"CronJob '{job.name}' ({kind} drill): the pods it creates (pick, scratch) run as "
                        f"--service-account '{account}', {why}: they would hold a writer's rights on the backups. "
                        f"Fix: pass the restore identity's ServiceAccount (components/drill.py).",
                        job.urn,
                    )
        ksa = _ksa(job)
        if ksa in writers:
            report(
                f"CronJob '{job.name}' ({kind} drill): runs as ServiceAccount '{'/'.join(ksa)}', which a backup "
                f"CronJob runs as too: the drill would hold the writer's rights on the backups. Fix: run it as the "
                f"restore identity's ServiceAccount (components/readers.py).",
                job.urn,
            )
            continue
        identity = _cloud_identity(accounts.get(ksa))
        if identity is not None and not identity[1].endswith(RESTORE_SUFFIX):
            report(
                f"CronJob '{job.name}' ({kind} drill): its ServiceAccount '{'/'.join(ksa)}' acts as '{identity[1]}' "
                f"({identity[0]}), not a restore identity (`<node>-restore`, held to reading only by "
                f"dr-restore-read-only). Fix: run the drill as the restore identity's ServiceAccount "
                f"(components/readers.py).",
                job.urn,
            )


drill_read_only = stack_rule(
    "drill-read-only",
    "The restore drills run as the read-only restore identity (or as no cloud identity at all), never as a backup "
    "writer: they can neither write nor delete backups.",
    check=_check_read_only,
    severity=Severity.CRITICAL,
    remediation="Declare the drills with components/drill.py, which runs them as the restore identity's "
    "ServiceAccount (components/readers.py); dr-restore-read-only holds that identity to reads.",
)


# --- the scratch volume -------------------------------------------------------------------------------------


def _check_scratch(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if drill_kind(props) != "postgres":
        return
    where = f"CronJob '{args.name}' (Postgres drill)"
    spec = pod_spec(props)
    volumes = {v.get("name"): v for v in get(spec, "volumes", default=[]) or [] if isinstance(v, dict)}
    for _field, container in containers(spec):
        for directory in flag_values(container, "--scratch-dir"):
            if directory is UNKNOWN:
                continue
            mounts = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == directory]
            if not mounts:
                report(
                    f"{where}: --scratch-dir {directory} is on the container's read-only root filesystem (no volume "
                    f"is mounted there). Fix: mount the scratch ephemeral volume at {directory}.",
                )
                continue
            volume = volumes.get(mounts[0].get("name"), {})
            size = get(volume, "ephemeral", "volumeClaimTemplate", "spec", "resources", "requests", "storage")
            if size is None:
                other = [k for k in volume if k != "name"] or ["nothing"]
                report(
                    f"{where}: the scratch directory {directory} is on volume '{mounts[0].get('name')}' "
                    f"({', '.join(other)}), not a generic ephemeral volume with a size: a restore on the node's own "
                    f"disk (emptyDir) can fill it and evict the SV node's pods. Fix: an ephemeral.volumeClaimTemplate "
                    f"with resources.requests.storage (sv-backups:drill.scratchSize).",
                )
    if not any(flag_values(c, "--scratch-dir") for _f, c in containers(spec)):
        report(f"{where}: no container passes --scratch-dir. Fix: declare the drill with components/drill.py.")


drill_scratch_ephemeral = resource_rule(
    "drill-scratch-ephemeral",
    "The Postgres drill restores into a generic ephemeral volume of a configured size mounted at its --scratch-dir, "
    "created for the drill pod and deleted with it, never onto the node's own disk.",
    types=[CRON_JOB],
    check=_check_scratch,
    remediation="Set sv-backups:drill.scratchSize and let components/drill.py declare the volume.",
)


# --- least privilege for the Kubernetes API -----------------------------------------------------------------


def _bound_roles(resources: list[StackResource], ksa: tuple[str, str]) -> tuple[list[StackResource], list[str]]:
    """The Roles bound to a ServiceAccount in its namespace, and the names of any ClusterRoles bound to it."""
    namespace, name = ksa
    role_names, cluster_roles = set(), []
    for binding in resources:
        if binding.type not in (ROLE_BINDING, CLUSTER_ROLE_BINDING):
            continue
        subjects = get(binding.props, "subjects", default=[]) or []
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace", namespace) == namespace
            for s in subjects
            if isinstance(s, dict)
        ):
            continue
        ref = get(binding.props, "roleRef", default={}) or {}
        if binding.type == CLUSTER_ROLE_BINDING or ref.get("kind") == "ClusterRole":
            cluster_roles.append(str(ref.get("name")))
        elif namespace_of(binding.props) == namespace:
            role_names.add(ref.get("name"))
    roles = [
        r
        for r in resources
        if r.type == ROLE and namespace_of(r.props) == namespace and get(r.props, "metadata", "name") in role_names
    ]
    return roles, cluster_roles


def _excess(rule: dict, access: dict) -> list[str]:
    """What a Role rule grants beyond `access` (per API group and resource)."""
    found = []
    for group in rule.get("apiGroups") or [""]:
        for resource in rule.get("resources") or []:
            allowed = access.get((group, resource), frozenset())
            extra = sorted(set(rule.get("verbs") or []) - allowed)
            if extra:
                found.append(f"{', '.join(extra)} on {group + '/' if group else ''}{resource}")
    return found


def _check_least_privilege(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    accounts = _service_accounts(resources)
    for job in resources:
        kind = drill_kind(job.props) if job.type == CRON_JOB else None
        if kind is None:
            continue
        ksa = _ksa(job)
        token = pod_spec(job.props).get("automountServiceAccountToken")
        if kind not in API_DRILLS:
            if token is not False:
                report(
                    f"CronJob '{job.name}' ({kind} drill): automountServiceAccountToken is {token}: a pod that never "
                    f"calls the Kubernetes API gets a token for it. Fix: set it to false (components/kube_specs.py).",
                    job.urn,
                )
            continue
        access, what, command, grants, constant = API_DRILLS[kind]
        identity = _cloud_identity(accounts.get(ksa))
        if identity is not None:
            report(
                f"CronJob '{job.name}' ({what}): its ServiceAccount '{'/'.join(ksa)}' has a Kubernetes API "
                f"token and acts as cloud identity '{identity[1]}' too, which the drill never uses. Fix: its own "
                f"ServiceAccount without a cloud identity annotation (components/drill.py).",
                job.urn,
            )
        roles, cluster_roles = _bound_roles(resources, ksa)
        if cluster_roles:
            report(
                f"CronJob '{job.name}' ({what}): ServiceAccount '{'/'.join(ksa)}' is bound to ClusterRoles "
                f"{sorted(cluster_roles)}. Fix: one Role in its namespace (components/drill.py).",
                job.urn,
            )
        for role in roles:
            rules = get(role.props, "rules", default=[]) or []
            extra = [e for rule in rules if isinstance(rule, dict) for e in _excess(rule, access)]
            if extra:
                report(
                    f"Role '{role.name}' of the {what} grants {'; '.join(extra)}, beyond what {command} calls "
                    f"({grants}). Fix: grant exactly those (components/drill.py {constant}).",
                    role.urn,
                )


drill_least_privilege = stack_rule(
    "drill-least-privilege",
    "Only the CometBFT and snapshot sets' drills mount a Kubernetes API token; each ServiceAccount has no cloud "
    "identity and one Role granting exactly what its job calls (volumesnapshots get/list resp. get; "
    "create/get/delete persistentvolumeclaims and pods).",
    check=_check_least_privilege,
    severity=Severity.HIGH,
    remediation="Declare the drills with components/drill.py.",
)

POLICIES = [drill_read_only, drill_scratch_ephemeral, drill_least_privilege]
