"""Restore fidelity against real PostgreSQL 15: a database stored in parts comes back identical (a plain dump of
the restored database equals the source's), a set of the v1 format (one archive per database) still verifies,
lists and restores, and a damaged part fails the restore."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from testkit.pgcluster import PASSWORD, PG_BIN

pytestmark = pytest.mark.slow

# Written by `python -m jobs backup-set` of the v1 code (commit dba0a6e) from two databases made with V1_SQL;
# the digests below were read from the source databases then.
V1_STORE = Path(__file__).parent / "data" / "v1-store"
V1_SQL = """
CREATE TABLE ledger (seq bigserial PRIMARY KEY, party text NOT NULL, amount numeric NOT NULL);
INSERT INTO ledger (party, amount) SELECT 'party-' || (g % 7), g * 1.5 FROM generate_series(1, 300) g;
CREATE INDEX ledger_party ON ledger (party);
CREATE TABLE holdings (id int PRIMARY KEY, seq bigint NOT NULL REFERENCES ledger(seq));
INSERT INTO holdings SELECT g, g FROM generate_series(1, 50) g;
CREATE VIEW ledger_by_party AS SELECT party, sum(amount) AS total FROM ledger GROUP BY party;
CREATE MATERIALIZED VIEW ledger_totals AS SELECT party, count(*) AS n FROM ledger GROUP BY party;
"""
V1_DIGESTS = {
    "SELECT md5(string_agg(l::text, ',' ORDER BY seq)) FROM ledger l": "70f75ebcf3fa253564ab4e1f6c85b025",
    "SELECT md5(string_agg(t::text, ',' ORDER BY party)) FROM ledger_totals t": "0efb597d67dad95ac450b68b5785b32a",
    "SELECT last_value FROM ledger_seq_seq": "300",
    "SELECT count(*) FROM holdings": "50",
}


def test_a_v1_set_still_verifies_lists_and_restores(pg_factory, pg_env, jobs_cli, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(V1_STORE, store)
    url = f"file://{store}/historical/0/v1-set"
    manifest = json.loads((store / "historical/0/v1-set/manifest.json").read_text())
    assert manifest["format"] == "sv-backups/postgres-set/v1" and "layout" not in manifest["databases"][0]
    verified = jobs_cli("verify-set", url)
    assert verified.returncode == 0, verified.stderr
    listed = [json.loads(line) for line in jobs_cli("list-sets", f"file://{store}", "--json").stdout.splitlines()]
    assert [s["tier"] for s in listed] == ["recent", "historical"]
    target = pg_factory("v1-target")
    restored = jobs_cli(
        "restore-set",
        url,
        "--jobs",
        "4",
        "--db",
        f"apps={target.dsn('cantonnet_sv')}",
        "--db",
        f"participant={target.dsn('participant_1')}",
    )
    assert restored.returncode == 0, restored.stderr
    for database in ("cantonnet_sv", "participant_1"):
        assert {query: target.psql(query, database) for query in V1_DIGESTS} == V1_DIGESTS


RICH_SQL = """
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."We""ird.*" (id bigserial PRIMARY KEY, payload text NOT NULL);
INSERT INTO "Odd Schema"."We""ird.*" (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 6000) g;
CREATE TABLE big_a (id bigint PRIMARY KEY, body text NOT NULL);
INSERT INTO big_a SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 9000) g;
CREATE TABLE big_b (id bigint PRIMARY KEY, a_id bigint NOT NULL REFERENCES big_a (id), body text NOT NULL);
INSERT INTO big_b SELECT g, 1 + g % 9000, repeat(md5((g * 3)::text), 5) FROM generate_series(1, 9000) g;
CREATE INDEX ON big_b (a_id);
COMMENT ON TABLE big_a IS 'kept with its comment';
CREATE TABLE small (k text PRIMARY KEY, v int NOT NULL, touched int NOT NULL DEFAULT 0);
INSERT INTO small SELECT 'k' || g, g FROM generate_series(1, 50) g;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
CREATE TRIGGER small_touch BEFORE UPDATE ON small FOR EACH ROW EXECUTE FUNCTION touch();
CREATE SEQUENCE standalone START 1000;
SELECT setval('standalone', 4242);
CREATE UNLOGGED TABLE scratch (x int);
INSERT INTO scratch VALUES (1), (2), (3);
CREATE TABLE measurements (at date NOT NULL, v int NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT date '2025-06-01' + g, g FROM generate_series(1, 400) g;
CREATE MATERIALIZED VIEW big_a_total AS SELECT count(*) AS n, sum(length(body)) AS bytes FROM big_a;
CREATE VIEW big_b_joined AS SELECT b.id, a.body FROM big_b b JOIN big_a a ON a.id = b.a_id;
SELECT lo_from_bytea(0, convert_to('a large object, restored with its oid', 'UTF8'));
ANALYZE;
"""


def plain_dump(cluster, database: str) -> list[str]:
    """Everything the database holds, as SQL; without the random key of psql's `\\restrict` guard lines."""
    out = subprocess.run(
        [str(PG_BIN / "pg_dump"), "--format=plain", f"--dbname={cluster.dsn(database)}"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": PASSWORD},
    ).stdout
    return [line for line in out.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))]


