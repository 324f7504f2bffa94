"""Every rule that an AWS stack can break, on the shipped AWS plans: a plan that breaks exactly one rule fails with
that rule's message (and with no other rule), as tests/policy/test_rules.py does for the GCP stacks."""

from __future__ import annotations

import json

import pytest

from policy import cloudsql_iam_rules, gcp_replication_rules, gcp_rules, grant_location_rules
from policy.catalog import POLICIES

from . import helpers as h
from .admission_cases import ADMISSION_CASES
from .conftest import STACKS
from .drill_cases import DRILL_CASES, GCP_STACKS
from .hardening_cases import HARDENING_CASES
from .snapshot_cases import SNAPSHOT_CASES
from .test_rules import DR_CASES, violated

AWS_STACKS = [s for s in STACKS if s.startswith("aws-")]
# Rules whose subjects only a GCP stack has (GCP resource types, gs:// destinations, Workload Identity).
GCP_ONLY = {
    p.name
    for p in (
        *gcp_rules.POLICIES,
        *cloudsql_iam_rules.POLICIES,
        *gcp_replication_rules.POLICIES,
        *grant_location_rules.POLICIES,
    )
} | {
    "lifecycle-never-deletes-history",
    "lifecycle-keeps-recent-window",
    "workload-identity-backup-ksa",
}

ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
OBJECT_LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
RDS = "aws:rds/instance:Instance"
RDS_REPLICATION = "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"
KMS_KEY = "aws:kms/key:Key"
SNAPSHOT_CLASS = "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"


# --- mutations ------------------------------------------------------------------------------------------------


def _set(getter, key, value):
    def mutate(plan):
        getter(plan)[key] = value

    return mutate


def _bucket(*, dr=False):
    return lambda plan: h.s3_bucket(plan, dr=dr)["inputs"]


def _lifecycle_rules(*, dr=False):
    return lambda plan: h.bucket_side(plan, LIFECYCLE, dr=dr)["inputs"]["rules"]


def _lifecycle_rule(rule_id, *, dr=False):
    return lambda plan: next(r for r in _lifecycle_rules(dr=dr)(plan) if r["id"] == rule_id)


def _add_lifecycle_rule(rule, *, dr=False):
    return lambda plan: _lifecycle_rules(dr=dr)(plan).append(rule)


def _replication_rule(plan):
    return h.bucket_side(plan, REPLICATION)["inputs"]["rules"][0]


def _encryption_default(*, dr=False):
    return lambda plan: h.bucket_side(plan, ENCRYPTION, dr=dr)["inputs"]["rules"][0][
        "applyServerSideEncryptionByDefault"
    ]


def _retention(*, dr=False):
    return lambda plan: h.bucket_side(plan, OBJECT_LOCK, dr=dr)["inputs"]["rule"]["defaultRetention"]


def _edit_statement(resource_getter, sid, change, key="policy"):
    def mutate(plan):
        h.edit_document(resource_getter(plan), lambda doc: change(h.statement(doc, sid)), key)

    return mutate


def _bucket_policy(*, dr=False):
    return lambda plan: h.bucket_side(plan, BUCKET_POLICY, dr=dr)


def _add_statement(resource_getter, statement, key="policy"):
    def mutate(plan):
        h.edit_document(resource_getter(plan), lambda doc: doc["Statement"].append(statement), key)

    return mutate


def _role_policy(purpose):
    return lambda plan: h.role_policy(plan, purpose)


def _trust(purpose):
    return lambda plan: h.role(plan, purpose)


def _conditions(doc_statement):
    return doc_statement["Condition"]["StringEquals"]


def _sub_key(doc_statement):
    return next(k for k in _conditions(doc_statement) if k.endswith(":sub"))


def _trust_sub(purpose, subject):
    def change(statement):
        _conditions(statement)[_sub_key(statement)] = subject

    return _edit_statement(_trust(purpose), "OneKubernetesServiceAccount", change, key="assumeRolePolicy")


def _sub_like(statement):
    key = _sub_key(statement)
    value = _conditions(statement).pop(key)
    statement["Condition"]["StringLike"] = {key: value.rsplit(":", 1)[0] + ":*"}


def _drop_aud(statement):
    _conditions(statement).pop(next(k for k in _conditions(statement) if k.endswith(":aud")))


def _pg_trust_names_identities_ksa(plan):
    ksa = h.cron_job(plan, "identities")["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "serviceAccountName"
    ]
    _trust_sub("pg-backup", f"system:serviceaccount:sv:{ksa}")(plan)


def _annotate_unknown_role(plan):
    ksa = h.one(plan, "kubernetes:core/v1:ServiceAccount", lambda r: r["name"].endswith("postgres-backup-sa"))
    annotations = ksa["inputs"]["metadata"]["annotations"]
    annotations["eks.amazonaws.com/role-arn"] = annotations["eks.amazonaws.com/role-arn"].rsplit("/", 1)[0] + "/old"


def _actions(change):
    def edit(statement):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = change(actions)

    return edit


