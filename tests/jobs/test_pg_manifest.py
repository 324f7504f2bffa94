"""Pure checks of Postgres sets: ordering rule, manifest/step validation, sealing and promotion decisions
(on a file:// store with hand-written step records: no PostgreSQL), pg_restore output classification, client
selection."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs.destinations import ObjectExists, open_destination
from jobs.pgdump import client_binary, database_name, object_key, parse_dsn, redact
from jobs.pgsets import complete_sets, seal_set, to_json
from jobs.restore import classify_pg_restore_output, map_targets, toc_objects
from rules.manifest import (
    SetError,
    build_manifest,
    format_time,
    manifest_errors,
    ordering_errors,
    parse_time,
    step_errors,
    windows_record,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BOOT = "3b2a7c1e-0000-4000-8000-000000000001"


def db_record(role, database, start_s, end_s, mono=True, boot=BOOT, data=b"dump"):
    requested, finished = T0 + timedelta(seconds=start_s), T0 + timedelta(seconds=end_s)
    acquired = requested + timedelta(milliseconds=5)
    record = {
        "role": role, "database": database, "server_version": "15.18",
        "snapshot_requested_at": format_time(requested), "snapshot_acquired_at": format_time(acquired),
        "finished_at": format_time(finished), "wal_lsn": "0/1A2B3C", "boot_id": boot,
        "objects": [{"key": f"data/{role}/{database}.a1.pgdump.zst", "size": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}],
    }
    if mono:
        record["monotonic_ns"] = {"snapshot_requested": int(start_s * 1e9), "snapshot_acquired": int(start_s * 1e9)
                                  + 5_000_000, "finished": int(end_s * 1e9)}
    return record


# ---------------------------------------------------------------------------------------------- ordering


def test_apps_finished_before_participant_requested_holds():
    assert ordering_errors([db_record("apps", "a", 0, 10), db_record("participant", "p", 10.000001, 20)]) == []


@pytest.mark.parametrize("participant_start", [10, 9.5, -1])
def test_participant_requested_at_or_before_apps_finished_is_refused(participant_start):
    errors = ordering_errors([db_record("apps", "a", 0, 10), db_record("participant", "p", participant_start, 30)])
    assert errors and "not before participant/p" in errors[0]


def test_every_apps_database_counts_and_the_first_participant_request():
    dbs = [db_record("apps", "a1", 0, 5), db_record("apps", "a2", 5, 12),
           db_record("participant", "p1", 13, 20), db_record("participant", "p2", 11, 30)]
    errors = ordering_errors(dbs)
    assert len(errors) == 1 and "apps/a2" in errors[0] and "participant/p2" in errors[0]


def test_monotonic_clock_wins_when_the_wall_clock_was_stepped():
    apps, participant = db_record("apps", "a", 0, 10), db_record("participant", "p", 11, 20)
    participant["monotonic_ns"]["snapshot_requested"] = apps["monotonic_ns"]["finished"] - 1  # NTP stepped back
    assert "monotonic" in ordering_errors([apps, participant])[0]
    participant["boot_id"] = "another-boot"  # readings of different kernels are not comparable: wall clock only
    assert ordering_errors([apps, participant]) == []


def test_times_must_run_forward_and_be_readable():
    bad = db_record("apps", "a", 0, 10)
    bad["finished_at"] = format_time(T0 - timedelta(seconds=1))
    assert "do not run forward" in ordering_errors([bad])[0]
    bad["finished_at"] = "yesterday"
    assert "unreadable" in ordering_errors([bad])[0]


def test_other_roles_are_unconstrained():
    assert ordering_errors([db_record("apps", "a", 0, 10), db_record("sequencer", "s", 1, 50),
                            db_record("participant", "p", 11, 20), db_record("mediator", "m", 0, 100)]) == []


def test_time_format_is_rfc3339_utc_with_microseconds():
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
    assert parse_time("2026-01-02T03:04:05.000001Z") == datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        format_time(datetime(2026, 1, 2))


# ----------------------------------------------------------------------------------- manifest and steps


def manifest_of(*dbs, **over):
    steps = {}
    for db in dbs:
        steps.setdefault(db["role"], {"role": db["role"], "databases": []})["databases"].append(db)
    manifest = build_manifest(set_id="s1", migration_id=2, tier="recent", created_at=T0 + timedelta(minutes=5),
                              code_version="test", steps=list(steps.values()),
                              windows=windows_record(timedelta(days=30), None, timedelta(days=14)), history={})
    manifest.update(over)
    return manifest


def test_manifest_has_the_agreed_schema_and_checks_from_itself():
    manifest = manifest_of(db_record("participant", "p", 11, 20), db_record("apps", "a", 0, 10))
    assert {"set_id", "complete", "migration_id", "created_at", "code_version", "databases"} <= set(manifest)
    assert [d["role"] for d in manifest["databases"]] == ["apps", "participant"]
    for db in manifest["databases"]:
        assert {"role", "database", "server_version", "snapshot_requested_at", "snapshot_acquired_at",
                "finished_at", "wal_lsn", "objects"} <= set(db)
    assert manifest["ordering"]["holds"] is True
    assert manifest_errors(manifest, "s1") == []
    assert manifest_errors(json.loads(to_json(manifest)), "s1") == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(complete=False), "not marked complete"),
        (lambda m: m.pop("created_at"), "no created_at"),
        (lambda m: m.update(set_id="other"), "set id"),
        (lambda m: m["databases"][0]["objects"][0].update(sha256="abc"), "bad sha256"),
        (lambda m: m["databases"][0]["objects"][0].update(key="../../etc/passwd"), "bad object key"),
        (lambda m: m["databases"][1]["objects"].__setitem__(0, m["databases"][0]["objects"][0]), "listed twice"),
        (lambda m: m["databases"][0].pop("wal_lsn"), "missing wal_lsn"),
        (lambda m: m["databases"][1].update(snapshot_requested_at=m["databases"][0]["snapshot_acquired_at"]),
         "not before participant"),
    ],
)
def test_manifest_errors(change, message):
    manifest = manifest_of(db_record("apps", "a", 0, 10), db_record("participant", "p", 11, 20))
    change(manifest)
    assert any(message in e for e in manifest_errors(manifest, "s1")), manifest_errors(manifest, "s1")


def test_step_errors():
    step = {"format": "sv-backups/postgres-step/v1", "set_id": "s1", "migration_id": 2, "role": "apps",
            "databases": [db_record("apps", "a", 0, 1)]}
    assert step_errors(step, "s1", 2, "apps") == []
    assert step_errors(step, "s2", 2, "apps") and step_errors(step, "s1", 3, "apps")
    assert step_errors({**step, "databases": [db_record("participant", "p", 0, 1)]}, "s1", 2, "apps")
    assert step_errors({**step, "databases": []}, "s1", 2, "apps")


# ----------------------------------------------------------------------- sealing and promotion (no PG)


def write_step(dest, set_id, migration_id, role, *dbs):
    for db in dbs:
        dest.put_bytes(f"recent/{migration_id}/{set_id}/{db['objects'][0]['key']}", b"dump")
    dest.put_bytes(f"recent/{migration_id}/{set_id}/steps/{role}.json", to_json({
        "format": "sv-backups/postgres-step/v1", "set_id": set_id, "migration_id": migration_id, "role": role,
        "databases": list(dbs)}))


def fake_set(dest, set_id, migration_id=0, apps=(0, 10), participant=(11, 20)):
    write_step(dest, set_id, migration_id, "apps", db_record("apps", "a", *apps))
    write_step(dest, set_id, migration_id, "participant", db_record("participant", "p", *participant))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_seal_promotes_by_cadence_and_never_deletes(tmp_path):
    dest = open_destination(f"file://{tmp_path}")
    at = {"now": T0}

    def seal(set_id, migration_id=0):
        fake_set(dest, set_id, migration_id)
        before = files(tmp_path)
        result = seal_set(dest, set_id=set_id, migration_id=migration_id, roles=["apps", "participant"],
                          participant_pruning=timedelta(days=30), sequencer_pruning=None, now=lambda: at["now"])
        after = files(tmp_path)
        assert {k: after[k] for k in before} == before  # only additions
        return result

    assert seal("first").promoted  # nothing historical yet
    # 30d pruning -> a 27d16h cadence (30d - 8h schedule margin - 2d outage budget), measured from when the
    # last historical set was taken (its earliest snapshot request, T0 here) to when the new one is sealed
    at["now"] = T0 + timedelta(days=27, hours=15, minutes=59)
    assert not seal("second").promoted
    at["now"] = T0 + timedelta(days=27, hours=16)
    assert seal("third").promoted
    assert seal("other-migration", migration_id=1).promoted  # each migration id has its own history
    listed = [(p, m["set_id"]) for p, m in complete_sets(dest)]
    assert ("historical/0/third", "third") in listed and ("historical/0/second", "second") not in listed
    assert listed[0][1] == "other-migration" and listed[-1] == ("historical/0/first", "first")
    promoted = json.loads((tmp_path / "historical/0/third/manifest.json").read_text())
    assert promoted["tier"] == "historical" and promoted["promoted_from"] == "recent/0/third"
    assert (tmp_path / "historical/0/third/data/apps/a.a1.pgdump.zst").read_bytes() == b"dump"


def test_a_new_migration_id_keeps_the_previous_ids_newest_set_as_historical(tmp_path):
    """After a synchronizer upgrade the old id takes no new sets: its newest one (here not due by cadence) is
    promoted by the first seal of the new id, so the old id's history runs up to the upgrade."""
    dest = open_destination(f"file://{tmp_path}")

    def seal(set_id, migration_id, when):
        fake_set(dest, set_id, migration_id)
        return seal_set(dest, set_id=set_id, migration_id=migration_id, roles=["apps", "participant"],
                        participant_pruning=timedelta(days=30), sequencer_pruning=None, now=lambda: when)

    assert seal("old-first", 3, T0).promoted
    assert not seal("old-last", 3, T0 + timedelta(days=5)).promoted
    assert seal("new-first", 4, T0 + timedelta(days=5, hours=4)).promoted
    listed = {p for p, _m in complete_sets(dest)}
    assert {"historical/3/old-first", "historical/3/old-last", "historical/4/new-first"} <= listed
    promoted = json.loads((tmp_path / "historical/3/old-last/manifest.json").read_text())
    assert promoted["tier"] == "historical" and promoted["promoted_from"] == "recent/3/old-last"
    # idempotent: a later seal of the new id promotes nothing more
    before = files(tmp_path)
    assert not seal("new-second", 4, T0 + timedelta(days=5, hours=8)).promoted
    assert {k for k in files(tmp_path) if k.startswith("historical/")} == {
        k for k in before if k.startswith("historical/")
    }


