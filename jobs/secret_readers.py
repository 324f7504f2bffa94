"""Read-only access to the identities secret stores (the same URLs as jobs/secret_stores.py).

The writer identity of dump-identities can only add versions; reading is for a separate reader identity: the
replication check (`check-replica --secret-src/--secret-dst`) and the failover script (restore the identities).
Payloads are returned to the caller only: nothing here logs them, and errors name the store and the version,
never the content.

- `gcpsm://projects/P/secrets/S`: `versions.list` (enabled versions) and `versions.access`, whose CRC32C the
  reader checks (a payload damaged on the way is an error, not a silent mismatch).
- `awssm://REGION/NAME`: `ListSecretVersionIds` (deprecated, unlabelled versions included: they are still
  readable until AWS removes them) and `GetSecretValue` by version id.
- `file:///dir`: the numbered `NNNNNNNN.json` files that FileStore writes; a version's time is its mtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from jobs.secret_stores import (
    AwsSecretsManagerStore,
    FileStore,
    GcpSecretManagerStore,
    SecretStoreError,
    open_store,
)


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret: `name` is what the store calls it (not secret); `created_at` is UTC."""

    name: str
    created_at: datetime


class SecretReader(Protocol):
    url: str

    def versions(self) -> list[SecretVersion]:
        """Every readable version, newest first."""
        ...

    def read(self, version: SecretVersion) -> bytes:
        """The payload of one version."""
        ...


def open_reader(url: str) -> SecretReader:
    """A reader for a secret URL; the URL forms (and their errors) are those of `open_store`."""
    store = open_store(url)
    if isinstance(store, GcpSecretManagerStore):
        return GcpSecretReader(store)
    if isinstance(store, AwsSecretsManagerStore):
        return AwsSecretReader(store)
    return FileSecretReader(store)


def newest(reader: SecretReader) -> tuple[SecretVersion, bytes]:
    """The newest version and its payload; a store without any version is an error."""
    versions = reader.versions()
    if not versions:
        raise SecretStoreError(f"{reader.url}: the secret has no readable version")
    return versions[0], reader.read(versions[0])


def _newest_first(versions: list[SecretVersion]) -> list[SecretVersion]:
    return sorted(versions, key=lambda v: (v.created_at, v.name), reverse=True)


class GcpSecretReader:
    def __init__(self, store: GcpSecretManagerStore):
        self.url = store.url
        self._store = store

    def _call(self, what: str, call):
        from google.api_core import exceptions as gexc

        try:
            return call()
        except gexc.GoogleAPICallError as error:
            code = getattr(error, "code", None)
            status = f"HTTP {int(code)} " if code else ""
            raise SecretStoreError(f"{self.url}: {what}: {status}{type(error).__name__}: {error.message}") from None
        except Exception as error:  # transport failures from requests
            raise SecretStoreError(f"{self.url}: {what}: {type(error).__name__}", transient=True) from None

    def versions(self) -> list[SecretVersion]:
        client = self._store._client()
        request = {"parent": self._store.parent, "filter": "state:ENABLED"}
        listed = self._call("listing versions", lambda: list(client.list_secret_versions(request=request)))
        return _newest_first([SecretVersion(v.name, v.create_time.astimezone(UTC)) for v in listed])

    def read(self, version: SecretVersion) -> bytes:
        import google_crc32c

        client = self._store._client()
        response = self._call(
            f"reading {version.name}", lambda: client.access_secret_version(request={"name": version.name})
        )
        data = response.payload.data
        if response.payload.data_crc32c and google_crc32c.value(data) != response.payload.data_crc32c:
            raise SecretStoreError(f"{self.url}: {version.name} arrived with a wrong CRC32C (damaged in transit)")
        return data


class AwsSecretReader:
    def __init__(self, store: AwsSecretsManagerStore):
        self.url = store.url
        self._store = store
        self._client_cache = None

    def _client(self):
        if self._client_cache is None:
            import boto3

            self._client_cache = boto3.client("secretsmanager", region_name=self._store.region)
        return self._client_cache

    def _call(self, what: str, call):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as error:
            info = error.response.get("Error", {})
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise SecretStoreError(
                f"{self.url}: {what}: HTTP {status} {info.get('Code')}: {info.get('Message')}"
            ) from None
        except BotoCoreError as error:
            raise SecretStoreError(f"{self.url}: {what}: {type(error).__name__}", transient=True) from None

    def versions(self) -> list[SecretVersion]:
        client = self._client()

        def listing() -> list[dict]:
            found, token = [], None
            while True:
                kwargs = {"SecretId": self._store.name, "IncludeDeprecated": True, "MaxResults": 100}
                if token:
                    kwargs["NextToken"] = token
                page = client.list_secret_version_ids(**kwargs)
                found += page.get("Versions", [])
                token = page.get("NextToken")
                if not token:
                    return found

        listed = self._call("listing versions", listing)
        # AWSCURRENT is the newest by definition (what a restore gets), AWSPREVIOUS the one before; the
        # unlabelled rest by creation time (CreatedDate alone can tie: it has one-second resolution on moto).
        rank = {"AWSCURRENT": 0, "AWSPREVIOUS": 1}

        def order(v: dict) -> tuple[int, float]:
            stages = v.get("VersionStages") or []
            return (min((rank[s] for s in stages if s in rank), default=2), -v["CreatedDate"].timestamp())

        return [SecretVersion(v["VersionId"], v["CreatedDate"].astimezone(UTC)) for v in sorted(listed, key=order)]

    def read(self, version: SecretVersion) -> bytes:
        response = self._call(
            f"reading version {version.name}",
            lambda: self._client().get_secret_value(SecretId=self._store.name, VersionId=version.name),
        )
        if "SecretBinary" in response:
            return bytes(response["SecretBinary"])
        return response["SecretString"].encode("utf-8")


class FileSecretReader:
    def __init__(self, store: FileStore):
        self.url = store.url
        self._directory = Path(store.directory)

    def versions(self) -> list[SecretVersion]:
        try:
            paths = [p for p in self._directory.glob("*.json") if p.stem.isdigit()]
            found = [SecretVersion(p.name, datetime.fromtimestamp(p.stat().st_mtime, UTC)) for p in paths]
        except OSError as error:
            raise SecretStoreError(f"{self.url}: listing versions: {type(error).__name__}: {error.strerror}") from None
        # The file numbers are the store's own order (FileStore never reuses one); mtimes can tie or be reset.
        return sorted(found, key=lambda v: int(Path(v.name).stem), reverse=True)

    def read(self, version: SecretVersion) -> bytes:
        path = self._directory / version.name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as stream:
                return stream.read()
        except OSError as error:
            raise SecretStoreError(
                f"{self.url}: reading {version.name}: {type(error).__name__}: {error.strerror}"
            ) from None
