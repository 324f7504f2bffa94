"""The AWS backend through the mock engine: what each component declares on EKS, for the shipped AWS stacks
and variants. Policy documents are read back as JSON and checked statement by statement."""

from __future__ import annotations

import fnmatch
import inspect
import json
import re
from datetime import timedelta

import pytest

from components.aws import RDS_IGNORED_FIELDS, RDS_MANAGED_FIELDS
from engines.offline_plan import AWS_ACCOUNT_ID, AWS_DEPLOYER_ROLE, _hex, _uuid
from tests.program.test_components import container_args, cron_job, password_of, pod_spec
from tests.stackfiles import Example

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("aws-prod")

DAY = 86400
ACCOUNT = AWS_ACCOUNT_ID
PRIMARY, DR = "us-east-1", "us-west-2"
BUCKET = f"{ACCOUNT}-sv-1-backups"
DR_BUCKET = f"{BUCKET}-{DR}"
JOB_ROLES = f"arn:aws:iam::{ACCOUNT}:role/sv-backups/sv-1/jobs/*"
RESTORE_ROLES = [
    f"arn:aws:iam::{ACCOUNT}:role/sv-1-break-glass-restore",
    f"arn:aws:iam::{ACCOUNT}:role/sv-1-dr-operator",
]


@pytest.fixture(scope="module")
def prod(dump_only_plan):
    """aws-prod as it was before snapshot sets (its dump sets 4-hourly): the dump sets' and the store's own
    behaviour; aws-prod itself (snapshot sets beside twice-weekly dumps) is tests/program/test_pg_snapshots.py's."""
    return dump_only_plan("aws-prod")


@pytest.fixture(scope="module")
def dev(shipped_plan):
    return shipped_plan("aws-dev")


@pytest.fixture
def aws_prod_config(stack_config_map):
    config = stack_config_map("aws-prod")
    config.pop("sv-backups:snapshots")  # as `prod` above
    config["sv-backups:schedule"]["postgres"] = "0 */4 * * *"
    return config


def named(plan, name: str, type_: str | None = None) -> dict:
    return plan.resource(name, type_)


def doc(resource: dict, key: str = "policy") -> dict:
    return json.loads(resource["inputs"][key])


def statements(resource: dict, key: str = "policy") -> dict[str, dict]:
    return {s["Sid"]: s for s in doc(resource, key)["Statement"]}


def actions(statement: dict) -> set[str]:
    value = statement["Action"]
    return {value} if isinstance(value, str) else set(value)


def key_arn(plan, name: str) -> str:
    """The ARN the mock engine gives the key (id derived from its logical name): what policies must name."""
    region = named(plan, name, "aws:kms/key:Key")["inputs"]["region"]
    return f"arn:aws:kms:{region}:{ACCOUNT}:key/{_uuid('kms/' + name)}"


def children(plan, parent: dict) -> dict[str, dict]:
    return {r["type"].split(":")[-1]: r for r in plan.resources if r["parent"] == parent["urn"]}


