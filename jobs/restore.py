"""Restore a complete set into servers, and check the result rather than trusting pg_restore's exit code.

Parallel where PostgreSQL allows: `parallel` databases at once, and within a database stored in parts (the
`sections` layout, pgdump.py) the phases pg_restore's own parallel mode uses: the schema archive (small) is
fetched to a local file; its pre-data section is restored; then the data parts stream from the store into up to
`jobs` pg_restore processes at once (a streamed archive needs no seeking when it is read in order); then the
post-data section (indexes, constraints, triggers, ACLs, materialized view refreshes) runs with
`pg_restore --jobs` from the local schema archive. A database of a v1 set (one whole archive) streams into one
pg_restore, as it always did.

Checks, per database: every object's size and sha256 while it streams (a mismatch fails the restore); every
error pg_restore reports is classified, and only known-harmless ones pass (a newer client sets parameters an
older server does not know, e.g. `SET transaction_timeout = 0` from pg_restore 17 into a 15 server); the
relations and constraints listed in the archive's table of contents exist afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from jobs.pgdump import client_binary, connect, database_name, parse_dsn, redact, with_database
from jobs.pgsets import log, object_errors, read_json
from jobs.progress import Advance, byte_progress, no_progress
from rules.manifest import DATA_PART, LAYOUT_SECTIONS, MANIFEST, SCHEMA_PART, SetError, manifest_errors


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
    exist there, so its default is what the dump wanted). Everything else is real, as is pg_restore reporting
    more errors than we recognised (one we failed to parse), and a failing exit code without parsed errors. It
    may report fewer: with --jobs, every connection prints its errors but only the leader's are counted."""
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
    if ignored and sum(ignored) > len(blocks):
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
    def __init__(self, stream, advance: Advance = no_progress):
        self._stream = stream
        self._advance = advance
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        self._advance(len(data))
        return data


def _user_relations(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    ).fetchone()[0]


def prepare_target(dsn: str, replace_existing: bool = False, *, offer_replace: bool = False) -> int:
    """Create the target database if absent. One that already holds relations is refused, or, only with
    `replace_existing` (restore-set --replace-existing, the in-place restore), dropped and created again: a
    restore never merges into live data, and never destroys it unless asked. Returns the server's major."""
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
        major = conn.info.server_version // 10000
        relations = _user_relations(conn)
    if relations and not replace_existing:
        hint = ", or pass --replace-existing to drop and recreate it (its current contents are lost)"
        raise RestoreError(
            f"{redact(dsn)} is not empty: restore into a new or empty database ({relations} relations)"
            + (hint if offer_replace else "")
        )
    if relations:
        log(f"restore: dropping and recreating {redact(dsn)} ({relations} relations; --replace-existing)")
        with connect(with_database(dsn, "postgres"), autocommit=True) as admin:
            # FORCE (PostgreSQL 13+) ends the sessions still connected: the runbook scales the node to 0 first.
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return major


_OWNED_TOC_LINE = re.compile(
    r"^\d+; \d+ \d+ (?:SCHEMA|TABLE|SEQUENCE|VIEW|MATERIALIZED VIEW|FUNCTION|TYPE|DOMAIN) .* (\S+)$"
)


def toc_owners(listing: str) -> set[str]:
    """The roles that own the archive's schemas, tables, sequences, views, functions and types: a target server
    without one of them fails the restore half-way (`role "cnadmin" does not exist`)."""
    owners = set()
    for line in listing.splitlines():
        match = _OWNED_TOC_LINE.match(line.strip())
        if match and match.group(1) != "-":
            owners.add(match.group(1))
    return owners


