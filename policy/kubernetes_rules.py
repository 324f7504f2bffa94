"""Rules on the Kubernetes objects: the backup CronJobs, their pods, the CometBFT VolumeSnapshotClass.

Checked on the CronJob resources themselves, not on the stack config: a hand edit of a component, a new
default or a refactor that changes what reaches the cluster is caught the same way as a config change.
"""

from __future__ import annotations

from datetime import timedelta

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity

from rules.manifest import CANTON_BFT
from rules.schedules import (
    MIN_RUN_DEADLINE,
    InvalidCron,
    describe,
    largest_gap,
    smallest_gap,
    validate_cron,
)

from .props import (
    BACKUP_COMPONENTS,
    CHECK_COMPONENTS,
    COMPONENT_LABEL,
    CRON_JOB,
    DRILL_COMPONENTS,
    FOUR_HOURLY_BY_LABEL,
    SNAPSHOT_CLASS,
    STANDBY_LABEL,
    UNKNOWN,
    as_number,
    backup_kind,
    cloudsql_proxy_version,
    containers,
    get,
    labels,
    pod_spec,
    require_known,
    standby,
)
from .rule import ADVISORY, resource_rule

# The SV operator docs: back up at least every 4 hours (Postgres, CometBFT, identities alike).
MAX_GAP_HOURS = 4
# Zones without daylight saving time: a 4-hourly schedule keeps 4-hour gaps all year.
_FIXED_ZONES = ("UTC", "Etc/UTC", "GMT", "Etc/GMT", "Etc/UCT", "UCT", "Etc/Zulu", "Zulu")


def _where(args: ResourceValidationArgs, kind: str) -> str:
    return f"CronJob '{args.name}' ({kind} backup)"


def _schedule(props: dict) -> str:
    return require_known(get(props, "spec", "schedule"), "spec.schedule")


# --- schedule -------------------------------------------------------------------------------------------


