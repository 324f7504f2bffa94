"""Create-only object stores: `file:///path`, `gs://bucket/prefix`, `s3://bucket/prefix`.

The backup writer may add objects but never replace or delete one (in the cloud its identity has no such
permission; deletion is the bucket's lifecycle rules' job). Every store here enforces that itself too:

- an object becomes visible only whole: file:// writes a hidden temp file and hard-links it to its name
  (link(2) fails if the name exists); S3 sends one PutObject or a multipart upload (aborted on any error);
  GCS uses a resumable upload with `ifGenerationMatch=0`, cancelled on any error (a session that is never
  finalized creates no object);
- an existing name is never overwritten: the stores' own preconditions (S3 `If-None-Match: *` on PutObject and
  CompleteMultipartUpload, GCS `ifGenerationMatch=0`), plus a look-up first for stores or emulators that ignore
  them (the GCS emulator does);
- S3 uploads carry a SHA-256 checksum, which a bucket with Object Lock requires and S3 verifies.

Keys are relative to the URL's prefix and always use `/`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB

# The first upload part of an S3 multipart upload and every GCS resumable chunk (a multiple of 256 KiB, as GCS
# requires): big enough for throughput, small enough that the few parts a writer holds (see `_PartUploader`) fit
# comfortably in a job pod's memory.
PART_SIZE = 64 * MiB
READ_CHUNK = 4 * MiB

# S3's multipart limits: every part but the last 5 MiB..5 GiB, at most 10,000 parts, objects up to 5 TiB.
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT = 5 * TiB
# A dump's size is not known until it ends, so the part size grows as parts accumulate: `base` for the first
# 2,000 parts, then twice as large every 2,000 parts; the last 2,000 parts are as large as it takes for 10,000
# parts to hold 5 TiB. With the default 64 MiB: 64 MiB parts up to 125 GiB, 128 MiB up to 375 GiB, 256 MiB up to
# 875 GiB, 512 MiB up to 1.8 TiB, then 1.62 GiB parts up to 5 TiB. A writer holds at most three parts, so an
# object under 125 GiB (compressed) costs at most 192 MiB of memory, one under 875 GiB at most 768 MiB.
S3_PARTS_PER_STEP = 2_000
S3_GROWING_STEPS = 4


def s3_part_size(number: int, base: int = PART_SIZE) -> int:
    """The size of part `number` (1-based) of a streamed S3 upload (the last part may be shorter)."""
    if number < 1:
        raise ValueError(f"part number {number}: S3 numbers parts from 1")
    step = (number - 1) // S3_PARTS_PER_STEP
    if step < S3_GROWING_STEPS:
        return min(S3_MAX_PART, base << step)
    held = sum(min(S3_MAX_PART, base << k) for k in range(S3_GROWING_STEPS)) * S3_PARTS_PER_STEP
    left = S3_MAX_PARTS - S3_GROWING_STEPS * S3_PARTS_PER_STEP
    needed = -(-(S3_MAX_OBJECT - held) // left) if left > 0 else 0  # ceiling division
    needed = -(-needed // MiB) * MiB  # whole MiB
    return min(S3_MAX_PART, max(base << S3_GROWING_STEPS, needed))


def s3_parts_for(size: int, base: int = PART_SIZE) -> list[int]:
    """The part sizes a streamed upload of `size` bytes sends (pure; for tests and the docs' figures)."""
    parts: list[int] = []
    left = size
    while left > 0:
        part = min(left, s3_part_size(len(parts) + 1, base))
        parts.append(part)
        left -= part
    return parts


class DestinationError(Exception):
    """A store operation failed; the message names the object, never credentials."""


class ObjectExists(DestinationError):
    """A create-only write found the name already taken."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectWriter(ABC):
    """Streams one new object. Use as a context manager: a clean exit commits (the object appears whole), an
    exception aborts (nothing appears). `size` and `sha256` describe the bytes written."""

    def __init__(self, key: str):
        self.key = key
        self.size = 0
        self._hash = hashlib.sha256()
        self._done = False

    def write(self, data: bytes) -> int:
        if data:
            self._hash.update(data)
            self.size += len(data)
            self._write(data)
        return len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._commit()
        except BaseException:
            with contextlib.suppress(Exception):
                self._abort()
            raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._abort()

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            with contextlib.suppress(Exception):
                self.abort()

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


class Destination(ABC):
    """A prefix in an object store."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def child(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in parts if p)

    @abstractmethod
    def writer(self, key: str) -> ObjectWriter: ...

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with self.writer(key) as out:
            out.write(data)
        return ObjectInfo(key, len(data))

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; raises FileNotFoundError if absent."""

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size, or None if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with `prefix` (in-progress writes are never listed)."""

    @abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Create `dst` with the content of `src` (server-side where the store can); create-only."""

    def describe(self, key: str) -> str:
        return f"{self.url}/{key}"


# ------------------------------------------------------------------------------------------------- file://


class _FileWriter(ObjectWriter):
    def __init__(self, root: Path, key: str):
        super().__init__(key)
        self._final = root / key
        self._final.parent.mkdir(parents=True, exist_ok=True)
        if self._final.exists():
            raise ObjectExists(f"{self._final} already exists")
        self._temp = self._final.with_name(f".{self._final.name}.{secrets.token_hex(6)}.partial")
        self._fh = open(self._temp, "xb")  # noqa: SIM115 (closed in commit/abort)

    def _write(self, data: bytes) -> None:
        self._fh.write(data)

    def _commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        try:
            os.link(self._temp, self._final)
        except FileExistsError as exc:
            raise ObjectExists(f"{self._final} already exists") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
        _fsync_dir(self._final.parent)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileDestination(Destination):
    def __init__(self, url: str):
        super().__init__(url)
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url}: file URLs must be file:///absolute/path")
        self.root = Path(parsed.path)

    def writer(self, key: str) -> ObjectWriter:
        return _FileWriter(self.root, key)

    def open_read(self, key: str) -> BinaryIO:
        return open(self.root / key, "rb")

    def size(self, key: str) -> int | None:
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if not prefix or prefix.endswith("/") else (self.root / prefix).parent
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue  # temp files of writes in progress (or of writers that were killed)
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield ObjectInfo(key, path.stat().st_size)

    def copy(self, src: str, dst: str) -> None:
        source = self.root / src
        if not source.exists():
            raise FileNotFoundError(self.describe(src))
        target = self.root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)  # same bytes, no copy; objects are immutable, so sharing the inode is safe
        except FileExistsError as exc:
            raise ObjectExists(f"{target} already exists") from exc
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            with self.open_read(src) as stream, self.writer(dst) as out:
                while chunk := stream.read(READ_CHUNK):
                    out.write(chunk)


# ------------------------------------------------------------------------------------- background uploads


class _PartUploader:
    """Uploads parts in a background thread so compression and network overlap; at most `depth` parts wait in
    memory. The first error stops it and is re-raised to the writer. A writer thus holds at most three parts: the
    one it fills, one waiting and one being sent; parts are handed over, never copied."""

    def __init__(self, upload_part, depth: int = 1):
        self._upload_part = upload_part
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="part-uploader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._upload_part(*item)
                except BaseException as exc:  # handed to the writer thread
                    self._error = exc

    def submit(self, *item) -> None:
        self.raise_if_failed()
        self._queue.put(item)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.raise_if_failed()


# ----------------------------------------------------------------------------------------------------- S3

# A bucket with a default Object Lock retention refuses an upload that does not prove its body (Content-MD5 or a
# flexible checksum): every PutObject and UploadPart carries a SHA-256 that S3 verifies before storing the bytes.
# SHA-256 rather than CRC32C/CRC64NVME: botocore computes it with hashlib, the others need awscrt in the image.
S3_CHECKSUM = "SHA256"
# One UploadPartCopy copies at most 5 GiB.
S3_COPY_SPAN = 4 * 1024**3


def _s3_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _s3_create_error(exc: Exception, where: str) -> DestinationError | None:
    """What a refused create-only completion means: 412 the name is taken; 409 another conditional write of the
    same name was in flight (S3 asks to retry from the start; two writers of one key is a bug worth failing on)."""
    code = _s3_error_code(exc)
    if code == "PreconditionFailed":
        return ObjectExists(f"{where} already exists")
    if code == "ConditionalRequestConflict":
        return DestinationError(f"{where}: a concurrent write of the same name was in progress (S3 409); not written")
    return None


class _S3Writer(ObjectWriter):
    def __init__(self, dest: S3Destination, key: str):
        super().__init__(key)
        self._dest = dest
        self._name = dest.name(key)
        if dest.size(key) is not None:
            raise ObjectExists(f"{dest.describe(key)} already exists")
        self.part_size = PART_SIZE
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._uploader: _PartUploader | None = None

    def _write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= s3_part_size(len(self._parts) + 1, self.part_size):
            self._flush_part()

    def _flush_part(self) -> None:
        client = self._dest.client
        number = len(self._parts) + 1
        if number > S3_MAX_PARTS:
            raise DestinationError(f"{self._dest.describe(self.key)}: more than {S3_MAX_PARTS} parts "
                                   f"({self.size} bytes so far); S3 cannot store it in one object")
        if self._upload_id is None:
            self._upload_id = client.create_multipart_upload(
                Bucket=self._dest.bucket, Key=self._name, ChecksumAlgorithm=S3_CHECKSUM
            )["UploadId"]
            self._uploader = _PartUploader(self._send_part)
        self._parts.append({"PartNumber": number})
        # Hand the filled buffer over and keep only what overflowed it (less than one write): no copy of a part.
        body, size = self._buffer, s3_part_size(number, self.part_size)
        self._buffer = body[size:]
        del body[size:]
        self._uploader.submit(number, body)

    def _send_part(self, number: int, body: bytes) -> None:
        response = self._dest.client.upload_part(
            Bucket=self._dest.bucket,
            Key=self._name,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm=S3_CHECKSUM,
        )
        part = self._parts[number - 1]
        part["ETag"] = response["ETag"]
        # CompleteMultipartUpload must repeat each part's checksum: S3 then checks the whole object against them.
        part["ChecksumSHA256"] = response["ChecksumSHA256"]

    def _commit(self) -> None:
        client = self._dest.client
        # If-None-Match: * is the create-only guarantee (the look-up in __init__ only fails early): S3 refuses
        # to complete the write if any object of that name appeared meanwhile.
        try:
            if self._upload_id is None:
                client.put_object(
                    Bucket=self._dest.bucket,
                    Key=self._name,
                    Body=bytes(self._buffer),
                    IfNoneMatch="*",
                    ChecksumAlgorithm=S3_CHECKSUM,
                )
                return
            if self._buffer:
                self._flush_part()
            self._uploader.finish()
            client.complete_multipart_upload(
                Bucket=self._dest.bucket,
                Key=self._name,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
                IfNoneMatch="*",
            )
        except Exception as exc:
            refused = _s3_create_error(exc, self._dest.describe(self.key))
            if refused is not None:
                raise refused from exc
            raise

    def _abort(self) -> None:
        if self._uploader is not None:
            with contextlib.suppress(BaseException):
                self._uploader.finish()
        if self._upload_id is not None:
            # Without this, the parts stay invisible but billed (the bucket's lifecycle rule drops them later).
            self._dest.client.abort_multipart_upload(Bucket=self._dest.bucket, Key=self._name, UploadId=self._upload_id)


class S3Destination(Destination):
    """boto3 reads credentials and `AWS_ENDPOINT_URL` from the environment (IRSA in EKS). Objects are encrypted
    by the bucket's default (SSE-KMS) and retained by its default Object Lock retention: the writer sends
    neither, so it needs no permission to choose them."""

    def __init__(self, url: str, client=None):
        super().__init__(url)
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self, key)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.name(key))["Body"]
        except Exception as exc:
            if _s3_error_code(exc) in ("NoSuchKey", "404"):
                raise FileNotFoundError(self.describe(key)) from exc
            raise

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.name(key))["ContentLength"])
        except Exception as exc:
            if _s3_error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.name(prefix)):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][strip:], int(item["Size"]))

    def copy(self, src: str, dst: str) -> None:
        size = self.size(src)
        if size is None:
            raise FileNotFoundError(self.describe(src))
        if self.size(dst) is not None:
            raise ObjectExists(f"{self.describe(dst)} already exists")
        # A multipart copy (server-side, any size) completed with If-None-Match keeps the create-only rule. Not
        # CopyObject: it is limited to 5 GiB, and moto refuses it on a bucket with default retention (it asks for
        # a body checksum on a request without a body), so that path could not be tested against a server here.
        # No checksum algorithm on the upload: we send no bytes, S3 copies them from the stored object.
        name = self.name(dst)
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, max(size, 1), S3_COPY_SPAN), start=1):
                kwargs = {"CopySourceRange": f"bytes={start}-{min(size, start + S3_COPY_SPAN) - 1}"} if size else {}
                response = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": self.name(src)},
                    **kwargs,
                )
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            refused = _s3_create_error(exc, self.describe(dst)) if isinstance(exc, Exception) else None
            if refused is not None:
                raise refused from exc
            raise


# ---------------------------------------------------------------------------------------------------- GCS


class _GcsWriter(ObjectWriter):
    def __init__(self, dest: GcsDestination, key: str):
        super().__init__(key)
        self._dest = dest
        if dest.size(key) is not None:
            raise ObjectExists(f"{dest.describe(key)} already exists")
        blob = dest.bucket.blob(dest.name(key))
        # ifGenerationMatch=0: the service refuses to finalize if any live object has this name.
        self._blob_writer = blob.open("wb", chunk_size=PART_SIZE, if_generation_match=0, ignore_flush=True)
        self._buffer = bytearray()
        self._uploader = _PartUploader(self._blob_writer.write)

    def _write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_SIZE:
            # Handed over, not copied; the blob writer sends it in chunks of PART_SIZE and keeps the remainder.
            self._uploader.submit(self._buffer)
            self._buffer = bytearray()

    def _commit(self) -> None:
        from google.api_core import exceptions

        if self._buffer:
            self._uploader.submit(self._buffer)
        self._uploader.finish()
        try:
            self._blob_writer.close()
        except exceptions.PreconditionFailed as exc:
            raise ObjectExists(f"{self._dest.describe(self.key)} already exists") from exc

    def _abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._uploader.finish()
        # Cancels the resumable session and closes the buffer, so that garbage collection cannot finalize a
        # partial object (io.IOBase.__del__ would call close(), which uploads what is buffered).
        try:
            self._blob_writer.terminate()
        finally:
            self._blob_writer._buffer.close()


class GcsDestination(Destination):
    """google-cloud-storage reads credentials (Workload Identity in GKE) and `STORAGE_EMULATOR_HOST`."""

    def __init__(self, url: str, client=None):
        super().__init__(url)
        parsed = urlparse(url)
        self.prefix = parsed.path.strip("/")
        if client is None:
            from google.cloud import storage

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(
                    project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"), credentials=AnonymousCredentials()
                )
            else:
                client = storage.Client()
        self.client = client
        self.bucket = client.bucket(parsed.netloc)

    def name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(self, key: str) -> ObjectWriter:
        return _GcsWriter(self, key)

    def open_read(self, key: str) -> BinaryIO:
        from google.api_core import exceptions

        blob = self.bucket.blob(self.name(key))
        try:
            blob.reload()
        except exceptions.NotFound as exc:
            raise FileNotFoundError(self.describe(key)) from exc
        return blob.open("rb", chunk_size=PART_SIZE)

    def size(self, key: str) -> int | None:
        blob = self.bucket.get_blob(self.name(key))
        return None if blob is None else int(blob.size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        for blob in self.client.list_blobs(self.bucket, prefix=self.name(prefix)):
            yield ObjectInfo(blob.name[strip:], int(blob.size))

    def copy(self, src: str, dst: str) -> None:
        from google.api_core import exceptions

        source = self.bucket.blob(self.name(src))
        if self.size(src) is None:
            raise FileNotFoundError(self.describe(src))
        if self.size(dst) is not None:
            raise ObjectExists(f"{self.describe(dst)} already exists")
        target = self.bucket.blob(self.name(dst))
        token = None
        try:
            while True:  # rewrite is server-side and resumable; large objects take several calls
                token, _, _ = target.rewrite(source, token=token, if_generation_match=0)
                if token is None:
                    break
        except exceptions.PreconditionFailed as exc:
            raise ObjectExists(f"{self.describe(dst)} already exists") from exc


def open_destination(url: str) -> Destination:
    scheme = urlparse(url).scheme
    if scheme == "file":
        return FileDestination(url)
    if scheme == "s3":
        return S3Destination(url)
    if scheme == "gs":
        return GcsDestination(url)
    raise ValueError(f"{url}: destination must be file:///path, gs://bucket/prefix or s3://bucket/prefix")
