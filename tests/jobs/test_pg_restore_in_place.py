"""The in-place restore of docs/runbook.md, on real PostgreSQL: one server URL per role restores every database of
the role under its own name; a target server without the role that owns the objects is refused before anything is
written (or the role is created with --create-missing-roles); a database that holds data is refused, and only
--replace-existing drops and recreates it, so a half-done restore can be run again."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shutil
import struct
import sys
import termios

import pytest

from tests.jobs.conftest import REPO, job_env

pytestmark = pytest.mark.slow

SQL = """
CREATE ROLE svowner NOLOGIN;
CREATE TABLE ledger (seq bigserial PRIMARY KEY, party text NOT NULL);
INSERT INTO ledger (party) SELECT 'party-' || g FROM generate_series(1, 200) g;
ALTER TABLE ledger OWNER TO svowner;
"""
DIGEST = "SELECT md5(string_agg(l::text, ',' ORDER BY seq)) FROM ledger l"


def server(cluster) -> str:
    return cluster.dsn().rsplit("/", 1)[0]


def databases(cluster) -> set[str]:
    return set(cluster.psql("SELECT datname FROM pg_database WHERE NOT datistemplate").split())


def test_in_place_restore_needs_its_flags_and_can_be_run_again(pg_factory, pg_env, jobs_cli, tmp_path):
    source = pg_factory("in-place-source")
    for name in ("cantonnet_sv", "cantonnet_scan", "participant_0"):
        source.psql(f"CREATE DATABASE {name}")
        source.psql(SQL.replace("CREATE ROLE svowner NOLOGIN;", "") if name != "cantonnet_sv" else SQL, name)
    expected = {name: source.psql(DIGEST, name) for name in ("cantonnet_sv", "cantonnet_scan", "participant_0")}
    store = f"file://{tmp_path}/store"
    taken = jobs_cli(
        "backup-set", "--dest", store, "--set-id", "s1",
        "--db", f"apps={source.dsn('cantonnet_sv')}", "--db", f"apps={source.dsn('cantonnet_scan')}",
        "--db", f"participant={source.dsn('participant_0')}",
    )  # fmt: skip
    assert taken.returncode == 0, taken.stdout + taken.stderr
    target = pg_factory("in-place-target")
    before = databases(target)
    restore = ["restore-set", f"{store}/recent/0/s1", "--db", f"apps={server(target)}",
               "--db", f"participant={server(target)}"]  # fmt: skip

    refused = jobs_cli(*restore)
    assert refused.returncode == 1
    assert "has no role svowner" in refused.stderr and "--create-missing-roles" in refused.stderr
    assert databases(target) == before  # nothing created before the check

    restored = jobs_cli(*restore, "--create-missing-roles")
    assert restored.returncode == 0, restored.stderr
    events = [json.loads(line) for line in restored.stdout.splitlines()]
    assert sorted(e["database"] for e in events) == ["cantonnet_scan", "cantonnet_sv", "participant_0"]
    for name, digest in expected.items():
        assert target.psql(DIGEST, name) == digest
        assert target.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'", name) == "svowner"

    # The node wrote on after the restore (or the restore was cut half-way): running it again is refused...
    target.psql("INSERT INTO ledger (party) VALUES ('written-after')", "participant_0")
    again = jobs_cli(*restore)
    assert again.returncode == 1 and "is not empty" in again.stderr and "--replace-existing" in again.stderr
    assert target.psql("SELECT count(*) FROM ledger WHERE party = 'written-after'", "participant_0") == "1"
    # ...until asked: each database is dropped and created again from the set.
    replaced = jobs_cli(*restore, "--replace-existing")
    assert replaced.returncode == 0, replaced.stderr
    assert "dropping and recreating" in replaced.stderr
    for name, digest in expected.items():
        assert target.psql(DIGEST, name) == digest
    assert "check participant/participant_0: passed: 1 tables, 200 rows as recorded, 1 samples match" in replaced.stderr
    assert "RTO of the databases" in replaced.stderr
    events = [json.loads(line) for line in replaced.stdout.splitlines()]
    assert {e["check"]["status"] for e in events} == {"passed"}

    # The checks compare with what the set recorded at dump time: a manifest whose row count was edited (the store
    # is create-only, so only a copy can be) restores, and then fails its check.
    forged = tmp_path / "forged"
    shutil.copytree(tmp_path / "store", forged)
    manifest_path = forged / "recent/0/s1/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    [participant] = [db for db in manifest["databases"] if db["role"] == "participant"]
    participant["verification"]["tables"][0]["rows"] += 1
    manifest_path.write_text(json.dumps(manifest))
    checked = jobs_cli("restore-set", f"file://{forged}/recent/0/s1", *restore[2:], "--replace-existing")
    assert checked.returncode == 1
    assert "201 rows expected (recorded at dump time), 200 restored" in checked.stderr
    assert "the restored data does not match the set" in checked.stderr


def test_progress_is_drawn_on_a_terminal_only(pg_factory, pg_env, jobs_cli, tmp_path):
    """verify-set reads every object: on a terminal a bar shows bytes, rate and time left; in a pipe (a pod's log)
    nothing is drawn and the output is what it always was."""
    source = pg_factory("progress-source")
    source.psql("CREATE DATABASE cantonnet_sv")
    source.psql(SQL, "cantonnet_sv")
    store = f"file://{tmp_path}/store"
    taken = jobs_cli("backup-set", "--dest", store, "--set-id", "p1", "--db", f"apps={source.dsn('cantonnet_sv')}")
    assert taken.returncode == 0, taken.stderr
    piped = jobs_cli("verify-set", f"{store}/recent/0/p1")
    assert piped.returncode == 0 and "verify p1" not in piped.stderr and "\r" not in piped.stderr

    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr is the terminal, 120 columns wide
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "jobs", "verify-set", f"{store}/recent/0/p1"], job_env())
    drawn = b""
    with contextlib.suppress(OSError):  # EIO once the child has exited
        while chunk := os.read(fd, 4096):
            drawn += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, drawn.decode(errors="replace")
    text = drawn.decode(errors="replace")
    assert "verify p1" in text and "100%" in text and "B/s" in text
