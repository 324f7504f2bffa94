"""dump-identities against a local IdP + SV endpoint that misbehaves on demand, a file:// store and the fake
Kubernetes API (fingerprint ConfigMap). Real HTTP on 127.0.0.1 throughout."""

from __future__ import annotations

import base64
import copy
import json
import logging
import secrets
from pathlib import Path

import pytest

from jobs import identities
from jobs.identities import Options, fingerprint, run, shape_problems
from tests.jobs.fakes.kube import FakeKubeApi
from tests.jobs.fakes.sv import DUMP_PATH, TOKEN_PATH, FakeSvServer, make_dump

CLIENT_ID = "sv-backups-identities"
AUDIENCE = "https://sv.example.com/api"
NAMESPACE = "sv"
CONFIGMAP = "sv-1-identities-fingerprint"
ATTEMPTS = 3


@pytest.fixture
def client_secret() -> str:
    return "cs-" + secrets.token_urlsafe(24)


@pytest.fixture
def sv(client_secret):
    with FakeSvServer(client_id=CLIENT_ID, client_secret=client_secret, audience=AUDIENCE) as server:
        yield server


@pytest.fixture
def secret_file(tmp_path, client_secret) -> Path:
    path = tmp_path / "clientSecret"
    path.write_text(client_secret + "\n")
    return path


@pytest.fixture
def kube():
    with FakeKubeApi() as api:
        api.add_configmap(NAMESPACE, CONFIGMAP)
        yield api


def make_options(sv: FakeSvServer, secret_file: Path, store: Path, **overrides) -> Options:
    values = dict(
        endpoint=sv.dump_url,
        token_endpoint=sv.token_url,
        audience=AUDIENCE,
        client_id=CLIENT_ID,
        client_secret_file=secret_file,
        secret=store.as_uri(),
        timeout=2.0,
        attempts=ATTEMPTS,
        retry_wait=0.01,
    )
    values.update(overrides)
    return Options(**values)


def read_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def outcome(events: list[dict]) -> list[str]:
    return [e["event"] for e in events if e["event"].startswith("backup.")]


def versions(store: Path) -> list[Path]:
    return sorted(store.glob("*.json")) if store.exists() else []


def secret_values(sv: FakeSvServer, client_secret: str) -> list[str]:
    values = [client_secret, *sv.issued]
    for node in ("participant", "sequencer", "mediator"):
        values += [k["keyPair"] for k in sv.dump["identities"][node]["keys"] if "keyPair" in k]
    return values


def assert_no_secrets(text: str, values: list[str]) -> None:
    for value in values:
        assert value not in text, "secret material leaked into the output"
        # Also a recognisable piece of it (a log line cut short, or the base64 split across lines).
        assert value[5:37] not in text


# --- the good path -----------------------------------------------------------------------------------------
def test_stores_the_dump_as_a_new_version(sv, secret_file, tmp_path, capsys):
    store = tmp_path / "versions"
    assert run(make_options(sv, secret_file, store)) == 0

    [stored] = versions(store)
    assert json.loads(stored.read_bytes()) == sv.dump
    assert stored.stat().st_mode & 0o077 == 0, "a version holding private keys must be private to the job user"
    [event] = read_events(capsys.readouterr().out)
    assert event["event"] == "backup.completed" and event["kind"] == "identities"
    assert event["changed"] is True and event["sha256"] == fingerprint(sv.dump)
    assert event["version"] == str(stored)
    assert event["keys"]["participant"] == {"key_pairs": 2, "kms_keys": 0}

    # The token request is a client-credentials form POST carrying exactly the four fields.
    [token_request] = [r for r in sv.requests if r.path == TOKEN_PATH]
    assert token_request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert set(token_request.form()) == {"grant_type", "client_id", "client_secret", "audience"}


def test_without_fingerprint_every_run_adds_a_version(sv, secret_file, tmp_path):
    store = tmp_path / "versions"
    for _ in range(2):
        assert run(make_options(sv, secret_file, store)) == 0
    assert [p.name for p in versions(store)] == ["00000001.json", "00000002.json"]


def test_kms_participant_dump_is_valid(client_secret, secret_file, tmp_path):
    with FakeSvServer(
        client_id=CLIENT_ID, client_secret=client_secret, audience=AUDIENCE, dump=make_dump(kms_participant=True)
    ) as sv:
        assert run(make_options(sv, secret_file, tmp_path / "v")) == 0
    assert len(versions(tmp_path / "v")) == 1


