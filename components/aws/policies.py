"""IAM, bucket, key, secret and topic policy documents of the AWS backend, as plain data.

Pure functions of plain strings (ARNs, regions, names), no Pulumi import: every permission the program grants
is written here once, reviewable in one file and unit-tested in milliseconds (tests/pure/test_aws_policies.py).
The backend resolves the ARNs (Outputs) and serialises these documents with `to_json`.

Conventions:
- Job roles (IRSA) live under the IAM path `/sv-backups/<node>/jobs/`, so a bucket policy can deny every job
  role of the node by `aws:PrincipalArn` without knowing them in advance, and keeps working when a role is
  deleted and recreated (a `Principal` ARN in a policy would turn into a dangling unique id).
- Service roles (S3 replication) live under `/sv-backups/<node>/service/`.
- Every KMS grant is bound to the one service that uses it (`kms:ViaService`) and, where the service sets
  one, to the one resource (`kms:EncryptionContext:*`): a key permission cannot be used outside its purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

VERSION = "2012-10-17"
Statement = dict[str, Any]
Document = dict[str, Any]

# The tag every resource of one node carries; EBS snapshots carry it too (VolumeSnapshotClass parameters and
# the copies the job makes), which is what lets the snapshot job delete its own snapshots and nothing else.
NODE_TAG = "svbackups-node"

# Bucket actions no job role may ever perform, whatever else an operator attaches to it: deleting objects or
# versions, shortening or lifting a lock, and changing the protections themselves.
DESTRUCTIVE_S3_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersionTagging",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutReplicationConfiguration",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketOwnershipControls",
    "s3:DeleteBucket",
)
# What reading the node's keys, or losing them, takes: only the restore roles may.
SECRET_READ_AND_DESTROY_ACTIONS = (
    "secretsmanager:GetSecretValue",
    "secretsmanager:DeleteSecret",
    "secretsmanager:RemoveRegionsFromReplication",
    "secretsmanager:StopReplicationToReplica",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:RotateSecret",
    "secretsmanager:CancelRotateSecret",
)
# What changing the secret's protections takes: the restore roles and the principal that deploys this stack.
SECRET_MANAGEMENT_ACTIONS = (
    "secretsmanager:PutResourcePolicy",
    "secretsmanager:DeleteResourcePolicy",
    "secretsmanager:UpdateSecret",
    "secretsmanager:ReplicateSecretToRegions",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
)


# --- names --------------------------------------------------------------------------------------------------


def partition(region: str) -> str:
    """The ARN partition of a region: aws, aws-cn (China) or aws-us-gov (GovCloud)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def via(service: str, region: str) -> str:
    """The `kms:ViaService` value of a service in a region, e.g. s3.us-east-1.amazonaws.com."""
    return f"{service}.{region}.{dns_suffix(region)}"


def jobs_path(node: str) -> str:
    return f"/sv-backups/{node}/jobs/"


def service_path(node: str) -> str:
    return f"/sv-backups/{node}/service/"


def account_root(part: str, account: str) -> str:
    return f"arn:{part}:iam::{account}:root"


def jobs_role_pattern(part: str, account: str, node: str) -> str:
    """Matches (ArnLike) the ARN of every job role of `node`, present and future."""
    return f"arn:{part}:iam::{account}:role{jobs_path(node)}*"


def oidc_provider_arn(part: str, account: str, issuer: str) -> str:
    return f"arn:{part}:iam::{account}:oidc-provider/{issuer}"


def snapshot_arns(part: str, regions: Iterable[str]) -> list[str]:
    # EBS snapshot ARNs carry no account.
    return [f"arn:{part}:ec2:{region}::snapshot/*" for region in regions]


def in_region(arn: str, region: str) -> str:
    """The ARN of the same resource in another region (a Secrets Manager replica's ARN is its primary's with
    the region replaced)."""
    parts = arn.split(":")
    parts[3] = region
    return ":".join(parts)


