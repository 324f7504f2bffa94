"""Rules on the GCP resources: the backup bucket, the identities secret, IAM grants, Cloud SQL."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity

from .props import (
    BUCKET,
    RECENT_SECONDS,
    RESTORE_SUFFIX,
    SECRET,
    SECRET_PURPOSE,
    SQL_INSTANCE,
    UNKNOWN,
    as_number,
    describe_seconds,
    get,
    iam_grants,
    labels,
    path_segments,
)
from .rule import ADVISORY, resource_rule

DAY = 86400


def _configured(value) -> bool:
    """Set to something: a literal, or a value only known after deployment (a key created in this update)."""
    return value is UNKNOWN or (isinstance(value, str) and value.strip() != "")


# --- buckets --------------------------------------------------------------------------------------------


def _check_uniform_access(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    value = props.get("uniformBucketLevelAccess")
    if value is not True and value is not UNKNOWN:
        report(
            f"Bucket '{args.name}': uniformBucketLevelAccess is {value}, so per-object ACLs can grant access "
            f"that bucket IAM does not show. Fix: set uniformBucketLevelAccess: true."
        )


bucket_uniform_access = resource_rule(
    "bucket-uniform-access",
    "Buckets use uniform bucket-level access (IAM only, no object ACLs).",
    types=[BUCKET],
    check=_check_uniform_access,
    remediation="Set uniformBucketLevelAccess: true on the bucket.",
)


def _check_public_access_prevention(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    value = props.get("publicAccessPrevention")
    if value != "enforced" and value is not UNKNOWN:
        report(
            f"Bucket '{args.name}': publicAccessPrevention is {value or 'unset (inherited)'}; a single grant "
            f"to allUsers would publish the node's backups. Fix: set publicAccessPrevention: 'enforced'."
        )


bucket_public_access_prevention = resource_rule(
    "bucket-public-access-prevention",
    "Buckets enforce public access prevention.",
    types=[BUCKET],
    check=_check_public_access_prevention,
    severity=Severity.CRITICAL,
    remediation="Set publicAccessPrevention: 'enforced' on the bucket.",
)


def _check_bucket_cmek(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not _configured(get(props, "encryption", "defaultKmsKeyName")):
        report(
            f"Bucket '{args.name}': no encryption.defaultKmsKeyName, so the backups are encrypted with "
            f"Google-managed keys the operator cannot revoke or audit. Fix: set encryption.defaultKmsKeyName to "
            f"a Cloud KMS key in the bucket's location (and grant the GCS service agent encrypter/decrypter)."
        )


bucket_cmek = resource_rule(
    "bucket-cmek",
    "Buckets encrypt objects with a customer-managed Cloud KMS key (CMEK).",
    types=[BUCKET],
    check=_check_bucket_cmek,
    remediation="Set encryption.defaultKmsKeyName to a Cloud KMS crypto key.",
)

MIN_SOFT_DELETE_DAYS = 7


def _check_immutability(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    where = f"Bucket '{args.name}'"
    retention_raw = get(props, "retentionPolicy", "retentionPeriod")
    retention = as_number(retention_raw)
    recent = as_number(labels(props, "labels").get(RECENT_SECONDS))
    if retention_raw is not UNKNOWN:
        if retention is None or retention <= 0:
            report(
                f"{where}: no retentionPolicy, so any identity with delete rights (or a compromised one) can "
                f"delete or overwrite backups at once. Fix: set retentionPolicy.retentionPeriod to at least the "
                f"recent window ({describe_seconds(recent) if recent else 'sv-backups:retention.recent'})."
            )
        elif recent is not None and retention < recent:
            report(
                f"{where}: retentionPolicy.retentionPeriod is {describe_seconds(retention)}, shorter than the "
                f"recent window {describe_seconds(recent)} (label {RECENT_SECONDS}): recent sets can be deleted "
                f"before their window ends. Fix: set retentionPeriod to at least {int(recent)} seconds."
            )
    minimum_days = float(args.get_config().get("minSoftDeleteDays", MIN_SOFT_DELETE_DAYS))
    soft_raw = get(props, "softDeletePolicy", "retentionDurationSeconds")
    soft = as_number(soft_raw)
    if soft_raw is not UNKNOWN and (soft is None or soft < minimum_days * DAY):
        shown = "not set" if soft is None else describe_seconds(soft)
        report(
            f"{where}: soft delete is {shown}; deleted objects must stay recoverable for at least "
            f"{minimum_days:g} days. Fix: set softDeletePolicy.retentionDurationSeconds >= "
            f"{int(minimum_days * DAY)}."
        )
    if get(props, "versioning", "enabled") is True:
        report(
            f"{where}: versioning.enabled is true. GCS rejects Object Versioning on a bucket with a retention "
            f"policy, and this design does not rely on versions (retention policy + soft delete instead). "
            f"Fix: remove versioning."
        )


bucket_immutability = resource_rule(
    "bucket-immutability",
    "Buckets keep objects immutable: a retention policy of at least the recent window and soft delete of at "
    "least 7 days (GCS forbids Object Versioning together with a retention policy; versions are not relied on).",
    types=[BUCKET],
    check=_check_immutability,
    severity=Severity.CRITICAL,
    remediation="Set retentionPolicy.retentionPeriod >= the recent window, softDeletePolicy.retentionDurationSeconds "
    ">= 604800, and leave versioning off.",
    config={
        "minSoftDeleteDays": {
            "type": "number",
            "minimum": MIN_SOFT_DELETE_DAYS,
            "default": MIN_SOFT_DELETE_DAYS,
            "description": "Smallest allowed soft-delete duration, in days (at least 7).",
        }
    },
)

# Minimum storage durations (days): deleting or rewriting an object earlier is billed as if it stayed.
_MIN_STORAGE_DAYS = {"NEARLINE": 30, "COLDLINE": 90, "ARCHIVE": 365}


def _prefixes(rule: dict) -> list[str]:
    found = get(rule, "condition", "matchesPrefixes")
    return [p for p in found if isinstance(p, str)] if isinstance(found, list) and found else [""]


def _check_storage_classes(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    rules = [r for r in props.get("lifecycleRules") or [] if isinstance(r, dict)]
    deletes = [r for r in rules if get(r, "action", "type") == "Delete"]
    for index, rule in enumerate(rules):
        target = get(rule, "action", "storageClass")
        if get(rule, "action", "type") != "SetStorageClass" or target not in _MIN_STORAGE_DAYS:
            continue
        moved_at = as_number(get(rule, "condition", "age")) or 0
        for prefix in _prefixes(rule):
            for delete in deletes:
                deleted_at = as_number(get(delete, "condition", "age"))
                overlapping = any(p.startswith(prefix) or prefix.startswith(p) for p in _prefixes(delete))
                # Objects deleted before the move never reach the colder class and cost nothing there.
                if deleted_at is not None and overlapping and 0 < deleted_at - moved_at < _MIN_STORAGE_DAYS[target]:
                    report(
                        f"Bucket '{args.name}': lifecycle rule #{index} moves '{prefix or '*'}' objects to "
                        f"{target} at {moved_at:g} days, and they are deleted at {deleted_at:g} days, before "
                        f"{target}'s {_MIN_STORAGE_DAYS[target]}-day minimum storage duration: early-deletion "
                        f"fees, and every restore of those sets pays retrieval. Fix: move only objects that stay "
                        f"longer (historical sets), or keep them in STANDARD."
                    )


storage_class_transitions = resource_rule(
    "storage-class-transitions",
    "Storage class transitions are the operator's choice; they should not move objects that are deleted before "
    "the colder class's minimum storage duration.",
    types=[BUCKET],
    check=_check_storage_classes,
    level=ADVISORY,
    severity=Severity.LOW,
    remediation="Transition only historical sets (never deleted) to NEARLINE/COLDLINE/ARCHIVE.",
)


# --- Secret Manager -------------------------------------------------------------------------------------


def _check_identities_secret(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if labels(props, "labels").get(SECRET_PURPOSE) != "identities":
        return
    where = f"Secret '{args.name}' (identities dumps)"
    replication = props.get("replication")
    if replication is UNKNOWN:
        return
    replicas = get(replication, "userManaged", "replicas")
    if not isinstance(replicas, list):
        mode = "automatic" if get(replication, "auto") is not None else "unset"
        report(
            f"{where}: replication is {mode}; the node's private keys must sit in two chosen regions, each "
            f"under the operator's own key. Fix: use replication.userManaged.replicas with the primary and the "
            f"DR region, each with customerManagedEncryption.kmsKeyName."
        )
        return
    locations = {get(r, "location") for r in replicas if isinstance(r, dict)}
    if len(locations - {None}) < 2:
        report(
            f"{where}: replicated to {sorted(str(x) for x in locations - {None}) or 'no location'} only; a "
            f"region loss would lose every identities dump. Fix: add a replica in sv-backups:dr.region."
        )
    for replica in replicas:
        if isinstance(replica, dict) and not _configured(get(replica, "customerManagedEncryption", "kmsKeyName")):
            report(
                f"{where}: the replica in {get(replica, 'location')} has no customerManagedEncryption.kmsKeyName. "
                f"Fix: give every replica a Cloud KMS key in its own location."
            )


identities_secret_cmek_replicated = resource_rule(
    "identities-secret-cmek-replicated",
    "The identities-dump secret is replicated to a second region and encrypted with CMEK in every replica.",
    types=[SECRET],
    check=_check_identities_secret,
    severity=Severity.CRITICAL,
    remediation="Use user-managed replication over the primary and the DR region, each replica with its own "
    "customerManagedEncryption.kmsKeyName.",
)


# --- IAM ------------------------------------------------------------------------------------------------

_IAM_KINDS = ("iammember", "iambinding", "iampolicy")


def _iam_kind(resource_type: str) -> str | None:
    """'member', 'binding' or 'policy' for any GCP IAM resource type (BucketIAMMember, SecretIamBinding...)."""
    last = resource_type.rsplit(":", 1)[-1].lower()
    for kind in _IAM_KINDS:
        if last.endswith(kind):
            return kind[3:]
    return None


def _is_public(member) -> bool:
    return isinstance(member, str) and (
        member in ("allUsers", "allAuthenticatedUsers") or member.startswith("principalSet://goog/public:")
    )


def _check_no_public_grants(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    entity = props.get("entity")
    if _is_public(entity):
        report(
            f"{args.resource_type.rsplit(':', 1)[-1]} '{args.name}': grants {props.get('role')} to {entity}. "
            f"Fix: remove it; nothing of an SV node's backups is public."
        )
    for role, members in iam_grants(props):
        for member in members:
            if _is_public(member):
                report(
                    f"{args.resource_type.rsplit(':', 1)[-1]} '{args.name}': grants {role} to {member}, i.e. "
                    f"to anyone. Fix: remove that member; grant roles to named service accounts only."
                )


def _is_iam_or_acl(resource_type: str) -> bool:
    return resource_type.startswith("gcp:") and (
        _iam_kind(resource_type) is not None or resource_type.lower().endswith("accesscontrol")
    )


no_public_grants = resource_rule(
    "no-public-grants",
    "Nothing is granted to allUsers or allAuthenticatedUsers (any IAM member, binding, policy or ACL).",
    types=_is_iam_or_acl,
    check=_check_no_public_grants,
    severity=Severity.CRITICAL,
    remediation="Remove allUsers/allAuthenticatedUsers members; grant roles to named principals only.",
)

# Bucket roles that can neither delete nor overwrite objects (an overwrite is a delete in GCS).
NON_DELETING_BUCKET_ROLES = frozenset(
    {
        "roles/storage.objectCreator",
        "roles/storage.objectViewer",
        "roles/storage.legacyBucketReader",
        "roles/storage.legacyObjectReader",
        "roles/storage.bucketViewer",
    }
)
# Project-wide roles that include storage.objects.delete on every bucket of the project.
DELETING_PROJECT_ROLES = frozenset(
    {"roles/owner", "roles/editor", "roles/storage.admin", "roles/storage.objectAdmin", "roles/storage.objectUser"}
)


def _check_bucket_writer(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = args.resource_type.rsplit(":", 1)[-1]
    bucket_grant = args.resource_type.startswith("gcp:storage/")
    for role, members in iam_grants(props):
        if role is UNKNOWN:
            continue
        who = ", ".join("<known after deploy>" if m is UNKNOWN else str(m) for m in members) or "nobody"
        if bucket_grant and role not in NON_DELETING_BUCKET_ROLES:
            report(
                f"{kind} '{args.name}': grants {role} on bucket {props.get('bucket')} to {who}; that role can "
                f"delete or overwrite objects (or its permissions are not known to be safe), and only lifecycle "
                f"rules may delete backups. Fix: grant roles/storage.objectCreator (write) and "
                f"roles/storage.objectViewer (read) only."
            )
        elif not bucket_grant and role in DELETING_PROJECT_ROLES:
            report(
                f"{kind} '{args.name}': grants {role} on the whole project to {who}; it can delete objects in "
                f"the backup bucket. Fix: grant bucket-level roles/storage.objectCreator and objectViewer instead."
            )


def _is_storage_or_project_iam(resource_type: str) -> bool:
    return resource_type.startswith(("gcp:storage/bucketIAM", "gcp:projects/iAM")) and bool(_iam_kind(resource_type))


bucket_writer_cannot_delete = resource_rule(
    "bucket-writer-cannot-delete",
    "Backup writers can create and read objects but never delete or overwrite them.",
    types=_is_storage_or_project_iam,
    check=_check_bucket_writer,
    severity=Severity.CRITICAL,
    remediation="Grant only roles/storage.objectCreator and roles/storage.objectViewer on the backup bucket.",
)

SECRET_WRITER_ROLE = "roles/secretmanager.secretVersionAdder"


def _check_secret_writer(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = args.resource_type.rsplit(":", 1)[-1]
    project_grant = args.resource_type.startswith("gcp:projects/")
    for role, members in iam_grants(props):
        if role is UNKNOWN or role == SECRET_WRITER_ROLE:
            continue
        if project_grant and not str(role).startswith("roles/secretmanager."):
            continue
        # A DR stack's restore identity reads the dumps back: dr-restore-read-only holds it to reading only.
        if role == SECRET_READER_ROLE and members and all(_restore_member(m) for m in members):
            continue
        who = ", ".join("<known after deploy>" if m is UNKNOWN else str(m) for m in members) or "nobody"
        scope = "every secret of the project" if project_grant else f"secret {props.get('secretId')}"
        report(
            f"{kind} '{args.name}': grants {role} on {scope} to {who}. The identities writer may only add "
            f"versions: accessor reads the node's private keys back, admin and versionManager can disable or "
            f"destroy stored dumps. Fix: grant {SECRET_WRITER_ROLE} only."
        )


SECRET_READER_ROLE = "roles/secretmanager.secretAccessor"


def _restore_member(member) -> bool:
    """serviceAccount:<node>-dr-restore@...: a DR stack's restore identity (components/dr.py)."""
    text = str(member)
    return text.startswith("serviceAccount:") and text.split(":", 1)[1].split("@", 1)[0].endswith(RESTORE_SUFFIX)


