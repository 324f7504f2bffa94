"""Verification data: recorded at dump time from the dump's own snapshot, checked by the restore drill.

Per database: every user table (ordinary tables; a partitioned table's rows live in its partitions, which are
tables themselves) with its exact row count and a sampled checksum, plus what the drill needs to prepare its
scratch server (pg_database_size, encoding and locale).

The sample is the first `sample_rows` rows in primary-key order (else in the order of a unique index on NOT NULL
columns), each in its text form (`t::text`), hashed with sha256. It is identical after pg_restore into the same
or a newer major because:
- the text output of a row depends only on its values and on a few session settings, which both sides pin
  (`OUTPUT_SETTINGS`: time zone, date and interval styles, float digits, bytea format);
- pg_restore recreates the same columns in the same order (dropped columns vanish from both forms);
- the order is the key's: the same rows come first if the key's collation sorts the same, which holds for
  non-text keys always, and for text keys when the scratch database has the source's locale (the drill creates
  it so; `collatable_key` tells it which samples depend on that).

Why it is cheap: the sample is an index range scan of `sample_rows` rows. The count is one sequential scan per
table, run on the job's own (otherwise idle) snapshot connection while the pg_dump parts stream, largest tables
first, the order the parts run in: with `synchronize_seqscans` (on by default) a scan of a table larger than a
quarter of shared_buffers joins the scan the part's COPY already has in progress, so the pages are read once
for both; smaller tables are served from shared buffers or the OS cache.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import psycopg
from psycopg import sql

SAMPLE_ROWS = 1000
# Pinned on both sides, so that a row's text form depends only on its values; and row security off, as pg_dump
# sets it: a policy that would hide rows makes the count fail rather than come out short.
OUTPUT_SETTINGS = {
    "row_security": "off",
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}

# Ordinary tables that pg_dump dumps the data of (no extension members), largest first; with the columns of
# the primary key, else of the first unique non-partial index without expressions on NOT NULL columns.
_TABLES_SQL = """
SELECT n.nspname, c.relname, pg_table_size(c.oid),
       (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum),
       (SELECT bool_or(a.attcollation <> 0) FROM unnest(i.indkey) k(attnum)
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT x.indkey FROM pg_index x
    WHERE x.indrelid = c.oid AND x.indisunique AND x.indisvalid AND x.indpred IS NULL AND x.indexprs IS NULL
      AND NOT EXISTS (SELECT 1 FROM unnest(x.indkey) k(attnum)
                      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum WHERE NOT a.attnotnull)
    ORDER BY x.indisprimary DESC, x.indexrelid LIMIT 1
) i ON true
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3 DESC, 1, 2
"""

# datlocprovider exists from PostgreSQL 15 on (read through to_jsonb so that 14 answers null: libc).
_DATABASE_SQL = """
SELECT pg_database_size(d.oid), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
       coalesce(to_jsonb(d) ->> 'datlocprovider', 'c')
FROM pg_database d WHERE d.datname = current_database()
"""


class Stopped(Exception):
    """The dump failed elsewhere; the verification pass stopped early."""


def pin_output(conn: psycopg.Connection, local: bool) -> None:
    """SET (LOCAL, inside the snapshot's transaction) the settings a row's text form depends on."""
    for name, value in OUTPUT_SETTINGS.items():
        conn.execute(sql.SQL("SELECT set_config({}, {}, {})").format(
            sql.Literal(name), sql.Literal(value), sql.Literal(local)))


def sample_query(schema: str, name: str, key: list[str] | None, limit: int) -> sql.Composed:
    table = sql.Identifier(schema, name)
    if key:
        order = sql.SQL(", ").join(sql.Identifier(column) for column in key)
        return sql.SQL("SELECT t::text FROM {} t ORDER BY {} LIMIT {}").format(table, order, sql.Literal(limit))
    # No usable key: only small tables are sampled (the caller checks), as their whole content, sorted here.
    return sql.SQL("SELECT t::text FROM {} t").format(table)


def sample_digest(rows: list[str]) -> str:
    digest = hashlib.sha256()
    for text in rows:
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def table_facts(conn: psycopg.Connection, schema: str, name: str, key: list[str] | None,
                sample_rows: int) -> dict[str, Any]:
    """Row count and sample of one table, read in `conn`'s current snapshot."""
    table = sql.Identifier(schema, name)
    rows = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(table)).fetchone()[0]
    facts: dict[str, Any] = {"rows": rows}
    if key or rows <= sample_rows:
        texts = [r[0] for r in conn.execute(sample_query(schema, name, key, sample_rows)).fetchall()]
        if not key:
            texts.sort()  # bytewise: independent of any collation
        facts["sample"] = {"rows": len(texts), "sha256": sample_digest(texts), "key": key or None}
    return facts


def verification_record(conn: psycopg.Connection, sample_rows: int = SAMPLE_ROWS,
                        stop: threading.Event | None = None) -> dict[str, Any]:
    """Read in the caller's open snapshot transaction (REPEATABLE READ): what the drill checks later.

    Every statement runs in a savepoint: an error (or the cancel that stops this pass when the dump failed)
    must not abort the snapshot's transaction, whose end would release the table locks and the exported
    snapshot that dump parts still to start depend on. A table that cannot be read is listed in `skipped`."""
    pin_output(conn, local=True)
    with conn.transaction():
        size, encoding, collate, ctype, provider = conn.execute(_DATABASE_SQL).fetchone()
        listed = conn.execute(_TABLES_SQL).fetchall()
    tables, skipped = [], []
    for schema, name, table_size, key, collatable in listed:
        if stop is not None and stop.is_set():
            raise Stopped("stopped")
        try:
            with conn.transaction():
                facts = table_facts(conn, schema, name, key, sample_rows)
        except psycopg.Error as exc:
            if stop is not None and stop.is_set():
                raise Stopped("stopped") from None
            skipped.append({"schema": schema, "name": name, "error": (str(exc).strip().splitlines() or ["?"])[0]})
            continue
        if "sample" in facts:
            facts["sample"]["collatable_key"] = bool(collatable)
        tables.append({"schema": schema, "name": name, "size": table_size, **facts})
    record = {
        "sample_rows": sample_rows,
        "database_size": size,
        "encoding": encoding,
        "collate": collate,
        "ctype": ctype,
        "locale_provider": {"c": "libc", "i": "icu"}.get(provider, provider),
        "tables": tables,
    }
    if skipped:
        record["skipped"] = skipped
    return record
