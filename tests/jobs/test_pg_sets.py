"""Postgres sets end to end against real PostgreSQL 15 clusters (apps and participant on separate servers),
through the CLI exactly as the CronJob runs it, to file://, s3:// (moto, a bucket with Object Lock) and gs:// (GCS
emulator)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from rules.manifest import manifest_errors, parse_time
from tests.jobs.pg_helpers import (
    APPS_DB,
    PARTICIPANT_DB,
    Writer,
    make_sources,
    max_seq,
    static_digests,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources(pg_factory):
    return make_sources(pg_factory, size_mb=3)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def completed(result) -> dict:
    assert result.returncode == 0, result.stderr + result.stdout
    (event,) = [e for e in events(result.stdout) if e["event"] == "backup.completed"]
    assert event["kind"] == "postgres" and event["severity"] == "INFO"
    return event


def test_backup_under_writes_then_restore_into_fresh_clusters(sources, pg_factory, pg_env, jobs_cli, tmp_path):
    dest = f"file://{tmp_path}/backups"
    with Writer(sources) as writer:
        event = completed(jobs_cli("backup-set", "--dest", dest, "--migration-id", "3", *sources.dsns()))
        written_during = writer.seq
    assert written_during > 5
    set_url = event["urls"][0]
    assert set_url == f"{dest}/recent/3/{event['set_id']}"
    assert event["promoted"] and event["urls"][1] == f"{dest}/historical/3/{event['set_id']}"

    manifest = json.loads(open_destination(set_url).read_bytes("manifest.json"))
    assert manifest["complete"] is True and not manifest_errors(manifest, event["set_id"])
    apps, participant = manifest["databases"]
    assert (apps["role"], apps["database"]) == ("apps", APPS_DB)
    assert (participant["role"], participant["database"]) == ("participant", PARTICIPANT_DB)
    assert parse_time(apps["finished_at"]) < parse_time(participant["snapshot_requested_at"])
    for field in ("wal_lsn", "txid_snapshot", "system_identifier", "server_version"):
        assert apps[field] and participant[field]
    assert apps["system_identifier"] != participant["system_identifier"]  # two separate servers
    assert len(apps["snapshot_requested_at"]) == len("2026-11-21T16:09:41.123456Z")

    listed = jobs_cli("list-sets", dest, "--json")
    assert [json.loads(line)["url"] for line in listed.stdout.splitlines()] == event["urls"]
    verified = jobs_cli("verify-set", set_url)
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stderr

    fresh_apps, fresh_participant = pg_factory("apps-restore"), pg_factory("participant-restore")
    restored = jobs_cli(
        "restore-set",
        event["urls"][1],
        "--db",
        f"apps={fresh_apps.dsn(APPS_DB)}",
        "--db",
        f"participant={fresh_participant.dsn(PARTICIPANT_DB)}",
    )
    assert restored.returncode == 0, restored.stderr

    apps_seq, participant_seq = max_seq(fresh_apps, APPS_DB), max_seq(fresh_participant, PARTICIPANT_DB)
    assert 0 < apps_seq <= participant_seq <= written_during
    assert static_digests(fresh_apps, APPS_DB, "app") == static_digests(sources.apps, APPS_DB, "app")
    assert static_digests(fresh_participant, PARTICIPANT_DB, "par") == static_digests(
        sources.participant, PARTICIPANT_DB, "par"
    )

    again = jobs_cli(
        "restore-set",
        set_url,
        "--db",
        f"apps={fresh_apps.dsn(APPS_DB)}",
        "--db",
        f"participant={fresh_participant.dsn(PARTICIPANT_DB)}",
    )
    assert again.returncode == 1 and "not empty" in again.stderr


def test_cronjob_steps_then_seal_and_promotion_cadence(sources, pg_env, jobs_cli, tmp_path):
    dest = f"file://{tmp_path}/backups"

    def take(set_id: str) -> dict:
        for role, cluster, db in (
            ("apps", sources.apps, APPS_DB),
            ("participant", sources.participant, PARTICIPANT_DB),
        ):
            step = jobs_cli(
                "backup-step",
                "--role",
                role,
                "--dest",
                dest,
                "--set-id",
                set_id,
                "--migration-id",
                "0",
                "--db",
                f"{role}={cluster.dsn(db)}",
            )
            assert step.returncode == 0, step.stderr
            assert events(step.stdout)[-1]["event"] == "backup.step_completed"
        return completed(
            jobs_cli(
                "seal-set",
                "--dest",
                dest,
                "--set-id",
                set_id,
                "--migration-id",
                "0",
                "--roles",
                "apps,participant",
                "--participant-pruning",
                "30d",
                "--sequencer-pruning",
                "30d",
            )
        )

    first = take("sv-backup-postgres-29123-abcde")
    assert first["promoted"] is True  # the first set of a migration id is always historical
    second = take("sv-backup-postgres-29124-fghij")
    assert second["promoted"] is False  # 27d16h of cadence have not passed
    listed = [json.loads(line) for line in jobs_cli("list-sets", dest, "--json").stdout.splitlines()]
    assert [(s["tier"], s["set_id"]) for s in listed] == [
        ("recent", "sv-backup-postgres-29124-fghij"),
        ("recent", "sv-backup-postgres-29123-abcde"),
        ("historical", "sv-backup-postgres-29123-abcde"),
    ]
    # A retried seal container finds its manifest and succeeds without writing anything.
    assert (
        completed(
            jobs_cli(
                "seal-set",
                "--dest",
                dest,
                "--set-id",
                "sv-backup-postgres-29124-fghij",
                "--migration-id",
                "0",
                "--roles",
                "apps,participant",
            )
        )["promoted"]
        is False
    )


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_object_stores_backup_verify_restore(store, request, sources, pg_factory, pg_env, jobs_cli, tmp_path):
    # The S3 bucket is the program's shape: Object Lock with a default retention, SSE-KMS.
    bucket = request.getfixturevalue("s3_locked_bucket" if store == "s3" else "gcs_bucket")
    dest = f"{store}://{bucket}/sv-1/postgres"
    event = completed(jobs_cli("backup-set", "--dest", dest, *sources.dsns()))
    listed = jobs_cli("list-sets", dest)
    assert listed.returncode == 0 and event["set_id"] in listed.stdout
    assert event["promoted"]  # promotion used the store's server-side copy (S3 multipart copy, GCS rewrite)
    for url in event["urls"]:
        verified = jobs_cli("verify-set", url)
        assert verified.returncode == 0, verified.stderr
    target = pg_factory(f"restore-{store}")
    restored = jobs_cli(
        "restore-set",
        event["urls"][0],
        "--db",
        f"apps={target.dsn('apps_restored')}",
        "--db",
        f"participant={target.dsn('participant_restored')}",
        "--jobs",
        "2",
    )
    assert restored.returncode == 0, restored.stderr
    assert static_digests(target, "participant_restored", "par") == static_digests(
        sources.participant, PARTICIPANT_DB, "par"
    )
    assert max_seq(target, "apps_restored") <= max_seq(target, "participant_restored")


def test_real_restore_errors_fail_the_restore(pg_factory, pg_env, jobs_cli, tmp_path):
    """A table owned by a role the target server lacks: pg_restore reports it and exits 1 as it does for harmless
    errors; restore-set must fail on it (and succeed with --no-owner, which skips ownership)."""
    source = pg_factory("owned")
    source.psql("CREATE ROLE cnadmin")
    source.createdb("owned")
    source.psql(
        "CREATE TABLE ledger (id int PRIMARY KEY); INSERT INTO ledger SELECT generate_series(1, 100); "
        "ALTER TABLE ledger OWNER TO cnadmin",
        "owned",
    )
    dest = f"file://{tmp_path}/backups"
    event = completed(jobs_cli("backup-set", "--dest", dest, "--db", f"apps={source.dsn('owned')}"))
    target = pg_factory("no-roles")
    failed = jobs_cli("restore-set", event["urls"][0], "--db", f"apps={target.dsn('owned')}")
    # Refused before anything is written, naming the role and the ways out (jobs/restore.py ensure_owner_roles).
    assert failed.returncode == 1 and "the target server has no role cnadmin" in failed.stderr
    assert "--create-missing-roles" in failed.stderr and "--no-owner" in failed.stderr
    ok = jobs_cli("restore-set", event["urls"][0], "--db", f"apps={target.dsn('owned_again')}", "--no-owner")
    assert ok.returncode == 0, ok.stderr
    assert target.psql("SELECT count(*) FROM ledger", "owned_again") == "100"


def _newer_pg_bin() -> Path:
    """PostgreSQL 17 client tools: from the environment, the system, or where `make test` unpacks them
    (scripts/fetch_pg_client.py), so CI runs this test on a fresh machine."""
    if "SV_BACKUPS_TEST_NEWER_PG_BIN" in os.environ:
        return Path(os.environ["SV_BACKUPS_TEST_NEWER_PG_BIN"])
    system = Path("/usr/lib/postgresql/17/bin")
    if system.exists():
        return system
    return Path(__file__).resolve().parents[2] / ".venv" / "postgresql-17" / "bin"


NEWER_PG_BIN = _newer_pg_bin()


@pytest.mark.skipif(not (NEWER_PG_BIN / "pg_restore").exists(), reason="no PostgreSQL 17+ client tools")
def test_newer_client_into_older_server(sources, pg_factory, pg_env, jobs_cli, tmp_path):
    """pg_dump/pg_restore 17 against PostgreSQL 15: pg_restore exits 1 on `SET transaction_timeout`, the data is
    restored, and restore-set reports success with the harmless error listed."""
    dest = f"file://{tmp_path}/backups"
    event = completed(jobs_cli("backup-set", "--dest", dest, "--pg-bin", str(NEWER_PG_BIN), *sources.dsns()))
    target = pg_factory("older-server")
    restored = jobs_cli(
        "restore-set",
        event["urls"][0],
        "--pg-bin",
        str(NEWER_PG_BIN),
        "--db",
        f"apps={target.dsn(APPS_DB)}",
        "--db",
        f"participant={target.dsn(PARTICIPANT_DB)}",
    )
    assert restored.returncode == 0, restored.stderr
    assert "transaction_timeout" in restored.stdout
    assert static_digests(target, PARTICIPANT_DB, "par") == static_digests(sources.participant, PARTICIPANT_DB, "par")
