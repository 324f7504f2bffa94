"""Stack rules: properties no single resource shows.

The windows the lifecycle rules must honour are labels on the backup bucket (CrossGuard stack policies see
resources, not stack outputs); the historical cadence the seal step will really use is recomputed from the
Postgres CronJob's own arguments with the same function the job runs (rules/retention.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from urllib.parse import urlparse

from pulumi_policy import ReportViolation, Severity, StackValidationArgs, StackValidationPolicy

from rules.retention import (
    HISTORICAL_TIER,
    RECENT_TIER,
    SV_SCHEDULE_GAP,
    cometbft_historical_cadence,
    cometbft_retention_window,
    parse_duration,
    postgres_historical_cadence,
    schedule_margin,
)
from rules.schedules import largest_gap

from .clouds import BackupAlert, Cloud, clouds_of
from .props import (
    ALERT_POLICY,
    BUCKET,
    CADENCE_SECONDS,
    CRON_JOB,
    FOUR_HOURLY_BY_LABEL,
    GKE_SA_ANNOTATION,
    K8S_SERVICE_ACCOUNT,
    MIN_PRUNING_SECONDS,
    RECENT_SECONDS,
    SECRET,
    SECRET_PURPOSE,
    SERVICE_ACCOUNT,
    SNAPSHOT_CLASS,
    TRANSFER_JOB,
    UNKNOWN,
    as_number,
    backup_kind,
    check_kind,
    containers,
    describe_seconds,
    flag_values,
    gcs_copies,
    get,
    iam_grants,
    labels,
    namespace_of,
    pod_spec,
    require_known,
)
from .rule import StackResource, stack_rule

DAY = 86400
_NONCURRENT_ONLY = ("daysSinceNoncurrentTime", "numNewerVersions", "noncurrentTimeBefore")


def _backup_buckets(resources: list[StackResource], dests: Mapping[str, object] | None = None) -> list[StackResource]:
    """Buckets carrying the program's window labels (the backup store(s)), and, when `dests` is given, every
    bucket it names (that a Postgres step writes to, or a transfer copies sets into), labelled or not."""
    return [
        r
        for r in resources
        if r.type == BUCKET
        and (RECENT_SECONDS in labels(r.props, "labels") or (dests is not None and r.props.get("name") in dests))
    ]


def _bucket_name(bucket: StackResource) -> str:
    return require_known(bucket.props.get("name"), f"{bucket.name}.name")


def dest_prefixes(resources: list[StackResource], scheme: str) -> dict[str, set[str]]:
    """Bucket name -> the object prefixes the Postgres backup steps write to, from their `--dest <scheme>://bucket/
    <prefix>` arguments (read like jobs/destinations.py: the URL path without its slashes, then '/'). Derived from
    what the jobs really do, not from labels the program writes about itself."""
    found: dict[str, set[str]] = {}
    for resource in resources:
        if resource.type != CRON_JOB or backup_kind(resource.props) != "postgres":
            continue
        for _kind, container in containers(pod_spec(resource.props)):
            for url in flag_values(container, "--dest"):
                url = require_known(url, f"{resource.name}.{container.get('name')}.args.--dest")
                parsed = urlparse(str(url))
                if parsed.scheme == scheme and parsed.netloc:
                    path = parsed.path.strip("/")
                    found.setdefault(parsed.netloc, set()).add(f"{path}/" if path else "")
    return found


def _store_prefixes(resources: list[StackResource]) -> dict[str, dict[str, str]]:
    """Bucket name -> the prefixes backup sets land under -> where that is read from: the Postgres steps'
    `--dest`, and, for a bucket a Storage Transfer job fills from one of those (the DR copy), the same prefixes
    under the job's sink path. The copy holds the same tiers, so its lifecycle rules are held to the same
    allowlist."""
    stores = {
        bucket: {prefix: f"the Postgres CronJob writes to --dest gs://{bucket}/{prefix}" for prefix in prefixes}
        for bucket, prefixes in dest_prefixes(resources, "gs").items()
    }
    written = {bucket: sorted(prefixes) for bucket, prefixes in stores.items()}
    for resource in resources:
        if resource.type != TRANSFER_JOB:
            continue
        for source, source_path, sink, sink_path in gcs_copies(resource.props):
            sink = require_known(sink, f"{resource.name}.transferSpec.gcsDataSink.bucketName")
            for prefix in written.get(require_known(source, f"{resource.name}.transferSpec.gcsDataSource"), []):
                if isinstance(source_path, str) and isinstance(sink_path, str) and prefix.startswith(source_path):
                    copied = sink_path + prefix[len(source_path) :]
                    stores.setdefault(sink, {}).setdefault(
                        copied,
                        f"the transfer job '{resource.name}' copies the Postgres CronJob's --dest gs://{source}/"
                        f"{prefix} to gs://{sink}/{copied}",
                    )
    return stores


def _lifecycle(bucket: StackResource) -> list[tuple[int, dict]]:
    rules = bucket.props.get("lifecycleRules")
    return [(i, r) for i, r in enumerate(rules) if isinstance(r, dict)] if isinstance(rules, list) else []


def _deletes_live_objects(rule: dict) -> bool:
    """A Delete rule that can remove current (live) objects; rules limited to noncurrent versions cannot."""
    if get(rule, "action", "type") != "Delete":
        return False
    condition = get(rule, "condition", default={}) or {}
    if not isinstance(condition, dict):
        return True
    if condition.get("withState") == "ARCHIVED":
        return False
    # Stack policies see the provider's outputs too, where unset conditions read 0 or "".
    return not any(condition.get(field) not in (None, 0, "", UNKNOWN) for field in _NONCURRENT_ONLY)


def _rule_prefixes(rule: dict) -> list:
    """The prefixes a rule matches; a rule without matchesPrefixes matches every object ('')."""
    found = get(rule, "condition", "matchesPrefixes")
    if isinstance(found, list) and found:
        return [p if isinstance(p, str) or p is UNKNOWN else "" for p in found]
    return [""]


def _describe_rule(index: int, rule: dict) -> str:
    condition = get(rule, "condition", default={}) or {}
    shown = {k: v for k, v in condition.items() if v not in (None, [], UNKNOWN)} if isinstance(condition, dict) else {}
    return f"lifecycle rule #{index} (Delete, {shown or 'no condition'})"


# --- lifecycle: history -------------------------------------------------------------------------------


def _check_history_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    stores = _store_prefixes(resources)
    for bucket in _backup_buckets(resources, stores):
        name = _bucket_name(bucket)
        prefixes = sorted(stores.get(name, ()))
        for index, rule in _lifecycle(bucket):
            if not _deletes_live_objects(rule):
                continue
            if len(prefixes) != 1:
                where = (
                    "no Postgres CronJob writes to it (no --dest gs://" + name + "/...)"
                    if not prefixes
                    else f"the Postgres steps write to several prefixes {prefixes}"
                )
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes live objects, and {where}, so "
                    f"the recent tier it may delete from cannot be derived; it may be deleting historical sets. "
                    f"Fix: point every Postgres step's --dest at gs://{name}/<prefix> with one prefix "
                    f"(components/postgres.py), or remove the rule.",
                    bucket.urn,
                )
                continue
            tier = prefixes[0] + RECENT_TIER
            for prefix in _rule_prefixes(rule):
                prefix = require_known(prefix, f"{bucket.name}.lifecycleRules[{index}].condition.matchesPrefixes")
                if prefix.startswith(tier):
                    continue
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes live objects under "
                    f"'{prefix or '(every prefix)'}', which is not inside the recent tier '{tier}' "
                    f"({stores[name][prefixes[0]]}), so it can delete historical sets "
                    f"('{prefixes[0] + HISTORICAL_TIER}'): they are kept from genesis, per migration id, and never "
                    f"expire by age. Fix: limit the rule with matchesPrefixes to '{tier}' (or below it), or to "
                    f"noncurrent objects (withState: ARCHIVED).",
                    bucket.urn,
                )


lifecycle_never_deletes_history = stack_rule(
    "lifecycle-never-deletes-history",
    "Bucket lifecycle rules delete live objects only inside the recent tier '<prefix>recent/' the Postgres "
    "CronJob writes to, never historical backup sets.",
    check=_check_history_kept,
    severity=Severity.CRITICAL,
    remediation="Give every Delete lifecycle rule on live objects a matchesPrefixes inside '<prefix>recent/', where "
    "<prefix> is the path of the Postgres CronJob's --dest gs://<bucket>/<prefix>.",
)


# --- lifecycle: recent window -------------------------------------------------------------------------


def _check_recent_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    dests = _store_prefixes(resources)
    for bucket in _backup_buckets(resources):
        tiers = [prefix + RECENT_TIER for prefix in dests.get(_bucket_name(bucket), ())]
        window = as_number(labels(bucket.props, "labels").get(RECENT_SECONDS))
        if not tiers or window is None:
            continue  # lifecycle-never-deletes-history refuses Delete rules on a bucket no --dest names
        for index, rule in _lifecycle(bucket):
            overlapping = any(
                p is UNKNOWN or t.startswith(p) or p.startswith(t) for p in _rule_prefixes(rule) for t in tiers
            )
            if not _deletes_live_objects(rule) or not overlapping:
                continue
            condition = get(rule, "condition", default={}) or {}
            by_date = [f for f in ("createdBefore", "customTimeBefore", "daysSinceCustomTime") if condition.get(f)]
            age = as_number(condition.get("age"))
            if by_date:
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes recent sets by "
                    f"{by_date[0]}, not by their age, so a set can go before the recent window "
                    f"{describe_seconds(window)} ends. Fix: use condition.age >= {_days(window)}.",
                    bucket.urn,
                )
            elif age is None or age * DAY < window:
                shown = "no age (immediately)" if age is None else f"{age:g} days"
                report(
                    f"Bucket '{bucket.name}': {_describe_rule(index, rule)} deletes recent sets after {shown}, "
                    f"before the recent window {describe_seconds(window)} ({RECENT_SECONDS}). Fix: set "
                    f"condition.age to at least {_days(window)} days (sv-backups:retention.recent).",
                    bucket.urn,
                )


def _days(seconds: float) -> int:
    return -(-int(seconds) // DAY)


lifecycle_keeps_recent_window = stack_rule(
    "lifecycle-keeps-recent-window",
    "Bucket lifecycle rules keep every recent backup set for at least the configured recent window.",
    check=_check_recent_kept,
    remediation="Set the recent tier's Delete rule to condition.age >= the recent window in days.",
)


# --- historical cadence vs pruning ----------------------------------------------------------------------


def _seal_windows(resources: list[StackResource]) -> tuple[StackResource | None, dict[str, timedelta]]:
    """The pruning windows the Postgres seal step is started with (--participant-pruning, --sequencer-pruning), and
    under "schedule-gap" its --schedule-gap (a dump schedule sparser than 4 h, beside snapshot sets)."""
    for resource in resources:
        if resource.type != CRON_JOB or backup_kind(resource.props) != "postgres":
            continue
        for _kind, container in containers(pod_spec(resource.props)):
            if container.get("name") != "seal":
                continue
            args = [a for a in container.get("args") or [] if isinstance(a, str)]
            windows = {}
            flags = (
                ("--participant-pruning", "participant"),
                ("--sequencer-pruning", "sequencer"),
                ("--schedule-gap", "schedule-gap"),
            )
            for flag, key in flags:
                if flag in args[:-1]:
                    try:
                        windows[key] = parse_duration(args[args.index(flag) + 1])
                    except ValueError:
                        continue
            return resource, windows
    return None, {}


# The most that can pass between a promotion falling due and the next run having taken its snapshots
# (rules/retention.py schedule_margin): 8 h for every schedule at most 4 h apart, twice the gap of a sparser dump
# schedule (read from the dump CronJob's schedule and the seal's --schedule-gap); a cadence must leave it inside the
# window.


def _cadence_check(clouds: Sequence[Cloud]):
    def check(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
        job, windows = _seal_windows(resources)
        real_gap = _dump_gap(job)
        # A dump schedule sparser than 4 h (beside snapshot sets) has a margin of twice its gap (rules/retention.py).
        store_margin = schedule_margin(real_gap or SV_SCHEDULE_GAP).total_seconds()
        for cloud in clouds_of(resources, clouds):
            for store, values in cloud.stores(resources):
                cadence = as_number(values.get(CADENCE_SECONDS))
                pruning = as_number(values.get(MIN_PRUNING_SECONDS))
                if cadence is None:
                    if values.get(CADENCE_SECONDS) in (None, "", UNKNOWN):
                        report(cloud.missing_store_label(store, CADENCE_SECONDS), store.urn)
                elif pruning is not None and cadence + store_margin >= pruning:
                    report(
                        f"Bucket '{store.name}': historical sets are kept every {describe_seconds(cadence)} "
                        f"({CADENCE_SECONDS}), which with up to {describe_seconds(store_margin)} until the next run "
                        f"has taken its snapshots is not strictly less than the smallest pruning window "
                        f"{describe_seconds(pruning)} ({MIN_PRUNING_SECONDS}): pruned history would fall between "
                        f"two kept sets. Fix: keep historical sets more often than the smallest of "
                        f"sv-backups:retention.participantPruning / sequencerPruning (the program uses the "
                        f"smallest window minus 8 h of schedule margin and the outage budget, "
                        f"rules/retention.py).",
                        store.urn,
                    )
        gap = windows.pop("schedule-gap", SV_SCHEDULE_GAP)
        if job is not None and real_gap is not None and real_gap > max(gap, SV_SCHEDULE_GAP):
            report(
                f"CronJob '{job.name}': its schedule leaves {describe_seconds(real_gap.total_seconds())} between two "
                f"runs, but the seal step computes the historical cadence for a gap of "
                f"{describe_seconds(gap.total_seconds())} (--schedule-gap), so historical sets can end up further "
                f"apart than the pruning window allows. Fix: pass --schedule-gap with the schedule's largest gap "
                f"(components/postgres.py does).",
                job.urn,
            )
        if job is not None and windows:
            used = postgres_historical_cadence(windows.get("participant"), windows.get("sequencer"), gap)
            margin = schedule_margin(gap)
            smallest = min(windows.values())
            if used + margin >= smallest:
                report(
                    f"CronJob '{job.name}': the seal step promotes a historical set every "
                    f"{describe_seconds(used.total_seconds())} (from its --participant-pruning/--sequencer-pruning), "
                    f"which with up to {describe_seconds(margin.total_seconds())} until the next run has taken its "
                    f"snapshots is not strictly less than the smallest pruning window "
                    f"{describe_seconds(smallest.total_seconds())}. Fix: lengthen "
                    f"sv-backups:retention.participantPruning / sequencerPruning (the cadence is the smallest window "
                    f"minus 8 h of schedule margin and the outage budget, at least 1h).",
                    job.urn,
                )

        for job, step in cometbft_steps(resources):
            if step is not None:
                _check_cometbft_cadence(job, step, report)

    return check


def _dump_gap(job: StackResource | None) -> timedelta | None:
    """The largest gap of a dump CronJob allowed to run sparser than 4 h (labelled four-hourly-by: snapshot sets
    carry the duty), over its whole period; None otherwise (backup-schedule-max-gap holds it to 4 h) or when it
    cannot be read."""
    if job is None or not labels(job.props, "metadata", "labels").get(FOUR_HOURLY_BY_LABEL):
        return None
    schedule = get(job.props, "spec", "schedule")
    if not isinstance(schedule, str):
        return None
    try:
        return largest_gap(schedule)
    except ValueError:
        return None  # backup-schedule-max-gap reports it


def cometbft_steps(resources: list[StackResource]) -> list[tuple[StackResource, dict | None]]:
    """(CronJob, container) for every container of a CometBFT backup CronJob that runs `snapshot-cometbft`;
    (CronJob, None) for a CometBFT CronJob without one."""
    found = []
    for resource in resources:
        if resource.type != CRON_JOB or backup_kind(resource.props) != "cometbft":
            continue
        steps = [
            container
            for _kind, container in containers(pod_spec(resource.props))
            if "snapshot-cometbft" in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        found.extend((resource, step) for step in steps or [None])
    return found


def one_flag(step: dict, flag: str):
    """The value of `flag` in a step's arguments; None when absent (or given twice: ambiguous)."""
    values = flag_values(step, flag)
    return values[0] if len(values) == 1 else None


