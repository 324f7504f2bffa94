"""What the scratch pod of drill-snapshots runs, against real PostgreSQL: an online snapshot set (the "snapshot"
of each role a copy of its data directory taken inside pg_backup_start/pg_backup_stop while writes run, as in
test_pgsnap_online.py), each copy prepared with `prepare-datadir`, then `drill-snapshots-probe` as the pod runs
it: each server reaches consistency and accepts connections on its socket only, every configured database is
there, the apps-before-participant order holds in the restored data. And the failures: a database missing, a
server that does not start, apps data ahead of the participant's. The servers are always stopped."""

from __future__ import annotations

import json
import os
import pwd

import pytest

from jobs.destinations import open_destination
from jobs.drill_snapshots_probe import PROBE_COMMAND, probe
from jobs.pgsnap import run_step, seal
from jobs.pgsnap_volume import VolumeSnapshotProvider
from testkit.pgcluster import PG_BIN
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, Writer, make_sources, max_seq
from tests.jobs.pgsnap_helpers import DataDirCopy

pytestmark = pytest.mark.slow

PG_LIB = PG_BIN.parent.parent  # /usr/lib/postgresql: <major>/bin, the image's layout
APPS_OFFSETS = "CREATE TABLE store_last_ingested_offsets (store_id int PRIMARY KEY, last_ingested_offset bigint);"
LEDGER_END = "CREATE TABLE lapi_parameters (ledger_end bigint, participant_id text NOT NULL);"


@pytest.fixture(scope="module")
def sources(pg_factory):
    found = make_sources(pg_factory, size_mb=2)
    found.apps.psql(APPS_OFFSETS + "INSERT INTO store_last_ingested_offsets VALUES (1, 40);", APPS_DB)
    found.participant.psql(LEDGER_END + "INSERT INTO lapi_parameters VALUES (42, 'participant::1220');", PARTICIPANT_DB)
    return found


def _log(*args, **fields):
    return None


def take_and_prepare(sources, pg_factory, jobs_cli, tmp_path, set_id: str) -> dict:
    """An online set of apps then participant under concurrent writes; each copy prepared as the init containers
    do. Returns the restored layout: <root>/<role> -> the copy (its PGDATA in `data/`)."""
    url = f"file://{tmp_path}/store"
    dest = open_destination(url)
    copies = {}
    start = max(max_seq(sources.apps, APPS_DB), max_seq(sources.participant, PARTICIPANT_DB)) + 1
    with Writer(sources, start=start):
        for role, cluster in (("apps", sources.apps), ("participant", sources.participant)):
            copies[role] = DataDirCopy(cluster, pg_factory.base)
            provider = VolumeSnapshotProvider(copies[role], _log, dest=dest, online_dsn=cluster.dsn("postgres"))
            run_step(dest, provider, role=role, set_id=set_id, migration_id=3)
    seal(dest, set_id=set_id, migration_id=3, roles=["apps", "participant"])
    root = pg_factory.base / f"restored-{set_id}"
    root.mkdir()
    for role, snapshotter in copies.items():
        (copy,) = snapshotter.copies.values()
        result = jobs_cli("prepare-datadir", "--dest", url, "--set", set_id, "--migration-id", "3", "--role", role,
                          "--datadir", str(copy / "data"))  # fmt: skip
        assert result.returncode == 0, result.stderr + result.stdout
        (root / role).symlink_to(copy)  # the pod mounts each role's PVC at /restored/<role>
    return {"root": root}


def socket_root(pg_factory, name: str):
    path = pg_factory.base / name
    path.mkdir()
    if os.geteuid() == 0:  # the servers run as the data's owner
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def no_server_left(root) -> None:
    for role in ("apps", "participant"):
        assert not (root / role / "data" / "postmaster.pid").exists()


