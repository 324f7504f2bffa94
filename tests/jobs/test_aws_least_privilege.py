"""The IAM policies the program declares allow exactly what the jobs call.

The plan of the shipped aws-prod stack is made here, through the offline plan engine (engines/offline_plan.py,
as tests/program does). Each job then runs in this process as its CronJob runs it (the plan's own arguments
and environment; only addresses are rewritten to local stand-ins) against a moto server holding the plan's
bucket, secret and regions. Every AWS call the job makes is recorded (tests/jobs/aws_calls.py), mapped to the
authorizations it needs, the KMS calls the services make with the caller's identity included
(tests/jobs/aws_authz.py), and evaluated (tests/jobs/iam_policy.py) against the plan's documents: the job
role's inline and attached policies, and the bucket, secret and key policies of what it touches.

"Exactly", in two directions: every call is allowed; and the destructive or overwriting requests a job never
needs (deleting or overwriting objects, shortening locks, reading or deleting the identities, re-tagging or
deleting another node's snapshots, disabling keys...) are denied to its role, and its policies allow no action
beyond those the run needed plus a short reviewed list (REVIEWED_EXTRAS).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.contract_support import (
    ROOT,
    Pod,
    containers_in_run_order,
    cron_job_running,
    password_source,
    pod_name,
    pod_spec,
    replace_host,
    replace_origin,
    rewrite_flag,
)
from tests.jobs.aws_authz import Mapper, Need, Secret, World
from tests.jobs.aws_calls import AwsCallRecorder
from tests.jobs.conftest import moto_server, point_boto3_at
from tests.jobs.iam_policy import Decision, Policy, Request, allowed_actions, evaluate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT / "stacks" / "Pulumi.aws-prod.yaml").exists() or not (ROOT / "components" / "aws").is_dir(),
        reason="needs the AWS backend (components/aws) and the aws-prod stack",
    ),
]
STACK = "aws-prod"
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"

# Allowed by a job role's policies although the recorded run did not need them, each for a stated reason.
# Keyed by the job's subcommand.
REVIEWED_EXTRAS = {
    "seal-set": {
        "s3:listmultipartuploadparts": "harmless read of an upload in progress; the job does not call ListParts",
    },
    "dump-identities": {
        "kms:encrypt": "Secrets Manager may encrypt a version with Encrypt instead of GenerateDataKey",
    },
    "snapshot-cometbft": {
        "kms:encrypt": "EBS's grant operations on the DR key; not a destructive power",
        "kms:decrypt": "EBS reads the copy back to finish it (grant operations)",
        "kms:reencryptfrom": "EBS re-encrypts between the source and DR keys",
    },
}


# --- the plan ------------------------------------------------------------------------------------------------
class Declared:
    """The aws-prod plan, with the engine's answers (ARNs) for every resource."""

    def __init__(self):
        from engines.offline_plan import PlanMocks, load_project, load_stack_file, main_program, plan_program

        outputs: dict[tuple[str, str], dict] = {}

        class Answers(PlanMocks):
            def new_resource(self, args):
                resource_id, values = super().new_resource(args)
                outputs[(args.typ, args.name)] = {"id": resource_id, **values}
                return resource_id, values

        project = load_project(ROOT)
        config = load_stack_file(project.stack_file(STACK), project=project.name, stack=STACK)
        self.region = str(config.values["aws:region"])
        mocks = Answers(project=str(config.values.get("gcp:project", "")), region=self.region)
        self.result = plan_program(main_program(ROOT), config, mocks=mocks)
        self.outputs = outputs
        self.dr_region = self.result.outputs["drRegion"]

    def of_type(self, type_: str) -> list[dict]:
        return self.result.of_type(type_)

    def output(self, resource: dict, key: str) -> Any:
        return self.outputs[(resource["type"], resource["name"])][key]

    def cron_job(self, subcommand: str) -> dict:
        return cron_job_running(self.result, subcommand)

    def role_of(self, cron_job: dict) -> str:
        account = pod_spec(cron_job)["serviceAccountName"]
        [sa] = [
            r["inputs"]
            for r in self.of_type("kubernetes:core/v1:ServiceAccount")
            if r["inputs"]["metadata"]["name"] == account
        ]
        return sa["metadata"]["annotations"][ROLE_ARN_ANNOTATION]

    def identity_policies(self, role_arn: str) -> list[Policy]:
        name = role_arn.rsplit("/", 1)[1]
        found = [
            Policy.parse(r["name"], r["inputs"]["policy"])
            for r in self.of_type("aws:iam/rolePolicy:RolePolicy")
            if r["inputs"]["role"] == name
        ]
        managed = {self.output(r, "arn"): r for r in self.of_type("aws:iam/policy:Policy")}
        for attachment in self.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
            if attachment["inputs"]["role"] != name:
                continue
            arn = attachment["inputs"]["policyArn"]
            assert arn in managed, f"{name}: attached policy {arn} is not declared by the program (unknown content)"
            found.append(Policy.parse(managed[arn]["name"], managed[arn]["inputs"]["policy"]))
        assert found, f"role {role_arn} has no policy in the plan"
        return found

    def resource_policy(self, owner: tuple[str, str] | None) -> tuple[Policy | None, bool]:
        """(policy, is a key policy) of the resource that also decides a request."""
        if owner is None:
            return None, False
        kind, name = owner
        if kind == "bucket":
            found = [r for r in self.of_type("aws:s3/bucketPolicy:BucketPolicy") if r["inputs"]["bucket"] == name]
        elif kind == "secret":
            found = [
                r
                for r in self.of_type("aws:secretsmanager/secretPolicy:SecretPolicy")
                if r["inputs"]["secretArn"] == name
            ]
        else:
            keys = [r for r in self.of_type("aws:kms/key:Key") if self.output(r, "arn") == name]
            if not keys:
                # A key the program does not own (the cluster's EBS key): AWS's default key policy.
                default = {"Version": "2012-10-17", "Statement": [{"Sid": "Default", "Effect": "Allow",
                           "Principal": {"AWS": f"arn:aws:iam::{name.split(':')[4]}:root"}, "Action": "kms:*",
                           "Resource": "*"}]}  # fmt: skip
                return Policy.parse(f"default key policy of {name}", default), True
            found = [{"name": keys[0]["name"], "inputs": {"policy": keys[0]["inputs"]["policy"]}}]
            return Policy.parse(found[0]["name"], found[0]["inputs"]["policy"]), True
        assert len(found) <= 1, f"{owner}: several policies"
        return (Policy.parse(found[0]["name"], found[0]["inputs"]["policy"]) if found else None), False

    def world(self, role_arn: str) -> World:
        bucket_keys = {
            r["inputs"]["bucket"]: r["inputs"]["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]
            for r in self.of_type(
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
            )
        }
        secrets = {}
        for r in self.of_type("aws:secretsmanager/secret:Secret"):
            arn = self.output(r, "arn")
            replicas = tuple(
                (rep["region"], arn.replace(f":{self.region}:", f":{rep['region']}:"), rep["kmsKeyId"])
                for rep in r["inputs"].get("replicas") or []
            )
            secrets[(self.region, r["inputs"]["name"])] = Secret(arn, r["inputs"]["kmsKeyId"], replicas)
        account = role_arn.split(":")[4]
        return World(
            principal=role_arn,
            bucket_keys=bucket_keys,
            secrets=secrets,
            ebs_source_key=f"arn:aws:kms:{self.region}:{account}:key/cluster-ebs-volumes",
        )

    def decide(self, request: Request, owner, identity: list[Policy]) -> Decision:
        resource, is_key = self.resource_policy(owner)
        return evaluate(request, identity, resource, key_policy=is_key)


@pytest.fixture(scope="module")
def declared() -> Declared:
    return Declared()


@pytest.fixture(scope="module")
def plan_moto(tmp_path_factory):
    """A moto server of its own: the plan's names (bucket, secret) are free in it."""
    with moto_server(tmp_path_factory, "moto-plan") as url:
        yield url


@pytest.fixture
def aws(plan_moto, declared, monkeypatch):
    point_boto3_at(plan_moto, monkeypatch, region=declared.region)  # IRSA sets AWS_REGION in the pod
    return plan_moto


# --- checking -------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    needs: list[Need]
    denied: list[str]
    used_actions: set[str]


def check_calls(declared: Declared, job: str, role_arn: str, recorder: AwsCallRecorder) -> Verdict:
    """Every authorization the recorded calls need, and the ones the declared documents do not give."""
    identity = declared.identity_policies(role_arn)
    needs = Mapper(declared.world(role_arn), recorder.calls).needs()
    denied = []
    for need in needs:
        decision = declared.decide(need.request, need.owner, identity)
        if not decision:
            why = f"denied by {decision.denied_by}" if decision.denied_by else "allowed by no statement"
            denied.append(f"{job}: {need.request.describe()} ({need.why}, from {need.call.operation}): {why}")
    return Verdict(needs, denied, {n.request.action.lower() for n in needs})


def assert_exactly(
    declared: Declared, job: str, role_arn: str, verdict: Verdict, destructive: list[tuple], *, command: str
) -> None:
    """Every call allowed; no action allowed beyond the needed and the reviewed ones; every destructive
    request (action, resource, owner, context) denied."""
    assert not verdict.denied, "\n".join(verdict.denied)
    identity = declared.identity_policies(role_arn)
    granted = allowed_actions(identity)
    assert not [a for a in granted if "*" in a or "?" in a], f"{job}: wildcard actions in {granted}"
    extras = granted - verdict.used_actions - set(REVIEWED_EXTRAS.get(command, {}))
    assert not extras, f"{job}: its policies allow {sorted(extras)}, which the run did not need (review them)"
    allowed = []
    for action, resource, owner, context in destructive:
        request = Request(role_arn, action, resource, {"aws:SecureTransport": "true", **context})
        if declared.decide(request, owner, identity):
            allowed.append(f"{job}: {request.describe()} {context or ''} is allowed")
    assert not allowed, "\n".join(allowed)


# --- Postgres sets ----------------------------------------------------------------------------------------------
def make_bucket(declared: Declared) -> str:
    """The plan's backup bucket in moto: Object Lock with its default retention, SSE-KMS by default."""
    import boto3

    [bucket] = [
        r["inputs"] for r in declared.of_type("aws:s3/bucket:Bucket") if r["inputs"]["region"] == declared.region
    ]
    [lock] = [
        r["inputs"]
        for r in declared.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
        if r["inputs"]["bucket"] == bucket["bucket"]
    ]
    s3 = boto3.client("s3", region_name=declared.region)
    s3.create_bucket(Bucket=bucket["bucket"], ObjectLockEnabledForBucket=True)
    retention = lock["rule"]["defaultRetention"]
    s3.put_object_lock_configuration(
        Bucket=bucket["bucket"],
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": retention["mode"], "Days": int(retention["days"])}},
        },
    )
    key = boto3.client("kms", region_name=declared.region).create_key()["KeyMetadata"]["Arn"]
    s3.put_bucket_encryption(
        Bucket=bucket["bucket"],
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {
            "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}, "BucketKeyEnabled": True}]},
    )  # fmt: skip
    return bucket["bucket"]


def run_container(pod: Pod, container: dict, args: list[str], monkeypatch, **env_overrides: str) -> int:
    from jobs.__main__ import main

    for name, value in {**pod.env(container), **env_overrides}.items():
        monkeypatch.setenv(name, value)
    # A step with --password-file points libpq at its passfile through this process's environment: restored
    # after the test, as the pod's environment ends with the pod.
    for name in ("PGPASSFILE", "PGPASSWORD"):
        monkeypatch.setenv(name, "-")
        monkeypatch.delenv(name)
    return main(pod.paths(container, args))


def test_the_postgres_backup_role_allows_exactly_what_the_sets_need(declared, aws, pg_factory, monkeypatch, tmp_path):
    from jobs import destinations
    from jobs.destinations import open_destination
    from testkit.pgcluster import load_fixture

    bucket = make_bucket(declared)
    job = declared.cron_job("seal-set")
    role = declared.role_of(job)
    spec = pod_spec(job)
    steps = {c["name"]: c for _, c in containers_in_run_order(spec)}
    password = "pw-for-the-least-privilege-test"
    clusters, secrets = {}, {}
    for role_name in ("apps", "participant"):
        cluster = pg_factory(f"iam-{role_name}")
        dsns = [a.split("=", 1)[1] for a in steps[role_name]["args"] if a.startswith(f"{role_name}=postgresql://")]
        user = dsns[0].split("://", 1)[1].split("@", 1)[0]
        cluster.psql(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
        for dsn in dsns:
            load_fixture(cluster, dsn.rsplit("/", 1)[1], role_name[:3], 0.2)
        clusters[role_name] = (cluster, dsns[0].split("@", 1)[1].split("/", 1)[0])
        secret_name, key = password_source(spec, steps[role_name])
        secrets[secret_name] = {key: password}
    hosts = {address: f"127.0.0.1:{cluster.port}" for cluster, address in clusters.values()}
    # The kubelet starts no container before every secret volume of the pod is there (the other steps' too).
    for container in steps.values():
        source = password_source(spec, container)
        if source and source[0] not in secrets:
            secrets[source[0]] = {source[1]: "pw-of-a-step-this-test-does-not-run"}
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"], secrets)
    pod.materialize(spec, tmp_path / "volumes")

    def local(value: str) -> str:
        role_name, _, dsn = value.partition("=")
        return f"{role_name}={replace_host(dsn, hosts)}"

    with AwsCallRecorder() as recorder:
        for name in ("apps", "participant"):
            args = rewrite_flag(pod.args(steps[name]), "--db", local)
            # TLS to RDS (PGSSLMODE=require) is the contract test's subject; these local servers speak plain.
            assert run_container(pod, steps[name], args, monkeypatch, PGSSLMODE="prefer") == 0, name
        seal = rewrite_flag(pod.args(steps["seal"]), "--roles", lambda _: "apps,participant")
        assert run_container(pod, steps["seal"], seal, monkeypatch) == 0
        # A database larger than one part (multipart upload), and an upload cut off (aborted), as the same
        # destination code does them for a big participant dump or a failing pg_dump.
        monkeypatch.setattr(destinations, "PART_SIZE", 5 * 1024 * 1024)
        dest = open_destination(pod.args(steps["seal"])[pod.args(steps["seal"]).index("--dest") + 1])
        with dest.writer(f"recent/0/{pod.name}-big/participant.dump") as out:
            out.write(b"\0" * (6 * 1024 * 1024))
        with pytest.raises(RuntimeError), dest.writer(f"recent/0/{pod.name}-cut/apps.dump") as out:
            out.write(b"\0" * (6 * 1024 * 1024))
            raise RuntimeError("pg_dump failed")

    operations = set(recorder.operations())
    assert {"PutObject", "HeadObject", "ListObjectsV2", "GetObject", "CreateMultipartUpload", "UploadPartCopy",
            "CompleteMultipartUpload", "UploadPart", "AbortMultipartUpload"} <= operations  # fmt: skip
    verdict = check_calls(declared, job["metadata"]["name"], role, recorder)
    objects = f"arn:aws:s3:::{bucket}"
    key = declared.world(role).bucket_keys[bucket]
    overwrite = {"s3:ObjectCreationOperation": "true"}
    assert_exactly(declared, job["metadata"]["name"], role, verdict, [
        ("s3:PutObject", f"{objects}/recent/4/set/manifest.json", ("bucket", bucket), overwrite),
        ("s3:DeleteObject", f"{objects}/recent/4/set/manifest.json", ("bucket", bucket), {}),
        ("s3:DeleteObjectVersion", f"{objects}/historical/4/set/manifest.json", ("bucket", bucket), {}),
        ("s3:PutObjectRetention", f"{objects}/historical/4/set/manifest.json", ("bucket", bucket), {}),
        ("s3:BypassGovernanceRetention", f"{objects}/historical/4/set/manifest.json", ("bucket", bucket), {}),
        ("s3:PutObjectLegalHold", f"{objects}/historical/4/set/manifest.json", ("bucket", bucket), {}),
        ("s3:PutLifecycleConfiguration", objects, ("bucket", bucket), {}),
        ("s3:PutBucketPolicy", objects, ("bucket", bucket), {}),
        ("s3:PutBucketVersioning", objects, ("bucket", bucket), {}),
        ("s3:DeleteBucket", objects, ("bucket", bucket), {}),
        ("s3:PutObject", f"{objects}/k", ("bucket", bucket), {**overwrite, "s3:if-none-match": "*",
                                                             "s3:x-amz-server-side-encryption": "AES256"}),
        ("kms:Decrypt", key, ("key", key), {"kms:ViaService": f"s3.{declared.region}.amazonaws.com"}),
        ("kms:ScheduleKeyDeletion", key, ("key", key), {}),
        ("kms:DisableKey", key, ("key", key), {}),
        ("kms:PutKeyPolicy", key, ("key", key), {}),
    ], command="seal-set")  # fmt: skip


# --- identities ------------------------------------------------------------------------------------------------
def test_the_identities_role_allows_exactly_put_secret_value(declared, aws, tmp_path, monkeypatch):
    import boto3

    from tests.jobs.fakes.kube import FakeKubeApi
    from tests.jobs.fakes.sv import FakeSvServer, make_dump

    job = declared.cron_job("dump-identities")
    role = declared.role_of(job)
    [secret] = [r for r in declared.of_type("aws:secretsmanager/secret:Secret")]
    replicas = [{"Region": rep["region"]} for rep in secret["inputs"].get("replicas") or []]
    boto3.client("secretsmanager", region_name=declared.region).create_secret(
        Name=secret["inputs"]["name"], AddReplicaRegions=replicas
    )
    [container] = pod_spec(job)["containers"]
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"], {})
    args = pod.args(container)
    client_id = args[args.index("--client-id") + 1]
    audience = args[args.index("--audience") + 1]
    configmap = args[args.index("--fingerprint-configmap") + 1]
    (tmp_path / "client-secret").write_text("client-secret-of-the-iam-test")
    with FakeSvServer(client_id=client_id, client_secret="client-secret-of-the-iam-test", audience=audience) as sv, \
            FakeKubeApi() as kube:  # fmt: skip
        kube.add_configmap(pod.namespace, configmap)
        args = rewrite_flag(args, "--endpoint", lambda url: replace_origin(url, sv.url))
        args = rewrite_flag(args, "--token-endpoint", lambda url: replace_origin(url, sv.url))
        args = rewrite_flag(args, "--client-secret-file", lambda _: str(tmp_path / "client-secret"))
        args = [*args, "--kube-api", kube.url]
        with AwsCallRecorder() as recorder:
            for dump in (sv.dump, sv.dump, make_dump()):  # new, unchanged, changed
                sv.dump = dump
                assert run_container(pod, container, args, monkeypatch) == 0

    assert recorder.operations() == ["PutSecretValue", "PutSecretValue"]
    verdict = check_calls(declared, job["metadata"]["name"], role, recorder)
    arn = declared.world(role).secrets[(declared.region, secret["inputs"]["name"])].arn
    key = secret["inputs"]["kmsKeyId"]
    owner = ("secret", arn)
    assert_exactly(declared, job["metadata"]["name"], role, verdict, [
        *[(f"secretsmanager:{action}", arn, owner, {}) for action in (
            "GetSecretValue", "DescribeSecret", "ListSecretVersionIds", "DeleteSecret", "UpdateSecretVersionStage",
            "PutResourcePolicy", "DeleteResourcePolicy", "RemoveRegionsFromReplication", "StopReplicationToReplica",
            "RotateSecret", "UpdateSecret")],
        ("kms:Decrypt", key, ("key", key), {"kms:ViaService": f"secretsmanager.{declared.region}.amazonaws.com",
                                            "kms:EncryptionContext:SecretARN": f"{arn[:-6]}other"}),
        ("kms:ScheduleKeyDeletion", key, ("key", key), {}),
    ], command="dump-identities")  # fmt: skip


# --- CometBFT on EBS ---------------------------------------------------------------------------------------------
def class_tags(declared: Declared) -> list[dict[str, str]]:
    """The tags the EBS CSI driver puts on each snapshot, from the VolumeSnapshotClass's parameters."""
    [snapshot_class] = [  # CometBFT's class (a stack with snapshot sets declares the Postgres one beside it)
        r["inputs"]
        for r in declared.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
        if r["name"].endswith("cometbft-snapshot-class")
    ]
    return [
        dict(zip(("Key", "Value"), value.split("=", 1), strict=True))
        for name, value in sorted(snapshot_class["parameters"].items())
        if name.startswith("tagSpecification_")
    ]


def test_the_cometbft_role_allows_exactly_copying_and_pruning_its_nodes_snapshots(declared, aws, monkeypatch):
    import boto3

    from jobs.cometbft import MIGRATION_ID_LABEL, SET_ID_LABEL, TAKEN_AT_LABEL
    from jobs.ebs_copies import NODE_TAG, SnapshotCopier, Source
    from tests.jobs.fakes.kube import FakeKubeApi

    job = declared.cron_job("snapshot-cometbft")
    role = declared.role_of(job)
    [container] = pod_spec(job)["containers"]
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"], {})
    args = pod.args(container)
    namespace, pvc = args[args.index("--namespace") + 1], args[args.index("--pvc") + 1]
    dr, key = args[args.index("--copy-to-region") + 1], args[args.index("--copy-kms-key") + 1]
    tags = class_tags(declared)
    node = next(t["Value"] for t in tags if t["Key"] == NODE_TAG)
    primary = boto3.client("ec2", region_name=declared.region)
    volume = primary.create_volume(AvailabilityZone=f"{declared.region}a", Size=2000, Encrypted=True)["VolumeId"]

    def take(_snapshot):
        return primary.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot",
                                                                            "Tags": tags}])["SnapshotId"]  # fmt: skip

    with FakeKubeApi() as api:
        api.driver, api.take_disk_snapshot = "ebs.csi.aws.com", take
        api.delete_disk_snapshot = lambda handle: primary.delete_snapshot(SnapshotId=handle)
        api.add_pvc(namespace, pvc)
        # Snapshots of earlier runs, copied then: the first of the migration id (kept forever), one 5 days later
        # (pruned by tier with its copy: the next is within the cadence of the first), then 20 days old, and
        # yesterday's (recent).
        copier = SnapshotCopier(declared.region, dr, key)
        for name, age_days in (("first", 30), ("pruned", 25), ("older", 20), ("yesterday", 1)):
            taken = int(time.time() - age_days * 86400)
            api.add_snapshot(namespace, name, pvc=pvc, labels={"app.kubernetes.io/managed-by": "sv-backups",
                             TAKEN_AT_LABEL: str(taken), MIGRATION_ID_LABEL: "4", SET_ID_LABEL: name})  # fmt: skip
            snapshot = api.get("volumesnapshots", namespace, name)
            content = api.get("volumesnapshotcontents", "", snapshot["status"]["boundVolumeSnapshotContentName"])
            copier.copy(node, Source(f"{namespace}/{name}", content["status"]["snapshotHandle"], name, 4, taken))
        args = [*args, "--kube-api", api.url, "--poll-interval", "0.02", "--ready-timeout", "60s"]
        with AwsCallRecorder() as recorder:
            assert run_container(pod, container, args, monkeypatch) == 0
        remaining = set(api.names("volumesnapshots", namespace))
        assert {"first", "older", "yesterday"} <= remaining and "pruned" not in remaining

    assert {"CopySnapshot", "DeleteSnapshot", "DescribeSnapshots"} == set(recorder.operations())
    verdict = check_calls(declared, job["metadata"]["name"], role, recorder)
    account = role.split(":")[4]
    theirs = {"aws:ResourceTag/svbackups-node": f"{node}-other"}
    assert_exactly(declared, job["metadata"]["name"], role, verdict, [
        *[("ec2:DeleteSnapshot", f"arn:aws:ec2:{region}::snapshot/snap-0123456789abcdef0", None, context)
          for region in (declared.region, dr) for context in (theirs, {})],
        # Re-tagging another node's snapshot as this node's (to delete it next) is refused.
        ("ec2:CreateTags", f"arn:aws:ec2:{dr}::snapshot/snap-0123456789abcdef0", None,
         {**theirs, "aws:RequestTag/svbackups-node": node}),
        ("ec2:DeleteTags", f"arn:aws:ec2:{dr}::snapshot/snap-0123456789abcdef0", None, {}),
        ("ec2:ModifySnapshotAttribute", f"arn:aws:ec2:{declared.region}::snapshot/snap-0123456789abcdef0", None, {}),
        ("ec2:DeleteVolume", f"arn:aws:ec2:{declared.region}:{account}:volume/{volume}", None, {}),
        ("kms:ScheduleKeyDeletion", key, ("key", key), {}),
        ("kms:Decrypt", key, ("key", key), {}),
    ], command="snapshot-cometbft")  # fmt: skip
