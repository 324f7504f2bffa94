"""Dump one database from one pinned snapshot into a few objects, each `pg_dump -Fc -Z0 | zstd`, streamed.

Why this shape (measured, see docs/jobs.md "Performance"): pg_dump's own gzip is single-threaded and costs 3-4x
the uncompressed dump; `-Z0` piped through multi-threaded zstd costs little more than the dump itself and is
smaller.

Why several objects (the `sections` layout): `pg_restore -j` needs to seek in its archive, which a streamed
object cannot offer. So a database is split the way pg_restore's parallel mode would schedule it: one small
schema archive (`--section=pre-data --section=post-data`: tables, then indexes, constraints, triggers, ACLs and
materialized view refreshes) and data archives (`--section=data`), the large tables' data each in a part of its
own (`-t`), everything else (small tables, sequence values, large objects) in one `rest` part (pg_dump's own
selection with `--exclude-table-data` for the tables dumped elsewhere). Every part is written to the store while
it is produced, up to `dump_jobs` at once; the restore streams the data parts in parallel and runs the
post-data section with `pg_restore -j` from the small schema archive (restore.py).

The snapshot is taken by our own connection (REPEATABLE READ, `pg_export_snapshot()`), which also records the
ordering facts (WAL LSN, txid snapshot, server clock, system identifier) of exactly the snapshot every pg_dump
then uses via `--snapshot`, and holds ACCESS SHARE locks on every table until the last part is stored: a part
that starts late must not find a table rewritten (TRUNCATE, ALTER TABLE) after the snapshot, which an old
snapshot would read as empty. Times are read before the request, after the snapshot exists, and after every
object is stored and the snapshot released.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import zstandard
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobs.destinations import Destination
from jobs.pgverify import SAMPLE_ROWS, Stopped, verification_record
from rules.manifest import DATA_DIR, DATA_PART, LAYOUT_SECTIONS, SCHEMA_PART, Clock, format_time, utc_now

PG_LIB = Path(os.environ.get("SV_BACKUPS_PG_LIB", "/usr/lib/postgresql"))
SUPPORTED_MAJORS = range(14, 18)
DUMP_SUFFIX = ".pgdump.zst"
COMPRESSION = "zstd"
STDERR_TAIL = 4000


class DumpError(Exception):
    """A dump failed; the message carries pg_dump's own words (which never include the password)."""


# -------------------------------------------------------------------------------------------------- clocks


@dataclass(frozen=True)
class Instant:
    wall: datetime
    monotonic_ns: int


def now(clock: Clock = utc_now) -> Instant:
    # Monotonic first: the wall reading then never precedes the monotonic one it is paired with.
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return Instant(clock(), mono)


def boot_id() -> str | None:
    """Identifies the running kernel: CLOCK_MONOTONIC readings are comparable only under the same one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------- DSNs


def parse_dsn(dsn: str) -> dict[str, str]:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"cannot parse connection string: {exc}") from None
    if params.get("password"):
        raise ValueError(
            "connection strings must not contain a password: pass it as --password-file, PGPASSFILE or "
            "PGPASSWORD (or log in without one, e.g. as an IAM database user through the Cloud SQL Auth Proxy)"
        )
    return params


def database_name(dsn: str) -> str:
    params = parse_dsn(dsn)
    name = params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE") or os.environ.get("PGUSER")
    if not name:
        raise ValueError("connection string names no database")
    return name


def redact(dsn: str) -> str:
    """The DSN as it may appear in logs (no password, even if one slipped in)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    params.pop("password", None)
    return make_conninfo(**params)


