"""The create-only object stores against real servers: file://, s3:// (moto server: a plain bucket and one with
Object Lock and SSE-KMS, as the program declares it), gs:// (GCS emulator)."""

from __future__ import annotations

import os

import pytest

from jobs import destinations
from jobs.destinations import ObjectExists, open_destination

pytestmark = pytest.mark.slow


@pytest.fixture(params=["file", "s3", "s3-locked", "gs"])
def dest(request, tmp_path):
    if request.param == "file":
        return open_destination(f"file://{tmp_path}/store")
    if request.param.startswith("s3"):
        bucket = request.getfixturevalue("s3_locked_bucket" if request.param == "s3-locked" else "s3_bucket")
        return open_destination(f"s3://{bucket}/some/prefix")
    bucket = request.getfixturevalue("gcs_bucket")
    return open_destination(f"gs://{bucket}/some/prefix")


def keys(dest, prefix=""):
    return sorted(info.key for info in dest.list(prefix))


def test_put_read_list_size_copy(dest):
    dest.put_bytes("a/b/one.json", b'{"x": 1}')
    dest.put_bytes("a/c/two", b"2" * 10)
    assert dest.read_bytes("a/b/one.json") == b'{"x": 1}'
    assert dest.size("a/c/two") == 10
    assert dest.size("a/missing") is None
    assert keys(dest) == ["a/b/one.json", "a/c/two"]
    assert keys(dest, "a/b/") == ["a/b/one.json"]
    dest.copy("a/c/two", "z/two")
    assert dest.read_bytes("z/two") == b"2" * 10
    with pytest.raises(FileNotFoundError):
        dest.read_bytes("nope")


def test_never_overwrites(dest):
    dest.put_bytes("k", b"first")
    with pytest.raises(ObjectExists):
        dest.put_bytes("k", b"second")
    dest.put_bytes("other", b"x")
    with pytest.raises(ObjectExists):
        dest.copy("other", "k")
    assert dest.read_bytes("k") == b"first"


def test_streamed_multipart_object_and_checksum(dest, monkeypatch):
    # S3's smallest part is 5 MiB; GCS chunks are multiples of 256 KiB.
    monkeypatch.setattr(destinations, "PART_SIZE", 5 * 1024 * 1024)
    payload = os.urandom(256 * 1024) * 48  # 12 MiB: three parts
    with dest.writer("big/object") as out:
        for start in range(0, len(payload), 1_000_000):
            out.write(payload[start : start + 1_000_000])
    import hashlib

    assert out.sha256 == hashlib.sha256(payload).hexdigest()
    assert out.size == len(payload) == dest.size("big/object")
    assert dest.read_bytes("big/object") == payload
    dest.copy("big/object", "copied/object")
    assert dest.read_bytes("copied/object") == payload


def test_interrupted_write_leaves_no_object(dest, monkeypatch):
    monkeypatch.setattr(destinations, "PART_SIZE", 5 * 1024 * 1024)
    with pytest.raises(RuntimeError), dest.writer("cut/object") as out:
        out.write(os.urandom(6 * 1024 * 1024))  # one part already sent
        raise RuntimeError("cut off")
    assert dest.size("cut/object") is None
    assert keys(dest) == []
    dest.put_bytes("cut/object", b"the name is still free")


@pytest.mark.parametrize("bucket_fixture", ["s3_bucket", "s3_locked_bucket"])
def test_s3_failed_part_aborts_multipart_upload(bucket_fixture, request, monkeypatch):
    s3_bucket = request.getfixturevalue(bucket_fixture)
    monkeypatch.setattr(destinations, "PART_SIZE", 5 * 1024 * 1024)
    dest = open_destination(f"s3://{s3_bucket}/p")
    real = dest.client.upload_part
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ConnectionError("connection reset")
        return real(**kwargs)

    monkeypatch.setattr(dest.client, "upload_part", flaky)
    with pytest.raises(ConnectionError), dest.writer("obj") as out:
        for _ in range(4):
            out.write(os.urandom(5 * 1024 * 1024))
    assert dest.size("obj") is None
    assert dest.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_gcs_failed_chunk_leaves_no_object(gcs_bucket, monkeypatch):
    monkeypatch.setattr(destinations, "PART_SIZE", 512 * 1024)
    dest = open_destination(f"gs://{gcs_bucket}/p")
    with dest.writer("obj") as out:
        out.write(b"x" * 10)
    writer = dest.writer("obj2")
    sent = []
    real = writer._blob_writer.write

    def flaky(data):
        sent.append(len(data))
        if len(sent) == 2:
            raise ConnectionError("connection reset")
        return real(data)

    writer._uploader._upload_part = flaky
    with pytest.raises(ConnectionError), writer:
        for _ in range(6):
            writer.write(os.urandom(512 * 1024))
    assert dest.size("obj2") is None
    assert keys(dest) == ["obj"]


def test_file_store_hides_partial_writes(tmp_path):
    dest = open_destination(f"file://{tmp_path}")
    out = dest.writer("x/y")
    out.write(b"half")
    assert keys(dest) == []  # the temp file is hidden until commit
    out.commit()
    assert keys(dest) == ["x/y"]
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["y"]


def test_open_destination_rejects_unknown_schemes():
    with pytest.raises(ValueError):
        open_destination("ftp://host/x")