# --- the backup bucket and its DR replica ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bucket", "region"), [("sv-1-backups", BUCKET, PRIMARY), ("sv-1-backups-dr", DR_BUCKET, DR)]
)
def test_each_bucket_is_private_encrypted_versioned_and_locked(prod, name, bucket, region):
    resource = named(prod, name, "aws:s3/bucket:Bucket")
    inputs = resource["inputs"]
    assert inputs["bucket"] == bucket and inputs["region"] == region
    assert inputs["objectLockEnabled"] is True and inputs["forceDestroy"] is False
    assert resource["options"]["protect"] is True
    settings = children(prod, resource)
    for kind, setting in settings.items():
        assert setting["inputs"]["region"] == region, kind
        assert setting["inputs"]["bucket"] == bucket, kind
        # removing a protection from the program never weakens the live bucket
        assert setting["options"]["retainOnDelete"] is True, kind
    assert {
        k: settings["BucketPublicAccessBlock"]["inputs"][k]
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    } == dict.fromkeys(("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True)
    assert settings["BucketOwnershipControls"]["inputs"]["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    [sse] = settings["BucketServerSideEncryptionConfiguration"]["inputs"]["rules"]
    assert sse["bucketKeyEnabled"] is True
    assert sse["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": key_arn(prod, f"sv-1-key-bucket-{region}"),
    }
    assert settings["BucketVersioning"]["inputs"]["versioningConfiguration"] == {"status": "Enabled"}
    lock = settings["BucketObjectLockConfiguration"]
    assert lock["inputs"]["objectLockEnabled"] == "Enabled"
    # the default retention is the recent window, in compliance mode (the default)
    assert lock["inputs"]["rule"] == {"defaultRetention": {"mode": "COMPLIANCE", "days": 14}}
    assert settings["BucketVersioning"]["urn"] in lock["dependsOn"]
    tags = inputs["tags"]
    assert tags["svbackups-recent-seconds"] == str(14 * DAY)
    assert tags["svbackups-historical-cadence-seconds"] == str(27 * DAY + 16 * 3600)  # 30d - 8h - 2d
    assert tags["svbackups-min-pruning-seconds"] == str(30 * DAY)
    assert tags["svbackups-node"] == "sv-1"


def test_lifecycle_rules_are_sized_from_the_windows_and_never_expire_history(prod):
    for name in ("sv-1-backups-lifecycle", "sv-1-backups-dr-lifecycle"):
        rules = {r["id"]: r for r in named(prod, name)["inputs"]["rules"]}
        assert set(rules) == {
            "expire-recent",
            "abort-incomplete-uploads",
            "historical-to-glacier-ir",
            "expire-noncurrent-versions",
            "remove-expired-delete-markers",
        }
        assert all(r["status"] == "Enabled" for r in rules.values())
        assert rules["expire-recent"]["filter"] == {"prefix": "recent/"}
        assert rules["expire-recent"]["expiration"] == {"days": 14}
        expiring = [r for r in rules.values() if r.get("expiration", {}).get("days")]
        assert [r["filter"]["prefix"] for r in expiring] == ["recent/"]  # historical/ never expires
        assert rules["historical-to-glacier-ir"]["filter"] == {"prefix": "historical/"}
        assert rules["historical-to-glacier-ir"]["transitions"] == [{"days": 30, "storageClass": "GLACIER_IR"}]
        # a noncurrent version is kept softDelete (30d) after it stops being current, then removed
        assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
        assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
        assert rules["remove-expired-delete-markers"]["expiration"] == {"expiredObjectDeleteMarker": True}


def test_bucket_policy_is_tls_only_single_key_and_job_roles_cannot_delete_or_overwrite(prod):
    for name, bucket, region in (("sv-1-backups-policy", BUCKET, PRIMARY), ("sv-1-backups-dr-policy", DR_BUCKET, DR)):
        arn = f"arn:aws:s3:::{bucket}"
        policy = statements(named(prod, name))
        tls = policy["DenyInsecureTransport"]
        assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "s3:*")
        assert tls["Resource"] == [arn, f"{arn}/*"]
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        other_key = policy["DenyOtherEncryptionKeys"]["Condition"]
        assert other_key["StringNotEquals"] == {
            "s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn(prod, f"sv-1-key-bucket-{region}")
        }
        assert other_key["Null"] == {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"}
        destructive = policy["DenyDestructiveActionsToJobRoles"]
        assert destructive["Effect"] == "Deny" and destructive["Resource"] == [arn, f"{arn}/*"]
        assert destructive["Condition"] == {"ArnLike": {"aws:PrincipalArn": JOB_ROLES}}
        assert {
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutObjectRetention",
            "s3:BypassGovernanceRetention",
            "s3:PutLifecycleConfiguration",
            "s3:PutBucketPolicy",
            "s3:PutBucketObjectLockConfiguration",
        } <= actions(destructive)
        overwrite = policy["DenyOverwritesToJobRoles"]
        assert overwrite["Action"] == "s3:PutObject"
        assert overwrite["Condition"] == {
            "ArnLike": {"aws:PrincipalArn": JOB_ROLES},
            "Null": {"s3:if-none-match": "true"},
            "Bool": {"s3:ObjectCreationOperation": "true"},
        }


def test_the_postgres_writer_creates_and_reads_but_cannot_delete(prod):
    role = named(prod, "sv-1-pg-backup-role", "aws:iam/role:Role")
    assert role["inputs"]["path"] == "/sv-backups/sv-1/jobs/"
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/sv-backups/sv-1/jobs/sv-1-pg-backup"
    # the bucket policy's denials apply to it by its path
    assert fnmatch.fnmatchcase(role_arn, JOB_ROLES)
    writer = named(prod, "sv-1-backups-object-writer", "aws:iam/rolePolicy:RolePolicy")
    assert writer["inputs"]["role"] == "sv-1-pg-backup"
    policy = statements(writer)
    everything = set().union(*(actions(s) for s in policy.values()))
    assert everything == {
        "s3:PutObject",
        "s3:GetObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
        "s3:ListBucket",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    }
    assert all(s["Effect"] == "Allow" for s in policy.values())
    assert policy["CreateAndReadSets"]["Resource"] == f"arn:aws:s3:::{BUCKET}/*"
    assert policy["ListSets"] == {
        "Sid": "ListSets",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{BUCKET}",
    }
    kms = policy["UseTheBucketKeyThroughS3"]
    assert kms["Resource"] == key_arn(prod, "sv-1-key-bucket-us-east-1")
    assert kms["Condition"]["StringEquals"] == {"kms:ViaService": "s3.us-east-1.amazonaws.com"}


def test_a_prefix_scopes_the_writer_the_lifecycle_and_the_url(offline_plan, aws_prod_config):
    aws_prod_config["sv-backups:storage"]["prefix"] = "sv-1/"
    plan = offline_plan(aws_prod_config)
    policy = statements(named(plan, "sv-1-backups-object-writer"))
    assert policy["CreateAndReadSets"]["Resource"] == f"arn:aws:s3:::{BUCKET}/sv-1/*"
    assert policy["ListSets"]["Condition"] == {"StringLike": {"s3:prefix": ["sv-1/*"]}}
    rules = {r["id"]: r for r in named(plan, "sv-1-backups-lifecycle")["inputs"]["rules"]}
    assert rules["expire-sv-1-recent"]["filter"] == {"prefix": "sv-1/recent/"}
    assert rules["sv-1-historical-to-glacier-ir"]["filter"] == {"prefix": "sv-1/historical/"}
    assert rules["abort-incomplete-uploads"]["filter"] == {"prefix": "sv-1/"}
    [replication] = named(plan, "sv-1-backups-replication", "aws:s3/bucketReplicationConfig:BucketReplicationConfig")[
        "inputs"
    ]["rules"]
    assert replication["filter"] == {"prefix": "sv-1/"}
    assert plan.outputs["backupUrl"] == f"s3://{BUCKET}/sv-1"
    assert plan.outputs["recentSetsUrl"] == f"s3://{BUCKET}/sv-1/recent/4/"
    assert named(plan, "sv-1-backups")["inputs"]["tags"]["svbackups-recent-prefix"] == "sv-1_recent_"


def test_bucket_name_override_names_the_replica_too(offline_plan, aws_prod_config):
    aws_prod_config["sv-backups:storage"]["bucketName"] = "acme-sv-1-backups"
    plan = offline_plan(aws_prod_config)
    assert named(plan, "sv-1-backups")["inputs"]["bucket"] == "acme-sv-1-backups"
    assert named(plan, "sv-1-backups-dr")["inputs"]["bucket"] == "acme-sv-1-backups-us-west-2"
    assert plan.outputs["backupBucket"] == "acme-sv-1-backups"


def test_replication_to_dr_is_least_privilege_and_never_carries_deletions(prod, dev):
    role = named(prod, "sv-1-backups-replication-role", "aws:iam/role:Role")
    assert role["inputs"]["path"] == "/sv-backups/sv-1/service/"
    [trust] = doc(role, "assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Service": "s3.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    policy = statements(named(prod, "sv-1-backups-replication", "aws:iam/rolePolicy:RolePolicy"))
    granted = set().union(*(actions(s) for s in policy.values()))
    assert "s3:ReplicateDelete" not in granted
    assert not [a for a in granted if "Delete" in a or a.startswith("s3:Put")]
    assert policy["WriteReplicas"]["Resource"] == f"arn:aws:s3:::{DR_BUCKET}/*"
    assert policy["EncryptReplicas"]["Resource"] == key_arn(prod, "sv-1-key-bucket-us-west-2")
    [rule] = named(prod, "sv-1-backups-replication", "aws:s3/bucketReplicationConfig:BucketReplicationConfig")[
        "inputs"
    ]["rules"]
    assert rule["deleteMarkerReplication"] == {"status": "Disabled"}
    assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
    destination = rule["destination"]
    assert destination["bucket"] == f"arn:aws:s3:::{DR_BUCKET}"
    assert destination["encryptionConfiguration"] == {"replicaKmsKeyId": key_arn(prod, "sv-1-key-bucket-us-west-2")}
    # prod asks for Replication Time Control (15 minutes, with its metrics); dev keeps the default, off
    assert destination["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
    assert destination["metrics"] == {"status": "Enabled", "eventThreshold": {"minutes": 15}}
    [dev_replication] = dev.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    [dev_rule] = dev_replication["inputs"]["rules"]
    assert "replicationTime" not in dev_rule["destination"] and "metrics" not in dev_rule["destination"]


def test_dev_uses_governance_mode_and_its_own_windows(dev):
    [lock, _dr_lock] = dev.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    assert lock["inputs"]["rule"] == {"defaultRetention": {"mode": "GOVERNANCE", "days": 3}}
    assert {b["inputs"]["region"] for b in dev.of_type("aws:s3/bucket:Bucket")} == {"eu-central-1", "eu-west-1"}


# --- identities: IRSA and Secrets Manager --------------------------------------------------------------


def test_irsa_roles_trust_exactly_one_service_account_each(prod):
    issuer = "oidc.eks.us-east-1.amazonaws.com/id/5C2A9E0B3F4D8E7A1B6C0D9E8F7A6B5C"
    accounts = {r["inputs"]["metadata"]["name"]: r for r in prod.of_type("kubernetes:core/v1:ServiceAccount")}
    roles = {
        r["inputs"]["name"]: r for r in prod.of_type("aws:iam/role:Role") if r["inputs"]["path"].endswith("/jobs/")
    }
    expected = {
        "sv-1-pg-backup": "sv-1-postgres-backup",
        "sv-1-identities": "sv-1-identities-dump",
        "sv-1-cometbft-snapshot": "sv-1-cometbft-snapshot",
        "sv-1-restore": "sv-1-history-audit",
    }
    assert set(roles) == set(expected)
    for role_name, service_account in expected.items():
        [trust] = doc(roles[role_name], "assumeRolePolicy")["Statement"]
        assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert trust["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{issuer}"}
        assert trust["Condition"] == {
            "StringEquals": {
                f"{issuer}:sub": f"system:serviceaccount:sv:{service_account}",
                f"{issuer}:aud": "sts.amazonaws.com",
            }
        }
        annotations = accounts[service_account]["inputs"]["metadata"]["annotations"]
        assert annotations == {
            "eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT}:role/sv-backups/sv-1/jobs/{role_name}"
        }


def test_without_a_pinned_issuer_irsa_looks_the_cluster_up(dev):
    # the mock answers aws:eks/getCluster for the configured cluster with a stable issuer
    issuer = f"oidc.eks.eu-central-1.amazonaws.com/id/{_hex('eks/sv-dev-eks', 32).upper()}"
    for role in dev.of_type("aws:iam/role:Role"):
        if role["inputs"]["path"].endswith("/jobs/"):
            [trust] = doc(role, "assumeRolePolicy")["Statement"]
            assert trust["Principal"]["Federated"].endswith(f":oidc-provider/{issuer}")


def test_identities_secret_is_cmk_encrypted_replicated_and_protected(prod):
    secret = named(prod, "sv-1-identities-dump", "aws:secretsmanager/secret:Secret")
    inputs = secret["inputs"]
    assert inputs["name"] == "sv-1-identities-dump" and inputs["region"] == PRIMARY
    assert inputs["kmsKeyId"] == key_arn(prod, "sv-1-key-secrets-us-east-1")
    assert inputs["replicas"] == [{"region": DR, "kmsKeyId": key_arn(prod, "sv-1-key-secrets-us-west-2")}]
    assert inputs["recoveryWindowInDays"] == 30 and inputs["forceOverwriteReplicaSecret"] is False
    assert inputs["tags"]["svbackups-purpose"] == "identities"
    assert secret["options"]["protect"] is True


def test_only_restore_roles_read_the_secret_and_the_deployer_keeps_managing_it(prod):
    policy_resource = named(prod, "sv-1-identities-dump-policy", "aws:secretsmanager/secretPolicy:SecretPolicy")
    assert policy_resource["inputs"]["blockPublicPolicy"] is True
    assert policy_resource["options"]["retainOnDelete"] is True
    policy = statements(policy_resource)
    reads = policy["OnlyRestoreRolesReadOrDestroy"]
    assert reads["Effect"] == "Deny" and reads["Principal"] == "*"
    assert {"secretsmanager:GetSecretValue", "secretsmanager:DeleteSecret"} <= actions(reads)
    # the operator's restore roles, the restore role of the node's DR stack (components/dr.py) and this stack's own
    # (the identities drill reads the newest version back, components/drill.py), by name
    dr_restore = f"arn:aws:iam::{ACCOUNT}:role/sv-backups/sv-1/jobs/sv-1-dr-restore"
    own_restore = f"arn:aws:iam::{ACCOUNT}:role/sv-backups/sv-1/jobs/sv-1-restore"
    assert reads["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [*RESTORE_ROLES, dr_restore, own_restore]}}
    manage = policy["OnlyRestoreRolesAndDeployerManage"]
    assert {"secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy"} <= actions(manage)
    # the deploying principal is exempt by its role ARN (not the session's), so the next `pulumi up` works
    deployer = f"arn:aws:iam::{ACCOUNT}:role/{AWS_DEPLOYER_ROLE}"
    managers = sorted([*RESTORE_ROLES, dr_restore, own_restore, deployer])
    assert manage["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": managers}}
    assert not actions(reads) & actions(manage)


def test_the_identities_writer_may_only_add_versions(prod):
    writer = named(prod, "sv-1-identities-dump-version-adder", "aws:iam/rolePolicy:RolePolicy")
    assert writer["inputs"]["role"] == "sv-1-identities"
    policy = statements(writer)
    # the ARN is computed (Secrets Manager adds a random suffix): the stack output exports it
    arn = prod.outputs["identitiesSecret"]
    assert re.fullmatch(rf"arn:aws:secretsmanager:{PRIMARY}:{ACCOUNT}:secret:sv-1-identities-dump-[0-9a-f]{{6}}", arn)
    secretsmanager = {a for s in policy.values() for a in actions(s) if a.startswith("secretsmanager:")}
    assert secretsmanager == {"secretsmanager:PutSecretValue"}
    assert policy["AddVersions"]["Resource"] == arn
    for region in (PRIMARY, DR):
        [kms] = [s for s in policy.values() if s["Resource"] == key_arn(prod, f"sv-1-key-secrets-{region}")]
        assert kms["Condition"]["StringEquals"] == {
            "kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
            "kms:EncryptionContext:SecretARN": arn.replace(f":{PRIMARY}:", f":{region}:"),
        }
    job = cron_job(prod, "identities-dump")
    args = container_args(pod_spec(job)["containers"][0])
    assert args[args.index("--secret") + 1] == "awssm://us-east-1/sv-1-identities-dump"
    assert prod.outputs["identitiesSecretUrl"] == "awssm://us-east-1/sv-1-identities-dump"


def test_the_oauth_client_secret_reaches_the_cluster_only_as_a_secret(prod):
    [oauth] = prod.of_type("kubernetes:core/v1:Secret")
    assert oauth["inputs"]["stringData"] == {"clientSecret": "[secret]"}
    assert prod.leaks == []


# --- keys ---------------------------------------------------------------------------------------------


def test_every_key_is_customer_managed_rotated_regional_and_protected(prod):
    keys = {k["name"]: k for k in prod.of_type("aws:kms/key:Key")}
    assert sorted(keys) == [
        "sv-1-key-alerts-us-east-1",
        "sv-1-key-bucket-us-east-1",
        "sv-1-key-bucket-us-west-2",
        "sv-1-key-ebs-us-west-2",
        "sv-1-key-rds-us-west-2",
        "sv-1-key-secrets-us-east-1",
        "sv-1-key-secrets-us-west-2",
    ]
    for name, key in keys.items():
        inputs = key["inputs"]
        assert name.endswith(inputs["region"])
        assert inputs["enableKeyRotation"] is True and inputs["rotationPeriodInDays"] == 90
        assert inputs["deletionWindowInDays"] == 30
        assert key["options"]["protect"] is True
        policy = statements(key)
        assert policy["AccountAdministersAndIamDecides"]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
        services = {k for k in policy if k != "AccountAdministersAndIamDecides"}
        assert services == ({"CloudWatchAlarmsPublishEncrypted"} if "alerts" in name else set()), name


# --- RDS ------------------------------------------------------------------------------------------------


def test_rds_adoption_changes_only_backups_and_protection(prod):
    instances = {i["inputs"]["identifier"]: i for i in prod.of_type("aws:rds/instance:Instance")}
    assert sorted(instances) == [EX.participant_instance, EX.sequencer_instance]
    windows = {EX.participant_instance: "03:00-03:30", EX.sequencer_instance: "03:30-04:00"}
    for identifier, instance in instances.items():
        inputs, options = instance["inputs"], instance["options"]
        assert options["import"] == identifier
        assert options["protect"] is True and options["retainOnDelete"] is True
        assert options["ignoreChanges"] == sorted(RDS_IGNORED_FIELDS)
        assert inputs["backupRetentionPeriod"] == 14  # max(7, 14 days of recent), at most 35
        assert inputs["backupWindow"] == windows[identifier]
        assert inputs["deletionProtection"] is True and inputs["copyTagsToSnapshot"] is True
        assert inputs["deleteAutomatedBackups"] is False
        managed = {k for k in inputs if k not in RDS_IGNORED_FIELDS}
        assert managed <= set(RDS_MANAGED_FIELDS)
    replications = prod.of_type("aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication")
    assert sorted(r["inputs"]["sourceDbInstanceArn"] for r in replications) == [
        f"arn:aws:rds:{PRIMARY}:{ACCOUNT}:db:{identifier}" for identifier in sorted(instances)
    ]
    for replication in replications:
        inputs = replication["inputs"]
        assert inputs["region"] == DR and inputs["retentionPeriod"] == 14
        assert inputs["kmsKeyId"] == key_arn(prod, "sv-1-key-rds-us-west-2")
        # replaced (not updated) when the window changes: the old replication goes first, and is not protected
        assert replication["options"]["deleteBeforeReplace"] is True
        assert replication["options"]["protect"] is False


def test_rds_ignored_fields_cover_every_other_input_of_the_provider():
    """A new pulumi-aws input must be decided on (managed or ignored), never silently managed by omission."""
    from pulumi_aws import rds

    source = inspect.getsource(rds.InstanceArgs.__init__)
    python_names = re.findall(r"^\s+(\w+): pulumi\.Input", source, re.MULTILINE)
    engine_names = {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), n) for n in python_names}
    assert len(RDS_IGNORED_FIELDS) == len(set(RDS_IGNORED_FIELDS))
    assert not set(RDS_IGNORED_FIELDS) & set(RDS_MANAGED_FIELDS)
    assert set(RDS_IGNORED_FIELDS) | set(RDS_MANAGED_FIELDS) == engine_names


def test_rds_dumps_connect_to_the_endpoint_with_tls_required(prod):
    spec = pod_spec(cron_job(prod, "postgres-backup"))
    steps = {c["name"]: c for c in spec["initContainers"]}
    args = container_args(steps["participant"])
    [db] = [args[i + 1] for i, a in enumerate(args) if a == "--db"]
    assert re.fullmatch(
        r"participant=postgresql://cnadmin@sv-1-participant-pg-4\.c[0-9a-f]{11}\.us-east-1\.rds\.amazonaws\.com"
        r":5432/participant_4",
        db,
    )
    env = {e["name"]: e for e in steps["participant"]["env"]}
    assert env["PGSSLMODE"]["value"] == "require"
    assert password_of(spec, "participant") == ("participant-pg-secret", "postgresPassword")
    assert "PGPASSWORD" not in env
    assert args[args.index("--dest") + 1] == f"s3://{BUCKET}"
    assert {e["name"]: e for e in steps["apps"]["env"]}["PGSSLMODE"]["value"] == "prefer"


def test_rds_not_adopted_is_only_dumped(offline_plan, aws_prod_config):
    aws_prod_config["sv-backups:postgres"]["participant"].update(adopt=False, host="participant.db.internal")
    plan = offline_plan(aws_prod_config)
    assert [i["inputs"]["identifier"] for i in plan.of_type("aws:rds/instance:Instance")] == [EX.sequencer_instance]
    assert len(plan.of_type("aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication")) == 1
    steps = {c["name"]: c for c in pod_spec(cron_job(plan, "postgres-backup"))["initContainers"]}
    assert f"participant=postgresql://cnadmin@participant.db.internal:5432/{EX.participant_db}" in container_args(
        steps["participant"]
    )


@pytest.mark.parametrize(("recent", "days"), [("1d", 7), ("7d", 7), ("10d", 10), ("35d", 35), ("60d", 35)])
def test_rds_backup_retention_follows_the_recent_window_within_rds_limits(recent, days):
    from components.aws.rds import backup_retention_days
    from rules.retention import parse_duration

    assert backup_retention_days(parse_duration(recent)) == days


# --- CometBFT on EBS --------------------------------------------------------------------------------------


def test_cometbft_snapshots_are_tagged_and_copied_to_dr_by_the_job(prod):
    [snapshot_class] = prod.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    assert snapshot_class["inputs"]["driver"] == "ebs.csi.aws.com"
    assert snapshot_class["inputs"]["deletionPolicy"] == "Retain"
    assert snapshot_class["inputs"]["parameters"] == {
        "tagSpecification_1": "svbackups-node=sv-1",
        "tagSpecification_2": "svbackups-purpose=cometbft",
    }
    job = cron_job(prod, "cometbft-snapshot")
    args = container_args(pod_spec(job)["containers"][0])
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--copy-to-region"] == DR
    assert flags["--copy-kms-key"] == key_arn(prod, "sv-1-key-ebs-us-west-2")
    accounts = {r["inputs"]["metadata"]["name"]: r for r in prod.of_type("kubernetes:core/v1:ServiceAccount")}
    assert accounts["sv-1-cometbft-snapshot"]["inputs"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT}:role/sv-backups/sv-1/jobs/sv-1-cometbft-snapshot"
    }


def test_the_snapshot_job_deletes_only_the_nodes_snapshots(prod):
    policy = statements(named(prod, "sv-1-cometbft-snapshot-copier", "aws:iam/rolePolicy:RolePolicy"))
    snapshots = [f"arn:aws:ec2:{r}::snapshot/*" for r in (PRIMARY, DR)]
    assert policy["CopySnapshotsToDr"]["Resource"] == snapshots
    delete = policy["DeleteOnlyTheNodesSnapshots"]
    assert (delete["Action"], delete["Resource"]) == ("ec2:DeleteSnapshot", snapshots)
    assert delete["Condition"] == {"StringEquals": {"aws:ResourceTag/svbackups-node": "sv-1"}}
    tag = policy["TagCopiesAsTheNodes"]
    assert tag["Condition"] == {
        "StringEquals": {"ec2:CreateAction": "CopySnapshot", "aws:RequestTag/svbackups-node": "sv-1"}
    }
    dr_key = policy["EncryptCopiesWithTheDrKey"]
    assert dr_key["Resource"] == key_arn(prod, "sv-1-key-ebs-us-west-2")
    assert dr_key["Condition"] == {"StringEquals": {"kms:ViaService": "ec2.us-west-2.amazonaws.com"}}
    granted = {a for s in policy.values() for a in actions(s)}
    assert not [a for a in granted if a.startswith(("s3:", "secretsmanager:", "iam:"))]
    unconditioned = [s["Sid"] for s in policy.values() if s["Resource"] == "*" and "Condition" not in s]
    assert unconditioned == ["FindSnapshots"]  # DescribeSnapshots has no resource-level permission


# --- alerts -----------------------------------------------------------------------------------------------


def test_alarms_cover_every_kind_stale_and_failed(prod):
    alarms = prod.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    kinds = sorted((a["inputs"]["tags"]["svbackups-kind"], a["inputs"]["tags"]["svbackups-alert"]) for a in alarms)
    every = ("cometbft", "drill-cometbft", "drill-identities", "drill-postgres", "history", "identities", "postgres")
    assert kinds == [(k, a) for k in every for a in ("failed", "stale")]
    topic = f"arn:aws:sns:{PRIMARY}:{ACCOUNT}:sv-1-backup-alerts"
    stale = named(prod, "sv-1-alarm-postgres-stale")["inputs"]
    # largest gap 4 h + start window 15 min + run deadline 3 h 30 min + slack 1 h
    assert stale["period"] == 4 * 3600 + 15 * 60 + 3 * 3600 + 30 * 60 + 3600
    assert (stale["evaluationPeriods"], stale["statistic"], stale["threshold"]) == (1, "Sum", 1)
    assert stale["comparisonOperator"] == "LessThanThreshold"
    assert stale["treatMissingData"] == "breaching"  # no logs at all (cluster gone) is stale too
    assert stale["metricName"] == "sv-backups/sv-1/postgres-completed" and stale["namespace"] == "SvBackups"
    assert stale["alarmActions"] == [topic, f"arn:aws:sns:{PRIMARY}:{ACCOUNT}:sv-1-oncall-pagerduty"]
    assert stale["okActions"] == stale["alarmActions"]
    failed = named(prod, "sv-1-alarm-postgres-failed")["inputs"]
    assert (failed["comparisonOperator"], failed["threshold"]) == ("GreaterThanThreshold", 0)
    assert failed["treatMissingData"] == "notBreaching"
    filters = {f["inputs"]["name"]: f["inputs"] for f in prod.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter")}
    assert len(filters) == 14  # completed and failed for the three backups, the history audit and the three drills
    completed = filters["sv-backups/sv-1/postgres-completed"]
    assert completed["logGroupName"] == "/aws/containerinsights/sv-1-prod/application"
    assert completed["pattern"] == (
        '{ ($.kubernetes.namespace_name = "sv") && ($.log_processed.kind = "postgres") '
        '&& ($.log_processed.event = "backup.completed") }'
    )
    assert 'event = "backup.failed"' in filters["sv-backups/sv-1/postgres-failed"]["pattern"]
    assert completed["metricTransformation"] == {
        "name": "sv-backups/sv-1/postgres-completed",
        "namespace": "SvBackups",
        "value": "1",
        "unit": "Count",
    }


def test_the_alerts_topic_is_encrypted_and_mails_the_configured_addresses(prod):
    topic = named(prod, "sv-1-alerts", "aws:sns/topic:Topic")
    assert topic["inputs"]["kmsMasterKeyId"] == key_arn(prod, "sv-1-key-alerts-us-east-1")
    policy = statements(named(prod, "sv-1-alerts-policy", "aws:sns/topicPolicy:TopicPolicy"))
    publish = policy["CloudWatchAlarmsPublish"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Condition"]["ArnLike"] == {"aws:SourceArn": f"arn:aws:cloudwatch:{PRIMARY}:{ACCOUNT}:alarm:*"}
    assert policy["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    [subscription] = prod.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert subscription["inputs"]["protocol"] == "email"
    assert subscription["inputs"]["endpoint"] == "sv-oncall@example.com"


def test_a_stale_window_longer_than_cloudwatch_evaluates_is_refused():
    from components.aws.alerts import stale_period_seconds

    assert stale_period_seconds(timedelta(hours=8, minutes=45)) == 31500
    assert stale_period_seconds(timedelta(minutes=90, seconds=1)) == 91 * 60  # whole minutes, rounded up
    with pytest.raises(ValueError, match=r"lower sv-backups:monitoring\.slack"):
        stale_period_seconds(timedelta(days=8))


# --- outputs ----------------------------------------------------------------------------------------------


def test_outputs_for_restore_and_audit(prod):
    outputs = prod.outputs
    assert outputs["backupBucket"] == BUCKET
    assert outputs["backupUrl"] == f"s3://{BUCKET}"
    assert outputs["historicalSetsUrl"] == f"s3://{BUCKET}/historical/4/"
    assert outputs["drRegion"] == DR
    assert outputs["snapshotClass"] == "sv-1-cometbft"
    assert outputs["windows"]["postgresHistoricalCadence"] == "664h"  # 27d16h: 30d - 8h - 2d
    assert outputs["cronJobs"] == {
        "postgres": "sv-1-postgres-backup",
        "cometbft": "sv-1-cometbft-snapshot",
        "identities": "sv-1-identities-dump",
        "historyAudit": "sv-1-history-audit",
        "drillPostgres": "sv-1-drill-postgres",
        "drillCometbft": "sv-1-drill-cometbft",
        "drillIdentities": "sv-1-drill-identities",
    }
