"""What a store can say about an object's content without anyone reading it: its own checksums.

The replication check compares these between the primary and the DR copy instead of re-reading every dump:

- GCS computes a CRC32C (and an MD5 for non-composite objects) of every object, whatever wrote it, and a copy
  (rewrite, Storage Transfer, dual-region replication) keeps the same content and so the same values; both come
  with the listing, so checking costs no extra request.
- S3 stores the flexible checksums an upload carried (SHA-256 for our writers; CRC64NVME by default since 2024;
  moto adds CRC32), and replication keeps them. A checksum of a multipart upload is a checksum of the parts'
  checksums ("COMPOSITE"): comparable only with another composite of the same parts, which replication
  preserves. A full-object SHA-256 is the manifest's sha256 itself, so the DR object is checked against the
  manifest directly. One HEAD per object. ETags are not used: they change when an object is copied.
- file:// has none: every comparison there re-reads (a local disk read, no retrieval fees).

`checksums(dest, key)` returns {token: value}; two objects have equal content when they share a token with
equal values. An empty dict means "the store cannot tell".
"""

from __future__ import annotations

import base64
from functools import singledispatch

from jobs.destinations import Destination, GcsDestination, S3Destination

SHA256_FULL_OBJECT = "s3:SHA256:FULL_OBJECT"
_S3_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


class ChecksumCache:
    """Per-store memo of listings, so GCS answers every object of a prefix from one list call."""

    def __init__(self, dest: Destination):
        self.dest = dest
        self._listed: dict[str, dict[str, dict[str, str]]] = {}

    def checksums(self, key: str, listing_prefix: str) -> dict[str, str]:
        return _checksums(self.dest, key, listing_prefix, self._listed)


def manifest_sha256_token(checksums: dict[str, str]) -> str | None:
    """The hex sha256 of the whole object when the store holds one (comparable with a manifest's sha256)."""
    value = checksums.get(SHA256_FULL_OBJECT)
    if value is None:
        return None
    return base64.b64decode(value).hex()


def common_tokens(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(set(a) & set(b))


@singledispatch
def _checksums(dest: Destination, key: str, listing_prefix: str, cache: dict) -> dict[str, str]:
    return {}  # file:// and any store without checksums of its own


@_checksums.register
def _(dest: GcsDestination, key: str, listing_prefix: str, cache: dict) -> dict[str, str]:
    if listing_prefix not in cache:
        strip = len(dest.prefix) + 1 if dest.prefix else 0
        listed = {}
        for blob in dest.client.list_blobs(dest.bucket, prefix=dest.name(listing_prefix)):
            sums = {}
            if blob.crc32c:
                sums["gcs:crc32c"] = blob.crc32c
            if blob.md5_hash:
                sums["gcs:md5"] = blob.md5_hash
            listed[blob.name[strip:]] = sums
        cache[listing_prefix] = listed
    return cache[listing_prefix].get(key, {})


@_checksums.register
def _(dest: S3Destination, key: str, listing_prefix: str, cache: dict) -> dict[str, str]:
    try:
        head = dest.client.head_object(Bucket=dest.bucket, Key=dest.name(key), ChecksumMode="ENABLED")
    except Exception as exc:
        code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            return {}
        raise
    multipart = "-" in head.get("ETag", "")
    declared = head.get("ChecksumType")
    sums = {}
    for algorithm in _S3_ALGORITHMS:
        value = head.get(f"Checksum{algorithm}")
        if not value:
            continue
        value, _, parts = value.partition("-")
        kind = declared or ("COMPOSITE" if parts or multipart else "FULL_OBJECT")
        sums[f"s3:{algorithm}:{kind}" + (f":{parts}" if parts else "")] = value
    return sums