def with_database(dsn: str, database: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo(**params)


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    params = parse_dsn(dsn)
    params.setdefault("connect_timeout", "15")
    params.setdefault("application_name", "sv-backups")
    return psycopg.connect(make_conninfo(**params), **kwargs)


# ------------------------------------------------------------------------------------ client selection


def installed_majors(lib: Path = PG_LIB) -> list[int]:
    majors = []
    if lib.is_dir():
        for entry in lib.iterdir():
            if entry.name.isdigit() and (entry / "bin" / "pg_dump").exists():
                majors.append(int(entry.name))
    return sorted(majors)


def client_binary(tool: str, server_major: int, lib: Path = PG_LIB, override: Path | None = None) -> str:
    """The client tool for a server of `server_major`: an explicit directory; else the same major (Debian/PGDG
    layout `/usr/lib/postgresql/<major>/bin`); else the oldest newer one installed (pg_dump refuses servers
    newer than itself, and dumps of a newer client restore with a client at least as new); else PATH."""
    if override is not None:
        return str(override / tool)
    majors = installed_majors(lib)
    for major in [server_major, *[m for m in majors if m > server_major]]:
        candidate = lib / str(major) / "bin" / tool
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool)
    if not found:
        raise DumpError(f"no {tool} for PostgreSQL {server_major} (looked in {lib}/<major>/bin and PATH)")
    return found


def client_major(binary: str) -> int:
    out = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise DumpError(f"cannot read the version of {binary}: {out!r}")
    return int(match.group(1))


# ------------------------------------------------------------------------------------------------- dump


def object_key(role: str, database: str, attempt: str, part: str) -> str:
    # Database names are free text in PostgreSQL; keys stay plain. The attempt token keeps a retried step
    # (same set id, create-only store) from colliding with objects of an earlier, failed attempt.
    safe = quote(database, safe="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    return f"{DATA_DIR}/{role}/{safe}.{attempt}.{part}{DUMP_SUFFIX}"


MiB = 1024 * 1024


@dataclass
class DumpSettings:
    # Level 1: on 2 CPUs shared with pg_dump and the server, level 3 costs ~25% more wall time for ~3% less
    # output (docs/jobs.md "Performance"); both are far smaller than pg_dump's default gzip.
    zstd_level: int = 1
    zstd_threads: int = max(1, min(4, os.cpu_count() or 1))
    lock_wait_timeout: str = "10min"
    pg_bin: Path | None = None
    dump_jobs: int = 2  # pg_dump processes of one database at once (the server does most of the work)
    max_parts: int = 8  # data objects per database: the most pg_restore processes a restore can use on it
    min_part_size: int = 64 * MiB  # tables smaller than this stay in the rest part
    # How long a part's pg_dump waits for its table locks. The job's own connection already holds ACCESS SHARE
    # on every table, so such a wait can only be behind an exclusive request queued since (DDL, e.g. an app's
    # migration at start-up), which itself waits for the job: a deadlock. Fail fast, so the DDL goes on.
    part_lock_wait: str = "30s"
    # Rows per table in the sampled checksum the restore drill checks (pgverify.py); 0: record no verification
    # data (counts and samples), e.g. to measure what it costs.
    verify_sample_rows: int = SAMPLE_ROWS


# ----------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Table:
    pattern: str  # "schema"."name", quoted so that pg_dump matches exactly this table
    size: int  # pg_table_size: heap and TOAST, what its data costs to dump and restore
    splittable: bool  # an ordinary, permanent, non-extension table whose data may go into a part of its own


@dataclass
class DataPart:
    tables: list[str] = field(default_factory=list)  # dumped with -t (in the rest part: only informative)
    size: int = 0
    rest: bool = False


def table_pattern(schema: str, name: str) -> str:
    """A pg_dump pattern that matches one table: inside double quotes no character is special."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def plan_parts(tables: list[Table], max_parts: int, min_part_size: int) -> list[DataPart]:
    """Spread the data over at most `max_parts` parts of similar size, largest first (LPT scheduling): the
    tables of at least `min_part_size` are placed one by one on the lightest part; everything else is one item,
    the rest, whose part is dumped with `--exclude-table-data` for every table placed elsewhere. Returns the
    parts largest first; exactly one has `rest`."""
    big = sorted((t for t in tables if t.splittable and t.size >= min_part_size), key=lambda t: (-t.size, t.pattern))
    placed = {t.pattern for t in big}
    rest_size = sum(t.size for t in tables if t.pattern not in placed)
    parts = [DataPart() for _ in range(max(1, min(max_parts, len(big) + 1)))]
    items: list[Table | None] = [*big, None]  # None: the rest
    items.sort(key=lambda t: -(rest_size if t is None else t.size))
    for item in items:
        lightest = min(parts, key=lambda p: p.size)
        if item is None:
            lightest.rest = True
            lightest.size += rest_size
        else:
            lightest.tables.append(item.pattern)
            lightest.size += item.size
    return sorted((p for p in parts if p.rest or p.tables), key=lambda p: -p.size)


# Every relation pg_dump locks (tables and partitioned tables), in the snapshot's catalog. Materialized views
# cannot be locked, and need not be: their data is not dumped (the restore refreshes them).
_RELATIONS_SQL = """
SELECT n.nspname, c.relname, c.relkind = 'r', pg_table_size(c.oid),
       c.relkind = 'r' AND c.relpersistence = 'p' AND NOT EXISTS (
           SELECT 1 FROM pg_depend d
           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""


def _tables_and_lock(conn: psycopg.Connection, lock_wait_timeout: str) -> list[Table]:
    """The tables of the snapshot (this transaction's); every relation is locked ACCESS SHARE until it ends."""
    rows = conn.execute(_RELATIONS_SQL).fetchall()
    if rows:
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_wait_timeout)))
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
            sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name, *_ in rows)))
    return [Table(table_pattern(schema, name), size, splittable)
            for schema, name, is_table, size, splittable in rows if is_table]