def ensure_owner_roles(dsn: str, owners: set[str], create: bool, label: str) -> list[str]:
    """Check that every owner role exists on the target; with `create`, create the missing ones (NOLOGIN: they
    only own objects). Returns the roles created. Runs before anything is written into the target."""
    if not owners:
        return []
    with connect(with_database(dsn, "postgres"), autocommit=True) as admin:
        present = {row[0] for row in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                                   (sorted(owners),))}
        missing = sorted(owners - present)
        if missing and not create:
            raise RestoreError(
                f"{label}: the target server has no role {', '.join(missing)}, which owns objects of the set: "
                "create it, pass --create-missing-roles (created NOLOGIN, owning the restored objects), or "
                "--no-owner (everything owned by the restoring user)"
            )
        for role in missing:
            # Databases restore in parallel: another one may have created the same owner a moment ago.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    if missing:
        log(f"restore: created roles {', '.join(missing)} (NOLOGIN) on {redact(dsn)} for {label}")
    return missing


@dataclass
class RestoreOptions:
    jobs: int = 2  # pg_restore processes per database (data parts at once, then post-data --jobs)
    no_owner: bool = False
    workdir: Path | None = None  # where the schema archive is fetched (small: no data)
    pg_bin: Path | None = None
    analyze: bool = False
    replace_existing: bool = False  # drop and recreate a target database that holds relations (in-place restore)
    create_missing_roles: bool = False  # create the owner roles the target lacks, NOLOGIN
    advance: Advance = no_progress  # called with the bytes read from the store (jobs/progress.py)


def restore_database(dest: Destination, prefix: str, db: dict[str, Any], dsn: str, options: RestoreOptions) -> dict:
    label = f"{db['role']}/{db['database']}"
    started = time.monotonic()
    with connect(with_database(dsn, "postgres")) as probe:
        server_major = probe.info.server_version // 10000
    pg_restore = client_binary("pg_restore", max(server_major, int(db.get("pg_dump_version") or 0)),
                               override=options.pg_bin)
    args = [pg_restore, f"--dbname={dsn}", "--no-password"]  # never wait on a password prompt
    if options.no_owner:
        args += ["--no-owner", "--no-privileges"]
    with tempfile.TemporaryDirectory(dir=options.workdir, prefix="sv-restore-") as tmp:
        # The table of contents first (the small schema archive, or the head of a whole one): the owner roles are
        # checked before the target database is created or replaced, so a missing role leaves nothing behind.
        sections = db.get("layout") == LAYOUT_SECTIONS
        if sections:
            (schema,) = [obj for obj in db["objects"] if obj["part"] == SCHEMA_PART]
            archive = Path(tmp) / "schema.dump"
            _fetch(dest, f"{prefix}/{schema['key']}", schema, archive, label, options.advance)
            listing = _list_file(pg_restore, archive)
        else:
            (obj,) = db["objects"]
            listing = _stream_listing(dest, f"{prefix}/{obj['key']}", pg_restore)
        if not options.no_owner:
            ensure_owner_roles(dsn, toc_owners(listing), options.create_missing_roles, label)
        prepare_target(dsn, options.replace_existing, offer_replace=True)
        if sections:
            harmless = _restore_sections(dest, prefix, db, args, options, Path(tmp), label, archive)
        else:
            harmless = _stream_into(dest, prefix, obj, args, Path(tmp), label, options.advance)
    with connect(dsn, autocommit=True) as conn:
        missing = missing_objects(conn, toc_objects(listing))
        if options.analyze:
            conn.execute("ANALYZE")
    if missing:
        raise RestoreError(f"{label}: restored database lacks {', '.join(missing[:10])}")
    seconds = time.monotonic() - started
    log(f"restored {label} into {redact(dsn)} in {seconds:.1f}s"
        + (f" (ignored harmless: {'; '.join(harmless)})" if harmless else ""))
    return {"role": db["role"], "database": db["database"], "target": redact(dsn), "seconds": round(seconds, 3),
            "harmless_errors": harmless}


