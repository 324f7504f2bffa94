"""Every database on a server is backed up or explicitly ignored (rules/databases.py): a database created after
the stack was planned (a synchronizer upgrade's new one) fails the run, naming it, before anything is written."""

from __future__ import annotations

import json

import pytest

from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, make_sources

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources(pg_factory):
    sources = make_sources(pg_factory, size_mb=0.5)
    # Not Splice's: a template and a database that refuses connections are not data anyone can hold.
    sources.participant.psql("CREATE DATABASE closed_db ALLOW_CONNECTIONS false")
    sources.participant.psql("CREATE DATABASE tmpl_db IS_TEMPLATE true")
    return sources


def stored(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def failed_event(result) -> dict:
    assert result.returncode == 1, result.stdout + result.stderr
    (event,) = [json.loads(line) for line in result.stdout.splitlines() if '"backup.failed"' in line]
    assert event["severity"] == "ERROR" and event["kind"] == "postgres"
    return event


def step(jobs_cli, root, role, cluster, database, set_id, *extra):
    return jobs_cli("backup-step", "--role", role, "--dest", f"file://{root}", "--set-id", set_id,
                    "--migration-id", "4", "--db", f"{role}={cluster.dsn(database)}", *extra)


def test_a_new_database_fails_the_step_before_it_writes_then_ignoring_it_passes(sources, pg_env, jobs_cli, tmp_path):
    root = tmp_path / "store"
    ok = step(jobs_cli, root, "participant", sources.participant, PARTICIPANT_DB, "before")
    assert ok.returncode == 0, ok.stdout + ok.stderr  # postgres, the template and closed_db do not count

    sources.participant.createdb("participant_5")  # after the upgrade: the stack still lists participant_1
    try:
        before = stored(root)
        result = step(jobs_cli, root, "participant", sources.participant, PARTICIPANT_DB, "after")
        event = failed_event(result)
        assert event["stage"] == "databases" and event["role"] == "participant"
        assert event["unlisted_databases"] == ["participant_5"]
        assert event["server"] == f"127.0.0.1:{sources.participant.port}"
        assert "participant_5" in event["error"] and "role participant" in event["error"]
        assert "databases" in event["error"] and "ignoreDatabases" in event["error"]
        assert stored(root) == before  # nothing of set `after`: no step record, no object
        assert not [f for f in stored(root) if "/after/" in f]

        passed = step(jobs_cli, root, "participant", sources.participant, PARTICIPANT_DB, "ignored",
                      "--ignore-databases", "participant_5")
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert (root / "recent/4/ignored/steps/participant.json").exists()
        # a role sharing the server that backs it up accounts for it too
        shared = step(jobs_cli, root, "participant", sources.participant, PARTICIPANT_DB, "shared",
                      "--server-also-backs-up", "participant_5")
        assert shared.returncode == 0, shared.stdout + shared.stderr
    finally:
        sources.participant.psql("DROP DATABASE participant_5")


def test_backup_set_checks_every_server_before_any_role_writes(sources, pg_env, jobs_cli, tmp_path):
    root = tmp_path / "store"
    sources.participant.createdb("sequencer_5")
    try:
        result = jobs_cli("backup-set", "--dest", f"file://{root}", "--set-id", "refused", *sources.dsns())
        event = failed_event(result)
        assert event["unlisted_databases"] == ["sequencer_5"]
        assert stored(root) == []  # not even apps (another server, dumped first) wrote anything
        passed = jobs_cli("backup-set", "--dest", f"file://{root}", "--set-id", "accepted",
                          "--ignore-databases", "sequencer_5", *sources.dsns())
        assert passed.returncode == 0, passed.stdout + passed.stderr
        manifest = json.loads((root / "recent/0/accepted/manifest.json").read_text())
        assert [db["database"] for db in manifest["databases"]] == [APPS_DB, PARTICIPANT_DB]
    finally:
        sources.participant.psql("DROP DATABASE sequencer_5")
