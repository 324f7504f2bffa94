"""The Postgres restore drill on real PostgreSQL 15, run as the pod runs it (`python -m jobs drill-restore`): a
store filled by `backup-set` from test clusters, the drill's own scratch server in a scratch directory.

A good set passes (tables, exact row counts, sampled checksums, ordering from the restored data). A corrupted
object, a manifest whose row counts do not match, a database whose objects are missing, an older set without
verification data and a set older than --max-age each fail with a message naming what differs. Stores are
create-only, so every tampered case is a copy of the good store with one change."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jobs.drill import DrillError, check_space, ordering_from_data
from testkit.pgcluster import PASSWORD
from tests.jobs.conftest import REPO, job_env
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, make_sources

pytestmark = pytest.mark.slow

V1_STORE = Path(__file__).parent / "data" / "v1-store"

# Splice-shaped ordering evidence: the apps store's last ingested offset, the participant's ledger end.
APPS_ORDERING_SQL = """
CREATE TABLE store_last_ingested_offsets (store_id int PRIMARY KEY, migration_id bigint NOT NULL,
                                          last_ingested_offset bigint);
INSERT INTO store_last_ingested_offsets VALUES (1, 0, 40), (2, 0, 42);
CREATE TABLE audit_log (at text NOT NULL, what text NOT NULL);
INSERT INTO audit_log SELECT 't' || g, md5(g::text) FROM generate_series(1, 30) g;
"""
PARTICIPANT_ORDERING_SQL = """
CREATE TABLE lapi_parameters (ledger_end bigint, participant_id text NOT NULL);
INSERT INTO lapi_parameters VALUES (42, 'participant::1220abc');
"""


def _shared_dir(prefix: str) -> Path:
    """A directory the scratch server's user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def good_store(pg_factory):
    sources = make_sources(pg_factory, size_mb=1)
    sources.apps.psql(APPS_ORDERING_SQL, APPS_DB)
    sources.participant.psql(PARTICIPANT_ORDERING_SQL, PARTICIPANT_DB)
    root = _shared_dir("sv-drill-store-")
    store = root / "store"
    done = subprocess.run([sys.executable, "-m", "jobs", "backup-set", "--dest", f"file://{store}",
                           "--set-id", "drill-set", *sources.dsns()],
                          cwd=REPO, env=job_env(PGPASSWORD=PASSWORD), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(store / "historical", ignore_errors=True)  # one copy of the set: the tampering hits the drilled one
    yield store
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch():
    path = _shared_dir("sv-drill-scratch-")
    (path / "scratch").mkdir(mode=0o755)
    yield path / "scratch"
    shutil.rmtree(path, ignore_errors=True)


def drill(store: Path, scratch: Path, *extra: str, env: dict[str, str] | None = None):
    """Run the drill as the pod does; returns (exit code, the --json report or None, the event, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "jobs", "drill-restore", f"file://{store}", "--scratch-dir",
                           str(scratch), "--json", *extra],
                          cwd=REPO, env=env or job_env(), capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    events = [line for line in lines if "event" in line]
    reports = [line for line in lines if "event" not in line]
    assert len(events) == 1, proc.stdout + proc.stderr
    return proc.returncode, (reports[0] if reports else None), events[0], proc.stderr


def tampered(store: Path, change, under: Path) -> Path:
    copy = under.parent / "tampered-store"
    shutil.copytree(store, copy)
    (prefix,) = list((copy / "recent").glob("*/*"))
    change(prefix, json.loads((prefix / "manifest.json").read_text()))
    return copy


def rewrite(prefix: Path, manifest: dict) -> None:
    (prefix / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_good_set_passes_with_rto_and_rpo(good_store, scratch):
    code, report, event, stderr = drill(good_store, scratch, "--max-age", "1h")
    assert code == 0, stderr + json.dumps(report, indent=1)
    assert event["event"] == "backup.completed" and event["kind"] == "drill-postgres"
    assert event["set_id"] == "drill-set" and event["rto_seconds"] > 0 and event["rpo_seconds"] > 0
    assert {(d["role"], d["database"], d["status"]) for d in event["databases"]} == {
        ("apps", APPS_DB, "passed"), ("participant", PARTICIPANT_DB, "passed")}
    apps = next(d for d in report["databases"] if d["role"] == "apps")
    # contracts, events, progress, static_config, writes, the offsets table and audit_log (no key, sorted whole)
    assert apps["tables"] == 7 and apps["samples_checked"] == 7 and apps["rows"] > 1000
    assert report["ordering"]["manifest_proof"]["holds"] is True
    assert report["ordering"]["from_data"] == {
        "checked": True, "holds": True, "problems": [],
        "detail": f"app stores' last ingested offsets <= participant ledger end 42 (participant/{PARTICIPANT_DB})"}
    assert PASSWORD not in stderr and not list(scratch.glob("scratch-pg")), "the scratch server is removed"


def test_the_human_table_names_the_set_and_every_database(good_store, scratch):
    proc = subprocess.run([sys.executable, "-m", "jobs", "drill-restore", f"file://{good_store}", "--scratch-dir",
                           str(scratch)], cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "drill-set" in proc.stdout and f"participant/{PARTICIPANT_DB}" in proc.stdout
    assert "ordering (restored data): holds" in proc.stdout and "PASSED" in proc.stdout


def test_a_corrupted_object_fails_naming_database_and_object(good_store, scratch):
    def corrupt(prefix: Path, manifest: dict) -> None:
        db = next(d for d in manifest["databases"] if d["role"] == "participant")
        obj = next(o for o in db["objects"] if o["part"] == "data")
        path = prefix / obj["key"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size: only the digest can tell
        path.write_bytes(bytes(data))

    code, report, event, _ = drill(tampered(good_store, corrupt, scratch), scratch)
    assert code == 1 and event["event"] == "backup.failed"
    statuses = {d["database"]: d["status"] for d in report["databases"]}
    assert statuses == {APPS_DB: "passed", PARTICIPANT_DB: "failed"}
    assert f"participant/{PARTICIPANT_DB}" in event["error"]
    assert "size/sha256" in event["error"] or "cannot read" in event["error"], event["error"]


def test_row_counts_that_do_not_match_fail_naming_table_expected_and_actual(good_store, scratch):
    def more_rows(prefix: Path, manifest: dict) -> None:
        db = next(d for d in manifest["databases"] if d["role"] == "apps")
        table = next(t for t in db["verification"]["tables"] if t["name"] == "app_static_config")
        table["rows"] += 1
        rewrite(prefix, manifest)

    code, _, event, _ = drill(tampered(good_store, more_rows, scratch), scratch)
    assert code == 1
    assert (f"apps/{APPS_DB}: table public.app_static_config: 501 rows expected (recorded at dump time), "
            "500 restored") in event["error"]


def test_a_changed_sample_fails(good_store, scratch):
    def other_sample(prefix: Path, manifest: dict) -> None:
        db = next(d for d in manifest["databases"] if d["role"] == "participant")
        table = next(t for t in db["verification"]["tables"] if t["name"] == "par_contracts")
        table["sample"]["sha256"] = "0" * 64
        rewrite(prefix, manifest)

    code, _, event, _ = drill(tampered(good_store, other_sample, scratch), scratch)
    assert code == 1 and "table public.par_contracts: sampled checksum of the first 873 rows differs" in event["error"]


def test_a_missing_database_fails_naming_it(good_store, scratch):
    def lose(prefix: Path, manifest: dict) -> None:
        db = next(d for d in manifest["databases"] if d["role"] == "participant")
        for obj in db["objects"]:
            (prefix / obj["key"]).unlink()

    code, report, event, _ = drill(tampered(good_store, lose, scratch), scratch)
    assert code == 1
    assert f"participant/{PARTICIPANT_DB}: data/participant/" in event["error"] and "is missing" in event["error"]
    assert {d["database"]: d["status"] for d in report["databases"]}[PARTICIPANT_DB] == "failed"
    assert report["ordering"]["from_data"]["checked"] is False


def test_a_table_missing_after_restore_fails(good_store, scratch):
    def extra_table(prefix: Path, manifest: dict) -> None:
        db = next(d for d in manifest["databases"] if d["role"] == "apps")
        db["verification"]["tables"].append({"schema": "public", "name": "gone", "size": 0, "rows": 3})
        rewrite(prefix, manifest)

    code, _, event, _ = drill(tampered(good_store, extra_table, scratch), scratch)
    assert code == 1 and f"apps/{APPS_DB}: table public.gone is missing (expected 3 rows)" in event["error"]


def test_an_older_set_without_verification_data_is_reported_unverified(scratch):
    store = scratch.parent / "v1-store"
    shutil.copytree(V1_STORE, store)
    code, report, event, _ = drill(store, scratch, "--set-id", "v1-set")
    assert code == 1 and {d["status"] for d in report["databases"]} == {"unverified"}
    assert "no verification data in the manifest" in event["error"]


def test_a_set_older_than_max_age_fails_the_drill(good_store, scratch):
    code, _, event, _ = drill(good_store, scratch, "--max-age", "1s")
    assert code == 1 and "more than --max-age 1s (RPO bound)" in event["error"] and event["rpo_seconds"] > 1


def test_a_scratch_instance_is_used_and_left_empty(good_store, scratch, pg_factory):
    instance = pg_factory("drill-scratch")
    code, report, _, stderr = drill(good_store, scratch, "--scratch-dsn", instance.dsn(),
                                    env=job_env(PGPASSWORD=PASSWORD))
    assert code == 0, stderr + json.dumps(report, indent=1)
    assert report["scratch"].startswith("operator-provided") and PASSWORD not in json.dumps(report)
    assert instance.psql(f"SELECT count(*) FROM pg_database WHERE datname IN ('{APPS_DB}', '{PARTICIPANT_DB}')") == "0"


def test_a_scratch_instance_with_data_is_refused(good_store, scratch, pg_factory):
    instance = pg_factory("drill-busy")
    instance.createdb(PARTICIPANT_DB)
    instance.psql("CREATE TABLE precious (id int)", PARTICIPANT_DB)
    code, _, event, _ = drill(good_store, scratch, "--scratch-dsn", instance.dsn(), env=job_env(PGPASSWORD=PASSWORD))
    assert code == 1 and "is not empty: restore into a new or empty database" in event["error"]
    assert instance.psql("SELECT count(*) FROM precious", PARTICIPANT_DB) == "0", "the operator's data stays"


def test_ordering_from_data_finds_apps_ahead_of_the_participant(pg_factory, pg_env):
    cluster = pg_factory("drill-ordering")
    cluster.createdb("a")
    cluster.createdb("p")
    cluster.psql(APPS_ORDERING_SQL.replace("(2, 0, 42)", "(2, 0, 43)"), "a")
    cluster.psql(PARTICIPANT_ORDERING_SQL, "p")
    result = ordering_from_data([("apps/a", cluster.dsn("a"))], [("participant/p", cluster.dsn("p"))])
    assert result["checked"] and not result["holds"]
    assert result["problems"] == ["apps/a ingested up to offset 43, beyond the participant's ledger end 42 "
                                  "(participant/p): apps data is newer than the participant's (Splice issue #932)"]
    unchecked = ordering_from_data([("apps/p", cluster.dsn("p"))], [("participant/a", cluster.dsn("a"))])
    assert unchecked["checked"] is False


def test_too_little_scratch_space_is_a_clear_error(tmp_path):
    manifest = {"databases": [{"verification": {"database_size": 1 << 60}}]}
    with pytest.raises(DrillError, match=r"has \d+ MiB free, the set needs about \d+ MiB"):
        check_space(tmp_path, manifest)


def test_sigterm_stops_the_scratch_server_and_reports_the_failure(good_store, scratch):
    proc = subprocess.Popen([sys.executable, "-m", "jobs", "drill-restore", f"file://{good_store}", "--scratch-dir",
                             str(scratch)], cwd=REPO, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stderr:
        if "scratch server started" in line:
            break
    pid = int((scratch / "scratch-pg" / "data" / "postmaster.pid").read_text().split()[0])
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    (event,) = [json.loads(line) for line in out.splitlines() if '"event"' in line]
    assert proc.returncode == 1 and event["event"] == "backup.failed" and "SIGTERM" in event["error"]
    assert not (scratch / "scratch-pg").exists()
    assert not running(pid), "the postmaster outlived the drill"


def running(pid: int) -> bool:
    """Alive and not a zombie (the daemonized postmaster's parent may be a pid 1 that does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_table_that_fails_at_dump_time_is_skipped_without_aborting_the_snapshot(pg_factory, pg_env, monkeypatch):
    import psycopg

    from jobs import pgverify

    cluster = pg_factory("drill-skip")
    cluster.createdb("d")
    cluster.psql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); "
                 "INSERT INTO a SELECT generate_series(1, 10); INSERT INTO b SELECT generate_series(1, 20)", "d")
    real = pgverify.table_facts

    def dropping(conn, schema, name, *args):
        if name == "b":  # gone between the listing and its count, as a concurrent DROP would make it
            cluster.psql("DROP TABLE b", "d")
        return real(conn, schema, name, *args)

    monkeypatch.setattr(pgverify, "table_facts", dropping)
    with psycopg.connect(cluster.dsn("d")) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        txid = conn.execute("SELECT txid_current()").fetchone()[0]
        record = pgverify.verification_record(conn)
        assert [t["name"] for t in record["tables"]] == ["a"] and record["tables"][0]["rows"] == 10
        assert [t["name"] for t in record["skipped"]] == ["b"] and "does not exist" in record["skipped"][0]["error"]
        assert conn.execute("SELECT txid_current()").fetchone()[0] == txid, "the snapshot's transaction lives on"


def test_a_set_older_than_its_sequencer_pruning_window_passes_with_a_warning(good_store, scratch):
    # It still restores into scratch, which is what the drill proves; that a node could not catch up from it is
    # reported beside the result (restore-set and failover refuse such a set without --accept-stale-set).
    def age(prefix: Path, manifest: dict) -> None:
        manifest["windows"]["sequencer_pruning"] = "1s"  # the set, taken seconds ago, is older than that
        rewrite(prefix, manifest)

    store = tampered(good_store, age, scratch)
    time.sleep(1.1)
    code, report, event, stderr = drill(store, scratch)
    assert code == 0, stderr + json.dumps(report, indent=1)
    assert event["event"] == "backup.completed" and event["severity"] == "INFO"
    [warning] = event["warnings"]
    assert warning.startswith("set drill-set is ") and "sequencer pruning window of 1s" in warning
    assert report["warnings"] == [warning] and "drill: WARNING: set drill-set" in stderr
    fresh_code, fresh_report, fresh_event, _ = drill(good_store, scratch)
    assert fresh_code == 0 and "warnings" not in fresh_event and fresh_report["warnings"] == []
