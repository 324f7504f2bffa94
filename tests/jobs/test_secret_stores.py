"""The add-only secret stores: file:// on disk, gcpsm:// against the local Secret Manager fake (the real
google client over REST), awssm:// against moto's server (the real boto3 client)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from jobs.identities import Options, run
from jobs.secret_stores import (
    EMULATOR_ENV,
    MAX_PAYLOAD_BYTES,
    AwsSecretsManagerStore,
    FileStore,
    GcpSecretManagerStore,
    SecretStoreError,
    open_store,
)
from tests.jobs.aws_calls import AwsCallRecorder
from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.fakes.secret_manager import FakeSecretManager
from tests.jobs.fakes.sv import FakeSvServer

PAYLOAD = json.dumps({"identities": {"note": "stand-in payload"}}).encode()


# --- URLs -----------------------------------------------------------------------------------------------
def test_urls_choose_the_store():
    gcp = open_store("gcpsm://projects/my-proj/secrets/sv-1-identities-dump")
    assert isinstance(gcp, GcpSecretManagerStore) and gcp.parent == "projects/my-proj/secrets/sv-1-identities-dump"
    aws = open_store("awssm://eu-west-1/sv-1/identities-dump")
    assert isinstance(aws, AwsSecretsManagerStore) and (aws.region, aws.name) == ("eu-west-1", "sv-1/identities-dump")
    local = open_store("file:///var/tmp/ids")
    assert isinstance(local, FileStore) and str(local.directory) == "/var/tmp/ids"


@pytest.mark.parametrize(
    "url",
    [
        "gcpsm://my-proj/sv-1",
        "gcpsm://projects/p/secrets/s/versions/3",
        "awssm://sv-1",
        "awssm:///name",
        "file://host/dir",
        "s3://bucket/x",
        "sv-1",
    ],
)
def test_bad_urls_are_refused(url):
    with pytest.raises(ValueError, match=r"expected|must be"):
        open_store(url)


# --- file:// -----------------------------------------------------------------------------------------------
def test_file_store_adds_numbered_private_versions_and_never_overwrites(tmp_path):
    directory = tmp_path / "ids"
    store = open_store(directory.as_uri())
    first = store.add_version(b"one")
    (directory / "00000003.json").write_bytes(b"written by someone else")
    second = store.add_version(b"two")
    assert [p.name for p in sorted(directory.iterdir())] == ["00000001.json", "00000003.json", "00000004.json"]
    assert (directory / "00000001.json").read_bytes() == b"one" and first.endswith("00000001.json")
    assert (directory / "00000003.json").read_bytes() == b"written by someone else"
    assert (directory / "00000004.json").read_bytes() == b"two" and second.endswith("00000004.json")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((directory / n).stat().st_mode) == 0o600 for n in ("00000001.json", "00000004.json"))


def test_file_store_error_is_reported_without_payload(tmp_path):
    (tmp_path / "blocker").write_text("a file where the directory should be")
    with pytest.raises(SecretStoreError) as raised:
        open_store((tmp_path / "blocker" / "ids").as_uri()).add_version(b"secret-bytes")
    assert "secret-bytes" not in str(raised.value)


# --- gcpsm:// -------------------------------------------------------------------------------------------------
@pytest.fixture
def secret_manager(monkeypatch):
    with FakeSecretManager() as fake:
        fake.create_secret("my-proj", "sv-1-identities-dump")
        monkeypatch.setenv(EMULATOR_ENV, fake.url)
        yield fake


def gcp_store() -> GcpSecretManagerStore:
    store = open_store("gcpsm://projects/my-proj/secrets/sv-1-identities-dump")
    store.retry_wait = 0.01
    return store


def test_gcpsm_adds_versions_with_a_checksum(secret_manager):
    store = gcp_store()
    assert store.add_version(PAYLOAD) == "projects/my-proj/secrets/sv-1-identities-dump/versions/1"
    assert store.add_version(b"second") == "projects/my-proj/secrets/sv-1-identities-dump/versions/2"
    assert secret_manager.versions["projects/my-proj/secrets/sv-1-identities-dump"] == [PAYLOAD, b"second"]
    [first, *_] = [r for r in secret_manager.requests if r.path.endswith(":addVersion")]
    assert "dataCrc32c" in first.json()["payload"], "the server must be able to refuse a damaged payload"


def test_gcpsm_missing_secret_is_a_clear_permanent_error(secret_manager):
    store = open_store("gcpsm://projects/my-proj/secrets/absent")
    with pytest.raises(SecretStoreError) as raised:
        store.add_version(PAYLOAD)
    assert not raised.value.transient
    assert "HTTP 404" in str(raised.value) and "absent" in str(raised.value)
    assert secret_manager.count("POST") == 1


def test_gcpsm_permission_denied_is_not_retried(secret_manager):
    secret_manager.fail(403)
    with pytest.raises(SecretStoreError, match="HTTP 403"):
        gcp_store().add_version(PAYLOAD)
    assert secret_manager.count("POST") == 1


def test_gcpsm_unavailable_is_retried(secret_manager):
    secret_manager.fail(503, 429)
    assert gcp_store().add_version(PAYLOAD).endswith("/versions/1")
    assert secret_manager.count("POST") == 3


def test_gcpsm_unreachable_is_transient(monkeypatch):
    monkeypatch.setenv(EMULATOR_ENV, "http://127.0.0.1:9")
    store = gcp_store()
    with pytest.raises(SecretStoreError) as raised:
        store.add_version(PAYLOAD)
    assert raised.value.transient


def test_oversized_dump_is_refused_before_any_call(secret_manager):
    with pytest.raises(SecretStoreError, match="above the 65536-byte limit"):
        gcp_store().add_version(b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert secret_manager.requests == []


def dump_identities(sv: FakeSvServer, client_secret: str, secret_url: str, tmp_path) -> int:
    """Run dump-identities against the fake SV and token endpoints into `secret_url`."""
    (tmp_path / "cs").write_text(client_secret)
    return run(
        Options(
            endpoint=sv.dump_url,
            token_endpoint=sv.token_url,
            audience="aud",
            client_id="cid",
            client_secret_file=tmp_path / "cs",
            secret=secret_url,
            retry_wait=0.01,
        )
    )


def test_dump_identities_into_gcpsm(secret_manager, tmp_path, capsys):
    client_secret = "client-secret-for-gcpsm"
    with FakeSvServer(client_id="cid", client_secret=client_secret, audience="aud") as sv:
        code = dump_identities(sv, client_secret, "gcpsm://projects/my-proj/secrets/sv-1-identities-dump", tmp_path)
        assert code == 0
        [stored] = secret_manager.versions["projects/my-proj/secrets/sv-1-identities-dump"]
        assert json.loads(stored) == sv.dump
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["version"] == "projects/my-proj/secrets/sv-1-identities-dump/versions/1"


def test_dump_identities_store_failure_exits_non_zero(secret_manager, tmp_path, capsys):
    with FakeSvServer(client_id="cid", client_secret="client-secret-for-gcpsm", audience="aud") as sv:
        code = dump_identities(sv, "client-secret-for-gcpsm", "gcpsm://projects/my-proj/secrets/absent", tmp_path)
    assert code == 1
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["event"] == "backup.failed" and event["stage"] == "store" and "HTTP 404" in event["error"]


# --- awssm:// (moto_server) -------------------------------------------------------------------------------------
SM_REGION = "eu-west-1"


@pytest.fixture
def aws(aws_env):
    """A fresh secret, without a value yet, in the shared moto_server process (tests/jobs/conftest.py)."""
    import boto3

    client = boto3.client("secretsmanager", region_name=SM_REGION)
    name = "sv-1/identities-dump-" + os.urandom(4).hex()
    client.create_secret(Name=name, Description="identities dumps")
    return client, name


def versions(client, name: str) -> dict[str, list[str]]:
    """version id -> staging labels, read as an operator would (the job's role cannot)."""
    listed = client.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    return {v["VersionId"]: sorted(v.get("VersionStages", [])) for v in listed}


@pytest.mark.slow
def test_awssm_adds_versions_with_put_secret_value_alone(aws):
    client, name = aws
    store = open_store(f"awssm://{SM_REGION}/{name}")
    with AwsCallRecorder() as recorder:
        added = [store.add_version(json.dumps({"v": n}).encode()) for n in (1, 2, 3)]
    assert recorder.operations() == ["PutSecretValue"] * 3, "the writer may not Get, Describe or List"
    assert {c.region for c in recorder.calls} == {SM_REGION}
    assert {c.params["SecretId"] for c in recorder.calls} == {name}
    ids = [a.rsplit(":", 1)[1] for a in added]
    assert len(set(ids)) == 3 and all(name in a for a in added)
    assert versions(client, name) == {ids[0]: [], ids[1]: ["AWSPREVIOUS"], ids[2]: ["AWSCURRENT"]}
    assert client.get_secret_value(SecretId=name)["SecretString"] == '{"v": 3}'
    previous = client.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"]
    assert previous == '{"v": 2}'
    assert client.get_secret_value(SecretId=name, VersionId=ids[0])["SecretString"] == '{"v": 1}'


@pytest.mark.slow
def test_awssm_a_retry_after_a_lost_answer_adds_no_second_version(aws, monkeypatch):
    """The first PutSecretValue succeeds but its answer is lost (a read timeout): the retry sends the same
    ClientRequestToken, which Secrets Manager takes as the same version."""
    from botocore.exceptions import ReadTimeoutError

    client, name = aws
    store = open_store(f"awssm://{SM_REGION}/{name}")
    store.retry_wait = 0.01
    real_client = store._client
    lost = []

    def losing_client():
        made = real_client()

        def lose_first_answer(**_):
            if not lost:
                lost.append(True)
                raise ReadTimeoutError(endpoint_url="secretsmanager (answer lost on purpose)")

        made.meta.events.register("after-call.secrets-manager.PutSecretValue", lose_first_answer)
        return made

    monkeypatch.setattr(store, "_client", losing_client)
    with AwsCallRecorder() as recorder:
        added = store.add_version(b'{"v": "once"}')
    assert lost and recorder.operations() == ["PutSecretValue", "PutSecretValue"]
    tokens = {c.params["ClientRequestToken"] for c in recorder.calls}
    assert len(tokens) == 1
    assert versions(client, name) == {added.rsplit(":", 1)[1]: ["AWSCURRENT"]} and tokens == {added.rsplit(":", 1)[1]}


@pytest.mark.slow
def test_awssm_missing_secret_is_a_permanent_error(aws):
    store = open_store(f"awssm://{SM_REGION}/no-such-secret")
    store.retry_wait = 0.01
    with AwsCallRecorder() as recorder, pytest.raises(SecretStoreError) as raised:
        store.add_version(b"{}")
    assert not raised.value.transient and "ResourceNotFoundException" in str(raised.value)
    assert recorder.operations() == ["PutSecretValue"], "a permanent error is not retried"


@pytest.mark.slow
def test_dump_identities_into_awssm(aws, tmp_path):
    client, name = aws
    with FakeSvServer(client_id="cid", client_secret="client-secret-for-aws", audience="aud") as sv:
        with AwsCallRecorder() as recorder:
            code = dump_identities(sv, "client-secret-for-aws", f"awssm://{SM_REGION}/{name}", tmp_path)
        assert code == 0
        assert json.loads(client.get_secret_value(SecretId=name)["SecretString"]) == sv.dump
    assert recorder.operations() == ["PutSecretValue"]


@pytest.mark.slow
def test_an_unchanged_dump_makes_no_aws_call(aws, tmp_path, capsys):
    """With the fingerprint ConfigMap (what the CronJob uses), the job knows the last stored dump without reading
    the secret: an unchanged dump costs no AWS call at all, a changed one a single PutSecretValue."""
    client, name = aws
    with (
        FakeKubeApi() as kube,
        FakeSvServer(client_id="cid", client_secret="client-secret-for-aws", audience="aud") as sv,
    ):
        kube.add_configmap("sv", "sv-1-identities-fingerprint")
        (tmp_path / "cs").write_text("client-secret-for-aws")
        options = Options(
            endpoint=sv.dump_url, token_endpoint=sv.token_url, audience="aud", client_id="cid",
            client_secret_file=tmp_path / "cs", secret=f"awssm://{SM_REGION}/{name}", retry_wait=0.01,
            fingerprint_configmap="sv-1-identities-fingerprint", namespace="sv", kube_api=kube.url,
        )  # fmt: skip
        with AwsCallRecorder() as recorder:
            assert run(options) == 0
            assert run(options) == 0
        assert recorder.operations() == ["PutSecretValue"]
        assert len(versions(client, name)) == 1
        stored = kube.get("configmaps", "sv", "sv-1-identities-fingerprint")["data"]
        assert stored["version"].endswith(recorder.calls[0].params["ClientRequestToken"])
    outcomes = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"backup.' in line]
    assert [e["changed"] for e in outcomes] == [True, False]