def _attach_managed_policy(plan):
    role = h.role(plan, "pg-backup")
    h.add(
        plan,
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "pg-backup-s3-full-access",
        {"role": role["inputs"]["name"], "policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"},
    )


def _secret(plan):
    return h.one(plan, SECRET)["inputs"]


def _remove(resource_type, predicate=lambda r: True):
    return lambda plan: h.remove(plan, h.one(plan, resource_type, predicate))


def _rds(plan):
    return h.resources(plan, RDS)[0]


def _rds_option(change):
    return lambda plan: change(_rds(plan)["options"])


def _rds_replication(plan):
    identifier = _rds(plan)["inputs"]["identifier"]
    return h.one(plan, RDS_REPLICATION, lambda r: r["inputs"]["sourceDbInstanceArn"].endswith(f":db:{identifier}"))


def _key(purpose):
    return lambda plan: next(
        r["inputs"] for r in h.resources(plan, KMS_KEY) if r["inputs"]["tags"]["svbackups-purpose"] == purpose
    )


def _alarm(kind, alert_type):
    return lambda plan: h.alarm(plan, kind, alert_type)["inputs"]


def _dest(plan, url):
    for name in ("apps", "participant", "sequencer", "mediator", "seal"):
        args = h.container(plan, "postgres", name)["args"]
        args[args.index("--dest") + 1] = url


def _snapshot_flag(flag, value):
    def mutate(plan):
        args = h.container(plan, "cometbft", "snapshot")["args"]
        args[args.index(flag) + 1] = value

    return mutate


def _primary_bucket_key(plan):
    return _encryption_default()(plan)["kmsMasterKeyId"]


def _dr_in_the_primary_region(plan):
    """The DR bucket moved to the primary's region, with that region's key (so only the replication is wrong)."""
    _bucket(dr=True)(plan).update(region=_bucket()(plan)["region"])
    _encryption_default(dr=True)(plan).update(kmsMasterKeyId=_primary_bucket_key(plan))


def _drop_copy_flags(plan):
    args = h.container(plan, "cometbft", "snapshot")["args"]
    for flag in ("--copy-to-region", "--copy-kms-key"):
        index = args.index(flag)
        del args[index : index + 2]


PUBLIC_READ = {"Sid": "Public", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}

