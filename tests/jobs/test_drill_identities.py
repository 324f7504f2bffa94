"""`python -m jobs drill-identities` as the drill CronJob runs it: a real process reading the newest version
through the read-only secret readers (file:// written by the real FileStore, gcpsm:// against the local Secret
Manager fake). A good dump passes with size and digest only; a malformed newest version fails naming the fields,
and no key material ever appears in the output."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest

from jobs.identities import secret_values
from jobs.secret_stores import EMULATOR_ENV, open_store
from tests.jobs.conftest import REPO, job_env
from tests.jobs.fakes.sv import make_dump
from tests.jobs.test_replica_secrets import ReadableSecretManager

pytestmark = pytest.mark.slow


def drill(url: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    proc = subprocess.run([sys.executable, "-m", "jobs", "drill-identities", url, "--json", *extra], cwd=REPO,
                          env=env or job_env(), capture_output=True, text=True, timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stdout + proc.stderr


def leaks(dump: dict, output: str) -> list[str]:
    material = list(secret_values(dump))
    material += [node["authorizedStoreSnapshot"] for node in dump["identities"].values() if isinstance(node, dict)]
    return [m for m in material if m in output or m[:24] in output]


def test_a_good_newest_version_passes_with_size_and_digest_only(tmp_path):
    store = open_store((tmp_path / "secret").as_uri())
    store.add_version(b'{"identities": {}}')  # an older, broken version: only the newest counts
    dump = make_dump(kms_participant=True)
    payload = json.dumps(dump).encode()
    store.add_version(payload)
    code, lines, output = drill((tmp_path / "secret").as_uri(), "--max-age", "1h")
    assert code == 0, output
    event, report = lines
    assert event["event"] == "backup.completed" and event["kind"] == "drill-identities"
    assert event["bytes"] == len(payload) and event["sha256"] == hashlib.sha256(payload).hexdigest()
    assert event["keys"] == {"participant": 2, "sequencer": 2, "mediator": 2} and report["ok"] is True
    assert not leaks(dump, output)


@pytest.mark.parametrize("damage, field", [
    (lambda d: d["identities"].pop("mediator"), "identities.mediator: missing"),
    (lambda d: d["identities"]["sequencer"]["keys"][0].update(keyPair="not base64!"),
     "identities.sequencer.keys[0].keyPair: not valid base64"),
    (lambda d: d["identities"]["participant"].update(keys=[]), "identities.participant.keys: expected a non-empty"),
])
def test_a_malformed_newest_version_fails_naming_the_field_and_leaking_nothing(tmp_path, damage, field):
    store = open_store((tmp_path / "secret").as_uri())
    good = make_dump()
    store.add_version(json.dumps(good).encode())
    bad = make_dump()
    damage(bad)
    store.add_version(json.dumps(bad).encode())
    code, lines, output = drill((tmp_path / "secret").as_uri())
    assert code == 1
    event = lines[0]
    assert event["event"] == "backup.failed" and event["stage"] == "shape" and field in event["error"]
    assert not leaks(good, output) and not leaks(bad, output)


def test_a_version_that_is_not_json_and_an_empty_store_fail(tmp_path):
    store = open_store((tmp_path / "secret").as_uri())
    secret_text = base64.b64encode(b"PRIVATE" * 8).decode()
    store.add_version(f"<html>{secret_text}".encode())
    code, lines, output = drill((tmp_path / "secret").as_uri())
    assert code == 1 and "not JSON" in lines[0]["error"] and secret_text not in output
    (tmp_path / "empty").mkdir()
    code, lines, _ = drill((tmp_path / "empty").as_uri())
    assert code == 1 and lines[0]["stage"] == "read" and "no readable version" in lines[0]["error"]


def test_too_old_a_version_fails_the_max_age(tmp_path):
    store = open_store((tmp_path / "secret").as_uri())
    written = store.add_version(json.dumps(make_dump()).encode())
    os.utime(written, (1_000_000_000, 1_000_000_000))
    code, lines, _ = drill((tmp_path / "secret").as_uri(), "--max-age", "7d")
    assert code == 1 and lines[0]["stage"] == "age" and "more than --max-age" in lines[0]["error"]


def test_gcpsm_reader_identity(monkeypatch):
    with ReadableSecretManager() as fake:
        fake.create_secret("prod", "sv-1-identities-dump")
        url = "gcpsm://projects/prod/secrets/sv-1-identities-dump"
        monkeypatch.setenv(EMULATOR_ENV, fake.url)
        dump = make_dump()
        open_store(url).add_version(json.dumps(dump).encode())  # as the writer does
        env = job_env()
        code, lines, output = drill(url, env=env)
        assert code == 0, output
        assert lines[0]["version"].endswith("/versions/1") and not leaks(dump, output)
        fake.damage_crc = True
        code, lines, output = drill(url, env=env)
        assert code == 1 and lines[0]["stage"] == "read" and not leaks(dump, output)
