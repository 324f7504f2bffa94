"""Where identities dumps are kept: add-only secret stores, chosen by URL.

- `gcpsm://projects/P/secrets/S`: a new version of a GCP Secret Manager secret (google-cloud-secret-manager,
  REST transport; credentials from the environment: Workload Identity in the cluster). With env
  `SECRET_MANAGER_EMULATOR_HOST=http://host:port` the client talks to that endpoint with anonymous
  credentials (the tests' fake; no official emulator exists).
- `awssm://REGION/NAME`: a new version of an AWS Secrets Manager secret (boto3; honours `AWS_ENDPOINT_URL`,
  credentials from IRSA / the environment).
- `file:///dir`: a directory of versions `00000001.json`, `00000002.json`, ... (local runs and tests).

Every store only ADDS: the job's identity may not read, disable or destroy versions (least privilege), so
nothing here reads a stored version back. Errors are raised as `SecretStoreError` whose message names the
store and the failure, never the payload.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

EMULATOR_ENV = "SECRET_MANAGER_EMULATOR_HOST"
# Both Secret Manager (64 KiB) and AWS Secrets Manager (65,536 bytes) cap one secret value at this size.
MAX_PAYLOAD_BYTES = 65536

_GCPSM = re.compile(r"^gcpsm://projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/]+)/?$")
_AWSSM = re.compile(r"^awssm://(?P<region>[a-z0-9-]+)/(?P<name>[A-Za-z0-9/_+=.@-]+)$")


class SecretStoreError(Exception):
    """Adding a version failed. `transient` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class SecretStore(Protocol):
    url: str

    def add_version(self, payload: bytes) -> str:
        """Store `payload` as a new version; return the version's name (not secret)."""
        ...


def open_store(url: str) -> SecretStore:
    if url.startswith("gcpsm://"):
        match = _GCPSM.match(url)
        if not match:
            raise ValueError(f"{url!r}: expected gcpsm://projects/PROJECT/secrets/SECRET")
        return GcpSecretManagerStore(url, match["project"], match["secret"])
    if url.startswith("awssm://"):
        match = _AWSSM.match(url)
        if not match:
            raise ValueError(f"{url!r}: expected awssm://REGION/SECRET_NAME")
        return AwsSecretsManagerStore(url, match["region"], match["name"])
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise ValueError(f"{url!r}: expected file:///absolute/directory")
        return FileStore(url, Path(unquote(parsed.path)))
    raise ValueError(f"{url!r}: the secret must be gcpsm://..., awssm://... or file:///...")


def _check_size(payload: bytes, url: str) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SecretStoreError(
            f"{url}: the dump is {len(payload)} bytes, above the {MAX_PAYLOAD_BYTES}-byte limit of a secret version"
        )


def _with_retries(call, *, attempts: int = 4, wait: float = 1.0):
    """Retry only failures the store itself reports as transient (unavailable, throttled, network)."""
    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, SecretStoreError) and e.transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=wait, max=20, jitter=wait),
        reraise=True,
    )
    return retrying(call)


@dataclass
class GcpSecretManagerStore:
    url: str
    project: str
    secret: str
    retry_wait: float = 1.0

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/secrets/{self.secret}"

    def _client(self):
        from google.cloud import secretmanager

        emulator = os.environ.get(EMULATOR_ENV)
        if emulator:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            if "://" not in emulator:
                emulator = "http://" + emulator
            return secretmanager.SecretManagerServiceClient(
                credentials=AnonymousCredentials(),
                transport="rest",
                client_options=ClientOptions(api_endpoint=emulator),
            )
        # REST in production too: the path the tests exercise, and no gRPC channel to keep alive for one call.
        return secretmanager.SecretManagerServiceClient(transport="rest")

    def add_version(self, payload: bytes) -> str:
        import google_crc32c
        from google.api_core import exceptions as gexc

        _check_size(payload, self.url)
        client = self._client()
        request = {
            "parent": self.parent,
            # The server verifies the checksum: a payload damaged on the way is refused, not stored.
            "payload": {"data": payload, "data_crc32c": google_crc32c.value(payload)},
        }

        def add() -> str:
            try:
                return client.add_secret_version(request=request).name
            except (gexc.TooManyRequests, gexc.ServerError, gexc.DeadlineExceeded) as error:
                raise SecretStoreError(f"{self.url}: {_google_error(error)}", transient=True) from None
            except gexc.GoogleAPICallError as error:
                raise SecretStoreError(f"{self.url}: {_google_error(error)}") from None
            except Exception as error:  # transport failures (connection refused, TLS, DNS) from requests
                raise SecretStoreError(f"{self.url}: {type(error).__name__}: {error}", transient=True) from None

        return _with_retries(add, wait=self.retry_wait)


def _google_error(error) -> str:
    code = getattr(error, "code", None)
    return f"HTTP {int(code)} {type(error).__name__}: {error.message}" if code else f"{type(error).__name__}"


@dataclass
class AwsSecretsManagerStore:
    """The job's role may call `secretsmanager:PutSecretValue` on this one secret and nothing else (no Get, no
    Describe, no List): the only call here is PutSecretValue, by name, and the answer it returns is all it reads."""

    url: str
    region: str
    name: str
    retry_wait: float = 1.0

    def _client(self):
        import boto3

        # boto3 reads AWS_ENDPOINT_URL itself (moto in the tests); its standard retry mode covers throttling.
        return boto3.client("secretsmanager", region_name=self.region)

    def add_version(self, payload: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        _check_size(payload, self.url)
        client = self._client()
        # One token for every attempt: Secrets Manager takes it as the new version's id, so a retry after a lost
        # answer finds the version the first attempt made instead of adding a second one.
        token = str(uuid.uuid4())

        def put() -> str:
            try:
                # PutSecretValue makes the new version AWSCURRENT; the previous one stays as AWSPREVIOUS
                # (older unlabelled versions are removed by AWS after a while: the restore copy is the newest).
                response = client.put_secret_value(
                    SecretId=self.name, SecretString=payload.decode("utf-8"), ClientRequestToken=token
                )
            except ClientError as error:
                info = error.response.get("Error", {})
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                transient = bool(status and (status >= 500 or status == 429))
                raise SecretStoreError(
                    f"{self.url}: HTTP {status} {info.get('Code')}: {info.get('Message')}", transient=transient
                ) from None
            except BotoCoreError as error:
                raise SecretStoreError(f"{self.url}: {type(error).__name__}: {error}", transient=True) from None
            return f"{response['ARN']}:{response['VersionId']}"

        return _with_retries(put, wait=self.retry_wait)


@dataclass
class FileStore:
    url: str
    directory: Path

    def add_version(self, payload: bytes) -> str:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            existing = [int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit()]
            number = max(existing, default=0) + 1
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                while True:
                    target = self.directory / f"{number:08d}.json"
                    try:
                        os.link(tmp, target)  # never replaces: a concurrent writer takes the next number
                        break
                    except FileExistsError:
                        number += 1
            finally:
                os.unlink(tmp)
        except OSError as error:
            raise SecretStoreError(f"{self.url}: {type(error).__name__}: {error.strerror}") from None
        return str(target)
