"""A four-role set taken by one `backup-set` process with the independent roles running concurrently, against
real PostgreSQL: the set is complete, sequencer and mediator ran beside apps, participant started only after
apps finished (the manifest's ordering proof, checked by the seal and by verify-set), and a failing independent
role stops the others and leaves no manifest."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from rules.manifest import manifest_errors, ordering_errors, parse_time
from testkit.pgcluster import PG_BIN, load_fixture
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB

pytestmark = pytest.mark.slow

SEQUENCER_DB, MEDIATOR_DB = "sequencer_1", "mediator_1"


@pytest.fixture(scope="module")
def four(pg_factory):
    """apps and mediator on one server, participant and sequencer on another."""
    first, second = pg_factory("apps-mediator"), pg_factory("participant-sequencer")
    load_fixture(first, APPS_DB, "app", 2)
    load_fixture(first, MEDIATOR_DB, "med", 1)
    load_fixture(second, PARTICIPANT_DB, "par", 2)
    load_fixture(second, SEQUENCER_DB, "seq", 1)
    return {"apps": first.dsn(APPS_DB), "mediator": first.dsn(MEDIATOR_DB),
            "participant": second.dsn(PARTICIPANT_DB), "sequencer": second.dsn(SEQUENCER_DB)}


def slow_apps_pg_bin(tmp_path: Path) -> Path:
    """A --pg-bin whose pg_dump of the apps database starts 3 s late: long enough that a role run beside apps
    requests its snapshot while apps is still dumping, which the manifest then shows."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(f'#!/bin/bash\nREAL={PG_BIN}/pg_dump\nif [ "$1" = --version ]; then exec "$REAL" --version; fi\n'
                      f'case "$*" in *dbname=*/{APPS_DB}*) sleep 3 ;; esac\nexec "$REAL" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def db_args(dsns: dict[str, str]) -> list[str]:
    return [arg for role, dsn in dsns.items() for arg in ("--db", f"{role}={dsn}")]


def test_four_roles_concurrently_complete_and_ordered(four, pg_env, jobs_cli, tmp_path):
    dest = f"file://{tmp_path}/store"
    result = jobs_cli("backup-set", "--dest", dest, "--set-id", "four", "--parallel", "4",
                      "--pg-bin", str(slow_apps_pg_bin(tmp_path)), *db_args(four))
    assert result.returncode == 0, result.stderr + result.stdout
    manifest = json.loads(open_destination(f"{dest}/recent/0/four").read_bytes("manifest.json"))
    assert not manifest_errors(manifest, "four") and manifest["ordering"]["holds"] is True
    assert manifest["roles"] == ["apps", "participant", "sequencer", "mediator"]
    db = {d["role"]: d for d in manifest["databases"]}
    at = {role: {w: parse_time(d[f"{w}_at"]) for w in ("snapshot_requested", "finished")} for role, d in db.items()}
    # apps strictly before participant, on both clocks (same kernel: the monotonic readings are comparable)
    assert at["apps"]["finished"] < at["participant"]["snapshot_requested"]
    assert db["apps"]["monotonic_ns"]["finished"] < db["participant"]["monotonic_ns"]["snapshot_requested"]
    assert not ordering_errors(manifest["databases"])
    # the independent roles did not wait for apps
    for role in ("sequencer", "mediator"):
        assert at[role]["snapshot_requested"] < at["apps"]["finished"], role
    verified = jobs_cli("verify-set", f"{dest}/recent/0/four")
    assert verified.returncode == 0 and "ordering holds" in verified.stdout, verified.stderr


def test_a_failing_independent_role_stops_the_set_and_leaves_no_manifest(four, pg_env, jobs_cli, tmp_path):
    root = tmp_path / "store"
    broken = {**four, "mediator": four["mediator"].replace(MEDIATOR_DB, "no_such_database")}
    # The real mediator database is now listed by no role: ignored, so that the set gets as far as the dumps.
    result = jobs_cli("backup-set", "--dest", f"file://{root}", "--set-id", "broken", "--parallel", "4",
                      "--ignore-databases", MEDIATOR_DB, "--pg-bin", str(slow_apps_pg_bin(tmp_path)),
                      *db_args(broken))
    assert result.returncode == 1, result.stdout
    (failed,) = [json.loads(line) for line in result.stdout.splitlines() if '"backup.failed"' in line]
    assert "mediator" in failed["error"] and "no_such_database" in failed["error"]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []
    assert not [f for f in files if f.endswith("manifest.json")]
    # apps was still dumping (3 s late) when mediator failed: it was stopped, so participant never started,
    # and no partial object (a hidden temp file of an aborted write) is left behind.
    assert not [f for f in files if "/participant" in f or f.endswith("participant.json")]
    assert not [f for f in files if Path(f).name.startswith(".")]
    assert "recent/0/broken/steps/apps.json" not in files
    verify = jobs_cli("verify-set", f"file://{root}/recent/0/broken")
    assert verify.returncode == 1 and "does not exist" in verify.stderr
    listed = jobs_cli("list-sets", f"file://{root}", "--json")
    assert listed.stdout.strip() == ""
