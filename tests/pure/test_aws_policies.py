"""The AWS policy documents (components/aws/policies.py) on their own: who may do what, statement by statement."""

from __future__ import annotations

import json

import pytest

from components.aws import policies as p

BUCKET = "arn:aws:s3:::123456789012-sv-1-backups"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1111"
JOBS = "arn:aws:iam::123456789012:role/sv-backups/sv-1/jobs/*"


def by_sid(document: dict) -> dict[str, dict]:
    assert document["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids)), "statement ids are unique"
    return {s["Sid"]: s for s in document["Statement"]}


def actions(statement: dict) -> set[str]:
    value = statement["Action"]
    return {value} if isinstance(value, str) else set(value)


@pytest.mark.parametrize(
    ("region", "partition", "suffix"),
    [
        ("us-east-1", "aws", "amazonaws.com"),
        ("eu-central-1", "aws", "amazonaws.com"),
        ("cn-north-1", "aws-cn", "amazonaws.com.cn"),
        ("us-gov-west-1", "aws-us-gov", "amazonaws.com"),
    ],
)
def test_partitions_and_service_endpoints(region, partition, suffix):
    assert p.partition(region) == partition
    assert p.via("s3", region) == f"s3.{region}.{suffix}"


def test_names_of_roles_providers_and_replicas():
    assert p.jobs_path("sv-1") == "/sv-backups/sv-1/jobs/"
    assert p.jobs_role_pattern("aws", "123456789012", "sv-1") == JOBS
    issuer = "oidc.eks.us-east-1.amazonaws.com/id/ABC"
    assert p.oidc_provider_arn("aws", "1", issuer) == f"arn:aws:iam::1:oidc-provider/{issuer}"
    secret = "arn:aws:secretsmanager:us-east-1:1:secret:sv-1-identities-dump-AbCdEf"
    assert p.in_region(secret, "us-west-2") == "arn:aws:secretsmanager:us-west-2:1:secret:sv-1-identities-dump-AbCdEf"
    assert p.snapshot_arns("aws", ["us-east-1"]) == ["arn:aws:ec2:us-east-1::snapshot/*"]


def test_json_is_stable_text():
    document = p.bucket_policy(BUCKET, KEY, JOBS)
    assert p.to_json(document) == p.to_json(json.loads(p.to_json(document)))
    assert " " not in p.to_json(p.document({"b": 1, "a": 2}))


def test_irsa_trust_names_one_service_account_and_sts():
    [statement] = p.irsa_trust("arn:provider", "oidc.example/id/X", "sv", "sv-1-postgres-backup")["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": "arn:provider"}
    # StringEquals, never StringLike: a wildcard subject would let every ServiceAccount assume the role
    assert statement["Condition"] == {
        "StringEquals": {
            "oidc.example/id/X:sub": "system:serviceaccount:sv:sv-1-postgres-backup",
            "oidc.example/id/X:aud": "sts.amazonaws.com",
        }
    }


def test_the_object_writer_cannot_delete_and_uses_the_key_only_through_s3():
    statements = by_sid(p.object_writer(BUCKET, "", KEY, "us-east-1"))
    granted = set().union(*(actions(s) for s in statements.values()))
    assert not granted & set(p.DESTRUCTIVE_S3_ACTIONS)
    assert not [a for a in granted if "Delete" in a or "Retention" in a or "Bypass" in a]
    assert "Condition" not in statements["ListSets"]  # no prefix: the whole bucket
    kms = statements["UseTheBucketKeyThroughS3"]
    assert actions(kms) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert kms["Condition"]["StringEquals"] == {"kms:ViaService": "s3.us-east-1.amazonaws.com"}


def test_the_bucket_policy_denies_only_what_a_request_states():
    statements = by_sid(p.bucket_policy(BUCKET, KEY, JOBS))
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in statements.values())
    # a negated operator alone would also deny uploads that send no header (the jobs rely on the default)
    for sid, header in (
        ("DenyOtherEncryptionTypes", "s3:x-amz-server-side-encryption"),
        ("DenyOtherEncryptionKeys", "s3:x-amz-server-side-encryption-aws-kms-key-id"),
    ):
        assert statements[sid]["Condition"]["Null"] == {header: "false"}
        assert list(statements[sid]["Condition"]["StringNotEquals"]) == [header]
    assert (
        statements["DenyOtherEncryptionKeys"]["Condition"]["StringNotEquals"][
            "s3:x-amz-server-side-encryption-aws-kms-key-id"
        ]
        == KEY
    )
    assert actions(statements["DenyDestructiveActionsToJobRoles"]) == set(p.DESTRUCTIVE_S3_ACTIONS)
    overwrite = statements["DenyOverwritesToJobRoles"]["Condition"]
    assert overwrite["Bool"] == {"s3:ObjectCreationOperation": "true"}  # multipart parts stay allowed