def _restore_sections(dest: Destination, prefix: str, db: dict[str, Any], args: list[str], options: RestoreOptions,
                      tmp: Path, label: str, archive: Path) -> list[str]:
    """Pre-data (from the fetched schema `archive`), then the data parts `jobs` at a time, then post-data with
    --jobs. Returns the harmless errors."""
    data = [obj for obj in db["objects"] if obj["part"] == DATA_PART]
    jobs = max(1, options.jobs)
    harmless = _run_restore([*args, "--section=pre-data", str(archive)], tmp / "pre-data.log", f"{label} (pre-data)")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_stream_into, dest, prefix, obj, [*args, "--section=data"], tmp, label, options.advance)
                   for obj in data]
        errors = [str(f.exception()) for f in futures if f.exception() is not None]
    if errors:
        raise RestoreError("; ".join(errors))
    for future in futures:
        harmless += future.result()
    harmless += _run_restore([*args, "--section=post-data", f"--jobs={jobs}", str(archive)], tmp / "post-data.log",
                             f"{label} (post-data)")
    return sorted(set(harmless))


def _checked(label: str, what: str, stderr: str, code: int) -> list[str]:
    report = classify_pg_restore_output(stderr, code)
    if report.errors:
        raise RestoreError(f"{label}{what}: pg_restore failed: "
                           + " | ".join(e.replace("\n", " ") for e in report.errors))
    return report.harmless


def _run_restore(args: list[str], log_path: Path, label: str) -> list[str]:
    with open(log_path, "wb") as out:
        code = subprocess.run(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL).returncode
    return _checked(label, "", log_path.read_text(errors="replace"), code)


def _fetch(dest: Destination, key: str, obj: dict[str, Any], path: Path, label: str,
           advance: Advance = no_progress) -> None:
    """Decompress one object into a local file, checking its size and sha256."""
    with dest.open_read(key) as raw, open(path, "wb") as out:
        source = _HashingReader(raw, advance)
        _copy(zstandard.ZstdDecompressor().stream_reader(source, read_size=1 << 20), out)
        _drain(source)
    _check_digest(source, obj, label)


def _stream_into(dest: Destination, prefix: str, obj: dict[str, Any], args: list[str], tmp: Path,
                 label: str, advance: Advance = no_progress) -> list[str]:
    """Stream one object, decompressed, into a pg_restore reading stdin; returns the harmless errors."""
    name = obj["key"].rsplit("/", 1)[-1]
    log_path = tmp / f"{name}.log"
    with dest.open_read(f"{prefix}/{obj['key']}") as raw, open(log_path, "wb") as stderr:
        source = _HashingReader(raw, advance)
        reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=1 << 20)
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=stderr, stderr=stderr)
        try:
            with contextlib.suppress(BrokenPipeError):  # pg_restore stopped reading: its errors say why
                _copy(reader, proc.stdin)
                _drain(source)
        except Exception as exc:  # the store or the decompressor failed: pg_restore must not wait for more
            proc.kill()
            raise RestoreError(f"{label}: cannot read {obj['key']}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            proc.kill()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()
            code = proc.wait()
    harmless = _checked(label, f" ({name})", log_path.read_text(errors="replace"), code)
    _check_digest(source, obj, label)
    return harmless


def _check_digest(source: _HashingReader, obj: dict[str, Any], label: str) -> None:
    if source.size != obj["size"] or source.digest.hexdigest() != obj["sha256"]:
        raise RestoreError(f"{label}: {obj['key']} does not match its manifest size/sha256 (restored data suspect)")


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
        # A server URL without a database (postgresql://USER@HOST:PORT): every database of the role, each under
        # its own name, which is what restoring a node in place needs.
        servers = [dsn for dsn in dsns if not parse_dsn(dsn).get("dbname")]
        if servers:
            if len(dsns) > 1:
                raise SetError(f"{role}: give one server URL, or one URL per database, not both")
            pairs += [(db, with_database(servers[0], db["database"])) for db in dbs]
            continue
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
    total = sum(obj["size"] for db, _ in pairs for obj in db["objects"])
    with byte_progress(total, "restore") as advance, ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        shown = dataclasses.replace(options, advance=advance)
        futures = [pool.submit(restore_database, dest, prefix, db, dsn, shown) for db, dsn in pairs]
        return [f.result() for f in futures]
