"""Upload part sizing for large objects (jobs/destinations.py): pure properties of S3's growing part-size
schedule, the S3 writer against a recording client (parts follow the schedule, memory stays within one part
being filled, too many parts abort), the same against moto's S3 server, and the memory of a real upload (S3 on
moto, GCS on its emulator): the same for an object 4x larger."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import destinations
from jobs.destinations import (
    PART_SIZE,
    S3_MAX_OBJECT,
    S3_MAX_PART,
    S3_MAX_PARTS,
    S3_MIN_PART,
    DestinationError,
    GiB,
    MiB,
    S3Destination,
    TiB,
    open_destination,
    s3_part_size,
    s3_parts_for,
)


@given(size=st.integers(min_value=0, max_value=S3_MAX_OBJECT),
       base=st.one_of(st.just(PART_SIZE), st.integers(min_value=S3_MIN_PART, max_value=512 * MiB)))
def test_any_object_up_to_5_tib_fits_s3_limits(size, base):
    parts = s3_parts_for(size, base)
    assert sum(parts) == size
    assert len(parts) <= S3_MAX_PARTS
    assert all(S3_MIN_PART <= p <= S3_MAX_PART for p in parts[:-1])  # the last part may be shorter
    assert all(0 < p <= S3_MAX_PART for p in parts)
    if base == PART_SIZE:
        # memory: a writer holds at most three parts; objects up to 125 GiB never hold more than 64 MiB ones
        assert max(parts, default=0) <= (PART_SIZE if size <= 125 * GiB else 2 * GiB)


@given(number=st.integers(min_value=1, max_value=S3_MAX_PARTS + 5),
       base=st.one_of(st.just(PART_SIZE), st.integers(min_value=S3_MIN_PART, max_value=S3_MAX_PART)))
def test_the_schedule_never_shrinks_and_stays_within_limits(number, base):
    assert S3_MIN_PART <= s3_part_size(number, base) <= S3_MAX_PART
    assert s3_part_size(number, base) <= s3_part_size(number + 1, base)


def test_5_tib_figures():
    assert [s3_part_size(n) // MiB for n in (1, 2000, 2001, 4001, 6001, 8001, 10_000)] == [
        64, 64, 128, 256, 512, 1662, 1662]
    parts = s3_parts_for(5 * TiB)
    assert len(parts) == S3_MAX_PARTS and max(parts) == 1662 * MiB
    assert len(s3_parts_for(125 * GiB)) == 2000
    assert PART_SIZE % (256 * 1024) == 0  # GCS resumable chunks are multiples of 256 KiB
    with pytest.raises(ValueError):
        s3_part_size(0)


class _Missing(Exception):
    response = {"Error": {"Code": "404"}}


class RecordingS3:
    """The S3 calls the writer makes, recorded; each part's size and the writer's buffer at that moment."""

    def __init__(self):
        self.parts: list[int] = []
        self.aborted = 0
        self.completed = 0
        self.writer = None
        self.buffered: list[int] = []

    def head_object(self, **kwargs):
        raise _Missing()

    def create_multipart_upload(self, **kwargs):
        return {"UploadId": "u1"}

    def upload_part(self, *, Body, PartNumber, **kwargs):
        self.parts.append(len(Body))
        digest = hashlib.sha256(Body).hexdigest()
        return {"ETag": f'"{digest}"', "ChecksumSHA256": digest}

    def complete_multipart_upload(self, **kwargs):
        self.completed += 1

    def abort_multipart_upload(self, **kwargs):
        self.aborted += 1

    def put_object(self, **kwargs):
        self.parts.append(len(kwargs["Body"]))


def test_writer_sends_the_schedule_and_holds_one_part(monkeypatch):
    monkeypatch.setattr(destinations, "S3_PARTS_PER_STEP", 3)
    client = RecordingS3()
    dest = S3Destination("s3://bucket/p", client=client)
    out = dest.writer("obj")
    out.part_size = 64 * 1024
    chunk = os.urandom(10_000)
    total = 0
    peak = 0
    with out:
        while total < 5 * 1024 * 1024:
            out.write(chunk)
            total += len(chunk)
            peak = max(peak, len(out._buffer))
    expected = s3_parts_for(total, 64 * 1024)
    assert client.parts == expected and client.completed == 1
    assert len(set(expected)) > 3  # the part size did grow
    # what the writer itself buffers stays below the part it is filling (plus one write)
    assert peak < max(expected) + len(chunk)


def test_too_many_parts_fail_and_abort(monkeypatch):
    monkeypatch.setattr(destinations, "S3_MAX_PARTS", 4)
    client = RecordingS3()
    dest = S3Destination("s3://bucket/p", client=client)
    with pytest.raises(DestinationError, match="more than 4 parts"), dest.writer("obj") as out:
        out.part_size = 1000
        for _ in range(100):
            out.write(b"x" * 500)
    assert client.completed == 0 and client.aborted == 1


@pytest.mark.slow
def test_growing_parts_against_moto_and_abort_on_too_many(s3_bucket, monkeypatch):
    monkeypatch.setattr(destinations, "PART_SIZE", 5 * MiB)  # S3's smallest part
    monkeypatch.setattr(destinations, "S3_PARTS_PER_STEP", 2)
    dest = open_destination(f"s3://{s3_bucket}/p")
    sent = []
    real = dest.client.upload_part

    def recording(**kwargs):
        sent.append(len(kwargs["Body"]))
        return real(**kwargs)

    monkeypatch.setattr(dest.client, "upload_part", recording)
    payload = os.urandom(MiB) * 33  # parts 5, 5, 10, 10, 3 MiB
    with dest.writer("grown") as out:
        for start in range(0, len(payload), MiB):
            out.write(payload[start:start + MiB])
    assert sent == [5 * MiB, 5 * MiB, 10 * MiB, 10 * MiB, 3 * MiB]
    assert dest.read_bytes("grown") == payload

    monkeypatch.setattr(destinations, "S3_MAX_PARTS", 2)
    with pytest.raises(DestinationError, match="more than 2 parts"), dest.writer("too-many") as out:
        for start in range(0, len(payload), MiB):
            out.write(payload[start:start + MiB])
    assert dest.size("too-many") is None
    assert dest.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def _streamed_peak(dest, key: str, total: int, chunk: int = 256 * 1024) -> int:
    """Python's peak allocation while streaming `total` bytes into a new object (the writer, the uploader thread
    and the SDK included)."""
    import tracemalloc

    block = os.urandom(chunk)
    tracemalloc.start()
    try:
        with dest.writer(key) as out:
            for _ in range(total // chunk):
                out.write(block)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_memory_is_bounded_by_the_parts_not_the_object(store, request, monkeypatch):
    part = 5 * MiB  # S3's smallest part; a multiple of 256 KiB for GCS
    monkeypatch.setattr(destinations, "PART_SIZE", part)
    bucket = request.getfixturevalue("s3_bucket" if store == "s3" else "gcs_bucket")
    dest = open_destination(f"{'s3' if store == 's3' else 'gs'}://{bucket}/p")
    small, large = _streamed_peak(dest, "small", 4 * part), _streamed_peak(dest, "large", 16 * part)
    assert large <= 6 * part, f"{large / MiB:.1f} MiB for 5 MiB parts"
    assert large <= small + part, f"{store}: {small / MiB:.1f} MiB for 20 MiB, {large / MiB:.1f} MiB for 80 MiB"