# --- failures: nothing written, non-zero exit, a precise log line, no secret -------------------------------
FAULTS = [
    # endpoint, fault, stage, status, content type, transient (retried)
    ("token", "401", "token", 401, "application/json", False),
    ("token", "403", "token", 403, "application/json", False),
    ("token", "500", "token", 500, "application/json", True),
    ("token", "html", "token", 200, "text/html", False),
    ("dump", "401", "fetch", 401, "application/json", False),
    ("dump", "403", "fetch", 403, "application/json", False),
    ("dump", "404", "fetch", 404, "application/json", False),
    ("dump", "429", "fetch", 429, "application/json", True),
    ("dump", "500", "fetch", 500, "application/json", True),
    ("dump", "502", "fetch", 502, "application/json", True),
    ("dump", "503", "fetch", 503, "application/json", True),
    ("dump", "html", "fetch", 200, "text/html", False),
    ("dump", "truncated", "fetch", 200, "application/json", False),
    ("dump", "cut", "fetch", None, None, True),
    ("dump", "slow", "fetch", None, None, True),
    ("dump", "shape", "validate", None, None, False),
    ("dump", "not-json", "validate", None, None, False),
]


@pytest.mark.parametrize(
    ("endpoint", "fault", "stage", "status", "content_type", "transient"),
    FAULTS,
    ids=[f"{f[0]}-{f[1]}" for f in FAULTS],
)
def test_a_failure_writes_nothing_and_says_what_happened(
    sv, secret_file, client_secret, tmp_path, capsys, caplog, endpoint, fault, stage, status, content_type, transient
):
    caplog.set_level(logging.DEBUG)
    sv.slow_seconds = 1.0
    sv.fail(endpoint, *[fault] * ATTEMPTS)
    store = tmp_path / "versions"

    assert run(make_options(sv, secret_file, store, timeout=0.3 if fault == "slow" else 2.0)) == 1

    assert versions(store) == []
    captured = capsys.readouterr()
    events = read_events(captured.out)
    assert outcome(events) == ["backup.failed"]
    failed = events[-1]
    assert failed["severity"] == "ERROR" and failed["kind"] == "identities" and failed["stage"] == stage
    assert failed.get("status") == status
    assert failed.get("content_type") == content_type
    path = DUMP_PATH if endpoint == "dump" else TOKEN_PATH
    method = "GET" if endpoint == "dump" else "POST"
    assert sv.count(method, path) == (ATTEMPTS if transient else 1), "retry only transient failures"
    retries = [e for e in events if e["event"] == "identities.retrying"]
    assert len(retries) == (ATTEMPTS - 1 if transient else 0)
    assert_no_secrets(captured.out + captured.err + caplog.text, secret_values(sv, client_secret))


@pytest.mark.parametrize("fault", ["500", "503", "429", "cut", "slow"])
def test_transient_failures_are_retried_until_success(sv, secret_file, tmp_path, capsys, fault):
    sv.slow_seconds = 1.5
    sv.fail("dump", *[fault] * (ATTEMPTS - 1))
    assert run(make_options(sv, secret_file, tmp_path / "v", timeout=0.5 if fault == "slow" else 2.0)) == 0
    assert len(versions(tmp_path / "v")) == 1
    assert outcome(read_events(capsys.readouterr().out)) == ["backup.completed"]


def test_shape_failure_names_the_field_and_not_the_value(sv, secret_file, client_secret, tmp_path, capsys):
    def corrupt(dump):
        dump["identities"]["sequencer"]["keys"][1]["keyPair"] = "not base64 !!"

    sv.shape_change = corrupt
    sv.fail("dump", "shape")
    assert run(make_options(sv, secret_file, tmp_path / "v")) == 1
    failed = read_events(capsys.readouterr().out)[-1]
    assert failed["field"] == "identities.sequencer.keys[1].keyPair"
    assert "not valid base64" in failed["error"]
    assert "not base64 !!" not in json.dumps(failed)


def test_missing_client_secret_file_fails_before_any_request(sv, tmp_path, capsys):
    assert run(make_options(sv, tmp_path / "absent", tmp_path / "v")) == 1
    failed = read_events(capsys.readouterr().out)[-1]
    assert failed["stage"] == "config" and "client-secret-file" in failed["error"]
    assert sv.requests == []


def test_wrong_client_secret_is_refused_without_retry_and_not_logged(sv, tmp_path, capsys):
    wrong = tmp_path / "wrong"
    wrong.write_text("definitely-the-wrong-secret")
    assert run(make_options(sv, wrong, tmp_path / "v")) == 1
    out = capsys.readouterr().out
    failed = read_events(out)[-1]
    assert failed["status"] == 401 and "OAuth2 error access_denied" in failed["error"]
    assert sv.count("POST", TOKEN_PATH) == 1
    assert "definitely-the-wrong-secret" not in out


def test_unreachable_endpoint_is_retried_then_fails(sv, secret_file, tmp_path, capsys):
    options = make_options(sv, secret_file, tmp_path / "v", endpoint="http://127.0.0.1:9/identities-dump")
    assert run(options) == 1
    events = read_events(capsys.readouterr().out)
    assert events[-1]["stage"] == "fetch" and "ConnectError" in events[-1]["error"]
    assert len([e for e in events if e["event"] == "identities.retrying"]) == ATTEMPTS - 1


