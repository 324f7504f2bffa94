"""The Postgres restore drill: restore the newest complete set into a scratch server and check it.

Steps (`run_drill`): pick the set (newest complete, or one by id); check it (manifest, every object present with
its size); check the scratch directory has room; start the scratch server (scratch_pg.py) or use the operator's
(`--scratch-dsn`, which must be empty); restore every database with restore.py (parallel, each object's sha256
checked while it streams); verify each database against the verification data the dump recorded (pgverify.py):
every table present, exact row counts, sampled checksums; check the ordering (`ordering_from_data`, and the
manifest's own proof again); stop the scratch server. The result names every failure by database, table,
expected and actual value.

What is not checked: the content beyond the sampled rows (counts cover every row, checksums the first rows by
key); tables created after the dump's snapshot (they are not in the set); sets taken before verification data
was recorded are restored and their objects checked, but reported `unverified` (the drill fails: it cannot
prove the data).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobs.destinations import Destination
from jobs.pgdump import connect, redact, with_database
from jobs.pgsets import complete_sets, log, object_errors
from jobs.pgverify import pin_output, sample_digest, sample_query
from jobs.restore import RestoreOptions, prepare_target, restore_database
from rules.manifest import APPS, PARTICIPANT, manifest_errors, ordering_errors, parse_time, stale_set_problem

MiB = 1024 * 1024
# Room the scratch server needs beyond the databases: the cluster itself (~40 MiB) and its WAL (max_wal_size).
SERVER_OVERHEAD = 320 * MiB
# Restored databases are about as large as the source's (no bloat, fresh indexes); 20% margin for the WAL of a
# bulk load and index builds. Without verification data (older sets): twice the uncompressed dumps (indexes).
SIZE_MARGIN = 1.2

# Ordering evidence in the restored data (Splice issue #932): an app's store must not have ingested beyond the
# participant's ledger end. Tables as Splice's apps and Canton's participant name them; checked when both exist.
APPS_OFFSETS = ("store_last_ingested_offsets", "last_ingested_offset")
PARTICIPANT_LEDGER_END = ("lapi_parameters", "ledger_end")

PASSED, FAILED, UNVERIFIED = "passed", "failed", "unverified"


class DrillError(Exception):
    pass


# ------------------------------------------------------------------------------------------- choosing


def pick_set(dest: Destination, set_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """(prefix, manifest) of the newest complete set, or of the complete set `set_id` (recent tier first)."""
    sets = complete_sets(dest)
    if set_id is not None:
        sets = [(p, m) for p, m in sets if m["set_id"] == set_id]
        if not sets:
            raise DrillError(f"no complete set {set_id!r} in {dest.describe('')}")
        sets.sort(key=lambda item: not item[0].startswith("recent/"))
    if not sets:
        raise DrillError(f"no complete set in {dest.describe('')}: nothing to drill")
    return sets[0]


def required_space(manifest: dict[str, Any]) -> int:
    total = 0
    for db in manifest["databases"]:
        size = (db.get("verification") or {}).get("database_size")
        total += size if isinstance(size, int) else 2 * int(db.get("uncompressed_size") or 0)
    return int(total * SIZE_MARGIN) + SERVER_OVERHEAD


def check_space(directory: Path, manifest: dict[str, Any]) -> dict[str, int]:
    needed = required_space(manifest)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise DrillError(f"scratch directory {directory} has {free // MiB} MiB free, the set needs about "
                         f"{needed // MiB} MiB (databases as recorded at dump time, plus WAL and margin): give the "
                         "drill pod a larger scratch volume")
    return {"needed_bytes": needed, "free_bytes": free}


def server_major(manifest: dict[str, Any]) -> int:
    return max(int(db.get("server_version_num") or 0) // 10000 or int(str(db["server_version"]).split(".")[0])
               for db in manifest["databases"])


# ------------------------------------------------------------------------------------------- verifying


@dataclass
class DatabaseResult:
    role: str
    database: str
    status: str = PASSED
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0
    samples_checked: int = 0
    samples_skipped: int = 0
    restore_seconds: float | None = None

    @property
    def label(self) -> str:
        return f"{self.role}/{self.database}"

    def fail(self, problem: str) -> None:
        self.status = FAILED
        self.problems.append(f"{self.label}: {problem}")

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def verify_database(conn: psycopg.Connection, db: dict[str, Any], result: DatabaseResult) -> None:
    """Compare the restored database (`conn`) with the verification data of its manifest record."""
    record = db.get("verification")
    if record is None:
        result.status = UNVERIFIED
        result.problems.append(f"{result.label}: no verification data in the manifest (a set taken before it was "
                               "recorded): restored and digests checked, contents not verified")
        return
    for table in record.get("skipped") or []:
        result.notes.append(f"table {table['schema']}.{table['name']} was not verified at dump time: {table['error']}")
    pin_output(conn, local=False)
    collate = conn.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()").fetchone()[0]
    # The scratch databases are created with libc locales: an ICU source sorts text keys its own way.
    provider = record.get("locale_provider", "libc")
    same_collation = collate == record.get("collate") and provider == "libc"
    if not same_collation:
        result.notes.append(f"collation {collate!r} (libc) differs from the source's {record.get('collate')!r} "
                            f"({provider}): samples ordered by text keys are skipped")
    for table in record["tables"]:
        name = f"{table['schema']}.{table['name']}"
        exists = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))",
                              (table["schema"], table["name"])).fetchone()[0]
        if exists is None:
            result.fail(f"table {name} is missing (expected {table['rows']} rows)")
            continue
        result.tables += 1
        ident = sql.Identifier(table["schema"], table["name"])
        rows = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(ident)).fetchone()[0]
        result.rows += rows
        if rows != table["rows"]:
            result.fail(f"table {name}: {table['rows']} rows expected (recorded at dump time), {rows} restored")
            continue
        sample = table.get("sample")
        if sample is None:
            continue  # no key and too large to sample whole: the count is what is checked
        if sample.get("collatable_key") and not same_collation:
            result.samples_skipped += 1
            continue
        texts = [r[0] for r in conn.execute(
            sample_query(table["schema"], table["name"], sample.get("key"), record["sample_rows"])).fetchall()]
        if not sample.get("key"):
            texts.sort()
        digest = sample_digest(texts)
        if len(texts) != sample["rows"] or digest != sample["sha256"]:
            hint = (" (the key is text: a scratch server whose C library sorts it differently also changes the "
                    "sample)" if sample.get("collatable_key") else "")
            result.fail(f"table {name}: sampled checksum of the first {sample['rows']} rows differs "
                        f"(expected sha256 {sample['sha256'][:16]}..., restored {digest[:16]}... over {len(texts)} "
                        f"rows){hint}")
        else:
            result.samples_checked += 1


# ------------------------------------------------------------------------------------------- ordering


def _offset(value: Any) -> int | None:
    """Canton 3 offsets are integers; Canton 2's are fixed-width hex strings (ordered like their numbers)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def _probe(conn: psycopg.Connection, table: str, column: str, aggregate: str) -> tuple[bool, Any]:
    """(found, value): the max/min of `column` of the first table named `table` in any schema."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
        "WHERE c.relname = %s AND c.relkind IN ('r', 'p') ORDER BY 1 LIMIT 1", (column, table)).fetchone()
    if row is None:
        return False, None
    value = conn.execute(sql.SQL("SELECT {}({}) FROM {}").format(
        sql.SQL(aggregate), sql.Identifier(column), sql.Identifier(row[0], table))).fetchone()[0]
    return True, value


def ordering_from_data(apps: list[tuple[str, str]], participant: list[tuple[str, str]]) -> dict[str, Any]:
    """Check from the restored data that no app store ingested beyond the participant's ledger end.

    `apps` and `participant` are (label, dsn) of the restored databases of each role."""
    ends = []
    for label, dsn in participant:
        with connect(dsn, autocommit=True) as conn:
            found, value = _probe(conn, *PARTICIPANT_LEDGER_END, "max")
        if found:
            ends.append((label, value))
    offsets = []
    for label, dsn in apps:
        with connect(dsn, autocommit=True) as conn:
            found, value = _probe(conn, *APPS_OFFSETS, "max")
        if found:
            offsets.append((label, value))
    if not ends or not offsets:
        return {"checked": False, "detail": f"the restored data has no {'.'.join(APPS_OFFSETS)} (apps) and "
                f"{'.'.join(PARTICIPANT_LEDGER_END)} (participant) to compare: the manifest's proof is what holds"}
    (par_label, end), *_ = ends
    end_value = _offset(end)
    problems = []
    for label, value in offsets:
        if value is None:
            continue  # a store that has ingested nothing is never ahead
        offset = _offset(value)
        if offset is None or end_value is None:
            return {"checked": False, "detail": f"offsets {value!r} ({label}) and {end!r} ({par_label}) are not "
                    "comparable: the manifest's proof is what holds"}
        if offset > end_value:
            problems.append(f"{label} ingested up to offset {value}, beyond the participant's ledger end {end} "
                            f"({par_label}): apps data is newer than the participant's (Splice issue #932)")
    return {"checked": True, "holds": not problems, "problems": problems,
            "detail": f"app stores' last ingested offsets <= participant ledger end {end} ({par_label})"}


# ------------------------------------------------------------------------------------------- the drill


@dataclass
class DrillResult:
    set_url: str
    set_id: str
    migration_id: int
    created_at: str
    rpo_seconds: float
    databases: list[DatabaseResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ordering: dict[str, Any] = field(default_factory=dict)
    rto_seconds: float | None = None
    space: dict[str, int] | None = None
    scratch: str = ""
    # Reported, not failed: e.g. a set too old for a restored node to catch up (it still restores into scratch).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(db.status == PASSED for db in self.databases)

    def all_problems(self) -> list[str]:
        return [*self.problems, *(p for db in self.databases for p in db.problems)]

    def as_json(self) -> dict[str, Any]:
        return {
            "set_url": self.set_url, "set_id": self.set_id, "migration_id": self.migration_id,
            "created_at": self.created_at, "rpo_seconds": self.rpo_seconds, "rto_seconds": self.rto_seconds,
            "ok": self.ok, "problems": self.all_problems(), "ordering": self.ordering, "space": self.space,
            "scratch": self.scratch, "databases": [db.as_json() for db in self.databases],
            "warnings": self.warnings,
        }


@dataclass
class DrillOptions:
    scratch_dir: Path
    scratch_dsn: str | None = None
    set_id: str | None = None
    max_age: Any = None  # timedelta | None
    jobs: int = 2
    parallel: int = 2  # databases restored at once
    pg_bin: Path | None = None


def run_drill(dest: Destination, options: DrillOptions, now: datetime) -> DrillResult:
    prefix, manifest = pick_set(dest, options.set_id)
    created = parse_time(manifest["created_at"])
    result = DrillResult(set_url=dest.describe(prefix), set_id=manifest["set_id"],
                         migration_id=manifest["migration_id"], created_at=manifest["created_at"],
                         rpo_seconds=round((now - created).total_seconds(), 3))
    log(f"drill: set {result.set_url} (created {manifest['created_at']}, {result.rpo_seconds:.0f}s old)")
    if options.max_age is not None and now - created > options.max_age:
        result.problems.append(f"the newest set is {result.rpo_seconds:.0f}s old, more than --max-age "
                               f"{options.max_age.total_seconds():.0f}s (RPO bound)")
    errors = manifest_errors(manifest, manifest["set_id"])
    if errors:
        raise DrillError("; ".join(errors))
    # The drill proves the set restores, which holds at any age; whether a node could catch up from it is for the
    # operator to know (the backup-stale alert has fired long before), so a warning in the event, not a failure.
    stale = stale_set_problem(manifest, now)
    if stale:
        result.warnings.append(stale)
        log(f"drill: WARNING: {stale}")
    result.databases = [DatabaseResult(db["role"], db["database"]) for db in manifest["databases"]]
    names = [db["database"] for db in manifest["databases"]]
    if len(names) != len(set(names)):
        raise DrillError(f"two roles have databases of the same name ({', '.join(names)}): the drill restores into "
                         "one server")
    # Objects missing from the store (or of the wrong size) fail their database before anything starts.
    for db, res in zip(manifest["databases"], result.databases, strict=True):
        for error in object_errors(dest, prefix, {"databases": [db]}, deep=False):
            res.fail(f"{error} in the store")
    result.ordering["manifest_proof"] = {"holds": not ordering_errors(manifest["databases"]),
                                         "problems": ordering_errors(manifest["databases"])}
    if options.scratch_dsn:
        result.scratch = f"operator-provided {redact(options.scratch_dsn)}"
        _restore_and_verify(dest, prefix, manifest, result, options, options.scratch_dsn, create_like_source=False)
        return result
    result.space = check_space(options.scratch_dir, manifest)
    from jobs.scratch_pg import scratch_server  # the server binaries are needed only here

    with scratch_server(options.scratch_dir, server_major(manifest)) as server:
        result.scratch = f"in-pod PostgreSQL ({server.bin}) in {options.scratch_dir}"
        log(f"drill: scratch server started from {server.bin}")
        _restore_and_verify(dest, prefix, manifest, result, options, server.dsn(), create_like_source=True,
                            abort=server.stop)
    return result


def _create_like_source(admin_dsn: str, db: dict[str, Any], res: DatabaseResult) -> None:
    """The scratch database with the source's encoding and locale (text keys then sort the same), if the pod has
    that locale; else with the server's default, noted (the samples ordered by text keys are then skipped)."""
    record = db.get("verification") or {}
    name = sql.Identifier(db["database"])
    with connect(admin_dsn, autocommit=True) as conn:
        if record.get("encoding") and record.get("collate") and record.get("ctype"):
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}")
                             .format(name, sql.Literal(record["encoding"]), sql.Literal(record["collate"]),
                                     sql.Literal(record["ctype"])))
                return
            except psycopg.Error as exc:
                res.notes.append(f"cannot create the database with the source's locale ({exc.diag.message_primary})")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def _restore_and_verify(dest: Destination, prefix: str, manifest: dict[str, Any], result: DrillResult,
                        options: DrillOptions, admin_dsn: str, create_like_source: bool,
                        abort: Callable[[], None] | None = None) -> None:
    """Restore and verify every database whose objects are all there; `abort` (stop the scratch server) ends
    the running restores at once when the drill is interrupted (SIGTERM), instead of waiting for them."""
    pairs = [(db, res, with_database(admin_dsn, db["database"]))
             for db, res in zip(manifest["databases"], result.databases, strict=True) if res.status == PASSED]
    restore_options = RestoreOptions(jobs=options.jobs, no_owner=True, workdir=options.scratch_dir,
                                     pg_bin=options.pg_bin)
    started = time.monotonic()
    created: list[str] = []  # on an operator's instance, only these are dropped at the end

    def one(item) -> None:
        db, res, dsn = item
        try:
            if create_like_source:
                _create_like_source(admin_dsn, db, res)
            else:
                if _create_if_absent(admin_dsn, db["database"]):
                    created.append(db["database"])
                prepare_target(dsn)  # refuses a database that holds relations: never restore over data
            t0 = time.monotonic()
            restore_database(dest, prefix, db, dsn, restore_options)
            res.restore_seconds = round(time.monotonic() - t0, 3)
            with connect(dsn, autocommit=True) as conn:
                verify_database(conn, db, res)
        except Exception as exc:  # restore.py names the database and the object in its errors
            res.fail(f"{type(exc).__name__}: {exc}")
        log(f"drill: {res.label}: {res.status} ({res.tables} tables, {res.rows} rows, {res.samples_checked} "
            f"samples checked)" + "".join(f"; {p}" for p in res.problems))

    pool = ThreadPoolExecutor(max_workers=max(1, options.parallel))
    try:
        list(pool.map(one, pairs))
    except BaseException:
        if abort is not None:
            abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    restored = {res.label: dsn for _, res, dsn in pairs if res.status == PASSED}
    apps = [(label, dsn) for label, dsn in restored.items() if label.startswith(f"{APPS}/")]
    participant = [(label, dsn) for label, dsn in restored.items() if label.startswith(f"{PARTICIPANT}/")]
    try:
        result.ordering["from_data"] = ordering_from_data(apps, participant)
    except psycopg.Error as exc:
        result.ordering["from_data"] = {"checked": False, "detail": f"cannot read: {exc.diag.message_primary}"}
    finally:
        result.rto_seconds = round(time.monotonic() - started, 3)
        if created:
            _drop(admin_dsn, created)
    if not result.ordering["manifest_proof"]["holds"]:
        result.problems += [f"ordering (manifest): {p}" for p in result.ordering["manifest_proof"]["problems"]]
    if result.ordering["from_data"].get("checked") and not result.ordering["from_data"]["holds"]:
        result.problems += [f"ordering (restored data): {p}" for p in result.ordering["from_data"]["problems"]]


def _create_if_absent(admin_dsn: str, name: str) -> bool:
    with connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _drop(admin_dsn: str, names: list[str]) -> None:
    """On an operator's scratch instance, drop the databases the drill created (the next drill needs it empty)."""
    with connect(admin_dsn, autocommit=True) as conn:
        for name in names:
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except psycopg.Error as exc:
                log(f"drill: cannot drop {name} on {redact(admin_dsn)}: {exc.diag.message_primary}")
