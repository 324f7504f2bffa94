"""A DABFT node's set against real PostgreSQL: the canton-bft state (the sequencer's cantonBft database, on the
sequencer's server) is dumped first, apps after it and strictly before participant; the manifest lists canton-bft
first, verify-set holds, and restore-set brings the canton-bft database back with the others."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from jobs.destinations import open_destination
from rules.manifest import CANTON_BFT, manifest_errors, ordering_errors, parse_time
from testkit.pgcluster import load_fixture
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB

pytestmark = pytest.mark.slow

SEQUENCER_DB, CANTON_BFT_DB = "sequencer_1", "cantonbft_1"


@pytest.fixture(scope="module")
def dabft(pg_factory):
    """apps on one server; participant, sequencer and the canton-bft state on another (the sequencer's)."""
    first, second = pg_factory("apps"), pg_factory("participant-sequencer")
    load_fixture(first, APPS_DB, "app", 2)
    load_fixture(second, PARTICIPANT_DB, "par", 2)
    load_fixture(second, SEQUENCER_DB, "seq", 1)
    load_fixture(second, CANTON_BFT_DB, "bft", 1)
    return {
        "participant": second.dsn(PARTICIPANT_DB),
        "apps": first.dsn(APPS_DB),
        "sequencer": second.dsn(SEQUENCER_DB),
        CANTON_BFT: second.dsn(CANTON_BFT_DB),
    }


def db_args(dsns: dict[str, str]) -> list[str]:
    return [arg for role, dsn in dsns.items() for arg in ("--db", f"{role}={dsn}")]


@pytest.mark.parametrize("parallel", ["1", "4"])
def test_dabft_set_takes_canton_bft_first_and_apps_before_participant(dabft, pg_env, jobs_cli, tmp_path, parallel):
    dest = f"file://{tmp_path}/store"
    result = jobs_cli("backup-set", "--dest", dest, "--set-id", "dabft", "--parallel", parallel, *db_args(dabft))
    assert result.returncode == 0, result.stderr + result.stdout
    manifest = json.loads(open_destination(f"{dest}/recent/0/dabft").read_bytes("manifest.json"))
    assert not manifest_errors(manifest, "dabft") and manifest["ordering"]["holds"] is True
    assert manifest["roles"] == [CANTON_BFT, "apps", "participant", "sequencer"]
    assert [d["role"] for d in manifest["databases"]][:2] == [CANTON_BFT, "apps"]
    db = {d["role"]: d for d in manifest["databases"]}
    at = {role: {w: parse_time(d[f"{w}_at"]) for w in ("snapshot_requested", "finished")} for role, d in db.items()}
    assert at[CANTON_BFT]["finished"] < at["apps"]["snapshot_requested"]
    assert at["apps"]["finished"] < at["participant"]["snapshot_requested"]
    assert not ordering_errors(manifest["databases"])
    verified = jobs_cli("verify-set", f"{dest}/recent/0/dabft")
    assert verified.returncode == 0 and "ordering holds" in verified.stdout, verified.stderr


def test_dabft_set_step_by_step_as_the_cronjob_runs_it(dabft, pg_env, jobs_cli, tmp_path, pg_factory):
    """The CronJob's way: one backup-step per role in the initContainers' order, then seal-set, then restore-set
    of the whole set (canton-bft included) into an empty server."""
    dest = f"file://{tmp_path}/store"
    def server(dsn: str) -> str:
        return urlsplit(dsn).netloc.rpartition("@")[2]

    for role in (CANTON_BFT, "apps", "participant", "sequencer"):
        # As the CronJob passes it: the other roles' databases on this role's server are accounted for.
        shared = [urlsplit(dsn).path.lstrip("/") for other, dsn in dabft.items()
                  if other != role and server(dsn) == server(dabft[role])]
        extra = ["--server-also-backs-up", ",".join(shared)] if shared else []
        step = jobs_cli("backup-step", "--role", role, "--dest", dest, "--set-id", "steps", "--migration-id", "0",
                        "--db", f"{role}={dabft[role]}", *extra)
        assert step.returncode == 0, step.stderr + step.stdout
    sealed = jobs_cli("seal-set", "--dest", dest, "--set-id", "steps", "--migration-id", "0",
                      "--roles", f"{CANTON_BFT},apps,participant,sequencer")
    assert sealed.returncode == 0, sealed.stderr + sealed.stdout
    manifest = json.loads(open_destination(f"{dest}/recent/0/steps").read_bytes("manifest.json"))
    assert manifest["roles"] == [CANTON_BFT, "apps", "participant", "sequencer"]
    target = pg_factory("dabft-restore")
    targets = {CANTON_BFT: CANTON_BFT_DB, "apps": APPS_DB, "participant": PARTICIPANT_DB, "sequencer": SEQUENCER_DB}
    restored = jobs_cli("restore-set", f"{dest}/recent/0/steps",
                        *(a for role, name in targets.items() for a in ("--db", f"{role}={target.dsn(name)}")))
    assert restored.returncode == 0, restored.stderr + restored.stdout
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert target.psql(tables, CANTON_BFT_DB) != "0"
