"""What IAM authorization each recorded AWS call needs: its action(s), resource ARN(s) and request context, and
the KMS calls the service then makes with the caller's identity (forward access sessions), which the caller
must be allowed too although it never sends them itself.

From AWS's Service Authorization Reference and service guides:
- S3: HeadObject/GetObject need s3:GetObject, and a HEAD of a missing key answers 404 (the job's "absent")
  only with s3:ListBucket, 403 otherwise; PutObject, CreateMultipartUpload, UploadPart, UploadPartCopy and
  CompleteMultipartUpload all need s3:PutObject (UploadPartCopy also s3:GetObject on the source); the
  `s3:ObjectCreationOperation` key is true for PutObject and CompleteMultipartUpload only, `s3:if-none-match`
  is present when the request carries the header. Under SSE-KMS with bucket keys S3 calls KMS with the bucket
  ARN as encryption context: GenerateDataKey for a new object or multipart upload, Decrypt to read an object
  or to add parts to a multipart upload.
- Secrets Manager: PutSecretValue encrypts the new version with GenerateDataKey under the secret's key
  (context SecretARN); each replica is then written with the caller's identity: Decrypt under the primary key,
  Encrypt under the replica's key (context: the replica's ARN), through Secrets Manager in that region.
- EC2: CopySnapshot is authorized on the source snapshot (source region) and the new one (destination
  region); its TagSpecifications need ec2:CreateTags on the new snapshot with `ec2:CreateAction` CopySnapshot
  and the tags as `aws:RequestTag/*`; DeleteSnapshot is checked against the snapshot's tags
  (`aws:ResourceTag/*`); DescribeSnapshots has no resource-level permission. An encrypted copy makes EBS use
  both keys through grants: DescribeKey, CreateGrant (for an AWS resource), ReEncryptFrom and Decrypt on the
  source key, DescribeKey, CreateGrant, GenerateDataKeyWithoutPlaintext and ReEncryptTo on the destination key.

A call this module does not know raises `UnmappedCall`: a job making a new kind of call must be mapped here
before the least-privilege test can pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.jobs.aws_calls import AwsCall
from tests.jobs.iam_policy import Request


class UnmappedCall(LookupError):
    pass


@dataclass(frozen=True)
class Secret:
    arn: str
    key: str
    replicas: tuple[tuple[str, str, str], ...] = ()  # (region, replica ARN, replica key ARN)


@dataclass
class World:
    """The deployed names the calls are mapped to (from the plan): account, keys, ARNs."""

    principal: str  # the job's role ARN
    bucket_keys: dict[str, str] = field(default_factory=dict)  # bucket -> its default SSE-KMS key
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)  # (region, name) -> secret
    ebs_source_key: str = ""  # the key of the cluster's EBS volumes (the StorageClass's; not the program's)

    @property
    def partition(self) -> str:
        return self.principal.split(":")[1]

    @property
    def account(self) -> str:
        return self.principal.split(":")[4]


@dataclass(frozen=True)
class Need:
    """One authorization a call needs. `owner` names the resource whose own policy also applies."""

    call: AwsCall
    request: Request
    owner: tuple[str, str] | None  # ("bucket", name) | ("secret", arn) | ("key", arn) | None
    why: str


def _base(world: World, call: AwsCall, region: str | None = None) -> dict:
    return {
        "aws:PrincipalArn": world.principal,
        "aws:PrincipalAccount": world.account,
        "aws:SecureTransport": "true",  # the SDK speaks HTTPS to AWS (moto's HTTP is the test's stand-in)
        "aws:RequestedRegion": region or call.region,
    }


def _tags_context(tags: dict[str, str], prefix: str) -> dict:
    return {f"{prefix}/{k}": v for k, v in tags.items()}


def snapshot_tags(calls: Iterable[AwsCall]) -> dict[str, dict[str, str]]:
    """snapshot id -> tags, from what the calls saw (DescribeSnapshots answers) and set (CopySnapshot)."""
    found: dict[str, dict[str, str]] = {}
    for call in calls:
        if call.operation == "DescribeSnapshots" and call.response and not call.error_code:
            for snapshot in call.response.get("Snapshots", []):
                found[snapshot["SnapshotId"]] = {t["Key"]: t["Value"] for t in snapshot.get("Tags") or []}
        if call.operation == "CopySnapshot" and call.response and not call.error_code:
            found[call.response["SnapshotId"]] = _request_tags(call)
    return found


def _request_tags(call: AwsCall) -> dict[str, str]:
    return {t["Key"]: t["Value"] for spec in call.params.get("TagSpecifications", []) for t in spec.get("Tags", [])}


class Mapper:
    def __init__(self, world: World, calls: list[AwsCall]):
        self.world = world
        self.calls = calls
        self.tags = snapshot_tags(calls)

    def needs(self) -> list[Need]:
        return [need for call in self.calls for need in self.of(call)]

    def of(self, call: AwsCall) -> list[Need]:
        handler = getattr(self, f"_{call.service}_{call.operation}", None)
        if handler is None:
            raise UnmappedCall(
                f"{call.service}:{call.operation} is not mapped to IAM actions (tests/jobs/aws_authz.py)"
            )
        return handler(call)

    # --- helpers ----------------------------------------------------------------------------------------
    def _need(self, call, action, resource, owner, why, region=None, **context) -> Need:
        merged = {**_base(self.world, call, region), **context}
        return Need(call, Request(self.world.principal, action, resource, merged), owner, why)

    def _object(self, bucket: str, key: str) -> str:
        return f"arn:{self.world.partition}:s3:::{bucket}/{key}"

    def _bucket(self, bucket: str) -> str:
        return f"arn:{self.world.partition}:s3:::{bucket}"

    def _s3_kms(self, call: AwsCall, action: str, why: str) -> Need:
        bucket = call.params["Bucket"]
        key = self.world.bucket_keys[bucket]
        return self._need(
            call,
            action,
            key,
            ("key", key),
            why,
            **{
                "kms:ViaService": f"s3.{call.region}.amazonaws.com",
                "kms:CallerAccount": self.world.account,
                "kms:EncryptionContext:aws:s3:arn": self._bucket(bucket),  # bucket keys: the bucket's ARN
            },
        )

    def _put(self, call: AwsCall, *, creates: bool, why: str) -> Need:
        params = call.params
        context: dict = {"s3:ObjectCreationOperation": "true" if creates else "false"}
        if params.get("IfNoneMatch") is not None:
            context["s3:if-none-match"] = params["IfNoneMatch"]
        if params.get("ServerSideEncryption"):
            context["s3:x-amz-server-side-encryption"] = params["ServerSideEncryption"]
        if params.get("SSEKMSKeyId"):
            context["s3:x-amz-server-side-encryption-aws-kms-key-id"] = params["SSEKMSKeyId"]
        return self._need(
            call,
            "s3:PutObject",
            self._object(params["Bucket"], params["Key"]),
            ("bucket", params["Bucket"]),
            why,
            **context,
        )

    # --- S3 ---------------------------------------------------------------------------------------------
    def _s3_HeadObject(self, call: AwsCall) -> list[Need]:
        p = call.params
        needs = [
            self._need(call, "s3:GetObject", self._object(p["Bucket"], p["Key"]), ("bucket", p["Bucket"]), "HeadObject")
        ]
        if call.error_code in ("404", "NoSuchKey", "NotFound"):
            needs.append(
                self._need(
                    call,
                    "s3:ListBucket",
                    self._bucket(p["Bucket"]),
                    ("bucket", p["Bucket"]),
                    "HeadObject of a missing key answers 404, not 403, only with ListBucket",
                )
            )
        return needs

    def _s3_GetObject(self, call: AwsCall) -> list[Need]:
        p = call.params
        needs = [
            self._need(call, "s3:GetObject", self._object(p["Bucket"], p["Key"]), ("bucket", p["Bucket"]), "GetObject")
        ]
        if not call.error_code:
            needs.append(self._s3_kms(call, "kms:Decrypt", "reading an SSE-KMS object"))
        return needs

    def _s3_ListObjectsV2(self, call: AwsCall) -> list[Need]:
        p = call.params
        context = {"s3:prefix": p["Prefix"]} if "Prefix" in p else {}
        if "Delimiter" in p:
            context["s3:delimiter"] = p["Delimiter"]
        return [
            self._need(
                call, "s3:ListBucket", self._bucket(p["Bucket"]), ("bucket", p["Bucket"]), "ListObjectsV2", **context
            )
        ]

    def _s3_PutObject(self, call: AwsCall) -> list[Need]:
        return [
            self._put(call, creates=True, why="PutObject"),
            self._s3_kms(call, "kms:GenerateDataKey", "a new SSE-KMS object"),
        ]

    def _s3_CreateMultipartUpload(self, call: AwsCall) -> list[Need]:
        return [
            self._put(call, creates=False, why="CreateMultipartUpload"),
            self._s3_kms(call, "kms:GenerateDataKey", "an SSE-KMS multipart upload"),
        ]

    def _s3_UploadPart(self, call: AwsCall) -> list[Need]:
        return [
            self._put(call, creates=False, why="UploadPart"),
            self._s3_kms(call, "kms:Decrypt", "adding a part to an SSE-KMS multipart upload"),
        ]

    def _s3_UploadPartCopy(self, call: AwsCall) -> list[Need]:
        source = call.params["CopySource"]
        return [
            self._put(call, creates=False, why="UploadPartCopy"),
            self._need(
                call,
                "s3:GetObject",
                self._object(source["Bucket"], source["Key"]),
                ("bucket", source["Bucket"]),
                "UploadPartCopy reads its source",
            ),
            self._s3_kms(call, "kms:Decrypt", "copying from an SSE-KMS object into an SSE-KMS upload"),
        ]

    def _s3_CompleteMultipartUpload(self, call: AwsCall) -> list[Need]:
        return [self._put(call, creates=True, why="CompleteMultipartUpload")]

    def _s3_AbortMultipartUpload(self, call: AwsCall) -> list[Need]:
        p = call.params
        return [
            self._need(
                call,
                "s3:AbortMultipartUpload",
                self._object(p["Bucket"], p["Key"]),
                ("bucket", p["Bucket"]),
                "AbortMultipartUpload",
            )
        ]

    # --- Secrets Manager ----------------------------------------------------------------------------------
    def _secretsmanager_PutSecretValue(self, call: AwsCall) -> list[Need]:
        secret_id = call.params["SecretId"]
        secret = self.world.secrets.get((call.region, secret_id)) or next(
            (s for s in self.world.secrets.values() if s.arn == secret_id), None
        )
        if secret is None:
            raise UnmappedCall(f"PutSecretValue on {secret_id!r} in {call.region}: not a secret of the plan")
        version = call.params.get("ClientRequestToken", "")

        def kms(action, key, arn, region, why):
            return self._need(
                call,
                action,
                key,
                ("key", key),
                why,
                region=region,
                **{
                    "kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
                    "kms:CallerAccount": self.world.account,
                    "kms:EncryptionContext:SecretARN": arn,
                    "kms:EncryptionContext:SecretVersionId": version,
                },
            )

        needs = [
            self._need(
                call,
                "secretsmanager:PutSecretValue",
                secret.arn,
                ("secret", secret.arn),
                "PutSecretValue",
                **{"secretsmanager:SecretId": secret.arn},
            ),
            kms("kms:GenerateDataKey", secret.key, secret.arn, call.region, "encrypting the new version"),
        ]
        for region, arn, key in secret.replicas:
            needs.append(kms("kms:Decrypt", secret.key, secret.arn, call.region, f"replicating to {region}"))
            needs.append(kms("kms:Encrypt", key, arn, region, f"the replica in {region}"))
        return needs

    # --- EC2 -------------------------------------------------------------------------------------------------
    def _snapshot(self, region: str, snapshot_id: str) -> str:
        return f"arn:{self.world.partition}:ec2:{region}::snapshot/{snapshot_id}"

    def _ec2_DescribeSnapshots(self, call: AwsCall) -> list[Need]:
        return [self._need(call, "ec2:DescribeSnapshots", "*", None, "DescribeSnapshots (no resource-level ARN)")]

    def _ec2_CopySnapshot(self, call: AwsCall) -> list[Need]:
        p = call.params
        source_region, source_id = p["SourceRegion"], p["SourceSnapshotId"]
        new = (call.response or {}).get("SnapshotId", "*") if not call.error_code else "*"
        tags = _request_tags(call)
        request_tags = {**_tags_context(tags, "aws:RequestTag"), "aws:TagKeys": sorted(tags)}
        needs = [
            self._need(
                call,
                "ec2:CopySnapshot",
                self._snapshot(source_region, source_id),
                None,
                "CopySnapshot reads the source",
                region=source_region,
                **_tags_context(self.tags.get(source_id, {}), "aws:ResourceTag"),
                **{"ec2:Encrypted": "true" if p.get("Encrypted") else "false"},
            ),
            self._need(
                call,
                "ec2:CopySnapshot",
                self._snapshot(call.region, new),
                None,
                "CopySnapshot creates the copy",
                **request_tags,
            ),
        ]
        if tags:
            needs.append(
                self._need(
                    call,
                    "ec2:CreateTags",
                    self._snapshot(call.region, new),
                    None,
                    "the copy's TagSpecifications",
                    **request_tags,
                    **{"ec2:CreateAction": "CopySnapshot"},
                )
            )
        if p.get("KmsKeyId"):
            grant = {"kms:GrantIsForAWSResource": "true"}
            for action, extra in (
                ("kms:DescribeKey", {}),
                ("kms:CreateGrant", grant),
                ("kms:GenerateDataKeyWithoutPlaintext", {}),
                ("kms:ReEncryptTo", {}),
            ):
                needs.append(self._ebs_kms(call, action, p["KmsKeyId"], call.region, "the copy's key", extra))
            for action, extra in (
                ("kms:DescribeKey", {}),
                ("kms:CreateGrant", grant),
                ("kms:ReEncryptFrom", {}),
                ("kms:Decrypt", {}),
            ):
                needs.append(
                    self._ebs_kms(call, action, self.world.ebs_source_key, source_region, "the source's key", extra)
                )
        return needs

    def _ebs_kms(self, call, action, key, region, why, extra) -> Need:
        return self._need(
            call,
            action,
            key,
            ("key", key),
            why,
            region=region,
            **{"kms:ViaService": f"ec2.{region}.amazonaws.com", "kms:CallerAccount": self.world.account, **extra},
        )

    def _ec2_DeleteSnapshot(self, call: AwsCall) -> list[Need]:
        snapshot_id = call.params["SnapshotId"]
        if snapshot_id not in self.tags:
            raise UnmappedCall(f"DeleteSnapshot {snapshot_id}: its tags were never seen by the job")
        return [
            self._need(
                call,
                "ec2:DeleteSnapshot",
                self._snapshot(call.region, snapshot_id),
                None,
                "DeleteSnapshot",
                **_tags_context(self.tags[snapshot_id], "aws:ResourceTag"),
            )
        ]
