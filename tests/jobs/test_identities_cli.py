"""`python -m jobs dump-identities` as the CronJob runs it: a real process, real HTTP to the local fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.fakes.sv import FakeSvServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT / "jobs" / "__main__.py").exists(), reason="the jobs CLI (jobs/__main__.py) is absent"
    ),
]
CLIENT_SECRET = "cli-client-secret-" + os.urandom(8).hex()


def dump_identities(sv: FakeSvServer, secret_file: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "jobs", "dump-identities",
        "--endpoint", sv.dump_url, "--token-endpoint", sv.token_url, "--audience", "https://sv.example.com/api",
        "--client-id", "cid", "--client-secret-file", str(secret_file), "--secret", store.as_uri(),
        "--timeout", "2", "--retry-wait", "0.05", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def sv():
    with FakeSvServer(client_id="cid", client_secret=CLIENT_SECRET, audience="https://sv.example.com/api") as server:
        yield server


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "clientSecret"
    path.write_text(CLIENT_SECRET)
    return path


def events(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_stores_then_skips_an_unchanged_dump(sv, secret_file, tmp_path):
    with FakeKubeApi() as kube:
        kube.add_configmap("sv", "fingerprint")
        flags = ("--fingerprint-configmap", "fingerprint", "--namespace", "sv", "--kube-api", kube.url)
        first = dump_identities(sv, secret_file, tmp_path / "v", *flags)
        second = dump_identities(sv, secret_file, tmp_path / "v", *flags)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert [e["changed"] for e in events(first) + events(second) if e["event"] == "backup.completed"] == [True, False]
    assert len(list((tmp_path / "v").glob("*.json"))) == 1


def test_failure_exits_non_zero_and_leaks_nothing(sv, secret_file, tmp_path):
    sv.fail("dump", "truncated")
    result = dump_identities(sv, secret_file, tmp_path / "v")
    assert result.returncode == 1
    assert events(result)[-1]["event"] == "backup.failed"
    assert not (tmp_path / "v").exists()
    output = result.stdout + result.stderr
    keys = [k["keyPair"] for n in ("participant", "sequencer", "mediator") for k in sv.dump["identities"][n]["keys"]]
    for value in [CLIENT_SECRET, *sv.issued, *keys]:
        assert value not in output