def test_redirects_are_not_followed(sv, secret_file, tmp_path, capsys):
    """A redirect (e.g. to an IdP login page) must not carry the bearer token elsewhere, nor count as a dump."""
    sv.handle_original = sv.handle

    from tests.jobs.fakes.httpserver import Reply

    def redirecting(request):
        if request.path == DUMP_PATH:
            return Reply(status=302, headers={"Location": "https://login.example.com/"}, content_type="text/html")
        return sv.handle_original(request)

    sv.handle = redirecting
    assert run(make_options(sv, secret_file, tmp_path / "v")) == 1
    assert read_events(capsys.readouterr().out)[-1]["status"] == 302


# --- shape validation ------------------------------------------------------------------------------------
def _mutated(change) -> dict:
    dump = make_dump()
    change(dump["identities"])
    return dump


SHAPES = {
    "participant missing": (lambda i: i.pop("participant"), "identities.participant: missing"),
    "mediator not object": (lambda i: i.update(mediator=[]), "identities.mediator: expected an object"),
    "keys empty": (lambda i: i["sequencer"].update(keys=[]), "identities.sequencer.keys: expected a non-empty array"),
    "keys missing": (lambda i: i["mediator"].pop("keys"), "identities.mediator.keys: missing"),
    "node id missing": (lambda i: i["participant"].pop("id"), "identities.participant.id: missing"),
    "node id not canton": (lambda i: i["participant"].update(id="PAR"), "identities.participant.id: not a Canton"),
    "sv party empty": (lambda i: i.update(sv_party_id=""), "identities.sv_party_id: empty"),
    "domain id number": (lambda i: i.update(domain_id=7), "identities.domain_id: expected a string, got number"),
    "alias missing": (lambda i: i.pop("domain_alias"), "identities.domain_alias: missing"),
    "keyPair empty": (lambda i: i["participant"]["keys"][0].update(keyPair=""), "keys[0].keyPair: empty"),
    "keyPair not base64": (lambda i: i["mediator"]["keys"][0].update(keyPair="%%%"), "keys[0].keyPair: not valid"),
    "key neither form": (lambda i: i["mediator"]["keys"].append({"name": "x"}), "keys[2]: neither a keyPair"),
    "key both forms": (
        lambda i: i["mediator"]["keys"][0].update(type="signing", keyId="k"),
        "keys[0]: has both keyPair and KMS",
    ),
    "kms bad type": (
        lambda i: i["mediator"]["keys"].append({"type": "magic", "keyId": "k"}),
        "keys[2].type: expected one of signing, encryption",
    ),
    "kms no id": (lambda i: i["mediator"]["keys"].append({"type": "signing"}), "keys[2].keyId: missing or empty"),
    "key not object": (lambda i: i["sequencer"]["keys"].append("k"), "keys[2]: expected an object, got string"),
    "snapshot missing": (
        lambda i: i["sequencer"].pop("authorizedStoreSnapshot"),
        "identities.sequencer.authorizedStoreSnapshot: missing",
    ),
    "snapshot bad": (
        lambda i: i["sequencer"].update(authorizedStoreSnapshot="@@"),
        "authorizedStoreSnapshot: not valid base64",
    ),
    "version not string": (lambda i: i["sequencer"].update(version=3), "identities.sequencer.version: expected"),
}


@pytest.mark.parametrize("case", SHAPES, ids=list(SHAPES))
def test_shape_problems_name_the_field(case):
    change, expected = SHAPES[case]
    problems = shape_problems(_mutated(change))
    assert any(expected in p for p in problems), problems


def test_shape_accepts_valid_dumps_and_unknown_additive_fields():
    assert shape_problems(make_dump()) == []
    assert shape_problems(make_dump(kms_participant=True)) == []
    dump = make_dump()
    dump["identities"]["participant"]["futureField"] = {"x": 1}  # the schema only grows compatibly
    dump["identities"]["participant"]["keys"][0]["futureField"] = True
    dump["identities"]["participant"].pop("version")
    assert shape_problems(dump) == []


@pytest.mark.parametrize("document", [[], "x", None, {}, {"identities": None}, {"identity": {}}])
def test_shape_rejects_non_dumps(document):
    assert shape_problems(document)


def test_shape_messages_never_contain_values():
    dump = make_dump()
    secret = dump["identities"]["participant"]["keys"][0]["keyPair"]
    dump["identities"]["participant"]["keys"][0]["keyPair"] = secret + "!"
    problems = shape_problems(dump)
    assert problems and not any(secret[:16] in p for p in problems)