def test_seal_refuses_and_writes_nothing(tmp_path):
    dest = open_destination(f"file://{tmp_path}")
    fake_set(dest, "bad", apps=(0, 10), participant=(9, 20))
    with pytest.raises(SetError, match="refusing to seal"):
        seal_set(dest, set_id="bad", migration_id=0, roles=["apps", "participant"])
    write_step(dest, "missing", 0, "apps", db_record("apps", "a", 0, 10))
    with pytest.raises(SetError, match="role participant: no completed step"):
        seal_set(dest, set_id="missing", migration_id=0, roles=["apps", "participant"])
    fake_set(dest, "lost-object")
    (tmp_path / "recent/0/lost-object/data/participant/p.a1.pgdump.zst").unlink()
    with pytest.raises(SetError, match="is missing"):
        seal_set(dest, set_id="lost-object", migration_id=0, roles=["apps", "participant"])
    assert not list(tmp_path.rglob("manifest.json"))
    assert complete_sets(dest) == []


def test_a_set_with_a_broken_manifest_does_not_exist(tmp_path):
    dest = open_destination(f"file://{tmp_path}")
    fake_set(dest, "good")
    seal_set(dest, set_id="good", migration_id=0, roles=["apps", "participant"])
    fake_set(dest, "truncated")
    dest.put_bytes("recent/0/truncated/manifest.json", b'{"set_id": "trunc')
    fake_set(dest, "not-complete")
    manifest = json.loads(dest.read_bytes("recent/0/good/manifest.json"))
    dest.put_bytes("recent/0/not-complete/manifest.json", to_json({**copy.deepcopy(manifest), "complete": False,
                                                                   "set_id": "not-complete"}))
    assert sorted({m["set_id"] for _, m in complete_sets(dest)}) == ["good"]
    with pytest.raises(ObjectExists):
        dest.put_bytes("recent/0/good/manifest.json", b"{}")