def _check_schedule(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = backup_kind(props)
    if kind is None:
        return
    where = _where(args, kind)
    max_gap = timedelta(hours=float(args.get_config().get("maxGapHours", MAX_GAP_HOURS)))
    schedule = _schedule(props)
    if not isinstance(schedule, str):
        report(
            f"{where}: has no spec.schedule. Fix: set a 5-field cron expression firing at least every "
            f"{describe(max_gap)}, e.g. '0 */4 * * *'."
        )
        return
    try:
        validate_cron(schedule)
    except InvalidCron as error:
        report(
            f"{where}: {error}. Fix: write the schedule as 5 cron fields firing at least every "
            f"{describe(max_gap)}, e.g. '0 */4 * * *'."
        )
        return
    # The pruner takes no backup (it runs daily); dump sets beside snapshot sets may be sparser, as long as the
    # snapshot CronJob they name carries the duty (snapshot-sets-carry-the-duty checks that one, this rule its gap).
    relaxed = kind == "snapshot-prune" or (
        kind == "postgres" and labels(props, "metadata", "labels").get(FOUR_HOURLY_BY_LABEL)
    )
    gap = timedelta(0) if relaxed else largest_gap(schedule, stop_above=max_gap)
    if gap > max_gap:
        report(
            f"{where}: schedule '{schedule}' leaves {describe(gap)} or more between two runs; the SV docs "
            f"require a backup at least every {describe(max_gap)} at every hour of the day and week. "
            f"Fix: set sv-backups:schedule.{kind} to a schedule such as '0 */4 * * *'."
        )
    zone = get(props, "spec", "timeZone")
    if zone not in (None, UNKNOWN) and zone not in _FIXED_ZONES and not str(zone).startswith("Etc/"):
        report(
            f"{where}: spec.timeZone is '{zone}'; with daylight saving time a {describe(max_gap)} schedule "
            f"has a longer gap once a year. Fix: use timeZone 'Etc/UTC'."
        )
    suspended = get(props, "spec", "suspend") is True
    if suspended and not standby(props):
        report(f"{where}: spec.suspend is true, so no backup runs at all. Fix: remove suspend (or set it false).")
    elif standby(props) and not suspended:
        report(
            f"{where}: labelled {STANDBY_LABEL} (a DR stack's CronJob before failover) but not suspended, so the "
            f"DR cluster writes sets while the primary still does. Fix: set spec.suspend: true, or declare the "
            f"failover (sv-backups:dr.failover: true), which drops the label."
        )


schedule_max_gap = resource_rule(
    "backup-schedule-max-gap",
    "Every backup CronJob (Postgres, CometBFT, identities) fires at least every 4 hours, all day, all week.",
    types=[CRON_JOB],
    check=_check_schedule,
    severity=Severity.CRITICAL,
    remediation="Use a schedule such as '0 */4 * * *' in timeZone 'Etc/UTC' and do not suspend the CronJob.",
    config={
        "maxGapHours": {
            "type": "number",
            "minimum": 0.25,
            "maximum": MAX_GAP_HOURS,
            "default": MAX_GAP_HOURS,
            "description": "Largest allowed time between two runs, in hours (at most 4: the SV requirement).",
        }
    },
)


# --- Postgres ordering ----------------------------------------------------------------------------------


def _check_postgres_order(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if backup_kind(props) != "postgres":
        return
    where = _where(args, "postgres")
    spec = pod_spec(props)
    init = [c.get("name") for c in get(spec, "initContainers", default=[]) or [] if isinstance(c, dict)]
    main = [c.get("name") for c in get(spec, "containers", default=[]) or [] if isinstance(c, dict)]
    why = (
        "the apps backup must complete before the participant backup starts (restoring apps data newer "
        "than the participant's corrupts the node)"
    )
    fix = (
        "Fix: run 'apps' as the first initContainer and 'participant' as a later initContainer (or as a main "
        "container); Kubernetes runs initContainers one at a time, each to completion."
    )
    if "apps" not in init:
        place = "a main container, started together with the others" if "apps" in main else "missing"
        report(f"{where}: the 'apps' step is {place}; {why}. {fix}")
        return
    if "participant" not in init and "participant" not in main:
        report(f"{where}: the 'participant' step is missing; every Postgres set needs apps and participant. {fix}")
        return
    if "participant" in init and init.index("participant") < init.index("apps"):
        report(f"{where}: initContainers run {init}: 'participant' runs before 'apps'; {why}. {fix}")
    # A DABFT node's ordering state is taken first, as Splice's backup script does (rules/manifest.py CANTON_BFT).
    if CANTON_BFT in main or (CANTON_BFT in init and init.index(CANTON_BFT) > init.index("apps")):
        report(
            f"{where}: the '{CANTON_BFT}' step (the DABFT state) does not complete before 'apps' starts "
            f"(initContainers {init}, containers {main}). Fix: run '{CANTON_BFT}' as the first initContainer, "
            f"before 'apps', as Splice's backup script takes it first."
        )
    apps = next(c for c in spec["initContainers"] if isinstance(c, dict) and c.get("name") == "apps")
    if get(apps, "restartPolicy") == "Always":
        report(
            f"{where}: the 'apps' initContainer has restartPolicy Always, which makes it a sidecar that keeps "
            f"running while 'participant' starts; {why}. Fix: remove restartPolicy from the 'apps' step."
        )


postgres_apps_before_participant = resource_rule(
    "postgres-apps-before-participant",
    "The Postgres backup pod runs the 'apps' step in an initContainer that completes before 'participant' starts.",
    types=[CRON_JOB],
    check=_check_postgres_order,
    severity=Severity.CRITICAL,
    remediation="Declare initContainers in the order canton-bft (DABFT), apps, participant, sequencer, mediator; seal "
    "runs last.",
)


# --- overlap and deadlines ------------------------------------------------------------------------------


def _check_no_overlap(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = backup_kind(props)
    if kind is None:
        return
    policy = get(props, "spec", "concurrencyPolicy")
    if policy != "Forbid" and policy is not UNKNOWN:
        report(
            f"{_where(args, kind)}: spec.concurrencyPolicy is {policy or 'unset (Allow)'}, so a slow run can "
            f"overlap the next one (two sets written at once, the ordering proof broken). "
            f"Fix: set spec.concurrencyPolicy: Forbid."
        )


backup_job_no_overlap = resource_rule(
    "backup-job-no-overlap",
    "Backup CronJobs never run two jobs at once (concurrencyPolicy: Forbid).",
    types=[CRON_JOB],
    check=_check_no_overlap,
    remediation="Set spec.concurrencyPolicy: Forbid on every backup CronJob.",
)


def _check_deadlines(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = backup_kind(props)
    if kind is None:
        return
    where = _where(args, kind)
    schedule = _schedule(props)
    if not isinstance(schedule, str):
        return  # backup-schedule-max-gap reports the schedule itself
    try:
        interval = smallest_gap(schedule)
    except InvalidCron:
        return  # likewise
    deadlines = {
        "spec.startingDeadlineSeconds": get(props, "spec", "startingDeadlineSeconds"),
        "spec.jobTemplate.spec.activeDeadlineSeconds": get(
            props, "spec", "jobTemplate", "spec", "activeDeadlineSeconds"
        ),
    }
    valid = {}
    for field, raw in deadlines.items():
        if raw is UNKNOWN:
            continue
        seconds = as_number(raw)
        if seconds is None or seconds <= 0:
            report(
                f"{where}: {field} is not set, so a run (or a missed start) is never cut short and can run into "
                f"the next one. Fix: set {field} below the {describe(interval)} between runs."
            )
        elif seconds >= interval.total_seconds():
            report(
                f"{where}: {field} is {int(seconds)} s, not shorter than the {describe(interval)} between two "
                f"runs of '{schedule}'. Fix: set {field} below {int(interval.total_seconds())}."
            )
        else:
            valid[field] = seconds
    # A deadline shorter than a healthy run of this kind needs would kill good backups (schedules.py).
    active = valid.get("spec.jobTemplate.spec.activeDeadlineSeconds")
    floor = MIN_RUN_DEADLINE.get(kind)
    if active is not None and floor is not None and active < floor.total_seconds():
        report(
            f"{where}: spec.jobTemplate.spec.activeDeadlineSeconds is {int(active)} s, shorter than the "
            f"{describe(floor)} a {kind} run needs, so healthy runs would be killed. Fix: schedule runs further "
            f"apart so the derived deadline is at least {int(floor.total_seconds())} s."
        )
    # A run may start as late as the starting deadline and then run for its whole active deadline: only the sum
    # bounds when it ends.
    if len(valid) == len(deadlines) and sum(valid.values()) >= interval.total_seconds():
        starting, active = valid.values()
        report(
            f"{where}: spec.startingDeadlineSeconds ({int(starting)}) + "
            f"spec.jobTemplate.spec.activeDeadlineSeconds ({int(active)}) = {int(starting + active)} s is not "
            f"shorter than the {describe(interval)} between two runs of '{schedule}': a run that starts late "
            f"can still be running when the next one is due, and with concurrencyPolicy Forbid that run is "
            f"skipped. Fix: lower them so that their sum is below {int(interval.total_seconds())} "
            f"(components/kube_specs.py)."
        )


backup_job_deadlines = resource_rule(
    "backup-job-deadlines",
    "Backup CronJobs bound each run: startingDeadlineSeconds + activeDeadlineSeconds shorter than the interval.",
    types=[CRON_JOB],
    check=_check_deadlines,
    remediation="Set spec.startingDeadlineSeconds and spec.jobTemplate.spec.activeDeadlineSeconds so that their "
    "sum is below the shortest time between two runs of the schedule.",
)


# --- pods -----------------------------------------------------------------------------------------------


def _container_problems(container: dict, pod_security: dict) -> list[str]:
    context = container.get("securityContext") if isinstance(container.get("securityContext"), dict) else {}
    problems = []
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if context.get("privileged") is True:
        problems.append("privileged is true")
    drop = get(context, "capabilities", "drop", default=[]) or []
    if not isinstance(drop, list) or "ALL" not in drop:
        problems.append("capabilities.drop does not contain ALL")
    if get(context, "capabilities", "add", default=[]):
        problems.append(f"capabilities.add is {get(context, 'capabilities', 'add')}")
    non_root = context.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    if non_root is not True:
        problems.append("runAsNonRoot is not true (neither on the container nor on the pod)")
    user = context.get("runAsUser", pod_security.get("runAsUser"))
    if as_number(user) == 0:
        problems.append("runAsUser is 0 (root)")
    seccomp = get(context, "seccompProfile", "type", default=get(pod_security, "seccompProfile", "type"))
    if seccomp != "RuntimeDefault":
        problems.append(f"seccompProfile.type is {seccomp or 'unset'} (neither container nor pod set RuntimeDefault)")
    return problems


# Every workload the program declares, whatever it runs: the pods that take backups, check them (replica check,
# history audit), drill restores (a drill pod starts a PostgreSQL server and reads backups and secrets), and any
# later one. A Job or a bare Pod is held to the same rules as a CronJob's pod.
JOB = "kubernetes:batch/v1:Job"
POD = "kubernetes:core/v1:Pod"
WORKLOADS = [CRON_JOB, JOB, POD]
# Every component label a workload of the program carries, and what it is (policy/props.py keeps the lists).
KNOWN_COMPONENTS = {
    **{label: f"{kind} backup" for label, kind in BACKUP_COMPONENTS.items()},
    **{label: f"{kind} check" for label, kind in CHECK_COMPONENTS.items()},
    **{label: f"{kind} restore drill" for label, kind in DRILL_COMPONENTS.items()},
}


def _workload_pod(props: dict, resource_type: str) -> dict:
    """The pod spec of a CronJob, a Job or a Pod."""
    path = {CRON_JOB: ("spec", "jobTemplate", "spec", "template", "spec"), JOB: ("spec", "template", "spec")}
    spec = get(props, *path.get(resource_type, ("spec",)), default={})
    return spec if isinstance(spec, dict) else {}


def _workload_where(props: dict, args: ResourceValidationArgs) -> str:
    kind = args.resource_type.rsplit(":", 1)[-1]
    component = labels(props, "metadata", "labels").get(COMPONENT_LABEL)
    what = KNOWN_COMPONENTS.get(component, f"component {component!r}" if component else "no component label")
    return f"{kind} '{args.name}' ({what})"


def _check_pod_hardened(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    where = _workload_where(props, args)
    spec = _workload_pod(props, args.resource_type)
    pod_security = spec.get("securityContext") if isinstance(spec.get("securityContext"), dict) else {}
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host_field) is True:
            report(
                f"{where}: the pod sets {host_field}: true. Fix: remove it; the program's pods need no host namespace."
            )
    for field, container in containers(spec):
        problems = _container_problems(container, pod_security)
        if problems:
            report(
                f"{where}: {field[:-1]} '{container.get('name')}': {'; '.join(problems)}. Fix: give it "
                f"securityContext {{runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: "
                f"false, capabilities: {{drop: [ALL]}}, seccompProfile: {{type: RuntimeDefault}}}} "
                f"(components/kube_specs.py)."
            )


backup_pod_hardened = resource_rule(
    "backup-pod-hardened",
    "Every pod the program declares (backups, snapshot sets and their pruner, checks, drills; CronJob, Job or Pod) "
    "runs non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault "
    "seccomp.",
    types=WORKLOADS,
    check=_check_pod_hardened,
    remediation="Build every container with components/kube_specs.py container_security_context() and the pod "
    "with pod_security_context().",
)


def _check_component_known(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    component = labels(props, "metadata", "labels").get(COMPONENT_LABEL)
    if component is UNKNOWN or component in KNOWN_COMPONENTS:
        return
    kind = args.resource_type.rsplit(":", 1)[-1]
    found = f"carries {COMPONENT_LABEL}={component!r}" if component else f"has no {COMPONENT_LABEL} label"
    report(
        f"{kind} '{args.name}': {found}, so the rules that check what it runs (schedule, deadlines, ordering, "
        f"identity, alerts) do not know it; only the pod rules see it. Fix: label it with one of "
        f"{', '.join(sorted(KNOWN_COMPONENTS))} (rules/naming.py Names.labels), or teach policy/props.py the new "
        f"component and give it the rules its kind needs."
    )


workload_component_known = resource_rule(
    "workload-component-known",
    "Every CronJob, Job and Pod the program declares carries a known component label, so no workload escapes the "
    "rules of its kind.",
    types=WORKLOADS,
    check=_check_component_known,
    severity=Severity.HIGH,
    remediation="Label every workload with Names.labels(<component>) of a component policy/props.py knows.",
)


# A password in an environment variable is readable by anything that reads the process environment
# (/proc/<pid>/environ of the same user, crash dumps, `kubectl describe` of the pod's env sources, debug
# sidecars), and libpq hands it to every child; the program mounts it as a 0400 file instead (docs/contracts.md).
_PASSWORD_WORDS = ("PASSWORD", "PASSWD")
# Variables that name where a password is (PGPASSFILE, FOO_PASSWORD_FILE), not the password itself.
_PATH_SUFFIXES = ("FILE", "_PATH", "_DIR")


def _password_name(name) -> bool:
    text = name.upper() if isinstance(name, str) else ""
    return any(word in text for word in _PASSWORD_WORDS) and not text.endswith(_PATH_SUFFIXES)


def _password_key(key) -> bool:
    return isinstance(key, str) and any(word.lower() in key.lower() for word in _PASSWORD_WORDS)


def _check_no_password_env(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    where = _workload_where(props, args)
    fix = (
        "Fix: mount the Secret as a read-only file (a secret volume, defaultMode 0400) and pass its path with "
        "--password-file; the job turns it into a private libpq passfile (components/kube_specs.py "
        "password_file())."
    )
    for field, container in containers(_workload_pod(props, args.resource_type)):
        name = f"{field[:-1]} '{container.get('name')}'"
        for variable in get(container, "env", default=[]) or []:
            variable_name = get(variable, "name")
            ref = get(variable, "valueFrom", "secretKeyRef")
            if isinstance(ref, dict) and (_password_name(variable_name) or _password_key(ref.get("key"))):
                report(
                    f"{where}: {name} sets env {variable_name} from Secret '{ref.get('name')}' key "
                    f"'{ref.get('key')}': the password sits in the process environment of the container and of "
                    f"every child process. {fix}"
                )
            elif _password_name(variable_name) and get(variable, "value") not in (None, "", UNKNOWN):
                # Never print the value: it is the password, and this message lands in CI logs.
                report(
                    f"{where}: {name} sets env {variable_name} to a literal value: the password is in the plan "
                    f"and the Pulumi state in clear, and in the process environment. {fix}"
                )
        for source in get(container, "envFrom", default=[]) or []:
            secret = get(source, "secretRef", "name")
            if secret is not None:
                report(
                    f"{where}: {name} takes every key of Secret '{secret}' as environment variables (envFrom), "
                    f"passwords included. {fix}"
                )


no_password_env = resource_rule(
    "no-password-env",
    "No container the program declares has a password in an environment variable (from a Secret key, a whole "
    "Secret, or a literal); passwords are mounted read-only files.",
    types=WORKLOADS,
    check=_check_no_password_env,
    remediation="Mount the password Secret as a volume (defaultMode 0400, readOnly) and pass --password-file.",
)


def _check_resource_limits(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = backup_kind(props)
    if kind is None:
        return
    for field, container in containers(pod_spec(props)):
        limits = get(container, "resources", "limits", default={}) or {}
        missing = [r for r in ("cpu", "memory") if not isinstance(limits, dict) or r not in limits]
        if missing:
            report(
                f"{_where(args, kind)}: {field[:-1]} '{container.get('name')}' has no {' and '.join(missing)} "
                f"limit, so a runaway dump can starve the SV node's own pods. Fix: set "
                f"resources.limits.{missing[0]} (and requests) on it."
            )


backup_pod_resource_limits = resource_rule(
    "backup-pod-resource-limits",
    "Every container of a backup pod has CPU and memory limits.",
    types=[CRON_JOB],
    check=_check_resource_limits,
    remediation="Set resources.requests and resources.limits (cpu, memory) on every container.",
)


def _check_image_digest(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = backup_kind(props)
    if kind is None:
        return
    for field, container in containers(pod_spec(props)):
        image = container.get("image")
        if cloudsql_proxy_version(container):
            continue  # the Cloud SQL Auth Proxy must be pinned, not only advised to be (cloudsql-proxy-sidecar)
        if isinstance(image, str) and "@sha256:" not in image:
            report(
                f"{_where(args, kind)}: {field[:-1]} '{container.get('name')}' runs image '{image}', a tag that "
                f"can be moved to other code after review. Fix: set sv-backups:jobImage to "
                f"'<repository>@sha256:<digest>' of the reviewed build."
            )


job_image_pinned_by_digest = resource_rule(
    "job-image-pinned-by-digest",
    "Backup pods run an image pinned by digest, so the code that runs is the code that was reviewed.",
    types=[CRON_JOB],
    check=_check_image_digest,
    level=ADVISORY,
    severity=Severity.MEDIUM,
    remediation="Set sv-backups:jobImage to an image reference with @sha256:<digest>.",
)


# --- CometBFT snapshots ---------------------------------------------------------------------------------


# What each class's snapshots hold, by its component label (components/cometbft.py, components/pg_snapshots.py).
_SNAPSHOT_OF = {"postgres-snapshot": "Postgres snapshot-set"}


def _check_snapshot_class(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    policy = get(props, "deletionPolicy")
    what = _SNAPSHOT_OF.get(labels(props, "metadata", "labels").get(COMPONENT_LABEL), "CometBFT")
    if policy != "Retain" and policy is not UNKNOWN:
        report(
            f"VolumeSnapshotClass '{args.name}': deletionPolicy is {policy or 'unset'}, so deleting a "
            f"VolumeSnapshot object (by hand, a namespace deletion, an uninstall) destroys the {what} disk "
            f"snapshot itself. Fix: set deletionPolicy: Retain (the pruner releases snapshots one by one)."
        )


snapshot_class_retain = resource_rule(
    "snapshot-class-retain",
    "The CometBFT and Postgres snapshot-set VolumeSnapshotClasses keep snapshots when their VolumeSnapshot objects "
    "are deleted (deletionPolicy: Retain).",
    types=[SNAPSHOT_CLASS],
    check=_check_snapshot_class,
    severity=Severity.CRITICAL,
    remediation="Set deletionPolicy: Retain on the VolumeSnapshotClass.",
)

POLICIES = [
    schedule_max_gap,
    postgres_apps_before_participant,
    backup_job_no_overlap,
    backup_job_deadlines,
    backup_pod_hardened,
    workload_component_known,
    no_password_env,
    backup_pod_resource_limits,
    snapshot_class_retain,
    job_image_pinned_by_digest,
]