def test_a_database_in_parts_restores_identical(pg_factory, pg_env, jobs_cli, tmp_path):
    source = pg_factory("rich")
    source.createdb("rich")
    source.psql(RICH_SQL, "rich")
    dest = f"file://{tmp_path}/backups"
    backup = jobs_cli(
        "backup-set",
        "--dest",
        dest,
        "--db",
        f"apps={source.dsn('rich')}",
        "--part-min-mb",
        "1",
        "--max-parts",
        "3",
        "--dump-jobs",
        "2",
    )
    assert backup.returncode == 0, backup.stderr
    event = json.loads(backup.stdout.splitlines()[-1])
    (db,) = json.loads(open_destination(event["urls"][0]).read_bytes("manifest.json"))["databases"]
    assert db["layout"] == "sections"
    parts = [(obj["part"], tuple(obj.get("tables", ())), obj.get("rest", False)) for obj in db["objects"]]
    assert parts[0] == ("schema", (), False) and len(parts) == 4  # schema + 3 data parts (--max-parts 3)
    named = {t for _, tables, _ in parts for t in tables}
    assert {'"public"."big_a"', '"public"."big_b"', '"Odd Schema"."We""ird.*"'} >= named and len(named) >= 2
    assert '"public"."scratch"' not in named  # unlogged: left to pg_dump's own choice, in the rest

    target = pg_factory("rich-target")
    restored = jobs_cli("restore-set", event["urls"][1], "--jobs", "3", "--db", f"apps={target.dsn('rich')}")
    assert restored.returncode == 0, restored.stderr
    restored_sql = plain_dump(target, "rich")
    assert restored_sql == plain_dump(source, "rich")
    for fact in (
        "SELECT pg_catalog.setval('public.standalone', 4242, true);",
        "REFRESH MATERIALIZED VIEW public.big_a_total;",
        "SELECT pg_catalog.lo_open('",
        "COPY public.scratch (x) FROM stdin;",
        "COPY public.measurements_2026 (at, v) FROM stdin;",
        "CREATE TRIGGER small_touch BEFORE UPDATE ON public.small FOR EACH ROW EXECUTE FUNCTION public.touch();",
    ):
        assert any(line.startswith(fact) for line in restored_sql), fact
    target.psql("UPDATE small SET v = v WHERE k = 'k1'", "rich")  # the trigger came back, and after the data
    assert target.psql("SELECT touched FROM small WHERE k = 'k1'", "rich") == "1"
    assert target.psql("SELECT n FROM big_a_total", "rich") == "9000"


def test_a_damaged_part_fails_the_restore(pg_factory, pg_env, jobs_cli, tmp_path):
    source = pg_factory("damaged")
    source.createdb("d")
    source.psql(
        "CREATE TABLE t (id int PRIMARY KEY, body text); "
        "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 3000) g",
        "d",
    )
    store = tmp_path / "backups"
    backup = jobs_cli("backup-set", "--dest", f"file://{store}", "--set-id", "s", "--db", f"apps={source.dsn('d')}")
    assert backup.returncode == 0, backup.stderr
    (data,) = [p for p in (store / "recent/0/s/data/apps").iterdir() if ".data-" in p.name]
    body = bytearray(data.read_bytes())
    data.unlink()  # a hard link shared with the historical copy: replace, do not write through
    body[len(body) // 2] ^= 0xFF
    data.write_bytes(bytes(body))
    target = pg_factory("damaged-target")
    restored = jobs_cli("restore-set", f"file://{store}/recent/0/s", "--db", f"apps={target.dsn('d')}")
    assert restored.returncode == 1
    assert data.name in restored.stderr and "FAILED" in restored.stderr
    intact = jobs_cli("restore-set", f"file://{store}/historical/0/s", "--db", f"apps={target.dsn('d2')}")
    assert intact.returncode == 0, intact.stderr


def test_a_set_older_than_its_sequencer_pruning_window_is_refused_unless_accepted(pg_factory, pg_env, jobs_cli,
                                                                                  tmp_path):
    from datetime import UTC, datetime, timedelta

    from jobs.pgdump import DumpSettings
    from jobs.pgsets import backup_set

    source = pg_factory("stale")
    source.createdb("d")
    source.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)", "d")
    store = tmp_path / "backups"
    taken = datetime.now(UTC) - timedelta(days=30, hours=2)  # the sequencer has pruned past it
    backup_set(open_destination(f"file://{store}"), dsns={"apps": [source.dsn("d")]}, set_id="old", migration_id=0,
               settings=DumpSettings(), sequencer_pruning=timedelta(days=30), clock=lambda: taken)
    target = pg_factory("stale-target")
    url = f"file://{store}/recent/0/old"

    refused = jobs_cli("restore-set", url, "--db", f"apps={target.dsn('d')}")
    assert refused.returncode == 1
    assert refused.stderr.startswith("restore-set: REFUSED: set old is 30d 2h old (created ")
    assert "not less than the sequencer pruning window of 30d recorded in its manifest" in refused.stderr
    assert "--accept-stale-set" in refused.stderr
    assert "d" not in target.psql("SELECT string_agg(datname, ',') FROM pg_database").split(",")  # not created

    accepted = jobs_cli("restore-set", url, "--db", f"apps={target.dsn('d')}", "--accept-stale-set")
    assert accepted.returncode == 0, accepted.stderr
    assert "WARNING (--accept-stale-set): set old is 30d 2h old" in accepted.stderr
    assert target.psql("SELECT count(*) FROM t", "d") == "100"