def test_fingerprint_ignores_formatting_only():
    dump = make_dump()
    reformatted = json.loads(json.dumps(dump, indent=4, sort_keys=True))
    assert fingerprint(reformatted) == fingerprint(dump)
    changed = copy.deepcopy(dump)
    changed["identities"]["participant"]["keys"][0]["keyPair"] = base64.b64encode(b"other").decode()
    assert fingerprint(changed) != fingerprint(dump)


# --- unchanged dumps and the fingerprint ConfigMap ----------------------------------------------------------
def test_unchanged_dump_adds_no_version_but_completes(sv, secret_file, kube, tmp_path, capsys):
    store = tmp_path / "versions"
    options = make_options(
        sv, secret_file, store, fingerprint_configmap=CONFIGMAP, namespace=NAMESPACE, kube_api=kube.url
    )
    assert run(options) == 0
    data = kube.get("configmaps", NAMESPACE, CONFIGMAP)["data"]
    assert data["sha256"] == fingerprint(sv.dump) and data["version"].endswith("00000001.json")

    assert run(options) == 0  # same dump
    assert len(versions(store)) == 1
    events = read_events(capsys.readouterr().out)
    assert [e["changed"] for e in events if e["event"] == "backup.completed"] == [True, False]

    sv.dump = make_dump()  # keys rotated
    assert run(options) == 0
    assert len(versions(store)) == 2
    assert kube.get("configmaps", NAMESPACE, CONFIGMAP)["data"]["sha256"] == fingerprint(sv.dump)


def test_failed_fetch_leaves_the_fingerprint_alone(sv, secret_file, kube, tmp_path):
    options = make_options(
        sv, secret_file, tmp_path / "v", fingerprint_configmap=CONFIGMAP, namespace=NAMESPACE, kube_api=kube.url
    )
    assert run(options) == 0
    before = kube.get("configmaps", NAMESPACE, CONFIGMAP)
    sv.fail("dump", "404")
    assert run(options) == 1
    assert kube.get("configmaps", NAMESPACE, CONFIGMAP) == before


def test_missing_configmap_still_stores_the_dump_and_fails_loudly(sv, secret_file, kube, tmp_path, capsys):
    options = make_options(
        sv, secret_file, tmp_path / "v", fingerprint_configmap="absent", namespace=NAMESPACE, kube_api=kube.url
    )
    assert run(options) == 1
    assert len(versions(tmp_path / "v")) == 1, "a backup is worth more than a saved version"
    events = read_events(capsys.readouterr().out)
    assert outcome(events) == ["backup.completed", "backup.failed"]
    assert events[-1]["stage"] == "fingerprint" and events[-1]["stored"] is True
    assert "ConfigMap sv/absent" in events[-1]["error"] and "Pulumi program creates it" in events[-1]["error"]


def test_fingerprint_patch_refused_reports_failure_after_storing(sv, secret_file, kube, tmp_path, capsys):
    kube.forbid("PATCH", "/api/v1/namespaces/sv/configmaps")
    options = make_options(
        sv, secret_file, tmp_path / "v", fingerprint_configmap=CONFIGMAP, namespace=NAMESPACE, kube_api=kube.url
    )
    assert run(options) == 1
    assert len(versions(tmp_path / "v")) == 1
    events = read_events(capsys.readouterr().out)
    assert outcome(events) == ["backup.completed", "backup.failed"]
    assert events[-1]["status"] == 403


def test_fingerprint_patch_is_conditional_on_what_was_read(sv, secret_file, kube, tmp_path):
    """A ConfigMap changed between our read and our patch (a second writer) is not overwritten blindly."""
    options = make_options(
        sv, secret_file, tmp_path / "v", fingerprint_configmap=CONFIGMAP, namespace=NAMESPACE, kube_api=kube.url
    )
    original_add = identities.open_store

    def store_that_races(url):
        store = original_add(url)
        add = store.add_version

        def add_then_someone_else_patches(payload):
            name = add(payload)
            import httpx

            httpx.patch(
                f"{kube.url}/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}",
                json={"data": {"sha256": "other"}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            return name

        store.add_version = add_then_someone_else_patches
        return store

    identities.open_store = store_that_races
    try:
        assert run(options) == 1
    finally:
        identities.open_store = original_add
    assert kube.get("configmaps", NAMESPACE, CONFIGMAP)["data"]["sha256"] == "other"


def test_cli_registers_dump_identities(sv, secret_file, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    identities.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "dump-identities",
            "--endpoint",
            sv.dump_url,
            "--token-endpoint",
            sv.token_url,
            "--audience",
            AUDIENCE,
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            str(secret_file),
            "--secret",
            (tmp_path / "v").as_uri(),
            "--timeout",
            "2",
            "--retry-wait",
            "0.01",
        ]
    )
    assert args.func(args) == 0
    assert len(versions(tmp_path / "v")) == 1