def test_replication_carries_no_deletion():
    statements = by_sid(p.replication(BUCKET, BUCKET + "-dr", KEY, KEY + "-dr", "us-east-1", "us-west-2"))
    granted = set().union(*(actions(s) for s in statements.values()))
    assert "s3:ReplicateDelete" not in granted
    assert {"s3:GetObjectRetention", "s3:GetObjectLegalHold"} <= granted  # Object Lock travels with the copy
    assert statements["EncryptReplicas"]["Condition"]["StringEquals"] == {
        "kms:ViaService": "s3.us-west-2.amazonaws.com"
    }


def test_the_secret_writer_adds_versions_and_nothing_else():
    secrets = {"us-east-1": "arn:aws:secretsmanager:us-east-1:1:secret:s-x", "us-west-2": "arn:...:us-west-2:s-x"}
    keys = {"us-east-1": "k1", "us-west-2": "k2"}
    statements = by_sid(p.secret_writer(secrets, keys, "us-east-1"))
    granted = set().union(*(actions(s) for s in statements.values()))
    assert {a for a in granted if a.startswith("secretsmanager:")} == {"secretsmanager:PutSecretValue"}
    primary, replica = (
        statements["EncryptThroughSecretsManagerInUsEast1"],
        statements["EncryptThroughSecretsManagerInUsWest2"],
    )
    assert primary["Resource"] == "k1" and replica["Resource"] == "k2"
    # decrypting (for replication) only with the primary key, only through Secrets Manager, only this secret
    assert "kms:Decrypt" in actions(primary) and "kms:Decrypt" not in actions(replica)
    assert replica["Condition"]["StringEquals"] == {
        "kms:ViaService": "secretsmanager.us-west-2.amazonaws.com",
        "kms:EncryptionContext:SecretARN": secrets["us-west-2"],
    }


def test_the_secret_policy_cannot_lock_everyone_out():
    restore = ["arn:aws:iam::1:role/restore"]
    statements = by_sid(p.secret_resource_policy(restore, ["arn:aws:iam::1:role/deployer"]))
    reads = statements["OnlyRestoreRolesReadOrDestroy"]
    manage = statements["OnlyRestoreRolesAndDeployerManage"]
    assert "secretsmanager:PutSecretValue" not in actions(reads) | actions(manage)  # the writer keeps writing
    # exemptions by principal ARN condition: a recreated role of the same name is recognised again
    assert reads["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": restore}}
    assert manage["Condition"] == {
        "ArnNotLike": {"aws:PrincipalArn": sorted([*restore, "arn:aws:iam::1:role/deployer"])}
    }
    assert "Principal" in reads and reads["Principal"] == "*"


def test_the_snapshot_copier_deletes_by_tag_only():
    statements = by_sid(p.snapshot_copier("aws", "1", "sv-1", "us-east-1", "us-west-2", "dr-key"))
    delete = statements["DeleteOnlyTheNodesSnapshots"]
    assert delete["Condition"] == {"StringEquals": {"aws:ResourceTag/svbackups-node": "sv-1"}}
    for sid in ("GrantTheDrKeyToEbs", "GrantSourceKeysToEbs"):
        assert statements[sid]["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
    assert statements["ReadSourceSnapshotsThroughEbs"]["Resource"] == "arn:aws:kms:us-east-1:1:key/*"


def test_key_policies_keep_the_account_in_charge():
    statements = by_sid(p.key_policy("aws", "1", p.cloudwatch_uses_key()))
    assert statements["AccountAdministersAndIamDecides"]["Principal"] == {"AWS": "arn:aws:iam::1:root"}
    assert statements["CloudWatchAlarmsPublishEncrypted"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert "Condition" not in statements["CloudWatchAlarmsPublishEncrypted"]  # a condition breaks alarm actions