def _check_cometbft_cadence(job: StackResource, step: dict, report: ReportViolation) -> None:
    raw_blocks, raw_rate = one_flag(step, "--retain-blocks"), one_flag(step, "--blocks-per-hour")
    if UNKNOWN in (raw_blocks, raw_rate):
        return
    try:
        retain_blocks, blocks_per_hour = int(str(raw_blocks)), float(str(raw_rate))
        window = cometbft_retention_window(retain_blocks, blocks_per_hour)
    except (TypeError, ValueError):
        report(
            f"CronJob '{job.name}': the snapshot-cometbft step has --retain-blocks {raw_blocks} and "
            f"--blocks-per-hour {raw_rate}; both must be given once and be positive, or the historical snapshot "
            f"cadence cannot be derived. Fix: set sv-backups:cometbft.retainBlocks and blocksPerHour "
            f"(components/cometbft.py passes them).",
            job.urn,
        )
        return
    cadence = cometbft_historical_cadence(retain_blocks, blocks_per_hour)
    if cadence >= window:
        report(
            f"CronJob '{job.name}': the CometBFT pruner keeps a historical snapshot every "
            f"{describe_seconds(cadence.total_seconds())} (from --retain-blocks {retain_blocks} / "
            f"--blocks-per-hour {blocks_per_hour:g}), not strictly more often than CometBFT's own block "
            f"retention window {describe_seconds(window.total_seconds())}: blocks pruned between two kept "
            f"snapshots are lost. Fix: set sv-backups:retention.cometbftRetainBlocks / cometbftBlocksPerHour to "
            f"CometBFT's real retainBlocks and block rate; the window must exceed 2 h (the cadence is half the "
            f"window, at least 1h).",
            job.urn,
        )


