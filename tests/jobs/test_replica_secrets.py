"""The secret half of check-replica and the read-only secret readers: file:// on disk, awssm:// against moto's
server (a primary region and a DR region, replication simulated by the test), gcpsm:// against the local Secret
Manager fake extended with the two read calls. Payloads never reach the output."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import UTC, datetime, timedelta

import google_crc32c
import pytest

from jobs.__main__ import main
from jobs.replica import CheckOptions, check_secret
from jobs.secret_readers import SecretVersion, newest, open_reader
from jobs.secret_stores import EMULATOR_ENV, SecretStoreError, open_store
from tests.jobs.fakes.httpserver import Reply, Request
from tests.jobs.fakes.secret_manager import FakeSecretManager
from tests.jobs.replica_helpers import replicate, write_set

SECRET_MARK = "PRIVATE-KEY-MATERIAL"


def payload(n: int) -> bytes:
    return json.dumps({"identities": {"note": f"{SECRET_MARK}-{n}-{os.urandom(8).hex()}"}}).encode()


def at(hours_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours_ago)


def later(hours: float) -> CheckOptions:
    """Options whose clock is `hours` ahead: the versions just written are then that old."""
    return CheckOptions(now=lambda: datetime.now(UTC) + timedelta(hours=hours))


# --- file:// --------------------------------------------------------------------------------------------
def file_store(path, versions: list[tuple[bytes, float]]) -> str:
    """A FileStore directory with these (payload, hours ago) versions, written by the real store."""
    store = open_store(path.as_uri())
    for data, hours_ago in versions:
        written = store.add_version(data)
        stamp = at(hours_ago).timestamp()
        os.utime(written, (stamp, stamp))
    return path.as_uri()


def test_file_secret_in_sync_behind_within_lag_differs_missing(tmp_path):
    one, two, three = payload(1), payload(2), payload(3)
    primary = file_store(tmp_path / "p", [(one, 5), (two, 3)])
    synced = file_store(tmp_path / "a", [(one, 5), (two, 3)])
    report = check_secret(open_reader(primary), open_reader(synced), CheckOptions())
    assert report.status == "in_sync"
    assert report.common == {
        "primary": "00000002.json",
        "dr": "00000002.json",
        "created_at": report.primary_newest["created_at"],
    }
    behind = file_store(tmp_path / "b", [(one, 5)])
    report = check_secret(open_reader(primary), open_reader(behind), CheckOptions())
    assert report.status == "behind" and report.common["primary"] == "00000001.json"
    assert timedelta(hours=3) - timedelta(minutes=1) < report.lag < timedelta(hours=4)
    young = file_store(tmp_path / "p2", [(one, 5), (three, 0.1)])
    assert check_secret(open_reader(young), open_reader(behind), CheckOptions()).status == "within_lag"
    other = file_store(tmp_path / "c", [(payload(9), 1)])
    assert check_secret(open_reader(primary), open_reader(other), CheckOptions()).status == "differs"
    empty = (tmp_path / "d").as_uri()
    assert check_secret(open_reader(primary), open_reader(empty), CheckOptions()).status == "missing"
    assert check_secret(open_reader(empty), open_reader(primary), CheckOptions()).status == "no_source"


@pytest.mark.slow
def test_cli_with_sets_and_secret_never_prints_the_payload(tmp_path, capsys):
    src, dst = f"file://{tmp_path}/primary", f"file://{tmp_path}/dr"
    from jobs.destinations import open_destination

    write_set(open_destination(src), "s-1", at(2))
    replicate(open_destination(src), open_destination(dst))
    one, two = payload(1), payload(2)
    primary = file_store(tmp_path / "ids-p", [(one, 5), (two, 3)])
    dr = file_store(tmp_path / "ids-dr", [(one, 5)])
    code = main(["check-replica", src, dst, "--secret-src", primary, "--secret-dst", dr, "--json"])
    out = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert lines[-1]["event"] == "backup.failed" and lines[-1]["secret"] == "behind"
    assert lines[-1]["sets"] == {"in_sync": 1}
    (secret,) = [e for e in lines if e["event"] == "replica.secret"]
    assert secret["newest_common"]["primary"] == "00000001.json"
    assert SECRET_MARK not in out.out + out.err
    assert not re.search(r"[0-9a-f]{64}", out.out + out.err), "no payload hash in the output either"
    dr_synced = file_store(tmp_path / "ids-dr2", [(one, 5), (two, 3)])
    assert main(["check-replica", src, dst, "--secret-src", primary, "--secret-dst", dr_synced]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.splitlines()[-1])["secret"] == "in_sync"
    assert "secret: in_sync" in out.err and SECRET_MARK not in out.out + out.err


# --- awssm:// (moto) --------------------------------------------------------------------------------------------
@pytest.fixture
def aws_secrets(moto_url, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = "sv-1/identities-dump-" + os.urandom(4).hex()
    for region in ("us-east-1", "us-west-2"):
        boto3.client("secretsmanager", region_name=region).create_secret(Name=name)
    return f"awssm://us-east-1/{name}", f"awssm://us-west-2/{name}"


@pytest.mark.slow
def test_awssm_primary_and_dr_region(aws_secrets):
    primary_url, dr_url = aws_secrets
    primary, dr = open_store(primary_url), open_store(dr_url)
    one, two = payload(1), payload(2)
    primary.add_version(one)
    with pytest.raises(SecretStoreError, match="no readable version"):
        newest(open_reader(dr_url))
    assert check_secret(open_reader(primary_url), open_reader(dr_url), CheckOptions()).status == "within_lag"
    assert check_secret(open_reader(primary_url), open_reader(dr_url), later(2)).status == "missing"
    dr.add_version(one)  # replicated
    report = check_secret(open_reader(primary_url), open_reader(dr_url), CheckOptions())
    assert report.status == "in_sync"
    primary.add_version(two)
    assert check_secret(open_reader(primary_url), open_reader(dr_url), CheckOptions()).status == "within_lag"
    report = check_secret(open_reader(primary_url), open_reader(dr_url), later(2))
    assert report.status == "behind" and report.problems
    version, data = newest(open_reader(primary_url))
    assert data == two and version.name in open_reader(primary_url).versions()[0].name
    dr.add_version(payload(3))  # something the primary never had
    assert check_secret(open_reader(primary_url), open_reader(dr_url), CheckOptions()).status == "differs"


@pytest.mark.slow
def test_awssm_reader_errors_name_the_store_not_the_payload(aws_secrets):
    primary_url, _ = aws_secrets
    reader = open_reader(primary_url.replace("identities-dump", "absent"))
    with pytest.raises(SecretStoreError) as raised:  # (moto answers ListSecretVersionIds of an absent secret with 500)
        reader.read(SecretVersion("00000000-0000-0000-0000-000000000000", datetime.now(UTC)))
    assert "ResourceNotFoundException" in str(raised.value) and "absent" in str(raised.value)


# --- gcpsm:// (local fake) -------------------------------------------------------------------------------------
_LIST = re.compile(r"^/v1/(projects/[^/]+/secrets/[^/:]+)/versions$")
_ACCESS = re.compile(r"^/v1/((projects/[^/]+/secrets/[^/:]+)/versions/(\d+)):access$")


class ReadableSecretManager(FakeSecretManager):
    """The fake plus `versions.list` and `versions.access` (what a reader identity may call)."""

    def __init__(self):
        super().__init__()
        self.created: dict[str, list[datetime]] = {}
        self.damage_crc = False

    def handle(self, request: Request) -> Reply:
        if request.method == "POST":
            reply = super().handle(request)
            if reply.status == 200:
                name = json.loads(reply.body)["name"].rsplit("/versions/", 1)[0]
                self.created.setdefault(name, []).append(datetime.now(UTC))
            return reply
        if match := _LIST.match(request.path):
            name = match.group(1)
            versions = [
                {"name": f"{name}/versions/{n}", "createTime": t.isoformat().replace("+00:00", "Z"), "state": "ENABLED"}
                for n, t in enumerate(self.created.get(name, []), start=1)
            ]
            return Reply.json({"versions": list(reversed(versions)), "totalSize": len(versions)})
        if match := _ACCESS.match(request.path):
            data = self.versions[match.group(2)][int(match.group(3)) - 1]
            crc = google_crc32c.value(data) ^ (1 if self.damage_crc else 0)
            return Reply.json(
                {"name": match.group(1), "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(crc)}}
            )
        return super().handle(request)


@pytest.fixture
def gcp_secrets(monkeypatch):
    with ReadableSecretManager() as fake:
        fake.create_secret("prod", "sv-1-identities-dump")
        fake.create_secret("dr", "sv-1-identities-dump")
        monkeypatch.setenv(EMULATOR_ENV, fake.url)
        yield (
            fake,
            "gcpsm://projects/prod/secrets/sv-1-identities-dump",
            "gcpsm://projects/dr/secrets/sv-1-identities-dump",
        )


def test_gcpsm_reader_and_check(gcp_secrets):
    fake, primary_url, dr_url = gcp_secrets
    one, two = payload(1), payload(2)
    open_store(primary_url).add_version(one)
    open_store(primary_url).add_version(two)
    open_store(dr_url).add_version(one)
    versions = open_reader(primary_url).versions()
    assert [v.name.rsplit("/", 2)[1:] for v in versions] == [["versions", "2"], ["versions", "1"]]
    assert newest(open_reader(primary_url))[1] == two
    report = check_secret(open_reader(primary_url), open_reader(dr_url), later(2))
    assert report.status == "behind"
    assert report.common["primary"].endswith("/versions/1") and report.common["dr"].endswith("/versions/1")
    open_store(dr_url).add_version(two)
    assert check_secret(open_reader(primary_url), open_reader(dr_url), CheckOptions()).status == "in_sync"
    listed = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/versions")]
    assert listed and all(r.query.get("filter") == ["state:ENABLED"] for r in listed)


def test_gcpsm_reader_refuses_a_payload_damaged_in_transit(gcp_secrets):
    fake, primary_url, _ = gcp_secrets
    open_store(primary_url).add_version(payload(1))
    fake.damage_crc = True
    with pytest.raises(SecretStoreError, match="wrong CRC32C") as raised:
        newest(open_reader(primary_url))
    assert SECRET_MARK not in str(raised.value)
