"""docs/runbook.md's database restore, run as written: the block marked `runbook-test: database-restore` is
extracted from the doc and run by bash against real PostgreSQL, with only the variables the doc says to set. The
node is restored in place: the apps server still holds the damaged data, the participant server is a fresh one
without the role that owns the objects. The set chosen is the newest read before the damage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rules.manifest import format_time, utc_now
from testkit.pgcluster import PASSWORD
from tests.jobs.conftest import REPO, job_env

pytestmark = pytest.mark.slow
RUNBOOK = REPO / "docs" / "runbook.md"
DIGEST = "SELECT md5(string_agg(l::text, ',' ORDER BY seq)) FROM ledger l"
SQL = """
CREATE TABLE ledger (seq bigserial PRIMARY KEY, party text NOT NULL);
INSERT INTO ledger (party) SELECT 'party-' || g FROM generate_series(1, 300) g;
ALTER TABLE ledger OWNER TO svowner;
"""


def runbook_block(name: str) -> str:
    found = re.search(rf"<!-- runbook-test: {name} -->\n```bash\n(.*?)```", RUNBOOK.read_text(), re.S)
    assert found, f"docs/runbook.md has no block marked runbook-test: {name}"
    return found.group(1)


def test_the_runbooks_database_restore_runs_as_written(pg_factory, pg_env, jobs_cli, tmp_path):
    apps, participant = pg_factory("runbook-apps"), pg_factory("runbook-participant")
    for cluster, names in ((apps, ("cantonnet_sv", "cantonnet_scan")), (participant, ("participant_0",))):
        cluster.psql("CREATE ROLE svowner NOLOGIN")
        for name in names:
            cluster.psql(f"CREATE DATABASE {name}")
            cluster.psql(SQL, name)
    good = {name: apps.psql(DIGEST, name) for name in ("cantonnet_sv", "cantonnet_scan")}
    good["participant_0"] = participant.psql(DIGEST, "participant_0")
    store = f"file://{tmp_path}/store"
    dbs = ["--db", f"apps={apps.dsn('cantonnet_sv')}", "--db", f"apps={apps.dsn('cantonnet_scan')}",
           "--db", f"participant={participant.dsn('participant_0')}"]  # fmt: skip
    assert jobs_cli("backup-set", "--dest", store, "--set-id", "before", *dbs).returncode == 0
    time.sleep(0.01)
    damage_at = format_time(utc_now())
    apps.psql("DELETE FROM ledger WHERE seq % 2 = 0", "cantonnet_sv")  # the damage, noticed at damage_at
    assert jobs_cli("backup-set", "--dest", store, "--set-id", "after", *dbs).returncode == 0

    fresh = pg_factory("runbook-fresh-participant")  # the participant's server was lost: a new, empty one
    shim = tmp_path / "bin" / "sv-backups-jobs"  # what `pip install '.[jobs]'` installs (tests/jobs/test_install.py)
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\ncd {REPO} && exec {sys.executable} -m jobs "$@"\n')
    shim.chmod(0o755)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:postgres:{PASSWORD}\n")
    passfile.chmod(0o600)
    env = {k: v for k, v in job_env().items() if k != "PGPASSWORD"}
    env |= {
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "BACKUP_URL": store,
        "DAMAGE_AT": damage_at,
        "APPS_PG": apps.dsn().rsplit("/", 1)[0],
        "PARTICIPANT_PG": fresh.dsn().rsplit("/", 1)[0],
        "PGPASSFILE": str(passfile),
    }
    done = subprocess.run(["bash", "-c", runbook_block("database-restore")], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/recent/0/before" in done.stdout + done.stderr and "/recent/0/after" not in done.stdout
    for name in ("cantonnet_sv", "cantonnet_scan"):
        assert apps.psql(DIGEST, name) == good[name]  # in place: the damaged database replaced by the set's
    assert fresh.psql(DIGEST, "participant_0") == good["participant_0"]
    assert fresh.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'", "participant_0") == "svowner"
    assert PASSWORD not in done.stdout + done.stderr
    assert Path(passfile).read_text().count("\n") == 1