CASES = [
    (
        "s3-bucket-cmk",
        "aws-prod",
        lambda p: _encryption_default(dr=True)(p).update(kmsMasterKeyId=_primary_bucket_key(p)),
        "is a key of us-east-1, not of the bucket's region",
    ),
    (
        "s3-replication-to-dr",
        "aws-dev",
        lambda p: _replication_rule(p)["destination"]["encryptionConfiguration"].update(
            replicaKmsKeyId=_primary_bucket_key(p)
        ),
        "a key of eu-central-1, not of the DR bucket's region",
    ),
    (
        "aws-identities-secret-cmk-replicated",
        "aws-prod",
        lambda p: _secret(p)["replicas"][0].update(kmsKeyId=_secret(p)["kmsKeyId"]),
        "a key of us-east-1: each replica must be encrypted by a key of its own region",
    ),
    # Kubernetes: the same rules as on GKE, on the EKS stacks.
    (
        "backup-schedule-max-gap",
        "aws-dev",
        lambda p: h.cron_job(p, "postgres")["inputs"]["spec"].update(schedule="0 */6 * * *"),
        "6 h",
    ),
    (
        "postgres-apps-before-participant",
        "aws-prod",
        lambda p: h.pod(p, "postgres")["initContainers"].reverse(),
        "'participant' runs before 'apps'",
    ),
    (
        "backup-job-no-overlap",
        "aws-dev",
        lambda p: h.cron_job(p, "cometbft")["inputs"]["spec"].update(concurrencyPolicy="Allow"),
        "Forbid",
    ),
    (
        "backup-job-deadlines",
        "aws-prod",
        lambda p: h.cron_job(p, "identities")["inputs"]["spec"]["jobTemplate"]["spec"].update(
            activeDeadlineSeconds=14400
        ),
        "not shorter than the 4 h",
    ),
    (
        "backup-pod-hardened",
        "aws-dev",
        lambda p: h.container(p, "postgres", "seal")["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem is not true",
    ),
    (
        "backup-pod-resource-limits",
        "aws-prod",
        lambda p: h.container(p, "cometbft", "snapshot")["resources"].pop("limits"),
        "no cpu and memory limit",
    ),
    (
        "snapshot-class-retain",
        "aws-dev",
        lambda p: h.one(p, SNAPSHOT_CLASS)["inputs"].update(deletionPolicy="Delete"),
        "deletionPolicy is Delete",
    ),
    (
        "job-image-pinned-by-digest",
        "aws-prod",
        lambda p: h.container(p, "identities", "dump-identities").update(
            image="123456789012.dkr.ecr.us-east-1.amazonaws.com/sv-backups/jobs:latest"
        ),
        "jobs:latest",
    ),
    (
        "cometbft-snapshots-kept",
        "aws-prod",
        _snapshot_flag("--class", "gp3-snapclass"),
        "--class gp3-snapclass, which is not a VolumeSnapshotClass this stack declares",
    ),
    ("cometbft-snapshots-kept", "aws-dev", _snapshot_flag("--keep-recent", "12h"), "--keep-recent is 12h"),
    (
        "historical-cadence-within-pruning",
        "aws-prod",
        lambda p: _bucket()(p)["tags"].update({"svbackups-historical-cadence-seconds": "2577600"}),
        "is not strictly less than the smallest pruning window",
    ),
    (
        "historical-cadence-within-pruning",
        "aws-prod",
        lambda p: _bucket(dr=True)(p)["tags"].pop("svbackups-historical-cadence-seconds"),
        "tag svbackups-historical-cadence-seconds is missing",
    ),
    ("cometbft-snapshots-copied", "aws-prod", _snapshot_flag("--copy-to-region", "us-east-1"), "cluster's own region"),
    ("cometbft-snapshots-copied", "aws-dev", _drop_copy_flags, "no --copy-to-region"),
    (
        "cometbft-snapshots-copied",
        "aws-prod",
        lambda p: h.edit_document(
            h.role_policy(p, "cometbft-snapshot"),
            lambda d: d["Statement"].remove(h.statement(d, "CopySnapshotsToDr")),
        ),
        "may not ec2:CopySnapshot",
    ),
    # S3 buckets.
    (
        "s3-block-public-access",
        "aws-prod",
        _set(h.side_inputs(PUBLIC_ACCESS_BLOCK, dr=True), "restrictPublicBuckets", False),
        "leaves restrictPublicBuckets off",
    ),
    (
        "s3-block-public-access",
        "aws-dev",
        _remove(PUBLIC_ACCESS_BLOCK, lambda r: not r["name"].endswith("-dr-public-access-block")),
        "no BucketPublicAccessBlock",
    ),
    (
        "s3-bucket-owner-enforced",
        "aws-prod",
        lambda p: h.side_inputs(OWNERSHIP)(p).update(rule={"objectOwnership": "ObjectWriter"}),
        "object ownership is ObjectWriter",
    ),
    (
        "s3-bucket-owner-enforced",
        "aws-dev",
        lambda p: h.add(p, "aws:s3/bucketAcl:BucketAcl", "acl", {"bucket": _bucket()(p)["bucket"], "acl": "private"}),
        "ACLs are declared (acl)",
    ),
    (
        "s3-bucket-cmk",
        "aws-prod",
        _set(_encryption_default(dr=True), "kmsMasterKeyId", "alias/aws/s3"),
        "the AWS-managed key alias/aws/s3",
    ),
    (
        "s3-bucket-cmk",
        "aws-dev",
        lambda p: _encryption_default()(p).update(sseAlgorithm="AES256", kmsMasterKeyId=None),
        "sseAlgorithm is AES256 (not SSE-KMS)",
    ),
    (
        "s3-bucket-cmk",
        "aws-prod",
        lambda p: h.side_inputs(ENCRYPTION)(p)["rules"][0].update(bucketKeyEnabled=False),
        "bucketKeyEnabled is not true",
    ),
    (
        "s3-versioning-enabled",
        "aws-prod",
        lambda p: h.side_inputs(VERSIONING, dr=True)(p).update(versioningConfiguration={"status": "Suspended"}),
        "versioning is Suspended",
    ),
    (
        "s3-versioning-enabled",
        "aws-dev",
        lambda p: _lifecycle_rule("expire-noncurrent-versions")(p).update(
            noncurrentVersionExpiration={"noncurrentDays": 1}
        ),
        "removes noncurrent versions after 1 days",
    ),
    (
        "s3-object-lock",
        "aws-prod",
        _set(_retention(dr=True), "days", 1),
        "locks new versions for 1d, less than the recent window 14d",
    ),
    ("s3-object-lock", "aws-dev", _set(_bucket(), "objectLockEnabled", False), "objectLockEnabled is False"),
    ("s3-object-lock", "aws-prod", lambda p: _retention()(p).pop("mode"), "default retention mode unset"),
    (
        "s3-object-lock",
        "aws-prod",
        _remove(OBJECT_LOCK, lambda r: r["name"].endswith("-backups-object-lock")),
        "no BucketObjectLockConfiguration",
    ),
    (
        "s3-tls-only",
        "aws-prod",
        lambda p: h.edit_document(
            _bucket_policy(dr=True)(p), lambda d: d["Statement"].remove(h.statement(d, "DenyInsecureTransport"))
        ),
        "plain-HTTP requests are allowed",
    ),
    (
        "s3-tls-only",
        "aws-dev",
        _edit_statement(_bucket_policy(), "DenyInsecureTransport", lambda s: s.update(Resource=s["Resource"][0])),
        "has no statement that denies it",
    ),
    (
        "s3-writer-deletes-denied",
        "aws-prod",
        _edit_statement(
            _bucket_policy(),
            "DenyDestructiveActionsToJobRoles",
            _actions(lambda a: [x for x in a if x != "s3:DeleteObjectVersion"]),
        ),
        "does not deny s3:DeleteObjectVersion to the job role",
    ),
    (
        "s3-writer-deletes-denied",
        "aws-dev",
        _edit_statement(
            _bucket_policy(),
            "DenyDestructiveActionsToJobRoles",
            lambda s: s["Condition"]["ArnLike"].update({"aws:PrincipalArn": "arn:aws:iam::123456789012:role/other/*"}),
        ),
        "does not deny s3:DeleteObject, s3:DeleteObjectVersion",
    ),
    (
        "s3-writer-deletes-denied",
        "aws-prod",
        _edit_statement(
            _bucket_policy(),
            "DenyDestructiveActionsToJobRoles",
            lambda s: s["Condition"].update({"Bool": {"aws:SecureTransport": "true"}}),
        ),
        "sv-1-postgres-backup",
    ),
    (
        "s3-replication-to-dr",
        "aws-prod",
        lambda p: _replication_rule(p).update(deleteMarkerReplication={"status": "Enabled"}),
        "replicates delete markers",
    ),
    (
        "s3-replication-to-dr",
        "aws-dev",
        lambda p: _replication_rule(p).update(
            sourceSelectionCriteria={"sseKmsEncryptedObjects": {"status": "Disabled"}}
        ),
        "skips SSE-KMS objects",
    ),
    (
        "s3-replication-to-dr",
        "aws-dev",
        _dr_in_the_primary_region,
        "replicates to sv-dev-backups-dr in the same region eu-central-1",
    ),
    ("s3-replication-to-dr", "aws-prod", lambda p: _replication_rule(p).update(status="Disabled"), "is Disabled"),
    (
        "s3-replication-to-dr",
        "aws-prod",
        lambda p: _replication_rule(p).update(filter={"prefix": "historical/"}),
        "only replicates 'historical/'",
    ),
    (
        "s3-lifecycle-never-deletes-history",
        "aws-prod",
        _add_lifecycle_rule(
            {"id": "x", "status": "Enabled", "filter": {"prefix": "historical/"}, "expiration": {"days": 3650}}
        ),
        "historical sets",
    ),
    (
        "s3-lifecycle-never-deletes-history",
        "aws-dev",
        _add_lifecycle_rule(
            {"id": "x", "status": "Enabled", "filter": {"prefix": ""}, "expiration": {"days": 3}}, dr=True
        ),
        "under '(every prefix)'",
    ),
    (
        "s3-lifecycle-never-deletes-history",
        "aws-prod",
        _add_lifecycle_rule(
            {"id": "x", "status": "Enabled", "filter": {"prefix": "recent"}, "expiration": {"days": 14}}
        ),
        "not inside the recent tier 'recent/'",
    ),
    (
        "s3-lifecycle-never-deletes-history",
        "aws-dev",
        lambda p: _dest(p, "s3://elsewhere"),
        "no Postgres CronJob writes to it",
    ),
    (
        "s3-lifecycle-keeps-recent-window",
        "aws-prod",
        lambda p: _lifecycle_rule("expire-recent")(p).update(expiration={"days": 7}),
        "after 7 days, but the recent window is 14d",
    ),
    (
        "s3-lifecycle-keeps-recent-window",
        "aws-dev",
        lambda p: _lifecycle_rule("expire-recent", dr=True)(p).update(expiration={"days": 30}),
        "stay (and are billed) past it",
    ),
    (
        "s3-lifecycle-keeps-recent-window",
        "aws-prod",
        lambda p: _lifecycle_rules(dr=True)(p).remove(_lifecycle_rule("expire-recent", dr=True)(p)),
        "recent sets are never removed",
    ),
    (
        "s3-storage-class-transitions",
        "aws-prod",
        _add_lifecycle_rule(
            {
                "id": "x",
                "status": "Enabled",
                "filter": {"prefix": "recent/"},
                "transitions": [{"days": 1, "storageClass": "GLACIER_IR"}],
            }
        ),
        "GLACIER_IR",
    ),
    # IAM.
    (
        "aws-roles-cannot-delete",
        "aws-prod",
        _edit_statement(_role_policy("pg-backup"), "CreateAndReadSets", _actions(lambda a: [*a, "s3:DeleteObject"])),
        "allows s3:DeleteObject",
    ),
    (
        "aws-roles-cannot-delete",
        "aws-dev",
        _edit_statement(_role_policy("replication"), "WriteReplicas", _actions(lambda a: ["s3:Replicate*"])),
        "allows s3:ReplicateDelete",
    ),
    (
        "aws-roles-cannot-delete",
        "aws-prod",
        _edit_statement(_role_policy("cometbft-snapshot"), "CopySnapshotsToDr", _actions(lambda a: ["ec2:*"])),
        "allows ec2:* to a backup job",
    ),
    ("aws-roles-cannot-delete", "aws-dev", _attach_managed_policy, "AmazonS3FullAccess cannot be reviewed here"),
    (
        "aws-roles-cannot-delete",
        "aws-prod",
        _add_statement(_role_policy("identities"), {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}),
        "allows sts:AssumeRole to a backup job",
    ),
    (
        "aws-secret-writer-put-only",
        "aws-prod",
        _edit_statement(
            _role_policy("identities"), "AddVersions", _actions(lambda a: [*a, "secretsmanager:GetSecretValue"])
        ),
        "allows secretsmanager:GetSecretValue",
    ),
    (
        "aws-secret-writer-put-only",
        "aws-dev",
        _edit_statement(_role_policy("identities"), "AddVersions", lambda s: s.update(Resource="*")),
        "on every secret",
    ),
    (
        "irsa-trust-backup-ksa",
        "aws-prod",
        _edit_statement(_trust("identities"), "OneKubernetesServiceAccount", _sub_like, key="assumeRolePolicy"),
        "with StringEquals to exactly one value",
    ),
    (
        "irsa-trust-backup-ksa",
        "aws-dev",
        _trust_sub("cometbft-snapshot", "system:serviceaccount:sv:default"),
        "the 'default' ServiceAccount",
    ),
    (
        "irsa-trust-backup-ksa",
        "aws-prod",
        _trust_sub("pg-backup", "system:serviceaccount:sv:sv-app"),
        "which no backup CronJob runs as",
    ),
    ("irsa-trust-backup-ksa", "aws-prod", _pg_trust_names_identities_ksa, "which is annotated with role"),
    (
        "irsa-trust-backup-ksa",
        "aws-dev",
        _edit_statement(
            _trust("identities"),
            "OneKubernetesServiceAccount",
            lambda s: s.update(Principal={"AWS": "arn:aws:iam::123456789012:root"}),
            key="assumeRolePolicy",
        ),
        "not exactly one OIDC provider",
    ),
    (
        "irsa-trust-backup-ksa",
        "aws-dev",
        _edit_statement(_trust("pg-backup"), "OneKubernetesServiceAccount", _drop_aud, key="assumeRolePolicy"),
        "does not require StringEquals",
    ),
    (
        "irsa-trust-backup-ksa",
        "aws-prod",
        _edit_statement(
            _trust("pg-backup"),
            "OneKubernetesServiceAccount",
            lambda s: s.update(Action="sts:*"),
            key="assumeRolePolicy",
        ),
        "not exactly sts:AssumeRoleWithWebIdentity",
    ),
    ("irsa-trust-backup-ksa", "aws-prod", _annotate_unknown_role, "which this stack does not declare"),
    (
        "aws-identities-secret-policy",
        "aws-prod",
        _edit_statement(
            lambda p: h.one(p, SECRET_POLICY),
            "OnlyRestoreRolesReadOrDestroy",
            _actions(lambda a: [x for x in a if x != "secretsmanager:GetSecretValue"]),
        ),
        "denies secretsmanager:GetSecretValue to everyone but named restore roles",
    ),
    (
        "aws-identities-secret-policy",
        "aws-dev",
        _edit_statement(
            lambda p: h.one(p, SECRET_POLICY),
            "OnlyRestoreRolesReadOrDestroy",
            lambda s: s["Condition"]["ArnNotLike"].update({"aws:PrincipalArn": ["arn:aws:iam::*:role/*"]}),
        ),
        "GetSecretValue, secretsmanager:DeleteSecret",
    ),
    ("aws-identities-secret-policy", "aws-prod", _remove(SECRET_POLICY), "no resource policy statement denies"),
    # Secrets Manager, RDS, KMS, resource policies.
    (
        "aws-identities-secret-cmk-replicated",
        "aws-prod",
        lambda p: _secret(p).pop("kmsKeyId"),
        "the AWS-managed key aws/secretsmanager",
    ),
    ("aws-identities-secret-cmk-replicated", "aws-dev", _set(_secret, "replicas", []), "no replica in another region"),
    (
        "aws-identities-secret-cmk-replicated",
        "aws-dev",
        lambda p: _secret(p)["replicas"][0].update(region=_secret(p)["region"]),
        "no replica in another region than eu-central-1",
    ),
    (
        "aws-identities-secret-cmk-replicated",
        "aws-prod",
        lambda p: _secret(p)["replicas"][0].update(kmsKeyId="alias/aws/secretsmanager"),
        "has kmsKeyId alias/aws/secretsmanager",
    ),
    (
        "aws-identities-secret-cmk-replicated",
        "aws-prod",
        _set(_secret, "recoveryWindowInDays", 0),
        "recoveryWindowInDays is 0",
    ),
    (
        "aws-no-public-policies",
        "aws-prod",
        _add_statement(_bucket_policy(dr=True), PUBLIC_READ),
        "to any principal of any account",
    ),
    (
        "aws-no-public-policies",
        "aws-dev",
        lambda p: h.edit_document(
            next(r for r in h.resources(p, KMS_KEY) if r["inputs"]["tags"]["svbackups-purpose"] == "bucket"),
            lambda d: d["Statement"][0].update(Principal="*"),
        ),
        "Key 'sv-dev-key-bucket-eu-central-1': policy statement #0 allows",
    ),
    (
        "aws-no-public-policies",
        "aws-prod",
        _edit_statement(
            _trust("replication"),
            "ServiceOfThisAccount",
            lambda s: (s.update(Principal={"AWS": "*"}), s.pop("Condition")),
            key="assumeRolePolicy",
        ),
        "assumeRolePolicy statement #0 allows",
    ),
    (
        "rds-backups-protected",
        "aws-prod",
        lambda p: _rds(p)["inputs"].update(backupRetentionPeriod=0),
        "backupRetentionPeriod is 0",
    ),
    (
        "rds-backups-protected",
        "aws-prod",
        lambda p: _rds(p)["inputs"].update(deletionProtection=False),
        "deletionProtection is False",
    ),
    (
        "rds-backups-protected",
        "aws-prod",
        lambda p: _rds(p)["inputs"].update(copyTagsToSnapshot=False),
        "copyTagsToSnapshot is False",
    ),
    (
        "rds-backups-protected",
        "aws-prod",
        lambda p: _rds(p)["inputs"].update(deleteAutomatedBackups=True),
        "deleteAutomatedBackups is True",
    ),
    ("rds-backups-protected", "aws-prod", _rds_option(lambda o: o.update(protect=False)), "protect is off"),
    (
        "rds-backups-protected",
        "aws-prod",
        _rds_option(lambda o: o["ignoreChanges"].append("backupRetentionPeriod")),
        "'backupRetentionPeriod', which covers backupRetentionPeriod",
    ),
    (
        "rds-backups-protected",
        "aws-prod",
        _rds_option(lambda o: o.update(ignoreChanges=["*"])),
        "'*', which covers backupRetentionPeriod, backupWindow, deletionProtection",
    ),
    (
        "rds-backups-protected",
        "aws-prod",
        _rds_option(lambda o: o["ignoreChanges"].remove("instanceClass")),
        "sets instanceClass without ignoring changes",
    ),
    (
        "rds-backups-replicated",
        "aws-prod",
        lambda p: h.remove(p, _rds_replication(p)),
        "no InstanceAutomatedBackupsReplication names it",
    ),
    (
        "rds-backups-replicated",
        "aws-prod",
        lambda p: _rds_replication(p)["inputs"].update(region="us-east-1"),
        "replicates to its own region us-east-1",
    ),
    (
        "rds-backups-replicated",
        "aws-prod",
        lambda p: _rds_replication(p)["inputs"].update(retentionPeriod=3),
        "keeps replicated backups 3 days",
    ),
    (
        "kms-key-rotation",
        "aws-prod",
        _set(_key("secrets"), "rotationPeriodInDays", 365),
        "rotationPeriodInDays is 365 days, longer than 90",
    ),
    (
        "kms-key-rotation",
        "aws-dev",
        lambda p: _key("bucket")(p).pop("rotationPeriodInDays"),
        "unset (AWS rotates every 365 days)",
    ),
    ("kms-key-rotation", "aws-dev", _set(_key("ebs"), "enableKeyRotation", False), "enableKeyRotation is False"),
    # Alerts and coverage.
    (
        "alerts-per-backup-kind",
        "aws-prod",
        lambda p: h.remove(p, h.alarm(p, "cometbft", "stale")),
        "No enabled CloudWatch MetricAlarm tagged svbackups-kind=cometbft, svbackups-alert=stale",
    ),
    (
        "alerts-per-backup-kind",
        "aws-dev",
        _set(_alarm("identities", "stale"), "treatMissingData", "notBreaching"),
        "the stale alarm stays quiet",
    ),
    (
        "alerts-per-backup-kind",
        "aws-prod",
        _set(_alarm("postgres", "failed"), "actionsEnabled", False),
        "never notifies anyone",
    ),
    (
        "alerts-per-backup-kind",
        "aws-prod",
        lambda p: _alarm("postgres", "stale")(p).update(metricName=_alarm("cometbft", "stale")(p)["metricName"]),
        "does not follow the postgres backups",
    ),
    (
        "alert-notification-channels",
        "aws-dev",
        _set(_alarm("postgres", "failed"), "alarmActions", []),
        "no alarmActions",
    ),
    ("backup-coverage", "aws-prod", _remove(SECRET), "No Secrets Manager secret tagged svbackups-purpose=identities"),
    ("backup-coverage", "aws-dev", _remove(SNAPSHOT_CLASS), "No VolumeSnapshotClass"),
]
# The DR stack's rules on AWS (their GCP cases are in test_rules.py).
CASES += [(rule, stack, mutate, expected) for rule, stack, mutate, expected in DR_CASES if stack == "aws-prod-dr"]
CASES += [case for case in DRILL_CASES if case[1] not in GCP_STACKS]
CASES += [case for case in SNAPSHOT_CASES if case[1].startswith("aws-")]
CASES += [case for case in HARDENING_CASES if case[1].startswith("aws-")]
CASES += [case for case in ADMISSION_CASES if case[1].startswith("aws-")]
CASES += [
    (
        "dr-standby",
        "aws-prod-dr",
        lambda p: h.one(p, "kubernetes:batch/v1:CronJob", lambda r: r["name"].endswith("-replica-check"))["inputs"][
            "spec"
        ].update(suspend=True),
        "is suspended",
    )
]


@pytest.mark.parametrize(
    ("rule", "stack", "mutate", "expected"), CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_breaking_one_rule_fails_that_rule_only(plan_copy, rule, stack, mutate, expected):
    plan = h.pin_images(plan_copy(stack))
    mutate(plan)
    found = violated(plan)
    assert set(found) == {rule}, found
    assert any(expected in message for message in found[rule]), found[rule]
    assert all("Fix:" in message for message in found[rule]), found[rule]


def test_the_aws_stacks_are_shipped():
    assert {"aws-dev", "aws-prod"} <= set(AWS_STACKS)


def test_every_rule_an_aws_stack_can_break_has_an_aws_case():
    from .test_repo_rules import CONFIGURED_CASES

    configured = {case[0] for case in CONFIGURED_CASES if case[1] in AWS_STACKS}
    assert {p.name for p in POLICIES} - GCP_ONLY == {case[0] for case in CASES} | configured


def test_gcp_rules_do_not_fire_on_aws_stacks_even_when_broken(plan_copy):
    """GCP-only rules see no GCP resource on an AWS stack: they pass because they have nothing to check, and the
    cloud-neutral rules hold the AWS stack to the AWS profile instead (no GCP bucket is asked for)."""
    plan = h.pin_images(plan_copy("aws-prod"))
    assert not [r for r in plan["resources"] if r["type"].startswith("gcp:")]
    assert violated(plan) == {}


# --- joins and regions ------------------------------------------------------------------------------------------


def test_side_resources_join_their_bucket_by_property_dependencies(plan_copy):
    """A bucket created in the same update has a name only known after deployment: its side resources still
    configure it, through the engine's property dependencies."""
    plan = h.pin_images(plan_copy("aws-prod"))
    sides = [r for r in plan["resources"] if r["type"].startswith("aws:s3/bucket") and r["type"] != h.S3_BUCKET]
    for side in sides:
        side["inputs"]["bucket"] = "[unknown]"
    assert violated(plan) == {}
    for side in sides:
        side["options"]["propertyDependencies"].pop("bucket")
    found = violated(plan)
    assert "no BucketPublicAccessBlock" in " ".join(found["s3-block-public-access"])
    assert "no aws.s3.BucketReplicationConfig names it" in " ".join(found["s3-replication-to-dr"])


def test_region_comes_from_the_provider_when_a_resource_has_none(plan_copy):
    """Without a `region` input a resource lives in its provider's region: a named provider resource, or the
    stack's default provider (aws:region of the stack file), as the CLI hands them to the pack."""
    plan = h.pin_images(plan_copy("aws-prod"))
    dr = h.s3_bucket(plan, dr=True)
    dr_region = dr["inputs"].pop("region")
    provider_urn = "urn:pulumi:aws-prod::sv-backups::pulumi:providers:aws::dr"
    plan["resources"].append(
        {
            "urn": provider_urn,
            "type": "pulumi:providers:aws",
            "name": "dr",
            "parent": "",
            "dependsOn": [],
            "inputs": {"region": dr_region},
            "options": {"custom": True},
        }
    )
    dr["options"]["provider"] = f"{provider_urn}::0a1b2c"
    assert violated(plan) == {}
    dr["options"]["provider"] = None  # the default provider: aws:region us-east-1, the primary's
    assert any("in the same region us-east-1" in m for m in violated(plan)["s3-replication-to-dr"])


def test_policy_documents_known_only_after_deployment_are_notes(plan_copy):
    """A policy built from ARNs of resources created in the same update is unknown during preview: the rules that
    need it say so (a note), they neither pass nor fail on it."""
    from engines.policy_check import evaluate

    plan = h.pin_images(plan_copy("aws-prod"))
    h.bucket_side(plan, BUCKET_POLICY)["inputs"]["policy"] = "[unknown]"
    verdicts = {v.policy.name: v for v in evaluate(plan, {})}
    assert all(not v.violations for v in verdicts.values()), {k: v.violations for k, v in verdicts.items()}
    assert any("policy" in note for note in verdicts["s3-tls-only"].notes)


def test_a_store_that_replicates_to_itself_or_is_replicated_into_stays_a_store(plan_copy):
    """Only a bucket no job writes to can be a DR copy: replicating the store to itself, or the DR bucket back
    into the store, does not exempt the store from the replication and writer rules."""
    plan = h.pin_images(plan_copy("aws-dev"))
    store = "arn:aws:s3:::" + _bucket()(plan)["bucket"]
    _replication_rule(plan)["destination"]["bucket"] = store
    assert any("replicates to sv-dev-backups in the same region" in m for m in violated(plan)["s3-replication-to-dr"])

    plan = h.pin_images(plan_copy("aws-dev"))
    back = json.loads(json.dumps(h.bucket_side(plan, REPLICATION)))
    back.update(urn=back["urn"] + "-back", name=back["name"] + "-back")
    back["inputs"].update(bucket=_bucket(dr=True)(plan)["bucket"])
    back["inputs"]["rules"][0]["destination"]["bucket"] = store
    back["options"]["propertyDependencies"] = {}
    plan["resources"].append(back)
    h.edit_document(
        _bucket_policy()(plan), lambda d: d["Statement"].remove(h.statement(d, "DenyDestructiveActionsToJobRoles"))
    )
    assert "s3-writer-deletes-denied" in violated(plan)


def test_a_replica_outside_the_stack_is_not_a_dr_copy(plan_copy):
    """Replicating to a bucket this stack does not declare leaves its lock, key and public access unchecked; the
    stack's own DR bucket, now replicated to by nothing, is no longer recognised as a copy of the store either."""
    plan = h.pin_images(plan_copy("aws-prod"))
    _replication_rule(plan)["destination"].update(bucket="arn:aws:s3:::someone-elses-bucket")
    found = violated(plan)
    assert any("not a bucket of this stack" in m for m in found["s3-replication-to-dr"])


def test_an_unreadable_policy_is_reported(plan_copy):
    plan = h.pin_images(plan_copy("aws-dev"))
    h.role_policy(plan, "pg-backup")["inputs"]["policy"] = "not json"
    assert "cannot be reviewed here" in " ".join(violated(plan)["aws-roles-cannot-delete"])


def test_pod_identity_style_trust_in_a_job_role_fails(plan_copy):
    """A job role that trusts anything but the cluster's OIDC provider (EKS Pod Identity's service principal
    included) is not scoped to one ServiceAccount by its trust policy alone."""
    plan = h.pin_images(plan_copy("aws-prod"))
    h.edit_document(
        h.role(plan, "identities"),
        lambda d: d["Statement"].append(
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ),
        key="assumeRolePolicy",
    )
    assert set(violated(plan)) == {"irsa-trust-backup-ksa"}


def test_a_second_bucket_is_held_to_the_same_controls(plan_copy):
    """Every bucket of an AWS stack gets the public access, ownership, encryption, versioning and TLS rules."""
    plan = h.pin_images(plan_copy("aws-dev"))
    h.add(plan, h.S3_BUCKET, "scratch", {"bucket": "sv-dev-scratch", "region": "eu-central-1"})
    found = violated(plan)
    assert {
        "s3-block-public-access",
        "s3-bucket-owner-enforced",
        "s3-bucket-cmk",
        "s3-versioning-enabled",
        "s3-tls-only",
    } == set(found)
    assert all("sv-dev-scratch" in message for messages in found.values() for message in messages)


def test_stricter_soft_delete_from_the_policy_config(plan_copy):
    plan = h.pin_images(plan_copy("aws-prod"))
    assert violated(plan, {"s3-versioning-enabled": {"minSoftDeleteDays": 30}}) == {}
    found = violated(plan, {"s3-versioning-enabled": {"minSoftDeleteDays": 60}})
    assert set(found) == {"s3-versioning-enabled"}
    assert any("at least 60" in message for message in found["s3-versioning-enabled"])


def test_documents_are_compared_as_iam_does(plan_copy):
    """Actions are case-insensitive with wildcards; a single Statement object is a list of one."""
    plan = h.pin_images(plan_copy("aws-prod"))
    policy = h.role_policy(plan, "identities")
    doc = h.document(policy)
    doc["Statement"] = h.statement(doc, "AddVersions") | {"Action": "SecretsManager:PutSecretValue"}
    policy["inputs"]["policy"] = json.dumps(doc)
    assert violated(plan) == {}
    doc["Statement"]["Action"] = "secretsmanager:Put*"
    policy["inputs"]["policy"] = json.dumps(doc)
    assert set(violated(plan)) == {"aws-secret-writer-put-only"}


@pytest.mark.parametrize(("stack", "mandatory"), [("aws-prod", True), ("aws-dev", False)])
def test_a_silent_alarm_is_mandatory_on_production_stacks_only(plan_copy, stack, mandatory):
    from engines.policy_check import run_policy_checks

    plan = h.pin_images(plan_copy(stack))
    h.alarm(plan, "postgres", "failed")["inputs"]["alarmActions"] = []
    found = violated(plan)
    assert set(found) == {"alert-notification-channels"}, found
    assert (
        "Fix: set sv-backups:monitoring.notificationChannels (SNS topic ARNs) or notificationEmails"
        in (found["alert-notification-channels"][0])
    )
    text, code = run_policy_checks(plan)  # the stack's own policy/config/<stack>.json
    if mandatory:
        assert code == 3 and "FAIL mandatory alert-notification-channels" in text, text
    else:
        assert code == 0 and "WARN advisory  alert-notification-channels" in text, text