def _historical_cadence_within_pruning(clouds: Sequence[Cloud]) -> StackValidationPolicy:
    return stack_rule(
        "historical-cadence-within-pruning",
        "Historical backups are kept strictly more often than the smallest participant/sequencer pruning window, "
        "and CometBFT snapshots strictly more often than CometBFT's block retention window.",
        check=_cadence_check(clouds),
        severity=Severity.CRITICAL,
        remediation="Keep the historical cadence below the smallest pruning window (rules/retention.py).",
    )


# --- CometBFT snapshots ---------------------------------------------------------------------------------

MIN_COMETBFT_KEEP_RECENT = timedelta(days=1)


def _check_cometbft_kept(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    declared = {get(r.props, "metadata", "name") for r in resources if r.type == SNAPSHOT_CLASS}
    for job, step in cometbft_steps(resources):
        where = f"CronJob '{job.name}' (snapshot-cometbft step)"
        if step is None:
            report(
                f"CronJob '{job.name}' (cometbft backup): no container runs snapshot-cometbft, so neither its "
                f"snapshot class nor its retention can be checked (and no snapshot is taken). Fix: declare the "
                f"CronJob with components/cometbft.py.",
                job.urn,
            )
            continue
        snapshot_class = one_flag(step, "--class")
        # With no class declared at all, backup-coverage reports the missing class.
        if declared and snapshot_class is not UNKNOWN and (snapshot_class is None or snapshot_class not in declared):
            shown = "no --class" if snapshot_class is None else f"--class {snapshot_class}"
            report(
                f"{where}: {shown}, which is not a VolumeSnapshotClass this stack declares "
                f"({', '.join(sorted(map(str, declared)))}), so nothing guarantees its deletionPolicy is "
                f"Retain (cluster default classes delete the disk snapshot with its VolumeSnapshot). Fix: pass "
                f"--class with the name of the stack's VolumeSnapshotClass (components/cometbft.py).",
                job.urn,
            )
        raw = one_flag(step, "--keep-recent")
        if raw is UNKNOWN:
            continue
        try:
            keep_recent = parse_duration(raw)
        except ValueError:
            keep_recent = None
        if keep_recent is None or keep_recent < MIN_COMETBFT_KEEP_RECENT:
            shown = "missing or unreadable" if keep_recent is None else describe_seconds(keep_recent.total_seconds())
            report(
                f"{where}: --keep-recent is {shown} ({raw!r}); the pruner deletes every non-historical "
                f"snapshot older than that, so a bad run or a late-noticed corruption leaves less than "
                f"{describe_seconds(MIN_COMETBFT_KEEP_RECENT.total_seconds())} of snapshots to restore from. "
                f"Fix: set sv-backups:retention.recent to at least 1d (components/cometbft.py passes it as "
                f"--keep-recent).",
                job.urn,
            )


cometbft_snapshots_kept = stack_rule(
    "cometbft-snapshots-kept",
    "The CometBFT snapshot job uses a VolumeSnapshotClass declared in the stack (so snapshot-class-retain "
    "checks its Retain policy) and keeps every snapshot for at least 1 day.",
    check=_check_cometbft_kept,
    severity=Severity.CRITICAL,
    remediation="Pass --class <the stack's VolumeSnapshotClass> and --keep-recent >= 1d to snapshot-cometbft.",
)


# --- Workload Identity ------------------------------------------------------------------------------------

# Roles that let a principal act as a service account: get tokens for it, attach it to workloads it runs
# (actAs), or mint keys for it. On a backup writer only its CronJob's KSA may hold one of them.
IMPERSONATION_ROLES = frozenset(
    {
        "roles/iam.workloadIdentityUser",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.serviceAccountOpenIdTokenCreator",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountKeyAdmin",
    }
)
_KSA_MEMBER = re.compile(
    r"^serviceAccount:(?P<pool>[a-z0-9][-a-z0-9.:]*)\.svc\.id\.goog\[(?P<ns>[^/\]]+)/(?P<ksa>[^/\]]+)\]$"
)


def _is_iam(resource_type: str) -> bool:
    return resource_type.rsplit(":", 1)[-1].lower() in ("iammember", "iambinding", "iampolicy")


def _email(value) -> str | None:
    """The email in `projects/<p>/serviceAccounts/<email>`, `serviceAccount:<email>` or `<email>`."""
    if not isinstance(value, str):
        return None
    tail = value.rsplit("/", 1)[-1].split(":", 1)[-1]
    return tail.lower() if "@" in tail else None


def backup_ksas(resources: list[StackResource]) -> set[tuple[str, str]]:
    """(namespace, serviceAccountName) of every backup CronJob's pods. A KSA labelled with a backup component whose
    CronJob is missing from the stack counts too: backup-coverage reports the missing CronJob."""
    found, kinds = set(), set()
    for resource in resources:
        # The DR stack's replica check runs as the restore identity: its KSA is a job KSA like the others.
        if resource.type == CRON_JOB and (backup_kind(resource.props) or check_kind(resource.props)) is not None:
            spec = pod_spec(resource.props)
            name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
            found.add((namespace_of(resource.props), name))
            kinds.add(backup_kind(resource.props))
    for resource in resources:
        kind = backup_kind(resource.props) if resource.type == K8S_SERVICE_ACCOUNT else None
        if kind is not None and kind not in kinds:
            found.add((namespace_of(resource.props), get(resource.props, "metadata", "name")))
    return found


def _writer_accounts(resources: list[StackResource], ksas: set[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """(emails, account ids) of the backup writer service accounts: members of grants on the stack's buckets
    and secrets, the GCP accounts the backup CronJobs' KSAs act as, and the accounts the stack declares."""
    emails, account_ids = set(), set()
    for resource in resources:
        kind = resource.type.lower()
        if kind.startswith(("gcp:storage/bucketiam", "gcp:secretmanager/secretiam")) and _is_iam(resource.type):
            for _role, members in iam_grants(resource.props):
                emails.update(e for e in map(_email, members) if e)
        elif resource.type == K8S_SERVICE_ACCOUNT:
            key = (namespace_of(resource.props), get(resource.props, "metadata", "name"))
            email = _email(labels(resource.props, "metadata", "annotations").get(GKE_SA_ANNOTATION))
            if key in ksas and email:
                emails.add(email)
        elif resource.type == SERVICE_ACCOUNT and isinstance(resource.props.get("accountId"), str):
            account_ids.add(resource.props["accountId"].lower())
    return emails, account_ids


def _writer_projects(resources: list[StackResource], emails: set[str]) -> set:
    """Projects of the writer accounts: from their emails and from the accounts the stack declares."""
    projects = {e.split("@", 1)[1].split(".", 1)[0] for e in emails}
    projects.update(r.props.get("project") for r in resources if r.type == SERVICE_ACCOUNT)
    return projects


def _check_workload_identity(
    resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation
) -> None:
    ksas = backup_ksas(resources)
    emails, account_ids = _writer_accounts(resources, ksas)
    annotated = {
        (namespace_of(r.props), get(r.props, "metadata", "name")): _email(
            labels(r.props, "metadata", "annotations").get(GKE_SA_ANNOTATION)
        )
        for r in resources
        if r.type == K8S_SERVICE_ACCOUNT
    }
    writer_projects = _writer_projects(resources, emails)
    fix = (
        "Fix: grant the role on the writer's service account to exactly one member "
        "'serviceAccount:<project>.svc.id.goog[<namespace>/<ksa>]', the serviceAccountName of its backup CronJob "
        "(components/gcp/backend.py workload_identity)."
    )
    for resource in resources:
        kind = resource.type.lower()
        if not _is_iam(resource.type):
            continue
        if kind.startswith("gcp:projects/"):
            project = resource.props.get("project")
            for role, members in iam_grants(resource.props):
                # A project that cannot be told apart from the writers' (unknown, provider default) is theirs.
                if role in IMPERSONATION_ROLES and (
                    project in (None, UNKNOWN) or project in writer_projects or UNKNOWN in writer_projects
                ):
                    report(
                        f"{resource.type.rsplit(':', 1)[-1]} '{resource.name}': grants {role} on the whole project "
                        f"{project or '(provider default)'} to {', '.join(map(str, members))}: that lets them act as "
                        f"every service account of the project, the backup writers included. Fix: remove it; grant "
                        f"the role on the writer's service account only, to its backup CronJob's KSA.",
                        resource.urn,
                    )
            continue
        if not kind.startswith("gcp:serviceaccount/"):
            continue
        target_raw = resource.props.get("serviceAccountId")
        target = _email(target_raw)
        # A target that cannot be identified (unknown during preview, a numeric id) is checked like a writer.
        if target is not None and target not in emails and target.split("@", 1)[0] not in account_ids:
            continue
        where = f"{resource.type.rsplit(':', 1)[-1]} '{resource.name}' (on {target or target_raw})"
        for role, members in iam_grants(resource.props):
            if role not in IMPERSONATION_ROLES:
                continue
            if len(members) != 1:
                report(
                    f"{where}: grants {role} to {len(members)} members {members}: each of them can act as the "
                    f"backup writer. {fix}",
                    resource.urn,
                )
                continue
            member = require_known(members[0], f"{resource.name}.member")
            problem = _impersonator_problem(str(member), target, ksas, annotated)
            if problem:
                report(f"{where}: grants {role} to {problem}; it can act as the backup writer. {fix}", resource.urn)


def _impersonator_problem(member: str, target: str | None, ksas: set, annotated: dict) -> str | None:
    """Why `member` must not act as the writer `target`, or None when it is its backup CronJob's own KSA."""
    if member.startswith("principalSet:"):
        return f"'{member}', a whole namespace or pool, not one named Kubernetes ServiceAccount"
    if member.startswith("principal:"):
        return f"'{member}', not in the form serviceAccount:<project>.svc.id.goog[<namespace>/<ksa>]"
    match = _KSA_MEMBER.match(member)
    if match is None:
        return f"'{member}', which is not a Kubernetes ServiceAccount of a backup CronJob"
    key = (match["ns"], match["ksa"])
    if match["ksa"] == "default":
        return (
            f"the 'default' Kubernetes ServiceAccount of namespace '{match['ns']}', which every pod of the "
            f"namespace without a serviceAccountName runs as"
        )
    if key not in ksas:
        return (
            f"KSA '{match['ns']}/{match['ksa']}', which no backup CronJob runs as (they run as "
            f"{sorted('/'.join(k) for k in ksas) or 'none'})"
        )
    if target and annotated.get(key) not in (None, UNKNOWN, target):
        return (
            f"KSA '{match['ns']}/{match['ksa']}', whose {GKE_SA_ANNOTATION} annotation names {annotated[key]}: "
            f"another backup job would get this writer's rights on top of its own"
        )
    return None


workload_identity_backup_ksa = stack_rule(
    "workload-identity-backup-ksa",
    "Only the backup CronJob's own Kubernetes ServiceAccount can act as a backup writer service account "
    "(workloadIdentityUser, token creator, serviceAccountUser or key admin: to exactly one named KSA only; no "
    "namespace, pool or default).",
    check=_check_workload_identity,
    severity=Severity.CRITICAL,
    remediation="Grant roles/iam.workloadIdentityUser on each writer service account to its CronJob's KSA only: "
    "serviceAccount:<project>.svc.id.goog[<namespace>/<ksa>].",
)


# --- the GCP profile of the cloud-neutral rules (coverage_rules.py) ------------------------------------


def _gcp_alerts(resources: list[StackResource]) -> list[BackupAlert]:
    found = []
    for alert in resources:
        user_labels = labels(alert.props, "userLabels")
        if alert.type != ALERT_POLICY or "svbackups-kind" not in user_labels:
            continue
        kind, alert_type = user_labels.get("svbackups-kind"), user_labels.get("svbackups-alert")
        defects = []
        if alert.props.get("enabled") is False:
            defects.append(
                f"AlertPolicy '{alert.name}': enabled is false, so the {kind} {alert_type} alert never fires. "
                f"Fix: remove enabled: false."
            )
        channels = alert.props.get("notificationChannels")
        notifies = None if channels is UNKNOWN else bool(channels)
        found.append(BackupAlert(alert, kind, alert_type, defects, notifies))
    return found


def _gcp_missing_alert(kind: str, alert_type: str, what: str) -> str:
    return (
        f"No enabled AlertPolicy with userLabels svbackups-kind={kind}, svbackups-alert={alert_type}: nobody is "
        f"told about {what} of {kind}. Fix: declare it with components/monitoring.py BackupAlerts (one stale and "
        f"one failed alert per backup kind)."
    )


def _gcp_silent_alert(alert: BackupAlert) -> str:
    return (
        f"AlertPolicy '{alert.resource.name}': no notificationChannels, so the alert only shows in the console. "
        f"Fix: set sv-backups:monitoring.notificationChannels or notificationEmails."
    )


def _gcp_missing_backups(resources: list[StackResource]) -> list[str]:
    missing = []
    if not _backup_buckets(resources):
        missing.append(
            f"No bucket labelled {RECENT_SECONDS}: the backup bucket is missing or unlabelled, so the lifecycle "
            f"rules cannot be checked against the windows. Fix: declare it with components/gcp/backend.py "
            f"backup_store()."
        )
    if not any(r.type == SECRET and labels(r.props, "labels").get(SECRET_PURPOSE) == "identities" for r in resources):
        missing.append(
            f"No Secret Manager secret labelled {SECRET_PURPOSE}=identities: identities dumps have nowhere to go "
            f"(or the policies cannot recognise it). Fix: declare it with components/gcp/backend.py "
            f"identities_secret()."
        )
    return missing


def _gcp_stores(resources: list[StackResource]) -> list[tuple[StackResource, dict]]:
    return [(bucket, labels(bucket.props, "labels")) for bucket in _backup_buckets(resources)]


def _gcp_missing_store_label(bucket: StackResource, label: str) -> str:
    return (
        f"Bucket '{bucket.name}': label {label} is missing, so the lifecycle rules cannot be checked against the "
        f"windows. Fix: declare the bucket through components/gcp/backend.py backup_store(), which labels it with "
        f"the windows."
    )


GCP = Cloud(
    name="gcp",
    packages=("gcp",),
    url_schemes=("gs", "gcpsm"),
    alerts=_gcp_alerts,
    missing_alert=_gcp_missing_alert,
    silent_alert=_gcp_silent_alert,
    missing_backups=_gcp_missing_backups,
    stores=_gcp_stores,
    missing_store_label=_gcp_missing_store_label,
)


def policies(clouds: Sequence[Cloud]) -> list[StackValidationPolicy]:
    """The rules, the cadence rule over the given cloud profiles (catalog.py passes every cloud's)."""
    return [
        lifecycle_never_deletes_history,
        lifecycle_keeps_recent_window,
        _historical_cadence_within_pruning(clouds),
        cometbft_snapshots_kept,
        workload_identity_backup_ksa,
    ]
