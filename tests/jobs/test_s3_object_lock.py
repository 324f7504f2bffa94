"""s3:// against moto server on buckets shaped like the program's: create-only enforced by S3 itself, the checksum
Object Lock requires, promotion by server-side copy, locked versions that cannot be deleted.

What moto 5.2.5 enforces (measured with this suite): `If-None-Match: *` on PutObject and CompleteMultipartUpload
(412 PreconditionFailed); a checksum header on PutObject into a bucket with a default retention; the default
retention on objects created by PutObject. What it does not: checksum values (a wrong SHA-256 is stored), the
default retention on objects created by CompleteMultipartUpload (real S3 applies it to every new object
version), `If-None-Match` on CopyObject (the job does not use CopyObject). The first group is tested through the
server; the rest through the requests the job sends, recorded below."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from jobs import destinations
from jobs.destinations import ObjectExists, open_destination
from tests.jobs.conftest import LOCK_RETENTION_DAYS

pytestmark = pytest.mark.slow
MIB = 1024 * 1024


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def admin():
    """Another client of the same bucket: an operator, or a second writer racing the job."""
    import boto3

    return boto3.client("s3")


@pytest.fixture(params=["s3_bucket", "s3_locked_bucket"])
def bucket(request) -> str:
    return request.getfixturevalue(request.param)


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(destinations, "PART_SIZE", 5 * MIB)  # S3's smallest part


def uploads_in_progress(bucket: str) -> list:
    return admin().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


# --- create-only, enforced by the server -----------------------------------------------------------------------
@pytest.mark.parametrize("size", [100, 11 * MIB], ids=["put-object", "multipart"])
def test_a_name_taken_after_the_look_up_is_refused_by_s3(bucket, size, small_parts):
    dest = open_destination(f"s3://{bucket}/p")
    out = dest.writer("sets/k")  # the look-up finds the name free
    admin().put_object(Bucket=bucket, Key="p/sets/k", Body=b"theirs", ChecksumAlgorithm="SHA256")
    with pytest.raises(ObjectExists, match="already exists"), out:
        out.write(os.urandom(size))
    assert dest.read_bytes("sets/k") == b"theirs"
    assert uploads_in_progress(bucket) == [], "the refused multipart upload is aborted, not left billed"


def test_a_copy_onto_a_name_taken_after_the_look_up_is_refused_by_s3(bucket, monkeypatch):
    dest = open_destination(f"s3://{bucket}/p")
    dest.put_bytes("recent/a", b"source bytes")
    dest.put_bytes("historical/a", b"already promoted")
    real_size = dest.size
    monkeypatch.setattr(dest, "size", lambda key: None if key.startswith("historical/") else real_size(key))
    with pytest.raises(ObjectExists, match="historical/a already exists"):
        dest.copy("recent/a", "historical/a")
    assert dest.read_bytes("historical/a") == b"already promoted"
    assert uploads_in_progress(bucket) == []


def test_every_write_is_conditional_and_every_body_carries_a_checksum(s3_locked_bucket, small_parts):
    dest = open_destination(f"s3://{s3_locked_bucket}/p")
    sent: list[tuple[str, dict[str, str]]] = []

    def record(request, event_name, **_):
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((event_name.rsplit(".", 1)[-1], headers))

    dest.client.meta.events.register("before-send.s3.*", record)
    dest.put_bytes("small", b"x" * 1000)
    payload = os.urandom(12 * MIB)
    with dest.writer("big") as out:
        out.write(payload)
    dest.copy("big", "copied")

    operations = [name for name, _ in sent]
    assert operations.count("PutObject") == 1 and operations.count("UploadPart") == 3
    assert operations.count("CompleteMultipartUpload") == 2 and operations.count("UploadPartCopy") == 1
    for name, headers in sent:
        if name in ("PutObject", "CompleteMultipartUpload"):
            assert headers.get("if-none-match") == "*", name
        if name in ("PutObject", "UploadPart"):
            assert headers.get("x-amz-sdk-checksum-algorithm") == "SHA256", name
            assert "x-amz-checksum-sha256" in headers, name
    part_sums = [h["x-amz-checksum-sha256"] for n, h in sent if n == "UploadPart"]
    assert part_sums == [b64_sha256(payload[i : i + 5 * MIB]) for i in range(0, len(payload), 5 * MIB)]


# --- Object Lock ---------------------------------------------------------------------------------------------
def test_checksums_are_sent_even_where_the_sdk_would_not(s3_locked_bucket, monkeypatch, small_parts):
    """boto3 adds a checksum by default, but an operator may turn that off (when_required): Object Lock would then
    refuse every upload. The job asks for SHA-256 explicitly."""
    import boto3

    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    with pytest.raises(ClientError, match="MissingUploadObjectWithObjectLockHeaders"):
        boto3.client("s3").put_object(Bucket=s3_locked_bucket, Key="bare", Body=b"x")
    dest = open_destination(f"s3://{s3_locked_bucket}/p")
    dest.put_bytes("manifest.json", b"{}")
    with dest.writer("dump") as out:
        out.write(os.urandom(6 * MIB))
    assert dest.size("manifest.json") == 2 and dest.size("dump") == 6 * MIB


def test_objects_are_stored_with_their_checksum_and_the_default_retention(s3_locked_bucket, small_parts):
    dest = open_destination(f"s3://{s3_locked_bucket}/p")
    dest.put_bytes("recent/0/set/manifest.json", b'{"complete": true}')
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail"]
    with dest.writer("recent/0/set/apps.dump") as out:
        for part in parts:
            out.write(part)

    head = admin().head_object(Bucket=s3_locked_bucket, Key="p/recent/0/set/manifest.json", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64_sha256(b'{"complete": true}')
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert until > datetime.now(UTC) + timedelta(days=LOCK_RETENTION_DAYS) - timedelta(hours=1)

    head = admin().head_object(Bucket=s3_locked_bucket, Key="p/recent/0/set/apps.dump", ChecksumMode="ENABLED")
    # A multipart object's checksum is the SHA-256 of its parts' SHA-256s ("composite"), checked by S3 at completion.
    composite = b64_sha256(b"".join(hashlib.sha256(p).digest() for p in parts))
    assert head["ChecksumSHA256"].split("-")[0] == composite


def test_a_locked_object_cannot_be_deleted(s3_locked_bucket):
    dest = open_destination(f"s3://{s3_locked_bucket}/p")
    dest.put_bytes("historical/0/set/manifest.json", b"kept for audits")
    key = "p/historical/0/set/manifest.json"
    version = admin().head_object(Bucket=s3_locked_bucket, Key=key)["VersionId"]
    for extra in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError, match="AccessDenied"):
            admin().delete_object(Bucket=s3_locked_bucket, Key=key, VersionId=version, **extra)
    # A delete without a version only hides the object behind a delete marker; the locked version stays.
    admin().delete_object(Bucket=s3_locked_bucket, Key=key)
    assert dest.size("historical/0/set/manifest.json") is None
    kept = admin().get_object(Bucket=s3_locked_bucket, Key=key, VersionId=version)["Body"].read()
    assert kept == b"kept for audits"


def test_promotion_copies_server_side_under_object_lock(s3_locked_bucket, small_parts):
    """Promotion to historical/ is a multipart copy (UploadPartCopy; no bytes through the job) completed with
    If-None-Match: a second promotion of the same object is refused, the first copy stays."""
    dest = open_destination(f"s3://{s3_locked_bucket}/p")
    payload = os.urandom(7 * MIB)
    with dest.writer("recent/1/s/participant.dump") as out:
        out.write(payload)
    dest.put_bytes("recent/1/s/manifest.json", b'{"set": "s"}')
    for key in ("participant.dump", "manifest.json"):
        dest.copy(f"recent/1/s/{key}", f"historical/1/s/{key}")
    assert dest.read_bytes("historical/1/s/participant.dump") == payload
    assert dest.read_bytes("historical/1/s/manifest.json") == b'{"set": "s"}'
    with pytest.raises(ObjectExists):
        dest.copy("recent/1/s/manifest.json", "historical/1/s/manifest.json")
    assert uploads_in_progress(s3_locked_bucket) == []
