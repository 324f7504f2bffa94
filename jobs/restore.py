"""Restore a complete set into servers, and check the result rather than trusting pg_restore's exit code.

Checks, per database: the object's size and sha256 while it streams (a mismatch fails the restore); every
error pg_restore reports is classified, and only known-harmless ones pass (a newer client sets parameters an
older server does not know, e.g. `SET transaction_timeout = 0` from pg_restore 17 into a 15 server); the
relations and constraints listed in the archive's table of contents exist afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import zstandard
from psycopg import sql

from jobs.destinations import Destination
from jobs.manifest import MANIFEST, SetError, manifest_errors
from jobs.pgdump import client_binary, connect, database_name, redact, with_database
from jobs.pgsets import log, object_errors, read_json


class RestoreError(Exception):
    pass


# ------------------------------------------------------------------------------------ pg_restore output

_ERROR_START = re.compile(r"^pg_restore: error: ", re.MULTILINE)
_IGNORED = re.compile(r"^pg_restore: warning: errors ignored on restore: (\d+)\s*$", re.MULTILINE)
_UNKNOWN_SETTING = re.compile(r'unrecognized configuration parameter "([^"]+)"')
_SET_COMMAND = re.compile(r"^Command was: SET (\w+)\s*=", re.MULTILINE)


@dataclass
class RestoreReport:
    harmless: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def classify_pg_restore_output(stderr: str, exit_code: int) -> RestoreReport:
    """Split pg_restore's errors into harmless and real ones.

    Harmless: an older server rejecting a `SET <parameter>` that a newer client emits (the parameter does not
    exist there, so its default is what the dump wanted). Everything else is real, as is any mismatch between
    the errors we parsed and the count pg_restore reports, and a failing exit code without parsed errors."""
    report = RestoreReport()
    blocks = [b.strip() for b in _ERROR_START.split(stderr)[1:]]
    for block in blocks:
        block = _IGNORED.sub("", block).strip()
        unknown = _UNKNOWN_SETTING.search(block)
        command = _SET_COMMAND.search(block)
        if unknown and command and unknown.group(1) == command.group(1):
            report.harmless.append(block.splitlines()[0])
        else:
            report.errors.append(block)
    ignored = [int(n) for n in _IGNORED.findall(stderr)]
    if ignored and sum(ignored) != len(blocks):
        report.errors.append(f"pg_restore reports {sum(ignored)} ignored errors, {len(blocks)} were recognised")
    if exit_code != 0 and not blocks:
        report.errors.append(f"pg_restore exited with {exit_code}: {stderr.strip()[-2000:]}")
    return report


# ---------------------------------------------------------------------------------------- TOC check

_TOC_LINE = re.compile(
    r"^\d+; \d+ \d+ (TABLE|INDEX|SEQUENCE|VIEW|MATERIALIZED VIEW|CONSTRAINT|FK CONSTRAINT) (\S+) (\S+)(?: (\S+))? \S*$"
)


def toc_objects(listing: str) -> list[tuple[str, str, str, str | None]]:
    """(kind, schema, name, constraint) from `pg_restore -l` output; entries with unusual names are skipped."""
    found = []
    for line in listing.splitlines():
        match = _TOC_LINE.match(line.strip())
        if not match:
            continue
        kind, schema, name, extra = match.groups()
        if kind in ("CONSTRAINT", "FK CONSTRAINT"):
            if extra is None:
                continue
            found.append((kind, schema, name, extra))
        elif extra is None:
            found.append((kind, schema, name, None))
    return found


def missing_objects(conn: psycopg.Connection, objects: list[tuple[str, str, str, str | None]]) -> list[str]:
    missing = []
    for kind, schema, name, constraint in objects:
        if constraint is None:
            row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, name)).fetchone()
            if row[0] is None:
                missing.append(f"{kind} {schema}.{name}")
        else:
            row = conn.execute(
                "SELECT 1 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = %s AND c.conname = %s",
                (schema, constraint),
            ).fetchone()
            if row is None:
                missing.append(f"{kind} {schema}.{name}.{constraint}")
    return missing


# ---------------------------------------------------------------------------------------- restore


class _HashingReader:
    def __init__(self, stream):
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def _user_relations(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    ).fetchone()[0]


def prepare_target(dsn: str) -> int:
    """Create the target database if absent; refuse one that already holds relations. Returns its major."""
    database = database_name(dsn)
    try:
        conn = connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise RestoreError(f"cannot connect to {redact(dsn)}: {str(exc).strip().splitlines()[0]}") from None
        with connect(with_database(dsn, "postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        conn = connect(dsn, autocommit=True)
    with conn:
        if _user_relations(conn):
            raise RestoreError(f"{redact(dsn)} is not empty: restore into a new or empty database")
        return conn.info.server_version // 10000


@dataclass
class RestoreOptions:
    jobs: int = 1
    no_owner: bool = False
    workdir: Path | None = None
    pg_bin: Path | None = None
    analyze: bool = False


def restore_database(dest: Destination, prefix: str, db: dict[str, Any], dsn: str, options: RestoreOptions) -> dict:
    label = f"{db['role']}/{db['database']}"
    started = time.monotonic()
    server_major = prepare_target(dsn)
    pg_restore = client_binary("pg_restore", max(server_major, int(db.get("pg_dump_version") or 0)),
                               override=options.pg_bin)
    args = [pg_restore, f"--dbname={dsn}", "--no-password"]  # never wait on a password prompt
    if options.no_owner:
        args += ["--no-owner", "--no-privileges"]
    (obj,) = db["objects"]
    key = f"{prefix}/{obj['key']}"
    with tempfile.TemporaryDirectory(dir=options.workdir, prefix="sv-restore-") as tmp:
        stderr_path = Path(tmp) / "stderr"
        with dest.open_read(key) as raw, open(stderr_path, "wb") as stderr:
            source = _HashingReader(raw)
            reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=1 << 20)
            if options.jobs > 1:
                # pg_restore -j needs a seekable file: a local, uncompressed copy (workdir must hold it).
                archive = Path(tmp) / "archive.dump"
                with open(archive, "wb") as out:
                    _copy(reader, out)
                _drain(source)
                code = subprocess.run([*args, f"--jobs={options.jobs}", str(archive)], stdout=stderr,
                                      stderr=stderr, stdin=subprocess.DEVNULL).returncode
                listing = _list_file(pg_restore, archive)
            else:
                proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=stderr, stderr=stderr)
                try:
                    with contextlib.suppress(BrokenPipeError):
                        _copy(reader, proc.stdin)
                        _drain(source)
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
                finally:
                    code = proc.wait()
                listing = None
        report = classify_pg_restore_output(stderr_path.read_text(errors="replace"), code)
    if report.errors:
        raise RestoreError(f"{label}: pg_restore failed: " + " | ".join(e.replace("\n", " ") for e in report.errors))
    if source.size != obj["size"] or source.digest.hexdigest() != obj["sha256"]:
        raise RestoreError(f"{label}: {obj['key']} does not match its manifest size/sha256 (restored data suspect)")
    if listing is None:
        listing = _stream_listing(dest, key, pg_restore)
    with connect(dsn, autocommit=True) as conn:
        missing = missing_objects(conn, toc_objects(listing))
        if options.analyze:
            conn.execute("ANALYZE")
    if missing:
        raise RestoreError(f"{label}: restored database lacks {', '.join(missing[:10])}")
    seconds = time.monotonic() - started
    log(f"restored {label} into {redact(dsn)} in {seconds:.1f}s"
        + (f" (ignored harmless: {'; '.join(report.harmless)})" if report.harmless else ""))
    return {"role": db["role"], "database": db["database"], "target": redact(dsn), "seconds": round(seconds, 3),
            "harmless_errors": report.harmless}


def _copy(reader, out) -> None:
    while chunk := reader.read(1 << 20):
        out.write(chunk)


def _drain(source: _HashingReader) -> None:
    """Hash whatever follows the zstd frame, so trailing bytes count against the recorded size."""
    while source.read(1 << 20):
        pass


def _list_file(pg_restore: str, archive: Path) -> str:
    return subprocess.run([pg_restore, "--list", str(archive)], check=True, capture_output=True, text=True).stdout


def _stream_listing(dest: Destination, key: str, pg_restore: str) -> str:
    """`pg_restore --list` reads only the archive's head (its table of contents), so this streams little."""
    with dest.open_read(key) as raw, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([pg_restore, "--list"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
        with contextlib.suppress(BrokenPipeError, OSError):
            _copy(zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20), proc.stdin)
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RestoreError(f"pg_restore --list failed on {key}: {err.strip()}")
        out.seek(0)
        return out.read().decode(errors="replace")


def map_targets(manifest: dict[str, Any], targets: dict[str, list[str]], allow_partial: bool):
    """Pair each database of the set with a target DSN: by role, and by database name when a role has several."""
    pairs = []
    by_role: dict[str, list[dict]] = {}
    for db in manifest["databases"]:
        by_role.setdefault(db["role"], []).append(db)
    for role, dsns in targets.items():
        if role not in by_role:
            raise SetError(f"the set has no {role!r} databases (it has {', '.join(sorted(by_role))})")
        dbs = by_role[role]
        if len(dbs) == 1 and len(dsns) == 1:
            pairs.append((dbs[0], dsns[0]))
            continue
        for dsn in dsns:
            name = database_name(dsn)
            match = [db for db in dbs if db["database"] == name]
            if not match:
                raise SetError(f"the set has no {role} database named {name!r}")
            pairs.append((match[0], dsn))
    restored = {(db["role"], db["database"]) for db, _ in pairs}
    left = [f"{db['role']}/{db['database']}" for db in manifest["databases"]
            if (db["role"], db["database"]) not in restored]
    if left and not allow_partial:
        raise SetError(f"no target for {', '.join(left)}: a node is restored from one whole set "
                       "(pass --allow-partial to restore only some databases)")
    return pairs


def restore_set(
    dest: Destination, prefix: str, targets: dict[str, list[str]], options: RestoreOptions,
    allow_partial: bool = False, parallel: int = 2,
) -> list[dict]:
    manifest = read_json(dest, f"{prefix}/{MANIFEST}")
    if manifest is None:
        raise SetError(f"{dest.describe(prefix)} has no manifest.json: the set is incomplete and cannot be restored")
    errors = manifest_errors(manifest, prefix.rstrip("/").split("/")[-1])
    errors += object_errors(dest, prefix, manifest, deep=False) if not errors else []
    if errors:
        raise SetError("; ".join(errors))
    pairs = map_targets(manifest, targets, allow_partial)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(restore_database, dest, prefix, db, dsn, options) for db, dsn in pairs]
        return [f.result() for f in futures]
