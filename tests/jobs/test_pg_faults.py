"""Faults and bad input: in every case no set is complete, nothing earlier is touched, the exit code is
non-zero (with a `backup.failed` event), and list-sets does not show the partial set."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from jobs.pgdump import DumpError, DumpSettings
from jobs.pgsets import backup_set, complete_sets
from testkit.pgcluster import PASSWORD, PG_BIN, wait_for
from tests.jobs.conftest import REPO, job_env
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, assert_whole_archives, make_sources, stopped

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources(pg_factory):
    return make_sources(pg_factory, size_mb=3)


@pytest.fixture(scope="module")
def baseline(sources, tmp_path_factory):
    """A complete earlier set, taken once; each test starts from a copy of it."""
    root = tmp_path_factory.mktemp("baseline") / "store"
    env = job_env(PGPASSWORD=PASSWORD)
    out = subprocess.run([sys.executable, "-m", "jobs", "backup-set", "--dest", f"file://{root}",
                          "--set-id", "earlier", *sources.dsns()], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def store(baseline, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(baseline, root)
    return root


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")
    }


def assert_failed_cleanly(result, root: Path, before: dict[str, str], jobs_cli, set_id: str | None = None) -> dict:
    """The common postconditions of every fault."""
    assert result.returncode != 0, result.stdout
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    failed = [e for e in lines if e["event"] == "backup.failed"]
    assert failed and failed[-1]["kind"] == "postgres" and failed[-1]["severity"] == "ERROR"
    assert not [e for e in lines if e["event"] == "backup.completed"]
    after = fingerprint(root)
    assert {k: after[k] for k in before} == before  # nothing earlier touched
    assert not [k for k in after if k.endswith("manifest.json") and k not in before]  # nothing sealed
    listed = jobs_cli("list-sets", f"file://{root}", "--json")
    assert [json.loads(line)["set_id"] for line in listed.stdout.splitlines()] == ["earlier", "earlier"]
    assert jobs_cli("verify-set", f"file://{root}/recent/0/earlier").returncode == 0
    if set_id:
        partial = jobs_cli("verify-set", f"file://{root}/recent/0/{set_id}")
        assert partial.returncode == 1 and "does not exist" in partial.stderr
    return failed[-1]


def fake_pg_bin(tmp_path: Path, body: str) -> Path:
    """A --pg-bin directory whose pg_dump wraps the real one (`--version` passes straight through)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(f"#!/bin/bash\nREAL={PG_BIN}/pg_dump\n"
                      'if [ "$1" = --version ]; then exec "$REAL" --version; fi\n' + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


THROTTLED = """
exec {python} -c '
import os, subprocess, sys, time
proc = subprocess.Popen([sys.argv[1], *sys.argv[2:]], stdout=subprocess.PIPE)
first = True
while chunk := proc.stdout.read(32768):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    if first and "{match}" in " ".join(sys.argv):
        open("{marker}", "w").close()
        first = False
    time.sleep(0.05 if "{match}" in " ".join(sys.argv) else 0)
sys.exit(proc.wait())
' "$REAL" "$@"
"""


def test_dump_failing_midway(sources, store, pg_env, jobs_cli, tmp_path):
    before = fingerprint(store)
    pg_bin = fake_pg_bin(tmp_path, f'if [[ "$*" == *{PARTICIPANT_DB}* ]]; then\n'
                                   '  "$REAL" "$@" | head -c 20000; exit 3\nfi\nexec "$REAL" "$@"\n')
    result = jobs_cli("backup-set", "--dest", f"file://{store}", "--set-id", "broken", "--pg-bin", str(pg_bin),
                      *sources.dsns())
    event = assert_failed_cleanly(result, store, before, jobs_cli, "broken")
    assert "pg_dump exited with 3" in event["error"]
    # apps succeeded (its step is recorded), the participant's partial object never appeared
    assert (store / "recent/0/broken/steps/apps.json").exists()
    assert not (store / "recent/0/broken/data/participant").exists() or not [
        p for p in (store / "recent/0/broken/data/participant").iterdir() if not p.name.startswith(".")]



def start_throttled_backup(sources, store, tmp_path, set_id: str) -> subprocess.Popen:
    """`backup-set` in the background with a pg_dump that slows down on the participant database; returns once
    that dump is under way (so the test can cut the server, kill or signal the job mid-dump)."""
    marker = tmp_path / "dumping"
    pg_bin = fake_pg_bin(tmp_path, THROTTLED.format(python=sys.executable, match=PARTICIPANT_DB, marker=marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "backup-set", "--dest", f"file://{store}", "--set-id", set_id,
         "--pg-bin", str(pg_bin), *sources.dsns()],
        cwd=REPO, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(marker.exists, timeout=60)
    return proc


def test_server_going_away_mid_dump(sources, store, pg_env, tmp_path, jobs_cli):
    before = fingerprint(store)
    proc = start_throttled_backup(sources, store, tmp_path, "gone")
    with stopped(sources.participant):
        stdout, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    event = assert_failed_cleanly(result, store, before, jobs_cli, "gone")
    assert "participant" in event["error"]


def test_upload_cut_off(sources, s3_bucket, pg_env, monkeypatch, capsys):
    dest = open_destination(f"s3://{s3_bucket}/pg")
    backup_set(dest, dsns={"apps": [sources.apps.dsn(APPS_DB)], "participant": [sources.participant.dsn(
        PARTICIPANT_DB)]}, set_id="earlier", migration_id=0, settings=DumpSettings())
    before = {info.key: info.size for info in dest.list()}
    real = dest.client.upload_part
    real_writer = dest.writer

    def small_parts(key):  # several parts even for a small test dump (moto only checks sizes on completion)
        writer = real_writer(key)
        if "participant" in key:
            writer.part_size = 64 * 1024
        return writer

    monkeypatch.setattr(dest, "writer", small_parts)

    cut = []

    def cut_off(**kwargs):
        if "participant" in kwargs["Key"] and kwargs["PartNumber"] == 3:
            cut.append(kwargs["Key"].removeprefix("pg/"))
            raise ConnectionError("connection reset by peer")
        return real(**kwargs)

    monkeypatch.setattr(dest.client, "upload_part", cut_off)
    with pytest.raises(ConnectionError):
        backup_set(dest, dsns={"apps": [sources.apps.dsn(APPS_DB)], "participant": [sources.participant.dsn(
            PARTICIPANT_DB)]}, set_id="cut", migration_id=0, settings=DumpSettings())
    after = {info.key: info.size for info in dest.list()}
    assert {k: after[k] for k in before} == before
    new = sorted(set(after) - set(before))
    assert new and all(k.startswith("recent/0/cut/") for k in new)
    assert cut and cut[0] not in new  # the object whose upload was cut off never appeared
    assert not [k for k in new if k.endswith(("manifest.json", "steps/participant.json"))]
    assert_whole_archives({k: dest.read_bytes(k) for k in new if "/data/" in k})
    assert dest.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert [m["set_id"] for _, m in complete_sets(dest)] == ["earlier", "earlier"]


def test_destination_full(sources, baseline, pg_factory, pg_env, jobs_cli, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    size = sum(p.stat().st_size for p in baseline.rglob("*") if p.is_file()) + 300 * 1024
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        shutil.copytree(baseline, mount / "store")
        before = fingerprint(mount / "store")
        result = jobs_cli("backup-set", "--dest", f"file://{mount}/store", "--set-id", "full", *sources.dsns())
        event = assert_failed_cleanly(result, mount / "store", before, jobs_cli, "full")
        assert "No space left on device" in event["error"]
        assert not list((mount / "store").rglob(".*.partial"))  # temp files of the failed write are gone
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_wrong_password(sources, store, jobs_cli):
    before = fingerprint(store)
    secret = "not-the-password-7f3a"
    result = jobs_cli("backup-set", "--dest", f"file://{store}", "--set-id", "denied", *sources.dsns(),
                      env=job_env(PGPASSWORD=secret))
    event = assert_failed_cleanly(result, store, before, jobs_cli, "denied")
    assert "password authentication failed" in event["error"]
    assert secret not in result.stdout + result.stderr


def test_password_in_dsn_is_refused(sources, store, jobs_cli):
    before = fingerprint(store)
    dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{sources.apps.port}/{APPS_DB}"
    result = jobs_cli("backup-set", "--dest", f"file://{store}", "--set-id", "leaky", "--db", f"apps={dsn}",
                      env=job_env(PGPASSWORD=PASSWORD))
    event = assert_failed_cleanly(result, store, before, jobs_cli)
    assert "PGPASSWORD" in event["error"] and PASSWORD not in result.stdout + result.stderr


def test_participant_failing_after_apps_succeeded(sources, store, pg_env, jobs_cli):
    before = fingerprint(store)
    with stopped(sources.participant):
        result = jobs_cli("backup-set", "--dest", f"file://{store}", "--set-id", "half", *sources.dsns())
    assert_failed_cleanly(result, store, before, jobs_cli, "half")
    assert (store / "recent/0/half/steps/apps.json").exists()
    restore = jobs_cli("restore-set", f"file://{store}/recent/0/half", "--db", f"apps={sources.apps.dsn('x')}")
    assert restore.returncode == 1 and "incomplete" in restore.stderr


def test_killed_before_sealing(sources, store, pg_env, jobs_cli):
    before = fingerprint(store)
    for role, cluster, db in (("apps", sources.apps, APPS_DB), ("participant", sources.participant, PARTICIPANT_DB)):
        step = jobs_cli("backup-step", "--role", role, "--dest", f"file://{store}", "--set-id", "unsealed",
                        "--migration-id", "0", "--db", f"{role}={cluster.dsn(db)}")
        assert step.returncode == 0, step.stderr
    # the pod dies here: no seal container ran
    listed = jobs_cli("list-sets", f"file://{store}", "--json")
    assert "unsealed" not in listed.stdout
    verify = jobs_cli("verify-set", f"file://{store}/recent/0/unsealed")
    assert verify.returncode == 1 and "does not exist" in verify.stderr
    assert {k: v for k, v in fingerprint(store).items() if k in before} == before


def test_killed_mid_dump(sources, store, pg_env, jobs_cli, tmp_path):
    before = fingerprint(store)
    proc = start_throttled_backup(sources, store, tmp_path, "killed")
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    visible = fingerprint(store)
    assert {k: visible[k] for k in before} == before
    assert not [k for k in visible if "/killed/" in k and k.endswith(("manifest.json", "steps/participant.json"))]
    assert_whole_archives({k: (store / k).read_bytes() for k in visible if "/killed/data/" in k})
    assert "killed" not in [json.loads(line)["set_id"] for line in jobs_cli("list-sets", f"file://{store}",
                                                                             "--json").stdout.splitlines()]


def test_seal_refuses_participant_taken_before_apps(sources, store, pg_env, jobs_cli):
    before = fingerprint(store)
    for role, cluster, db in (("participant", sources.participant, PARTICIPANT_DB), ("apps", sources.apps, APPS_DB)):
        step = jobs_cli("backup-step", "--role", role, "--dest", f"file://{store}", "--set-id", "reversed",
                        "--migration-id", "0", "--db", f"{role}={cluster.dsn(db)}")
        assert step.returncode == 0, step.stderr
    result = jobs_cli("seal-set", "--dest", f"file://{store}", "--set-id", "reversed", "--migration-id", "0",
                      "--roles", "apps,participant")
    event = assert_failed_cleanly(result, store, before, jobs_cli, "reversed")
    assert "not before participant" in event["error"]


def test_seal_refuses_missing_role(sources, store, pg_env, jobs_cli):
    before = fingerprint(store)
    step = jobs_cli("backup-step", "--role", "apps", "--dest", f"file://{store}", "--set-id", "lonely",
                    "--migration-id", "0", "--db", f"apps={sources.apps.dsn(APPS_DB)}")
    assert step.returncode == 0, step.stderr
    result = jobs_cli("seal-set", "--dest", f"file://{store}", "--set-id", "lonely", "--migration-id", "0",
                      "--roles", "apps,participant")
    event = assert_failed_cleanly(result, store, before, jobs_cli, "lonely")
    assert "role participant: no completed step" in event["error"]


def test_sigterm_mid_dump_aborts_and_reports(sources, store, pg_env, jobs_cli, tmp_path):
    before = fingerprint(store)
    proc = start_throttled_backup(sources, store, tmp_path, "termed")
    proc.send_signal(signal.SIGTERM)  # the Job's deadline, or a node drain
    stdout, stderr = proc.communicate(timeout=30)
    event = assert_failed_cleanly(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), store,
                                  before, jobs_cli, "termed")
    assert "SIGTERM" in event["error"]
    assert not list(store.rglob(".*.partial"))  # the interrupted write was cleaned up


def test_ddl_during_a_dump_fails_fast_instead_of_losing_data(sources, s3_bucket, pg_env, tmp_path):
    """TRUNCATE is not MVCC-safe: a part that dumped a table truncated after the snapshot would read it as empty,
    and the set would look complete. The job's own locks make the TRUNCATE wait; the next part's lock request then
    queues behind it (a deadlock), fails within its short lock wait, and no set is complete."""
    dest = open_destination(f"s3://{s3_bucket}/pg")
    marker = tmp_path / "schema-dump-starting"
    pg_bin = fake_pg_bin(tmp_path, f"""if [[ "$*" == *--section=pre-data* ]]; then touch {marker}; sleep 3; fi
exec "$REAL" "$@"
""")
    settings = DumpSettings(pg_bin=pg_bin, dump_jobs=1, min_part_size=64 * 1024, part_lock_wait="2s")
    participant = sources.participant
    participant.psql("CREATE TABLE saved_events AS SELECT * FROM par_events", PARTICIPANT_DB)
    truncate = subprocess.Popen(  # once the job holds its snapshot and locks, and its first part is not running yet
        ["bash", "-c", f'until [ -e {marker} ]; do sleep 0.05; done; exec "$0" "$@"', str(PG_BIN / "psql"), "-X",
         "-v", "ON_ERROR_STOP=1", "-d", participant.dsn(PARTICIPANT_DB), "-c",
         "SET lock_timeout = '120s'; TRUNCATE par_events"],
        env={**os.environ, "PGPASSWORD": PASSWORD}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        with pytest.raises(DumpError, match=r"(?s)\(schema\).*statement timeout.*LOCK TABLE public.par_events"):
            backup_set(dest, dsns={"participant": [participant.dsn(PARTICIPANT_DB)]}, set_id="ddl", migration_id=0,
                       settings=settings)
        assert truncate.wait(timeout=120) == 0, truncate.stdout.read()  # it went on once the job let go
        assert complete_sets(dest) == []
    finally:
        if truncate.poll() is None:
            truncate.kill()
        participant.psql("INSERT INTO par_events SELECT * FROM saved_events; DROP TABLE saved_events", PARTICIPANT_DB)