def document(*statements: Statement) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def to_json(doc: Document) -> str:
    """Stable text: the same document always gives the same bytes (plans and diffs stay quiet)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _objects(bucket_arn: str, prefix: str = "") -> str:
    return f"{bucket_arn}/{prefix}*"


# --- trust policies -----------------------------------------------------------------------------------------


def irsa_trust(provider_arn: str, issuer: str, namespace: str, service_account: str) -> Document:
    """IRSA: tokens of exactly one Kubernetes ServiceAccount, minted for STS, may assume the role."""
    return document(
        {
            "Sid": "OneKubernetesServiceAccount",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                    f"{issuer}:aud": "sts.amazonaws.com",
                }
            },
        }
    )


def service_trust(service: str, account: str) -> Document:
    """An AWS service may assume the role on behalf of this account only (no confused deputy)."""
    return document(
        {
            "Sid": "ServiceOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }
    )


# --- KMS ----------------------------------------------------------------------------------------------------


def key_policy(part: str, account: str, *extra: Statement) -> Document:
    """The account administers the key and IAM policies decide its use (KMS's default key policy, written out
    so that it is reviewed like every other policy), plus statements for AWS services that must use it."""
    return document(
        {
            "Sid": "AccountAdministersAndIamDecides",
            "Effect": "Allow",
            "Principal": {"AWS": account_root(part, account)},
            "Action": "kms:*",
            "Resource": "*",
        },
        *extra,
    )


def cloudwatch_uses_key() -> Statement:
    """CloudWatch alarms publish to an SNS topic encrypted with this key (they need its data key). The form AWS
    documents, without conditions: CloudWatch's KMS requests carry no caller-account key to match, and a
    condition makes every alarm action fail. Who may publish is limited by the topic policy instead."""
    return {
        "Sid": "CloudWatchAlarmsPublishEncrypted",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
    }


# --- S3 -----------------------------------------------------------------------------------------------------


def object_writer(bucket_arn: str, prefix: str, key_arn: str, region: str) -> Document:
    """The Postgres sets: create objects (single and multipart uploads, server-side part copies), read and
    list them back under the prefix; never delete, never change a retention (DESTRUCTIVE_S3_ACTIONS are not
    here, and the bucket policy denies them on top)."""
    listing: Statement = {
        "Sid": "ListSets",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn,
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return document(
        {
            "Sid": "CreateAndReadSets",
            "Effect": "Allow",
            "Action": [
                "s3:PutObject",
                "s3:GetObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": _objects(bucket_arn, prefix),
        },
        listing,
        {
            "Sid": "UseTheBucketKeyThroughS3",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": key_arn,
            "Condition": {
                "StringEquals": {"kms:ViaService": via("s3", region)},
                # With S3 bucket keys the context is the bucket ARN, otherwise the object's ARN.
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/*"]},
            },
        },
    )


def object_reader(bucket_arn: str, prefix: str) -> Document:
    """Restores, drills and the replica check (a DR stack's restore role): list and read the sets, decrypt
    them through S3 for this bucket only; nothing that creates, changes or deletes anything. The bucket may be
    another stack's (its key ARN unknown here): the KMS grant is bound by service and encryption context."""
    listing: Statement = {"Sid": "ListSets", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn}
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return document(
        {"Sid": "ReadSets", "Effect": "Allow", "Action": "s3:GetObject", "Resource": _objects(bucket_arn, prefix)},
        listing,
        {
            "Sid": "DecryptThroughS3",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringLike": {
                    "kms:ViaService": "s3.*.amazonaws.com",
                    "kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/*"],
                }
            },
        },
    )


def secret_reader(secret_arn: str) -> Document:
    """Restores and the replica check: read the identities secret's versions (one secret, one region's copy)
    and decrypt them through Secrets Manager for that secret only."""
    return document(
        {
            "Sid": "ReadVersions",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:ListSecretVersionIds"],
            "Resource": secret_arn,
        },
        {
            "Sid": "DecryptThroughSecretsManager",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringLike": {"kms:ViaService": "secretsmanager.*.amazonaws.com"},
                "StringEquals": {"kms:EncryptionContext:SecretARN": secret_arn},
            },
        },
    )