# ------------------------------------------------------------------------------------- restore checks

PG17_INTO_15 = """\
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: warning: errors ignored on restore: 1
"""

REAL_ERROR = """pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 3375; 0 16390 TABLE DATA par_contracts postgres
pg_restore: error: COPY failed for table "par_contracts": ERROR:  duplicate key value violates unique constraint
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: warning: errors ignored on restore: 2
"""


def test_newer_client_setting_errors_are_harmless():
    report = classify_pg_restore_output(PG17_INTO_15, 1)
    assert report.errors == [] and len(report.harmless) == 1


def test_parallel_workers_print_more_errors_than_pg_restore_counts():
    """pg_restore 17 -j2 into PostgreSQL 15 (as captured): four connections fail the SET, two are counted."""
    parallel = PG17_INTO_15.replace("pg_restore: warning: errors ignored on restore: 1\n", "") * 4
    parallel += "pg_restore: warning: errors ignored on restore: 2\n"
    report = classify_pg_restore_output(parallel, 1)
    assert report.errors == [] and len(report.harmless) == 4


def test_real_errors_are_not_missed():
    report = classify_pg_restore_output(REAL_ERROR, 1)
    assert len(report.errors) == 1 and "duplicate key" in report.errors[0] and len(report.harmless) == 1
    assert classify_pg_restore_output("pg_restore: error: connection to server failed\n", 1).errors
    assert classify_pg_restore_output("something odd\n", 1).errors  # failing exit, nothing recognised
    unmatched = 'pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "a"\n' \
                "Command was: SET b = 0;\npg_restore: warning: errors ignored on restore: 1\n"
    assert classify_pg_restore_output(unmatched, 1).errors
    miscounted = PG17_INTO_15.replace("restore: 1", "restore: 3")
    assert classify_pg_restore_output(miscounted, 1).errors
    assert classify_pg_restore_output("", 0).errors == []


def test_toc_listing_parse():
    listing = """;
; Archive created at 2026-11-21 16:23:09 UTC
215; 1259 16386 TABLE public par_contracts postgres
216; 1259 16393 TABLE public weird name postgres
3375; 0 16386 TABLE DATA public par_contracts postgres
3210; 2606 16400 CONSTRAINT public par_contracts par_contracts_pkey postgres
3212; 1259 16410 INDEX public par_contracts_owner_party_ledger_offset_idx postgres
"""
    assert toc_objects(listing) == [
        ("TABLE", "public", "par_contracts", None),
        ("CONSTRAINT", "public", "par_contracts", "par_contracts_pkey"),
        ("INDEX", "public", "par_contracts_owner_party_ledger_offset_idx", None),
    ]


def test_restore_targets_map_roles_and_databases():
    manifest = manifest_of(db_record("apps", "a", 0, 10), db_record("participant", "p1", 11, 20),
                           db_record("participant", "p2", 12, 20))
    pairs = map_targets(manifest, {"apps": ["postgresql://u@h/new_a"], "participant": [
        "postgresql://u@h/p2", "postgresql://u@h/p1"]}, allow_partial=False)
    assert [(db["database"], dsn.rsplit("/", 1)[1]) for db, dsn in pairs] == [("a", "new_a"), ("p2", "p2"),
                                                                               ("p1", "p1")]
    with pytest.raises(SetError, match="no target for participant/p1, participant/p2"):
        map_targets(manifest, {"apps": ["postgresql://u@h/a"]}, allow_partial=False)
    assert len(map_targets(manifest, {"apps": ["postgresql://u@h/a"]}, allow_partial=True)) == 1
    with pytest.raises(SetError, match="no participant database named 'p3'"):
        map_targets(manifest, {"participant": ["postgresql://u@h/p3"]}, allow_partial=True)


# ------------------------------------------------------------------------------------- pg_dump helpers


