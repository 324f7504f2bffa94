"""Rules on ordered Postgres snapshot sets (sv-backups:snapshots; components/pg_snapshots.py, docs/jobs-snapshots.md).

Read from what the CronJobs run (their `snapshot-step` args), the classes, RBAC objects and cloud grants of the
stack, not from the stack config:
- the steps run one per role, as initContainers in ROLE_ORDER (apps complete before participant is requested);
- the dump sets run sparser than 4 hours only beside a snapshot CronJob that carries the duty;
- every snapshot has a copy that survives the primary region's loss (GCP storage location, Cloud SQL backup
  location, EBS and RDS copies under a DR-region key);
- where the cloud has a lock (EBS Snapshot Lock) every snapshot is locked for at least the recent window;
- the identity that creates snapshots cannot delete them (Kubernetes RBAC, GCP IAM, AWS IAM): only the pruner can.
(A VolumeSnapshotClass that deletes is refused by snapshot-class-retain, for CometBFT and Postgres alike.)
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from rules.gcp_locations import SNAPSHOT_MULTI_REGIONS
from rules.manifest import ROLE_ORDER
from rules.retention import parse_duration
from rules.snapshot_sets import CLOUDSQL_BACKUP, RDS_SNAPSHOT, VOLUME_SNAPSHOT

from .aws_resources import allows, arn_region, job_roles, region_of, role_policies, s3_buckets, service_account_key
from .props import (
    BUCKET,
    CRON_JOB,
    FOUR_HOURLY_BY_LABEL,
    GKE_SA_ANNOTATION,
    K8S_SERVICE_ACCOUNT,
    SNAPSHOT_CLASS,
    UNKNOWN,
    backup_kind,
    containers,
    flag_values,
    get,
    iam_grants,
    is_dr_stack,
    labels,
    namespace_of,
    pod_spec,
    standby,
)
from .rule import StackResource, resource_rule, stack_rule
from .stack_rules import dest_prefixes

SNAPSHOTS = "postgres-snapshots"
PRUNE = "snapshot-prune"
# CSI drivers whose snapshots live in one region (the job copies and locks them) and those that store them where
# the class says (GCP PD: `storage-locations`).
REGIONAL_DRIVERS = frozenset({"ebs.csi.aws.com"})
LOCATED_DRIVERS = frozenset({"pd.csi.storage.gke.io"})
SNAPSHOT_API = "snapshot.storage.k8s.io"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
# What deleting a snapshot takes, per API: the creator may hold none of it.
K8S_DELETE_VERBS = {"volumesnapshots": {"delete", "deletecollection", "*"}}
K8S_CONTENT_VERBS = {"volumesnapshotcontents": {"patch", "update", "delete", "deletecollection", "*"}}
GCP_DELETE_PERMISSIONS = frozenset({"cloudsql.backupRuns.delete", "compute.snapshots.delete"})
# Predefined roles that hold one of GCP_DELETE_PERMISSIONS (IAM's role reference).
GCP_DELETING_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/cloudsql.admin",
        "roles/cloudsql.editor",
        "roles/compute.admin",
        "roles/compute.storageAdmin",
    }
)
AWS_DELETE_ACTIONS = ("ec2:DeleteSnapshot", "rds:DeleteDBSnapshot")


def _words(container: dict) -> list:
    return [*(get(container, "command", default=[]) or []), *(get(container, "args", default=[]) or [])]


def _one(step: dict, flag: str):
    values = flag_values(step, flag)
    return values[0] if len(values) == 1 else None


def snapshot_jobs(resources: list[StackResource]) -> list[StackResource]:
    return [r for r in resources if r.type == CRON_JOB and backup_kind(r.props) == SNAPSHOTS]


def snapshot_steps(job: StackResource) -> list[dict]:
    return [c for _kind, c in containers(pod_spec(job.props)) if "snapshot-step" in _words(c)]


def _ksa(job: StackResource) -> tuple[str, str]:
    spec = pod_spec(job.props)
    return namespace_of(job.props), spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


# --- order ------------------------------------------------------------------------------------------------


def _check_order(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if backup_kind(props) != SNAPSHOTS:
        return
    where = f"CronJob '{args.name}' (postgres snapshot sets)"
    spec = pod_spec(props)
    init = [c for c in get(spec, "initContainers", default=[]) or [] if isinstance(c, dict)]
    main = [c for c in get(spec, "containers", default=[]) or [] if isinstance(c, dict)]
    fix = (
        f"Fix: one initContainer per role, named after it, in the order {', '.join(ROLE_ORDER)}, each running "
        "`snapshot-step --role <its name>`, and `snapshot-seal` as the only container (components/pg_snapshots.py)."
    )
    why = "the apps snapshot must be complete before the participant snapshot is requested"
    roles = [c.get("name") for c in init]
    unknown = [r for r in roles if r not in ROLE_ORDER]
    if unknown:
        report(f"{where}: initContainers {unknown} are no Postgres role (roles: {', '.join(ROLE_ORDER)}). {fix}")
        return
    for container in main:
        if "snapshot-step" in _words(container):
            report(
                f"{where}: container '{container.get('name')}' runs a snapshot step as a main container, started "
                f"together with the others, not after the steps before it; {why}. {fix}"
            )
    for container in init:
        role = flag_values(container, "--role")
        if "snapshot-step" not in _words(container) or role != [container.get("name")]:
            name = container.get("name")
            report(f"{where}: initContainer '{name}' does not run snapshot-step --role {name}. {fix}")
        if container.get("restartPolicy") == "Always":
            report(
                f"{where}: initContainer '{container.get('name')}' has restartPolicy Always: a sidecar that keeps "
                f"running while the next step starts; {why}. {fix}"
            )
    for required in ("apps", "participant"):
        if required not in roles:
            report(f"{where}: no '{required}' step; every snapshot set needs apps and participant. {fix}")
    order = [ROLE_ORDER.index(r) for r in roles]
    if order != sorted(order) or len(set(roles)) != len(roles):
        report(f"{where}: initContainers run {roles}, not in the order {', '.join(ROLE_ORDER)}; {why}. {fix}")
    if not any("snapshot-seal" in _words(c) for c in main):
        report(f"{where}: no container runs snapshot-seal, so no set is ever complete. {fix}")


snapshot_steps_in_order = resource_rule(
    "snapshot-steps-in-order",
    "The Postgres snapshot-set pod takes one snapshot per role in initContainers in ROLE_ORDER (apps complete "
    "before participant is requested) and seals last.",
    types=[CRON_JOB],
    check=_check_order,
    severity=Severity.CRITICAL,
    remediation="Declare the steps as initContainers canton-bft, apps, participant, sequencer, mediator, and "
    "snapshot-seal as the container (components/pg_snapshots.py).",
)


# --- the dump sets' duty --------------------------------------------------------------------------------


def _check_duty(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    jobs = {(namespace_of(j.props), get(j.props, "metadata", "name")): j for j in snapshot_jobs(resources)}
    for dump in resources:
        if dump.type != CRON_JOB or backup_kind(dump.props) != "postgres":
            continue
        carrier = labels(dump.props, "metadata", "labels").get(FOUR_HOURLY_BY_LABEL)
        if not carrier:
            continue
        where = f"CronJob '{dump.name}' (postgres dump sets, labelled {FOUR_HOURLY_BY_LABEL}={carrier})"
        job = jobs.get((namespace_of(dump.props), carrier))
        if job is None:
            report(
                f"{where}: no postgres snapshot CronJob '{carrier}' in its namespace takes the 4-hourly backups, so "
                f"the dump schedule's gaps are the node's. Fix: declare sv-backups:snapshots, or remove the label and "
                f"schedule the dumps at least every 4 hours.",
                dump.urn,
            )
            continue
        dumped = {
            r
            for _k, c in containers(pod_spec(dump.props))
            if "backup-step" in _words(c)
            for r in flag_values(c, "--role")
        }
        snapped = {r for c in snapshot_steps(job) for r in flag_values(c, "--role")}
        missing = sorted(r for r in dumped - snapped if isinstance(r, str))
        if missing:
            report(
                f"{where}: the snapshot CronJob '{carrier}' takes no snapshot of {missing}, so those roles are "
                f"backed up only as often as the dumps run. Fix: a snapshot step per role the dumps cover.",
                dump.urn,
            )
        if get(job.props, "spec", "suspend") is True and not standby(job.props):
            report(f"{where}: the snapshot CronJob '{carrier}' is suspended. Fix: remove spec.suspend.", dump.urn)


snapshot_sets_carry_the_duty = stack_rule(
    "snapshot-sets-carry-the-duty",
    "Postgres dump sets run sparser than 4 hours only beside a snapshot CronJob that snapshots every role they "
    "dump (the one named by their four-hourly-by label).",
    check=_check_duty,
    severity=Severity.CRITICAL,
    remediation="Keep sv-backups:snapshots with the sparse dump schedule (components/pg_snapshots.py).",
)


# --- DR copies ------------------------------------------------------------------------------------------


def _classes(resources: list[StackResource]) -> dict:
    return {get(r.props, "metadata", "name"): r for r in resources if r.type == SNAPSHOT_CLASS}


def _gcp_primary_regions(resources: list[StackResource]) -> set[str]:
    """The primary region on GCP: the region of the buckets the Postgres steps write to (a dual-region's first data
    location, as the program writes them: primary, DR)."""
    dests = set()
    for job in resources:
        if job.type == CRON_JOB and backup_kind(job.props) is not None:
            for _k, c in containers(pod_spec(job.props)):
                for url in flag_values(c, "--dest"):
                    if isinstance(url, str) and url.startswith("gs://"):
                        dests.add(urlparse(url).netloc)
    regions = set()
    for bucket in resources:
        if bucket.type != BUCKET or bucket.props.get("name") not in dests:
            continue
        data = get(bucket.props, "customPlacementConfig", "dataLocations", default=[]) or []
        location = data[0] if data else bucket.props.get("location")
        if isinstance(location, str):
            regions.add(location.lower())
    return regions


def _off_region(location, primaries: set[str]) -> str | None:
    """What is wrong with `location` as where a GCP snapshot or backup is kept, or None."""
    if location in (None, ""):
        return "no location, so it is kept in the primary region's multi-region or the region itself"
    if location is UNKNOWN or location in SNAPSHOT_MULTI_REGIONS:
        return None
    if str(location).lower() in primaries:
        return f"'{location}' is the primary region"
    return None


def _check_dr_copies(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    if is_dr_stack(resources):
        return  # a DR stack's snapshots stay in its region: the primary region may be the one that is gone
    classes = _classes(resources)
    primaries = _gcp_primary_regions(resources)
    # The cluster's region: that of the store the Postgres jobs write to (not its DR replica).
    stores = dest_prefixes(resources, "s3")
    store_regions = {region_of(b.resource) for b in s3_buckets(resources) if b.name in stores}
    for job in snapshot_jobs(resources):
        for step in snapshot_steps(job):
            where = f"CronJob '{job.name}' step '{step.get('name')}'"
            method = _one(step, "--method")
            problems: list[str] = []
            if method == VOLUME_SNAPSHOT:
                name = _one(step, "--snapshot-class")
                cls = classes.get(name)
                if cls is None:
                    problems.append(
                        f"its class '{name}' is not declared by the stack, so where its snapshots are kept cannot "
                        "be checked (let the program declare it: unset sv-backups:snapshots.volumeSnapshotClass)"
                    )
                elif cls.props.get("driver") in LOCATED_DRIVERS:
                    problem = _off_region(get(cls.props, "parameters", "storage-locations"), primaries)
                    if problem:
                        problems.append(f"its class '{name}' has storage-locations {problem}")
                elif cls.props.get("driver") in REGIONAL_DRIVERS:
                    problems += _copy_problems(step, store_regions, "EBS snapshot")
            elif method == CLOUDSQL_BACKUP:
                problem = _off_region(_one(step, "--location"), primaries)
                if problem:
                    problems.append(f"its --location: {problem}")
            elif method == RDS_SNAPSHOT:
                problems += _copy_problems(step, {_one(step, "--region")} - {None}, "RDS snapshot")
            if problems:
                report(
                    f"{where}: {'; '.join(problems)}. A snapshot kept only in the primary region is lost with it. "
                    f"Fix: store it in the multi-region holding both regions or in the DR region (GCP class "
                    f"storage-locations, Cloud SQL --location), or copy it there under that region's key "
                    f"(--copy-to-region sv-backups:dr.region --copy-kms-key; components/aws/snapshots.py).",
                    job.urn,
                )


def _copy_problems(step: dict, own_regions: set, what: str) -> list[str]:
    region, key = _one(step, "--copy-to-region"), _one(step, "--copy-kms-key")
    problems = []
    if region is None:
        problems.append(f"no --copy-to-region, so every {what} stays in its own region")
    elif region in own_regions:
        problems.append(f"--copy-to-region {region} is the snapshot's own region")
    if key is None:
        problems.append("no --copy-kms-key, so the copies are not under a key of the DR region")
    elif isinstance(region, str) and arn_region(key) not in (None, region):
        problems.append(f"--copy-kms-key {key} is a key of {arn_region(key)}, not of {region}")
    return problems


snapshot_dr_copy = stack_rule(
    "snapshot-dr-copy",
    "Every Postgres snapshot has a copy outside the primary region: PD snapshots and Cloud SQL backups stored in a "
    "multi-region or the DR region, EBS and RDS snapshots copied to the DR region under its key.",
    check=_check_dr_copies,
    severity=Severity.CRITICAL,
    remediation="Declare snapshot sets with components/pg_snapshots.py (the class and the step args per cloud).",
)


# --- locks ----------------------------------------------------------------------------------------------


def _keep_recent(resources: list[StackResource]) -> timedelta | None:
    """The recent window the pruner keeps every set for (its --keep-recent)."""
    found = []
    for job in resources:
        if job.type == CRON_JOB and backup_kind(job.props) == PRUNE:
            for _k, c in containers(pod_spec(job.props)):
                for value in flag_values(c, "--keep-recent"):
                    try:
                        found.append(parse_duration(value))
                    except (ValueError, TypeError):
                        continue
    return max(found) if found else None


def _check_locks(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    classes = _classes(resources)
    recent = _keep_recent(resources)
    for job in snapshot_jobs(resources):
        for step in snapshot_steps(job):
            cls = classes.get(_one(step, "--snapshot-class"))
            if (
                _one(step, "--method") != VOLUME_SNAPSHOT
                or cls is None
                or cls.props.get("driver") not in REGIONAL_DRIVERS
            ):
                continue
            where = f"CronJob '{job.name}' step '{step.get('name')}'"
            raw = _one(step, "--lock-for")
            try:
                lock = parse_duration(raw) if isinstance(raw, str) else None
            except ValueError:
                lock = None
            if lock is None:
                problem = "no --lock-for" if raw is None else f"--lock-for {raw!r} is no duration"
            elif recent is not None and lock < recent:
                problem = f"--lock-for {raw} is shorter than the recent window {recent} the sets are kept for"
            else:
                continue
            report(
                f"{where}: {problem}, so an EBS snapshot (or its copy) a restore may need can be deleted before the "
                f"recent window ends. Fix: lock every snapshot and copy with EBS Snapshot Lock for at least "
                f"sv-backups:retention.recent (--lock-for; components/aws/snapshots.py).",
                job.urn,
            )


snapshot_lock = stack_rule(
    "snapshot-lock",
    "Where the cloud has a lock (EBS Snapshot Lock), every Postgres snapshot and its copy is locked for at least "
    "the recent window.",
    check=_check_locks,
    severity=Severity.CRITICAL,
    remediation="Pass --lock-for sv-backups:retention.recent to the EBS snapshot steps.",
)


# --- the creator cannot delete --------------------------------------------------------------------------


def _bound_rules(resources: list[StackResource], ksa: tuple[str, str]) -> list[tuple[StackResource, dict]]:
    """(Role or ClusterRole, rule) of every RBAC rule bound to the ServiceAccount `ksa`."""
    roles = {
        (r.type, namespace_of(r.props) if r.type == ROLE else "", get(r.props, "metadata", "name")): r
        for r in resources
        if r.type in (ROLE, CLUSTER_ROLE)
    }
    found = []
    for binding in resources:
        if binding.type not in (ROLE_BINDING, CLUSTER_ROLE_BINDING):
            continue
        subjects = get(binding.props, "subjects", default=[]) or []
        bound = any(
            isinstance(s, dict)
            and s.get("kind") == "ServiceAccount"
            and (s.get("namespace") or namespace_of(binding.props), s.get("name")) == ksa
            for s in subjects
        )
        if not bound:
            continue
        ref = get(binding.props, "roleRef", default={}) or {}
        kind = CLUSTER_ROLE if ref.get("kind") == "ClusterRole" else ROLE
        scope = namespace_of(binding.props) if kind == ROLE else ""
        role = roles.get((kind, scope, ref.get("name")))
        if role is not None:
            found.extend((role, rule) for rule in get(role.props, "rules", default=[]) or [] if isinstance(rule, dict))
    return found


def _k8s_problems(resources: list[StackResource], ksa: tuple[str, str]) -> list[str]:
    problems = []
    for role, rule in _bound_rules(resources, ksa):
        groups = set(rule.get("apiGroups") or [])
        if not groups & {SNAPSHOT_API, "*"}:
            continue
        for resource, verbs in (*K8S_DELETE_VERBS.items(), *K8S_CONTENT_VERBS.items()):
            held = set(rule.get("verbs") or []) & verbs
            if held and set(rule.get("resources") or []) & {resource, "*"}:
                problems.append(f"{role.type.rsplit(':', 1)[-1]} '{role.name}' lets it {sorted(held)} {resource}")
    return problems


def _gcp_problems(resources: list[StackResource], ksa_resource: StackResource | None) -> list[str]:
    if ksa_resource is None:
        return []
    email = labels(ksa_resource.props, "metadata", "annotations").get(GKE_SA_ANNOTATION)
    if not isinstance(email, str):
        return []
    member = f"serviceAccount:{email}"
    custom = {
        f"projects/{r.props.get('project')}/roles/{r.props.get('roleId')}": r
        for r in resources
        if r.type == CUSTOM_ROLE
    }
    problems = []
    for grant in resources:
        if not grant.type.startswith("gcp:") or "iam" not in grant.type.lower() or grant.type == CUSTOM_ROLE:
            continue
        for role, members in iam_grants(grant.props):
            if member not in members:
                continue
            if role in GCP_DELETING_ROLES:
                problems.append(f"'{grant.name}' grants it {role}, which can delete snapshots and backup runs")
            elif role in custom:
                held = sorted(set(custom[role].props.get("permissions") or []) & GCP_DELETE_PERMISSIONS)
                if held:
                    problems.append(f"'{grant.name}' grants it custom role '{custom[role].name}' with {held}")
    return problems


def _aws_problems(resources: list[StackResource], ksa: tuple[str, str]) -> list[str]:
    problems = []
    for account, _arn, role in job_roles(resources):
        if role is None or service_account_key(account) != ksa:
            continue
        for policy in role_policies(role, resources):
            statements = policy.statements if isinstance(policy.statements, list) else []
            held = sorted({a for s in statements for a in AWS_DELETE_ACTIONS if allows(s, a)})
            if held:
                problems.append(f"role '{role.name}' {policy.what} allows {held}")
    return problems


def _check_creator(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    accounts = {
        (namespace_of(r.props), get(r.props, "metadata", "name")): r for r in resources if r.type == K8S_SERVICE_ACCOUNT
    }
    for job in snapshot_jobs(resources):
        ksa = _ksa(job)
        problems = [
            *_k8s_problems(resources, ksa),
            *_gcp_problems(resources, accounts.get(ksa)),
            *_aws_problems(resources, ksa),
        ]
        if problems:
            report(
                f"CronJob '{job.name}' (postgres snapshot sets) runs as ServiceAccount '{ksa[0]}/{ksa[1]}', which "
                f"can delete snapshots: {'; '.join(problems)}. Where the cloud has no lock, the creator not being "
                f"able to delete is what keeps a compromised or buggy snapshot job from destroying the history. Fix: "
                f"give deletion to the pruner's identity only (components/pg_snapshots.py SnapshotPruning).",
                job.urn,
            )


snapshot_creator_cannot_delete = stack_rule(
    "snapshot-creator-cannot-delete",
    "The identity that takes Postgres snapshots cannot delete them (no delete on VolumeSnapshots, no patch on "
    "their contents, no cloudsql.backupRuns.delete, ec2:DeleteSnapshot or rds:DeleteDBSnapshot); only the pruner can.",
    check=_check_creator,
    severity=Severity.CRITICAL,
    remediation="Grant deletion to the pruning job's ServiceAccount and cloud identity only.",
)


POLICIES = [
    snapshot_steps_in_order,
    snapshot_sets_carry_the_duty,
    snapshot_dr_copy,
    snapshot_lock,
    snapshot_creator_cannot_delete,
]