def _is_secret_or_project_iam(resource_type: str) -> bool:
    return resource_type.startswith(("gcp:secretmanager/secretIam", "gcp:projects/iAM")) and bool(
        _iam_kind(resource_type)
    )


secret_writer_add_only = resource_rule(
    "secret-writer-add-only",
    "The identities writer can add secret versions but not read, disable or destroy them.",
    types=_is_secret_or_project_iam,
    check=_check_secret_writer,
    severity=Severity.CRITICAL,
    remediation=f"Grant only {SECRET_WRITER_ROLE} on the identities secret.",
)


# --- Cloud SQL ------------------------------------------------------------------------------------------


def _check_cloudsql(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    where = f"Cloud SQL instance '{args.name}'"
    backup = get(props, "settings", "backupConfiguration", default={})
    checks = [
        (get(backup, "enabled"), "settings.backupConfiguration.enabled", "automated backups are off"),
        (
            get(backup, "pointInTimeRecoveryEnabled"),
            "settings.backupConfiguration.pointInTimeRecoveryEnabled",
            "point-in-time recovery is off",
        ),
        (
            props.get("deletionProtection"),
            "deletionProtection",
            "Pulumi may delete the instance (and its automated backups) on a replace or destroy",
        ),
        (
            get(props, "settings", "deletionProtectionEnabled"),
            "settings.deletionProtectionEnabled",
            "the instance can be deleted from the console or API",
        ),
    ]
    for value, field, consequence in checks:
        if value is not True and value is not UNKNOWN:
            report(f"{where}: {field} is {value}: {consequence}. Fix: set {field}: true.")
    for ignored in getattr(args.opts, "ignore_changes", None) or []:
        hidden = _hidden_protection(str(ignored))
        if hidden:
            report(
                f"{where}: the resource option ignoreChanges has '{ignored}', which covers {hidden}: Pulumi then "
                f"keeps whatever the live instance has (an adopted instance keeps its own settings, a console "
                f"change turning backups or deletion protection off is never reverted), so the values above are "
                f"not what runs. Fix: remove '{ignored}' from ignore_changes (components/gcp/cloudsql.py "
                f"CLOUDSQL_IGNORED_FIELDS); under settings.backupConfiguration only startTime (and the output-only "
                f"backupTier) may be ignored."
            )


# What ignoreChanges must not cover on a Cloud SQL instance. Under settings.backupConfiguration, the time of
# day the daily backup starts may follow the live instance, and backupTier is output-only in the Cloud SQL API
# (the service sets it, no request can change it), so ignoring it hides nothing.
_PROTECTED_PATHS = (
    ("settings", "backupConfiguration"),
    ("deletionProtection",),
    ("settings", "deletionProtectionEnabled"),
)
_IGNORABLE_BACKUP_FIELDS = frozenset({"startTime", "backupTier"})


def _hidden_protection(ignored: str) -> str | None:
    """The protected field an ignoreChanges path covers (an ancestor, the field itself or anything under it)."""
    segments = path_segments(ignored)
    for protected in _PROTECTED_PATHS:
        common = min(len(segments), len(protected))
        if not segments or not all(a in ("*", b) for a, b in zip(segments[:common], protected[:common], strict=True)):
            continue
        if protected == _PROTECTED_PATHS[0]:
            if len(segments) > 2 and segments[2] in _IGNORABLE_BACKUP_FIELDS:
                continue
        elif len(segments) > len(protected):
            continue  # the deletion protection flags are booleans: nothing lies under them
        return ".".join(protected)
    return None


cloudsql_backups_protected = resource_rule(
    "cloudsql-backups-protected",
    "Cloud SQL instances have automated backups, point-in-time recovery and deletion protection on, and their "
    "resource options do not ignore changes to them.",
    types=[SQL_INSTANCE],
    check=_check_cloudsql,
    severity=Severity.CRITICAL,
    remediation="Set settings.backupConfiguration.enabled, .pointInTimeRecoveryEnabled, deletionProtection and "
    "settings.deletionProtectionEnabled to true, and do not list them (or settings.backupConfiguration) in "
    "ignore_changes.",
)


POLICIES = [
    bucket_uniform_access,
    bucket_public_access_prevention,
    bucket_cmek,
    bucket_immutability,
    identities_secret_cmek_replicated,
    no_public_grants,
    bucket_writer_cannot_delete,
    secret_writer_add_only,
    cloudsql_backups_protected,
    storage_class_transitions,
]
