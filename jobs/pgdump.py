"""Dump one database into one object: a pinned snapshot, `pg_dump -Fc -Z0`, zstd in threads, streamed.

Why this shape (measured, see docs/jobs.md "Performance"): pg_dump's own gzip is single-threaded and costs 3-4x
the uncompressed dump; `-Z0` piped through multi-threaded zstd costs little more than the dump itself and is
smaller. The custom format keeps `pg_restore -j` possible (it can seek in a local copy of the archive even
though it was written to a pipe) and selective restores.

The snapshot is taken by our own connection (REPEATABLE READ, `pg_export_snapshot()`), which also records the
ordering facts (WAL LSN, txid snapshot, server clock, system identifier) of exactly the snapshot pg_dump then
uses via `--snapshot`. Times are read before the request, after the snapshot exists, and after the object is
stored and the snapshot released.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import zstandard
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobs.destinations import Destination
from jobs.manifest import DATA_DIR, format_time

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


def now() -> Instant:
    # Monotonic first: the wall reading then never precedes the monotonic one it is paired with.
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return Instant(datetime.now(UTC), mono)


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
            "connection strings must not contain a password: pass it in PGPASSWORD (or log in without one, "
            "e.g. as an IAM database user through the Cloud SQL Auth Proxy)"
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


def object_key(role: str, database: str, attempt: str) -> str:
    # Database names are free text in PostgreSQL; keys stay plain. The attempt token keeps a retried step
    # (same set id, create-only store) from colliding with objects of an earlier, failed attempt.
    safe = quote(database, safe="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    return f"{DATA_DIR}/{role}/{safe}.{attempt}{DUMP_SUFFIX}"


@dataclass
class DumpSettings:
    # Level 1: on 2 CPUs shared with pg_dump and the server, level 3 costs ~25% more wall time for ~3% less
    # output (docs/jobs.md "Performance"); both are far smaller than pg_dump's default gzip.
    zstd_level: int = 1
    zstd_threads: int = max(1, min(4, os.cpu_count() or 1))
    lock_wait_timeout: str = "10min"
    pg_bin: Path | None = None


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
    log=None,
) -> dict[str, Any]:
    """Dump one database to `<set_prefix>/<object key>` and return its manifest record."""
    database = database_name(dsn)
    requested = now()
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
        acquired = now()
        server_major = version_num // 10000
        pg_dump = client_binary("pg_dump", server_major, override=settings.pg_bin)
        key = object_key(role, database, attempt)
        stored = _run_pg_dump(
            pg_dump=pg_dump, dsn=dsn, snapshot_id=snapshot_id, dest=dest, key=f"{set_prefix}/{key}",
            settings=settings, label=f"{role}/{database}",
        )
        conn.rollback()
    except psycopg.Error as exc:
        raise DumpError(f"{role}/{database}: {_first_line(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    finished = now()
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
        "format": "pg_dump custom (-Fc -Z0), zstd",
        "compression": {"algorithm": COMPRESSION, "level": settings.zstd_level},
        "uncompressed_size": stored["uncompressed_size"],
        "objects": [{"key": key, "size": stored["size"], "sha256": stored["sha256"]}],
    }
    if log:
        log(f"dumped {role}/{database}: {stored['uncompressed_size']} bytes -> {stored['size']} bytes "
            f"in {(finished.monotonic_ns - requested.monotonic_ns) / 1e9:.1f}s")
    return record


def _run_pg_dump(*, pg_dump, dsn, snapshot_id, dest, key, settings, label) -> dict[str, Any]:
    args = [
        pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot_id}",
        f"--lock-wait-timeout={settings.lock_wait_timeout}", "--no-sync", f"--dbname={dsn}",
        # Never prompt: a login is either passwordless (IAM through the Cloud SQL Auth Proxy) or takes
        # PGPASSWORD; an unattended job must fail at once, not wait on a terminal.
        "--no-password",
    ]
    env = {**os.environ, "PGAPPNAME": "sv-backups-pg_dump"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
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
    return {"size": out.size, "sha256": out.sha256, "uncompressed_size": read}


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


def kill_running_dumps() -> None:
    """Stop every pg_dump of this process (on SIGTERM): their threads then fail and abort their uploads."""
    with _RUNNING_LOCK:
        for proc in _RUNNING:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
