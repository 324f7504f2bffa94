"""Shared fixtures for the job tests: real PostgreSQL clusters, an S3 server (moto), a GCS emulator.

- `pg_factory` (session): call it `pg_factory("apps")` for a new running cluster; all are stopped at the end.
- `moto_url` (session): endpoint of a `moto_server` process; `aws_env` (function): points boto3 at it
  (AWS_ENDPOINT_URL, test credentials, region us-east-1); `s3_bucket` (function): a fresh plain bucket;
  `s3_locked_bucket` (function): a fresh bucket shaped like the program's (Object Lock with a default
  COMPLIANCE retention, hence versioning; SSE-KMS under a customer-managed key with bucket keys).
- `gcs_emulator_host` (session): a `gcp-storage-emulator` process; `gcs_bucket` (function): sets
  STORAGE_EMULATOR_HOST, creates a fresh bucket and returns its name.
- `pg_env` (function): PGPASSWORD for the test clusters.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.pgcluster import PASSWORD, PG_BIN, ClusterFactory, free_port

VENV_BIN = Path(sys.executable).parent


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def _server(args: list[str], port: int, what: str, tmp_path_factory):
    log = tmp_path_factory.mktemp(what) / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, what)
    except RuntimeError:
        proc.kill()
        pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
    return proc


def _tool(name: str) -> str:
    path = VENV_BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture(scope="session")
def pg_factory():
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    factory = ClusterFactory()
    yield factory
    factory.close()


@pytest.fixture
def pg_env(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return PASSWORD


@contextlib.contextmanager
def moto_server(tmp_path_factory, what: str = "moto"):
    """A `moto_server` process of its own; yields its endpoint URL."""
    port = free_port()
    proc = _server([_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, what, tmp_path_factory)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    with moto_server(tmp_path_factory) as url:
        yield url


AWS_TEST_REGION = "us-east-1"
LOCK_RETENTION_DAYS = 1


def point_boto3_at(url: str, monkeypatch, region: str = AWS_TEST_REGION) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_REGION", region)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws_env(moto_url, monkeypatch) -> str:
    point_boto3_at(moto_url, monkeypatch)
    return moto_url


@pytest.fixture
def s3_bucket(aws_env):
    import boto3

    name = f"test-{secrets.token_hex(6)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_locked_bucket(aws_env):
    import boto3

    s3 = boto3.client("s3")
    key_arn = boto3.client("kms").create_key(Description="backup bucket key")["KeyMetadata"]["Arn"]
    name = f"locked-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": LOCK_RETENTION_DAYS}},
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    return name


@pytest.fixture(scope="session")
def gcs_emulator_host(tmp_path_factory):
    port = free_port()
    proc = _server(
        [_tool("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        port,
        "gcs",
        tmp_path_factory,
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def gcs_bucket(gcs_emulator_host, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator_host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    name = f"test-{secrets.token_hex(6)}"
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(name)
    return name


def job_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m jobs` subprocesses: the current one (monkeypatched values included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(extra)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def jobs_cli():
    """Run `python -m jobs ...` as the pod does; returns the CompletedProcess (text, both streams captured)."""

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jobs", *args],
            cwd=REPO,
            env=env or job_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
