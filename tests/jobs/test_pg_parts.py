"""How a database is split into a schema archive and data parts (jobs/pgdump.py), and the manifest rules for
such a database (pure: no PostgreSQL)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from jobs.pgdump import DataPart, MiB, Table, part_dumps, plan_parts, table_pattern
from rules.manifest import database_errors

tables = st.lists(
    st.builds(
        Table,
        pattern=st.text(min_size=1, max_size=8).map(lambda n: table_pattern("public", n)),
        size=st.integers(min_value=0, max_value=4096 * MiB),
        splittable=st.booleans(),
    ),
    max_size=40,
    unique_by=lambda t: t.pattern,
)


@given(tables, st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=512 * MiB))
def test_every_table_lands_in_exactly_one_part(items, max_parts, min_size):
    parts = plan_parts(items, max_parts, min_size)
    assert 1 <= len(parts) <= max_parts
    assert sum(p.rest for p in parts) == 1
    placed = [t for p in parts for t in p.tables]
    assert len(placed) == len(set(placed))
    big = {t.pattern for t in items if t.splittable and t.size >= min_size}
    assert set(placed) == big  # only large, splittable tables are named; everything else is the rest's
    assert sum(p.size for p in parts) == sum(t.size for t in items)
    assert [p.size for p in parts] == sorted((p.size for p in parts), reverse=True)


@given(tables, st.integers(min_value=1, max_value=12))
def test_parts_are_balanced_like_lpt(items, max_parts):
    """Longest-processing-time first: no part exceeds the ideal share by more than the largest item."""
    parts = plan_parts(items, max_parts, MiB)
    total = sum(t.size for t in items)
    largest = max(
        [t.size for t in items if t.splittable and t.size >= MiB]
        + [sum(t.size for t in items if not (t.splittable and t.size >= MiB))],
        default=0,
    )
    assert max(p.size for p in parts) <= total / len(parts) + largest


@given(tables, st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=512 * MiB))
def test_the_rest_excludes_exactly_what_the_other_parts_dump(items, max_parts, min_size):
    parts = plan_parts(items, max_parts, min_size)
    jobs = part_dumps(parts)
    assert jobs[0][0] == "schema" and jobs[0][1] == ["--section=pre-data", "--section=post-data"]
    named = {arg.removeprefix("--table=") for _, args, _ in jobs[1:] for arg in args if arg.startswith("--table=")}
    excluded = {
        arg.removeprefix("--exclude-table-data=")
        for _, args, _ in jobs[1:]
        for arg in args
        if arg.startswith("--exclude-table-data=")
    }
    in_rest = {t for p in parts if p.rest for t in p.tables}
    assert named == excluded == {t for p in parts if not p.rest for t in p.tables}
    assert not named & in_rest
    for _, args, part in jobs[1:]:
        assert args[0] == "--section=data" and ("--strict-names" in args) is (not part.rest)


def test_a_small_database_is_one_schema_and_one_data_part():
    parts = plan_parts([Table('"public"."a"', 10 * MiB, True), Table('"public"."b"', 1, True)], 8, 64 * MiB)
    assert parts == [DataPart(tables=[], size=10 * MiB + 1, rest=True)]


def test_large_tables_get_parts_of_their_own():
    items = [
        Table('"public"."events"', 900 * MiB, True),
        Table('"public"."contracts"', 500 * MiB, True),
        Table('"public"."unlogged"', 800 * MiB, False),
        Table('"public"."small"', 3 * MiB, True),
    ]
    parts = plan_parts(items, 8, 64 * MiB)
    assert [(p.tables, p.rest) for p in parts] == [
        (['"public"."events"'], False),
        ([], True),
        (['"public"."contracts"'], False),
    ]


def test_patterns_match_one_table_literally():
    assert table_pattern("public", "par_contracts") == '"public"."par_contracts"'
    assert table_pattern("Odd Schema", 'We"ird.*') == '"Odd Schema"."We""ird.*"'


def _obj(key, **extra):
    return {"key": key, "size": 1, "sha256": hashlib.sha256(key.encode()).hexdigest(), **extra}


def db_record(objects, **extra):
    return {
        "role": "apps",
        "database": "a",
        "server_version": "15",
        "snapshot_requested_at": "x",
        "snapshot_acquired_at": "x",
        "finished_at": "x",
        "wal_lsn": "0/1",
        "objects": objects,
        **extra,
    }


def test_manifest_rules_for_a_database_in_parts():
    good = [
        _obj("data/apps/a.1.schema.pgdump.zst", part="schema"),
        _obj("data/apps/a.1.data-0.pgdump.zst", part="data", tables=['"public"."t"']),
        _obj("data/apps/a.1.data-1.pgdump.zst", part="data", rest=True),
    ]
    assert database_errors(db_record(good, layout="sections")) == []
    assert "2 objects for a single-archive database" in database_errors(db_record(good[:2]))[0]
    cases = [
        (good[1:], "exactly one schema part"),
        (good[:2], "the rest of the data"),
        ([*good, _obj("x", part="data", rest=True)], "the rest of the data"),
        ([*good, _obj("y", part="data")], "names no tables"),
        ([*good, _obj("z", part="index")], "parts must be schema or data"),
    ]
    for objects, message in cases:
        assert any(message in e for e in database_errors(db_record(objects, layout="sections"))), message
    assert "unknown layout" in database_errors(db_record(good, layout="tar"))[0]