def test_the_restored_set_starts_consistent_holds_the_databases_and_the_order(
    sources, pg_factory, pg_env, jobs_cli, tmp_path
):
    layout = take_and_prepare(sources, pg_factory, jobs_cli, tmp_path, "drill-ok")
    sockets = socket_root(pg_factory, "sock-ok")
    message = tmp_path / "termination-log"
    result = jobs_cli(
        PROBE_COMMAND, "--root", str(layout["root"]), "--pgdata", "data", "--socket-root", str(sockets),
        "--databases", f"apps={APPS_DB}", "--databases", f"participant={PARTICIPANT_DB}",
        "--user", "apps=postgres", "--user", "participant=postgres", "--pg-lib", str(PG_LIB),
        "--termination-log", str(message),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    findings = json.loads(message.read_text())
    assert findings == json.loads(result.stdout.splitlines()[-1])
    assert findings["ok"] is True and findings["problems"] == []
    for role, database in (("apps", APPS_DB), ("participant", PARTICIPANT_DB)):
        assert findings["roles"][role]["started"] is True and findings["roles"][role]["consistent"] is True
        assert findings["roles"][role]["databases"] == [database]
    assert findings["ordering"]["checked"] is True and findings["ordering"]["holds"] is True
    # recovery ran to the end of the online backup, and the server has stopped
    for role in ("apps", "participant"):
        assert not (layout["root"] / role / "data" / "backup_label").exists()  # consumed by recovery
    no_server_left(layout["root"])
    assert list(sockets.iterdir()) == []


def test_a_database_missing_and_a_server_that_does_not_start_fail_with_their_stage(
    sources, pg_factory, pg_env, jobs_cli, tmp_path
):
    layout = take_and_prepare(sources, pg_factory, jobs_cli, tmp_path, "drill-missing")
    root = layout["root"]
    users = {"apps": "postgres", "participant": "postgres"}
    roots = {role: root / role / "data" for role in users}
    missing = probe(roots, {"apps": [APPS_DB, "cantonnet_sv_scan"], "participant": [PARTICIPANT_DB]}, users,
                    socket_root(pg_factory, "sock-missing"), lib=PG_LIB, timeout=120)  # fmt: skip
    assert missing["ok"] is False and missing["stage"] == "databases"
    (problem,) = missing["problems"]
    assert problem.startswith("apps: database(s) cantonnet_sv_scan of the stack's config missing in the restored data")
    assert missing["roles"]["apps"]["missing"] == ["cantonnet_sv_scan"]
    no_server_left(root)

    (roots["participant"] / "global" / "pg_control").unlink()  # what a torn or wrong volume looks like to the server
    broken = probe(roots, {"apps": [APPS_DB], "participant": [PARTICIPANT_DB]}, users,
                   socket_root(pg_factory, "sock-broken"), lib=PG_LIB, timeout=60)  # fmt: skip
    assert broken["ok"] is False and broken["stage"] == "start"
    assert broken["roles"]["participant"]["started"] is False and broken["roles"]["apps"]["consistent"] is True
    assert any(p.startswith("participant: the server did not start on the restored data") for p in broken["problems"])
    assert "pg_control" in " ".join(broken["problems"])
    assert broken["ordering"]["checked"] is False  # nothing to compare the apps offsets with
    no_server_left(root)


def test_apps_data_ahead_of_the_participant_fails_the_ordering(sources, pg_factory, pg_env, jobs_cli, tmp_path):
    # What a set taken out of order would hold: the app store ingested beyond the participant's ledger end.
    sources.apps.psql("UPDATE store_last_ingested_offsets SET last_ingested_offset = 50", APPS_DB)
    try:
        layout = take_and_prepare(sources, pg_factory, jobs_cli, tmp_path, "drill-order")
    finally:
        sources.apps.psql("UPDATE store_last_ingested_offsets SET last_ingested_offset = 40", APPS_DB)
    users = {"apps": "postgres", "participant": "postgres"}
    findings = probe({role: layout["root"] / role / "data" for role in users},
                     {"apps": [APPS_DB], "participant": [PARTICIPANT_DB]}, users,
                     socket_root(pg_factory, "sock-order"), lib=PG_LIB, timeout=120)  # fmt: skip
    assert findings["ok"] is False and findings["stage"] == "ordering"
    assert findings["ordering"]["holds"] is False
    assert "beyond the participant's ledger end 42" in findings["problems"][0]
    no_server_left(layout["root"])