def part_dumps(parts: list[DataPart]) -> list[tuple[str, list[str], DataPart | None]]:
    """(object part name, pg_dump arguments, data part) for the schema archive and each data part."""
    jobs: list[tuple[str, list[str], DataPart | None]] = [
        (SCHEMA_PART, ["--section=pre-data", "--section=post-data"], None)]
    elsewhere = [t for p in parts if not p.rest for t in p.tables]
    for index, part in enumerate(parts):
        if part.rest:
            args = ["--section=data", *(f"--exclude-table-data={t}" for t in elsewhere)]
        else:
            args = ["--section=data", "--strict-names", *(f"--table={t}" for t in part.tables)]
        jobs.append((f"{DATA_PART}-{index}", args, part))
    return jobs


_SNAPSHOT_SQL = """
SELECT pg_export_snapshot(),
       pg_current_wal_lsn()::text,
       txid_current_snapshot()::text,
       now(),
       current_setting('server_version'),
       current_setting('server_version_num')::int
"""


def _system_identifier(conn: psycopg.Connection) -> str | None:
    """pg_control_system() needs privileges a managed database may not grant; the fact is optional."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        return row[0] if row else None
    except psycopg.Error:
        return None


class _Pump:
    """Drains a pipe in a thread, keeping the tail (pg_dump's stderr)."""

    def __init__(self, stream):
        self._stream = stream
        self.tail = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for chunk in iter(lambda: self._stream.read(8192), b""):
            self.tail = (self.tail + chunk)[-STDERR_TAIL:]

    def text(self) -> str:
        self._thread.join(timeout=5)
        return self.tail.decode("utf-8", "replace").strip()


class _Counting:
    """Passes compressed bytes to the object writer (which hashes them)."""

    def __init__(self, writer):
        self._writer = writer

    def write(self, data) -> int:
        return self._writer.write(bytes(data))


def dump_database(
    *, role: str, dsn: str, dest: Destination, set_prefix: str, attempt: str, settings: DumpSettings,
    log=None, clock: Clock = utc_now,
) -> dict[str, Any]:
    """Dump one database to `<set_prefix>/<object keys>` and return its manifest record."""
    database = database_name(dsn)
    requested = now(clock)
    try:
        conn = connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DumpError(f"{role}/{database}: cannot connect to {redact(dsn)}: {_first_line(exc)}") from None
    try:
        if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            # A lagging standby would make the dump older than its recorded times: the ordering proof breaks.
            raise DumpError(f"{role}/{database}: {redact(dsn)} is a standby; point --db at the primary")
        system_identifier = _system_identifier(conn)
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot_id, wal_lsn, txid_snapshot, server_time, server_version, version_num = conn.execute(
            _SNAPSHOT_SQL
        ).fetchone()
        acquired = now(clock)
        tables = _tables_and_lock(conn, settings.lock_wait_timeout)
        server_major = version_num // 10000
        pg_dump = client_binary("pg_dump", server_major, override=settings.pg_bin)
        parts = plan_parts(tables, settings.max_parts, settings.min_part_size)
        # The verification data is read on this (otherwise idle) snapshot connection while the parts stream, so
        # its counts scan the tables alongside the parts' COPYs (pgverify.py says why that is cheap).
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1) as side:
            verifying = (side.submit(verification_record, conn, settings.verify_sample_rows, stop)
                         if settings.verify_sample_rows > 0 else None)
            try:
                objects = _dump_parts(
                    pg_dump=pg_dump, dsn=dsn, snapshot_id=snapshot_id, dest=dest, set_prefix=set_prefix,
                    keys=lambda part: object_key(role, database, attempt, part), parts=parts, settings=settings,
                    label=f"{role}/{database}",
                )
            except BaseException:
                stop.set()
                with contextlib.suppress(Exception):
                    conn.cancel_safe()  # end the running count now, not after its scan
                raise
            try:
                verification = verifying.result() if verifying else None
            except (Stopped, psycopg.Error) as exc:
                # The dump is good; without its verification data the drill reports the set unverified (and
                # fails), which surfaces this without losing a backup.
                verification = None
                if log and not isinstance(exc, Stopped):
                    log(f"{role}/{database}: no verification data recorded: {_first_line(exc)}")
        conn.rollback()
    except psycopg.Error as exc:
        raise DumpError(f"{role}/{database}: {_first_line(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    finished = now(clock)
    uncompressed = sum(obj["uncompressed_size"] for obj in objects)
    size = sum(obj["size"] for obj in objects)
    record = {
        "role": role,
        "database": database,
        "server_version": server_version,
        "server_version_num": version_num,
        "system_identifier": system_identifier,
        "pg_dump_version": client_major(pg_dump),
        "snapshot_requested_at": format_time(requested.wall),
        "snapshot_acquired_at": format_time(acquired.wall),
        "finished_at": format_time(finished.wall),
        "monotonic_ns": {
            "snapshot_requested": requested.monotonic_ns,
            "snapshot_acquired": acquired.monotonic_ns,
            "finished": finished.monotonic_ns,
        },
        "boot_id": boot_id(),
        "server_time_at_snapshot": format_time(server_time),
        "wal_lsn": wal_lsn,
        "txid_snapshot": txid_snapshot,
        "format": "pg_dump custom (-Fc -Z0), zstd; a schema archive and data parts",
        "layout": LAYOUT_SECTIONS,
        "compression": {"algorithm": COMPRESSION, "level": settings.zstd_level},
        "uncompressed_size": uncompressed,
        "objects": objects,
    }
    if verification is not None:
        record["verification"] = verification
    if log:
        log(f"dumped {role}/{database}: {uncompressed} bytes -> {size} bytes in {len(objects)} objects "
            f"in {(finished.monotonic_ns - requested.monotonic_ns) / 1e9:.1f}s")
    return record


def _dump_parts(*, pg_dump, dsn, snapshot_id, dest, set_prefix, keys, parts, settings, label) -> list[dict]:
    """Run the schema dump and every data part, `dump_jobs` at a time, each streamed into its own object. The
    first failure stops the others (their uploads abort: no partial object appears) and is raised."""
    jobs = part_dumps(parts)
    mine: set[subprocess.Popen] = set()
    failed = threading.Event()
    cause: list[BaseException] = []  # the first failure; the parts it stopped fail too, for that reason

    def stop(exc: BaseException) -> None:
        with _RUNNING_LOCK:
            if not failed.is_set():
                cause.append(exc)
                failed.set()
            for proc in mine:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def run(job) -> dict[str, Any]:
        part, args, data = job
        if failed.is_set():
            raise DumpError(f"{label}: not started, an earlier part failed")
        key = keys(part)
        try:
            stored = _run_pg_dump(pg_dump=pg_dump, dsn=dsn, snapshot_id=snapshot_id, dest=dest,
                                  key=f"{set_prefix}/{key}", settings=settings, label=f"{label} ({part})",
                                  extra_args=args, group=mine)
        except BaseException as exc:
            stop(exc)
            raise
        obj: dict[str, Any] = {"key": key, "size": stored["size"], "sha256": stored["sha256"],
                               "uncompressed_size": stored["uncompressed_size"]}
        if data is None:
            obj["part"] = SCHEMA_PART
        else:
            obj["part"] = DATA_PART
            obj.update({"rest": True} if data.rest else {"tables": data.tables})
        return obj

    pool = ThreadPoolExecutor(max_workers=max(1, settings.dump_jobs))
    try:
        futures = [pool.submit(run, job) for job in jobs]
        for future in futures:
            future.exception()  # wait for all: no pg_dump outlives this function
    except BaseException as exc:  # SIGTERM arrives in this (the main) thread: stop the parts, then unwind
        stop(exc)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if cause:
        raise cause[0]
    return [future.result() for future in futures]


def _run_pg_dump(*, pg_dump, dsn, snapshot_id, dest, key, settings, label, extra_args, group) -> dict[str, Any]:
    args = [
        pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot_id}",
        f"--lock-wait-timeout={settings.part_lock_wait}", "--no-sync", *extra_args, f"--dbname={dsn}",
        # Never prompt: a login is either passwordless (IAM through the Cloud SQL Auth Proxy) or reads the
        # passfile the step built from --password-file (PGPASSFILE, jobs/pgpass.py), or PGPASSWORD on a
        # workstation; an unattended job must fail at once, not wait on a terminal.
        "--no-password",
    ]
    env = {**os.environ, "PGAPPNAME": "sv-backups-pg_dump"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
        group.add(proc)
        if _STOPPING.is_set():  # started after kill_running_dumps (its thread was still connecting): stop it too
            proc.kill()
    stderr = _Pump(proc.stderr)
    try:
        with dest.writer(key) as out:
            compressor = zstandard.ZstdCompressor(level=settings.zstd_level, threads=settings.zstd_threads,
                                                  write_checksum=True)
            read, _ = compressor.copy_stream(proc.stdout, _Counting(out), read_size=1 << 20, write_size=1 << 20)
            code = proc.wait()
            if code != 0:
                raise DumpError(f"{label}: pg_dump exited with {code}: {stderr.text()}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
            group.discard(proc)
    return {"size": out.size, "sha256": out.sha256, "uncompressed_size": read}


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


_STOPPING = threading.Event()


def kill_running_dumps() -> None:
    """Stop every pg_dump of this process (on SIGTERM, or when one role of a set failed), and every one started
    until `allow_dumps()`: their threads then fail and abort their uploads."""
    with _RUNNING_LOCK:
        _STOPPING.set()
        for proc in _RUNNING:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def allow_dumps() -> None:
    """End a `kill_running_dumps()`, once every thread it stopped has unwound."""
    with _RUNNING_LOCK:
        _STOPPING.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