def test_client_matches_the_server_major(tmp_path):
    for major in (14, 15, 17):
        (tmp_path / str(major) / "bin").mkdir(parents=True)
        for tool in ("pg_dump", "pg_restore"):
            (tmp_path / str(major) / "bin" / tool).write_text("")
    assert client_binary("pg_dump", 15, lib=tmp_path) == str(tmp_path / "15/bin/pg_dump")
    assert client_binary("pg_dump", 16, lib=tmp_path) == str(tmp_path / "17/bin/pg_dump")  # oldest newer one
    assert client_binary("pg_restore", 14, lib=tmp_path) == str(tmp_path / "14/bin/pg_restore")
    assert client_binary("pg_dump", 15, lib=tmp_path, override=Path("/opt/pg")) == "/opt/pg/pg_dump"


def test_dsn_rules():
    assert database_name("postgresql://sv@apps-pg:5432/cantonnet_sv") == "cantonnet_sv"
    assert database_name("host=participant-pg dbname=participant_1 user=cnadmin") == "participant_1"
    with pytest.raises(ValueError, match="PGPASSWORD"):
        parse_dsn("postgresql://sv:hunter2@apps-pg/x")
    assert "hunter2" not in redact("postgresql://sv:hunter2@apps-pg/x")
    assert object_key("apps", "we ird/db", "a1", "data-0") == "data/apps/we%20ird%2Fdb.a1.data-0.pgdump.zst"


# ------------------------------------------------------------------------------------------ packaging


def test_the_cronjob_command_lines_parse():
    from jobs.__main__ import COMMAND_MODULES, build_parser

    assert COMMAND_MODULES[0] == "jobs.pgsets_cli"
    parser = build_parser()
    step = parser.parse_args(["backup-step", "--role", "apps", "--dest", "gs://b/p", "--set-id", "pod-abc",
                              "--migration-id", "3", "--db", "apps=postgresql://sv@apps-pg:5432/cantonnet_sv"])
    assert step.db == [("apps", "postgresql://sv@apps-pg:5432/cantonnet_sv")] and step.migration_id == 3
    seal = parser.parse_args(["seal-set", "--dest", "s3://b/p", "--set-id", "pod-abc", "--migration-id", "3",
                              "--roles", "apps,participant,sequencer", "--participant-pruning", "30d",
                              "--sequencer-pruning", "P30D"])
    assert seal.roles == ["apps", "participant", "sequencer"]
    assert seal.participant_pruning == seal.sequencer_pruning == timedelta(days=30)
    for bad in (["seal-set", "--dest", "x", "--set-id", "a", "--migration-id", "1", "--roles", "apps,apps"],
                ["backup-set", "--dest", "x", "--db", "apps"],
                ["backup-set", "--dest", "x", "--db", "Apps=postgresql://h/d"],
                ["seal-set", "--dest", "x", "--set-id", "../etc", "--migration-id", "1", "--roles", "apps"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_under_lsu_the_seal_records_the_serial_and_carries_lsu_from_forward(tmp_path):
    """A node that runs logical synchronizer upgrades: sets filed under the serial, manifest v3 with serial_id and
    lsu_from (the first LSU serial, kept by later serials' manifests); v2 sets of the same store stay readable."""
    dest = open_destination(f"file://{tmp_path}")

    def seal(set_id, mid, when, serial):
        fake_set(dest, set_id, mid)
        return seal_set(dest, set_id=set_id, migration_id=mid, roles=["apps", "participant"],
                        participant_pruning=timedelta(days=30), now=lambda: when, serial_id=serial)

    assert seal("hard", 4, T0, None).manifest["format"] == "sv-backups/postgres-set/v2"
    first = seal("lsu-4", 4, T0 + timedelta(hours=4), 4).manifest
    assert (first["format"], first["serial_id"], first["lsu_from"]) == ("sv-backups/postgres-set/v3", 4, 4)
    upgraded = seal("lsu-5", 5, T0 + timedelta(days=3), 5)
    assert upgraded.promoted and (upgraded.manifest["serial_id"], upgraded.manifest["lsu_from"]) == (5, 4)
    assert not manifest_errors(upgraded.manifest, "lsu-5")
    assert "historical/4/lsu-4" in {p for p, _m in complete_sets(dest)}  # the old serial's newest set is kept
    assert manifest_errors({**upgraded.manifest, "serial_id": 4}, "lsu-5") == [
        "serial id 4 is not the id the set is filed under"]
    assert manifest_errors({**upgraded.manifest, "lsu_from": 6}, "lsu-5") == ["lsu_from 6 is not a serial id up to 5"]
    with pytest.raises(SetError, match="serial id 6 is not the id the set is filed under"):
        seal("bad", 5, T0 + timedelta(days=4), 6)
    parser_args = ["seal-set", "--dest", "x", "--set-id", "a", "--migration-id", "5", "--serial-id", "5",
                   "--roles", "apps"]
    from jobs.__main__ import build_parser

    assert build_parser().parse_args(parser_args).serial_id == 5


def test_the_day_of_a_synchronizer_upgrade_as_the_audit_shows_it(tmp_path):
    """docs/synchronizer-upgrade.md: sets of serial 4 every 4h, the stacks move to serial 5, the first set of
    serial 5 is sealed. It is promoted (the first of its serial) and closes serial 4 (its newest set promoted);
    the participant's series runs on from serial 4 to 5, the sequencer's and mediator's restart."""
    from rules.history import audit, set_point, table

    ROLES = ("apps", "participant", "sequencer", "mediator")
    dest = open_destination(f"file://{tmp_path}")

    def seal(set_id, serial, hours):
        start = hours * 3600
        for index, role in enumerate(ROLES):
            name = f"{role}_{serial}" if role in ("sequencer", "mediator") else f"{role}_db"
            write_step(dest, set_id, serial, role, db_record(role, name, start + 10 * index, start + 10 * index + 5))
        return seal_set(dest, set_id=set_id, migration_id=serial, roles=list(ROLES),
                        participant_pruning=timedelta(days=30), sequencer_pruning=timedelta(days=30),
                        now=lambda: T0 + timedelta(hours=hours, minutes=1), serial_id=serial)

    assert seal("s4-a", 4, 0).promoted
    assert not seal("s4-b", 4, 4).promoted
    assert seal("s5-a", 5, 8).promoted
    points = [set_point(p.split("/", 1)[0], m) for p, m in complete_sets(dest)]
    assert {(p.tier, p.set_id) for p in points} >= {("historical", "s4-b"), ("historical", "s5-a")}
    report = audit(points, now=T0 + timedelta(hours=9), max_age=timedelta(hours=5))
    rows = {(s.id_text, s.role): s for s in report.series}
    assert sorted(rows) == [("4", "mediator"), ("4", "sequencer"), ("4..5", "apps"), ("4..5", "participant"),
                            ("5", "mediator"), ("5", "sequencer")]
    assert rows[("4..5", "participant")].count == 3 and rows[("4", "sequencer")].count == 2
    assert rows[("4", "sequencer")].open_gap is None and rows[("5", "sequencer")].count == 1
    assert report.ok, report.problems
    assert "newest set: s5-a (serial id 5), taken 1h ago" in table(report)


def test_a_sparse_dump_schedule_enters_the_cadence_the_seal_records_and_promotes_by(tmp_path):
    """Dump sets beside snapshot sets may be weekly: the seal is given the schedule's gap (--schedule-gap), so a
    set is promoted early enough that the next historical one still lands inside the pruning window."""
    from jobs.__main__ import build_parser
    from rules.retention import format_duration, postgres_historical_cadence

    dest = open_destination(f"file://{tmp_path}")
    weekly = timedelta(days=7)
    t0 = T0
    sealed = []
    for day in (0, 7, 14, 21):
        set_id = f"w{day}"
        fake_set(dest, set_id)
        sealed.append(
            seal_set(dest, set_id=set_id, migration_id=0, roles=["apps", "participant"],
                     participant_pruning=timedelta(days=30), now=lambda d=day: t0 + timedelta(days=d, hours=1),
                     schedule_gap=weekly)
        )  # fmt: skip
    cadence = postgres_historical_cadence(timedelta(days=30), None, weekly)
    assert cadence < postgres_historical_cadence(timedelta(days=30), None)
    assert cadence + weekly + timedelta(days=1) < timedelta(days=30)  # the next promoted set still lands in time
    assert {s.manifest["windows"]["historical_cadence"] for s in sealed} == {format_duration(cadence)}
    assert sealed[0].promoted and not sealed[1].promoted
    args = build_parser().parse_args(
        ["seal-set", "--dest", "x", "--set-id", "a", "--migration-id", "0", "--roles", "apps", "--schedule-gap", "7d"]
    )
    assert args.schedule_gap == weekly