def dr_restore_role_arn(part: str, account: str, node: str, name: str) -> str:
    """The restore role a node's DR stack declares (components/dr.py): named by convention, so the primary's
    secret policy can let it read before the DR stack exists."""
    return f"arn:{part}:iam::{account}:role{jobs_path(node)}{name}"


def bucket_policy(bucket_arn: str, key_arn: str, jobs_pattern: str) -> Document:
    """TLS only; objects encrypted with the bucket's own key only; and for every job role of the node: no
    destructive action, and no object creation that could replace an existing object."""
    everything = [bucket_arn, f"{bucket_arn}/*"]
    jobs = {"ArnLike": {"aws:PrincipalArn": jobs_pattern}}
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": everything,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        # Uploads without encryption headers get the bucket's default (SSE-KMS with its key). One that names
        # another type, or another key (a writer's own, which it could later destroy), is refused. A negated
        # operator is true when the header is absent, hence the Null test: deny only what a request states.
        {
            "Sid": "DenyOtherEncryptionTypes",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/*",
            "Condition": {
                "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
                "Null": {"s3:x-amz-server-side-encryption": "false"},
            },
        },
        {
            "Sid": "DenyOtherEncryptionKeys",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/*",
            "Condition": {
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn},
                "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
            },
        },
        {
            "Sid": "DenyDestructiveActionsToJobRoles",
            "Effect": "Deny",
            "Principal": "*",
            "Action": list(DESTRUCTIVE_S3_ACTIONS),
            "Resource": everything,
            "Condition": jobs,
        },
        {
            # Create-only: PutObject and CompleteMultipartUpload must carry If-None-Match, so a job can never
            # put a new current version over an existing set (CreateMultipartUpload, UploadPart and
            # UploadPartCopy take no conditional header and are not object-creating operations).
            "Sid": "DenyOverwritesToJobRoles",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/*",
            "Condition": {
                **jobs,
                "Null": {"s3:if-none-match": "true"},
                "Bool": {"s3:ObjectCreationOperation": "true"},
            },
        },
    )


def replication(
    source_bucket_arn: str,
    destination_bucket_arn: str,
    source_key_arn: str,
    destination_key_arn: str,
    source_region: str,
    destination_region: str,
) -> Document:
    """S3 replication, least privilege: read versions (with their lock) from the source, write replicas and
    their tags to the destination. No s3:ReplicateDelete: deletions are never carried to the DR copy."""
    return document(
        {
            "Sid": "ReadSourceConfiguration",
            "Effect": "Allow",
            "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
            "Resource": source_bucket_arn,
        },
        {
            "Sid": "ReadSourceVersions",
            "Effect": "Allow",
            "Action": [
                "s3:GetObjectVersionForReplication",
                "s3:GetObjectVersionAcl",
                "s3:GetObjectVersionTagging",
                "s3:GetObjectRetention",
                "s3:GetObjectLegalHold",
            ],
            "Resource": f"{source_bucket_arn}/*",
        },
        {
            "Sid": "WriteReplicas",
            "Effect": "Allow",
            "Action": ["s3:ReplicateObject", "s3:ReplicateTags"],
            "Resource": f"{destination_bucket_arn}/*",
        },
        {
            "Sid": "DecryptSource",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": source_key_arn,
            "Condition": {
                "StringEquals": {"kms:ViaService": via("s3", source_region)},
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": [source_bucket_arn, f"{source_bucket_arn}/*"]},
            },
        },
        {
            "Sid": "EncryptReplicas",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": destination_key_arn,
            "Condition": {
                "StringEquals": {"kms:ViaService": via("s3", destination_region)},
                "StringLike": {
                    "kms:EncryptionContext:aws:s3:arn": [destination_bucket_arn, f"{destination_bucket_arn}/*"]
                },
            },
        },
    )


# --- Secrets Manager ----------------------------------------------------------------------------------------


def secret_writer(secret_arns: Mapping[str, str], key_arns: Mapping[str, str], primary_region: str) -> Document:
    """dump-identities: add a version to the one secret, nothing else (no read, no delete, no policy change).

    `secret_arns` and `key_arns` map region -> ARN for the primary and each replica. Secrets Manager encrypts
    a new version with the primary key, then replicates it with the caller's identity (a forward access
    session): it decrypts with the primary key and re-encrypts with each replica's key. Each KMS permission is
    bound to Secrets Manager in its region and to this secret's ARN, so none can decrypt anything else, and
    reading the secret itself needs secretsmanager:GetSecretValue, which this role does not have and the
    secret's resource policy denies."""
    statements: list[Statement] = [
        {
            "Sid": "AddVersions",
            "Effect": "Allow",
            "Action": "secretsmanager:PutSecretValue",
            "Resource": secret_arns[primary_region],
        }
    ]
    for region in sorted(key_arns, key=lambda r: (r != primary_region, r)):
        actions = ["kms:GenerateDataKey", "kms:Encrypt"]
        if region == primary_region:
            actions.append("kms:Decrypt")
        statements.append(
            {
                "Sid": "EncryptThroughSecretsManagerIn" + "".join(p.capitalize() for p in region.split("-")),
                "Effect": "Allow",
                "Action": actions,
                "Resource": key_arns[region],
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": via("secretsmanager", region),
                        "kms:EncryptionContext:SecretARN": secret_arns[region],
                    }
                },
            }
        )
    return document(*statements)


def secret_resource_policy(restore_roles: Sequence[str], managers: Sequence[str]) -> Document:
    """On the identities secret (replicated with it): only the restore roles may read or destroy it; only they
    and the principal that deploys the stack may change its protections.

    The exemptions match `aws:PrincipalArn` (a condition), not `Principal` ARNs: a restore role deleted and
    recreated under the same name is recognised again, so the secret can never be locked for everyone."""
    return document(
        {
            "Sid": "OnlyRestoreRolesReadOrDestroy",
            "Effect": "Deny",
            "Principal": "*",
            "Action": list(SECRET_READ_AND_DESTROY_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": list(restore_roles)}},
        },
        {
            "Sid": "OnlyRestoreRolesAndDeployerManage",
            "Effect": "Deny",
            "Principal": "*",
            "Action": list(SECRET_MANAGEMENT_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": sorted({*restore_roles, *managers})}},
        },
    )


# --- EBS snapshots ------------------------------------------------------------------------------------------


def snapshot_copier(
    part: str, account: str, node: str, primary_region: str, dr_region: str, dr_key_arn: str
) -> Document:
    """snapshot-cometbft: copy each kept EBS snapshot to the DR region under the DR key, tag the copies as the
    node's, and delete only snapshots tagged as the node's (pruning) in either region."""
    regions = (primary_region, dr_region)
    return document(
        _find_ebs_snapshots(),
        *_ebs_copies(part, node, primary_region, dr_region),
        _delete_the_nodes_ebs_snapshots(part, node, regions),
        *_ebs_copy_keys(part, account, primary_region, dr_region, dr_key_arn),
    )


def _find_ebs_snapshots() -> Statement:
    # DescribeSnapshots supports no resource-level permission.
    return {"Sid": "FindSnapshots", "Effect": "Allow", "Action": "ec2:DescribeSnapshots", "Resource": "*"}


def _ebs_copies(part: str, node: str, primary_region: str, dr_region: str) -> list[Statement]:
    return [
        {
            "Sid": "CopySnapshotsToDr",
            "Effect": "Allow",
            "Action": "ec2:CopySnapshot",
            "Resource": snapshot_arns(part, (primary_region, dr_region)),
        },
        {
            # Tags only as part of the copy, and every copy carries the node's tag (so it can be pruned).
            "Sid": "TagCopiesAsTheNodes",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": snapshot_arns(part, [dr_region]),
            "Condition": {"StringEquals": {"ec2:CreateAction": "CopySnapshot", f"aws:RequestTag/{NODE_TAG}": node}},
        },
    ]


def _delete_the_nodes_ebs_snapshots(part: str, node: str, regions: Iterable[str]) -> Statement:
    return {
        "Sid": "DeleteOnlyTheNodesSnapshots",
        "Effect": "Allow",
        "Action": "ec2:DeleteSnapshot",
        "Resource": snapshot_arns(part, regions),
        "Condition": {"StringEquals": {f"aws:ResourceTag/{NODE_TAG}": node}},
    }


def _ebs_copy_keys(part: str, account: str, primary_region: str, dr_region: str, dr_key_arn: str) -> list[Statement]:
    # A cross-region copy runs in the DR region and reads the source there; either EBS endpoint may call KMS.
    ebs = [via("ec2", region) for region in (primary_region, dr_region)]
    source_keys = f"arn:{part}:kms:{primary_region}:{account}:key/*"
    return [
        {
            "Sid": "EncryptCopiesWithTheDrKey",
            "Effect": "Allow",
            "Action": [
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:DescribeKey",
            ],
            "Resource": dr_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": via("ec2", dr_region)}},
        },
        {
            "Sid": "GrantTheDrKeyToEbs",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": dr_key_arn,
            "Condition": {
                "StringEquals": {"kms:ViaService": via("ec2", dr_region)},
                "Bool": {"kms:GrantIsForAWSResource": "true"},
            },
        },
        {
            # The source snapshot is encrypted with whatever key the volume's StorageClass chose (the cluster's
            # business, not this program's): any key of the account in the primary region, through EBS only.
            "Sid": "ReadSourceSnapshotsThroughEbs",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom"],
            "Resource": source_keys,
            "Condition": {"StringEquals": {"kms:ViaService": ebs}},
        },
        {
            "Sid": "GrantSourceKeysToEbs",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": source_keys,
            "Condition": {"StringEquals": {"kms:ViaService": ebs}, "Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
    ]


# --- Postgres snapshot sets (components/aws/snapshots.py) ---------------------------------------------------

# What only the pruner may do with the node's snapshots: the creator's document never holds these (policy
# snapshot-creator-cannot-delete checks the plan for them).
SNAPSHOT_DELETE_ACTIONS = ("ec2:DeleteSnapshot", "rds:DeleteDBSnapshot")


def rds_instance_arn(part: str, account: str, region: str, instance: str) -> str:
    return f"arn:{part}:rds:{region}:{account}:db:{instance}"


def rds_snapshot_arns(part: str, account: str, regions: Iterable[str]) -> list[str]:
    return [f"arn:{part}:rds:{region}:{account}:snapshot:*" for region in dict.fromkeys(regions)]


def snapshot_set_creator(
    part: str,
    account: str,
    node: str,
    primary_region: str,
    dr_region: str | None,
    *,
    volumes: bool,
    ebs_dr_key_arn: str | None,
    rds_instances: Sequence[tuple[str, str]],
    rds_dr_key_arn: str | None,
) -> Document:
    """snapshot-step (the creator of snapshot sets): lock the node's EBS snapshots (the CSI driver, not the job,
    creates them) and copy them to the DR region; create RDS snapshots of the node's instances (`rds_instances`:
    (region, identifier) pairs), tagged as the node's, and copy them to the DR region. Nothing here deletes, unlocks
    or shortens a lock: that is the pruner's document, and the lock binds the pruner too."""
    statements: list[Statement] = []
    if volumes:
        regions = (primary_region, *([dr_region] if dr_region else []))
        statements += [
            {
                "Sid": "FindSnapshots",
                "Effect": "Allow",
                "Action": ["ec2:DescribeSnapshots", "ec2:DescribeLockedSnapshots"],
                "Resource": "*",
            },
            {
                # EBS Snapshot Lock (governance mode) for the recent window, on the source and its copy: only the
                # node's snapshots (the class tags what the CSI driver creates; the copies are tagged on creation).
                "Sid": "LockTheNodesSnapshots",
                "Effect": "Allow",
                "Action": "ec2:LockSnapshot",
                "Resource": snapshot_arns(part, regions),
                "Condition": {"StringEquals": {f"aws:ResourceTag/{NODE_TAG}": node}},
            },
        ]
        if dr_region is not None and ebs_dr_key_arn is not None:
            statements += _ebs_copies(part, node, primary_region, dr_region)
            statements += _ebs_copy_keys(part, account, primary_region, dr_region, ebs_dr_key_arn)
    if rds_instances:
        instance_regions = [region for region, _ in rds_instances]
        all_regions = [*instance_regions, *([dr_region] if dr_region else [])]
        statements += [
            {
                "Sid": "FindDbSnapshots",
                "Effect": "Allow",
                "Action": ["rds:DescribeDBSnapshots", "rds:DescribeDBInstances"],
                "Resource": "*",
            },
            {
                "Sid": "SnapshotTheNodesInstances",
                "Effect": "Allow",
                "Action": "rds:CreateDBSnapshot",
                "Resource": [
                    *(rds_instance_arn(part, account, region, name) for region, name in rds_instances),
                    *rds_snapshot_arns(part, account, instance_regions),
                ],
            },
            {
                # Tags only on snapshots being created or copied, and every one carries the node's tag (the pruner
                # deletes by it).
                "Sid": "TagDbSnapshotsAsTheNodes",
                "Effect": "Allow",
                "Action": "rds:AddTagsToResource",
                "Resource": rds_snapshot_arns(part, account, all_regions),
                "Condition": {"StringEquals": {f"aws:RequestTag/{NODE_TAG}": node}},
            },
        ]
        if dr_region is not None and rds_dr_key_arn is not None:
            rds_endpoints = [via("rds", region) for region in dict.fromkeys(all_regions)]
            source_keys = [f"arn:{part}:kms:{region}:{account}:key/*" for region in dict.fromkeys(instance_regions)]
            statements += [
                {
                    "Sid": "CopyDbSnapshotsToDr",
                    "Effect": "Allow",
                    "Action": "rds:CopyDBSnapshot",
                    "Resource": rds_snapshot_arns(part, account, all_regions),
                },
                {
                    "Sid": "EncryptDbCopiesWithTheDrKey",
                    "Effect": "Allow",
                    "Action": ["kms:DescribeKey", "kms:CreateGrant", "kms:Encrypt", "kms:GenerateDataKey*"],
                    "Resource": rds_dr_key_arn,
                    "Condition": {"StringEquals": {"kms:ViaService": via("rds", dr_region)}},
                },
                {
                    # The instance's own key (any key of the account in its region), through RDS only.
                    "Sid": "ReadSourceDbSnapshotsThroughRds",
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"],
                    "Resource": source_keys,
                    "Condition": {"StringEquals": {"kms:ViaService": rds_endpoints}},
                },
            ]
    return document(*statements)


def snapshot_set_pruner(
    part: str, account: str, node: str, regions: Sequence[str], *, volumes: bool, rds: bool
) -> Document:
    """prune-snapshots: delete the node's EBS and RDS snapshots (and copies) in `regions`, by the node's tag and
    nothing else. No unlock: a snapshot younger than the recent window stays locked against the pruner too."""
    statements: list[Statement] = []
    if volumes:
        statements += [_find_ebs_snapshots(), _delete_the_nodes_ebs_snapshots(part, node, regions)]
    if rds:
        statements += [
            {"Sid": "FindDbSnapshots", "Effect": "Allow", "Action": "rds:DescribeDBSnapshots", "Resource": "*"},
            {
                "Sid": "DeleteOnlyTheNodesDbSnapshots",
                "Effect": "Allow",
                "Action": "rds:DeleteDBSnapshot",
                "Resource": rds_snapshot_arns(part, account, regions),
                "Condition": {"StringEquals": {f"aws:ResourceTag/{NODE_TAG}": node}},
            },
        ]
    return document(*statements)


# --- SNS ----------------------------------------------------------------------------------------------------


def topic_policy(part: str, account: str, region: str, topic_arn: str) -> Document:
    """The alerts topic: CloudWatch alarms of this account and region publish; nothing over plain HTTP."""
    return document(
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account},
                "ArnLike": {"aws:SourceArn": f"arn:{part}:cloudwatch:{region}:{account}:alarm:*"},
            },
        },
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sns:*",
            "Resource": topic_arn,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )
