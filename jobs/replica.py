"""Is the DR copy a copy? Compare the complete sets (and the identities secret) of the primary and the DR side.

Sets. Every complete set of the primary store (a valid, complete manifest: what list-sets shows; dump sets and
snapshot sets, whose manifest, step records and captured WAL are compared as a dump set's manifest, steps and
dumps) is looked up in the DR store under the same key, and gets one status:

- `in_sync`: the DR manifest and step records are byte-identical to the primary's, and every dump the manifest
  lists is there with the manifest's size and the same content (below);
- `missing`: no object of the set is in the DR store;
- `partial`: some are, every one present matches, some are absent (replication copies objects one by one and in
  no particular order: a manifest can arrive before the dumps);
- `differs`: an object is present with other bytes (size, checksum, sha256, or a manifest/step record that is
  not byte-identical). Replication never produces a wrong object, only missing ones, so this fails at any age;
- `within_lag`: missing or partial, but younger than the bound (`max_lag`): not yet expected;
- `unreadable`: an object of the set could not be read on either side (the check itself failed for that set);
- `expiring`: missing or partial, in the recent tier and older than `recent_retention`: the lifecycle rules of
  either side delete such sets at their own pace, so their absence on one side is not a replication failure.

How the content of a dump is checked (the depth that is affordable every hour): byte-compare what is small
(manifest, step records: a few KiB per set); for dumps, the size against the manifest, then the stores' own
checksums (jobs/store_checksums.py: a full-object SHA-256 on S3 is checked against the manifest's sha256; a
GCS CRC32C or an S3 composite checksum is compared between the two sides; they cost at most a HEAD, no data
read and no retrieval fee on cold storage classes). Where the two sides share no checksum (file://, objects
written without one), the DR object is re-read and its sha256 recomputed: a same-size corruption is never
reported as in sync. `deep` re-reads every dump regardless (as verify-set does): a full read of the DR copy,
which for the historical tier in a cold class costs a retrieval fee per GB, so it is for an occasional run.

Lag: the age of the oldest complete primary set that is not in sync in the DR copy (0 when all are).

Secret: the newest version on each side, compared by a SHA-256 of the payload computed in memory and never
logged (nor the payloads). If the DR side's newest equals the primary's newest, it is in sync; if it equals an
older primary version, the DR side is behind by the versions after it (within lag while the oldest of those is
younger than the bound); if it equals none of the primary's newest versions, it differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.destinations import Destination
from jobs.pgsets import complete_sets
from jobs.pgsnap import complete_snapshot_sets
from jobs.secret_readers import SecretReader
from jobs.store_checksums import ChecksumCache, common_tokens, manifest_sha256_token
from rules.manifest import MANIFEST, RECENT, TIERS, parse_time
from rules.snapshot_sets import KIND as SNAPSHOT_KIND
from rules.snapshot_sets import SNAPSHOT_SETS

IN_SYNC = "in_sync"
MISSING = "missing"
PARTIAL = "partial"
DIFFERS = "differs"
WITHIN_LAG = "within_lag"
EXPIRING = "expiring"
BEHIND = "behind"
NO_SOURCE = "no_source"
UNREADABLE = "unreadable"
# Statuses that do not fail the check.
ACCEPTABLE = (IN_SYNC, WITHIN_LAG, EXPIRING)
# Statuses that count towards the lag (a DR copy that lacks a correct copy of the set).
LAGGING = (MISSING, PARTIAL, DIFFERS, WITHIN_LAG)

READ_CHUNK = 4 * 1024 * 1024
# How far back the secret comparison looks for the DR side's newest version among the primary's versions.
SECRET_SCAN = 10


@dataclass
class CheckOptions:
    max_lag: timedelta = timedelta(hours=1)
    deep: bool = False
    recent_retention: timedelta | None = None
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass
class SetReport:
    prefix: str
    set_id: str
    tier: str
    migration_id: int
    created_at: str
    age: timedelta
    status: str = IN_SYNC
    replication: str | None = None  # for within_lag/expiring: what the DR copy actually is (missing, partial)
    problems: list[str] = field(default_factory=list)
    objects: int = 0
    by_checksum: int = 0
    by_read: int = 0
    bytes_read: int = 0

    def fields(self) -> dict[str, Any]:
        return {
            "set": self.prefix,
            "set_id": self.set_id,
            "tier": self.tier,
            "migration_id": self.migration_id,
            "created_at": self.created_at,
            "age_seconds": int(self.age.total_seconds()),
            "status": self.status,
            **({"replication": self.replication} if self.replication else {}),
            "problems": self.problems,
            "objects": self.objects,
            "verified_by_checksum": self.by_checksum,
            "verified_by_read": self.by_read,
            "bytes_read": self.bytes_read,
        }


@dataclass
class SecretReport:
    status: str
    problems: list[str] = field(default_factory=list)
    primary_newest: dict[str, str] | None = None
    dr_newest: dict[str, str] | None = None
    common: dict[str, str] | None = None  # the newest version present on both sides
    lag: timedelta = timedelta(0)

    def fields(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "problems": self.problems,
            "primary_newest": self.primary_newest,
            "dr_newest": self.dr_newest,
            "newest_common": self.common,
            "lag_seconds": int(self.lag.total_seconds()),
        }


@dataclass
class ReplicaReport:
    sets: list[SetReport]
    only_in_dr: list[str]
    errors: list[str]
    secret: SecretReport | None = None

    @property
    def lag(self) -> timedelta:
        ages = [s.age for s in self.sets if s.status in LAGGING]
        if self.secret is not None:
            ages.append(self.secret.lag)
        return max(ages, default=timedelta(0))

    @property
    def ok(self) -> bool:
        secret_ok = self.secret is None or self.secret.status in ACCEPTABLE
        return not self.errors and secret_ok and all(s.status in ACCEPTABLE for s in self.sets)

    @property
    def status(self) -> str:
        if not self.ok:
            return "out_of_sync"
        statuses = {s.status for s in self.sets} | ({self.secret.status} if self.secret else set())
        return IN_SYNC if statuses <= {IN_SYNC, EXPIRING} else WITHIN_LAG

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for report in self.sets:
            counts[report.status] = counts.get(report.status, 0) + 1
        return counts

    def problems(self) -> list[str]:
        found = list(self.errors)
        for report in self.sets:
            if report.status not in ACCEPTABLE:
                found += [f"{report.prefix}: {p}" for p in report.problems] or [f"{report.prefix}: {report.status}"]
        if self.secret is not None and self.secret.status not in ACCEPTABLE:
            found += [f"secret: {p}" for p in self.secret.problems]
        return found


# ---------------------------------------------------------------------------------------------------- sets


def _sha256_of(dest: Destination, key: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with dest.open_read(key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _SetComparer:
    def __init__(self, src: Destination, dst: Destination, options: CheckOptions):
        self.src, self.dst, self.options = src, dst, options
        self.src_sums, self.dst_sums = ChecksumCache(src), ChecksumCache(dst)
        self.dst_sizes = {info.key: info.size for tier in (*TIERS, SNAPSHOT_SETS) for info in dst.list(f"{tier}/")}

    def compare(self, prefix: str, manifest: dict[str, Any], now: datetime) -> SetReport:
        report = SetReport(
            prefix=prefix,
            set_id=manifest["set_id"],
            tier=prefix.split("/")[0],
            migration_id=manifest["migration_id"],
            created_at=manifest["created_at"],
            age=now - parse_time(manifest["created_at"]),
        )
        small = [MANIFEST, *manifest.get("steps", [])]
        # A snapshot set's snapshots are not in the store: the providers copy them (EBS, RDS: `dr_copy`, checked
        # before the step is recorded) or keep them in a multi-region (PD, Cloud SQL: the policy's snapshot-dr-copy
        # rule checks the class and the location). What the DR side restores from the store is compared here.
        dumps = _stored_objects(manifest)
        keys = [f"{prefix}/{k}" for k in small] + [f"{prefix}/{obj['key']}" for obj in dumps]
        report.objects = len(keys)
        absent = [k for k in keys if k not in self.dst_sizes]
        differs: list[str] = []
        if len(absent) == len(keys):
            report.status = MISSING
            report.problems.append("not in the DR copy")
        else:
            for name in small:
                key = f"{prefix}/{name}"
                if key in self.dst_sizes:
                    self._compare_small(key, name, report, differs)
            for obj in dumps:
                key = f"{prefix}/{obj['key']}"
                if key in self.dst_sizes:
                    self._compare_dump(key, obj, prefix, report, differs)
            if differs:
                report.status = DIFFERS
                report.problems += differs
            elif absent:
                report.status = PARTIAL
            if absent:
                shown = ", ".join(k[len(prefix) + 1 :] for k in absent[:5])
                report.problems.append(f"{len(absent)} of {len(keys)} objects not in the DR copy: {shown}")
        self._apply_bounds(report)
        return report

    def _compare_small(self, key: str, name: str, report: SetReport, differs: list[str]) -> None:
        primary, copy = self.src.read_bytes(key), self.dst.read_bytes(key)
        report.bytes_read += len(copy)
        report.by_read += 1
        if primary != copy:
            differs.append(f"{name} is not byte-identical to the primary's ({len(copy)} bytes, primary {len(primary)})")

    def _compare_dump(self, key: str, obj: dict, prefix: str, report: SetReport, differs: list[str]) -> None:
        size = self.dst_sizes[key]
        if size != obj["size"]:
            differs.append(f"{obj['key']} has {size} bytes in the DR copy, the manifest says {obj['size']}")
            return
        if not self.options.deep:
            listing = f"{prefix}/"
            dst_sums = self.dst_sums.checksums(key, listing)
            full = manifest_sha256_token(dst_sums)
            if full is not None:
                report.by_checksum += 1
                if full != obj["sha256"]:
                    differs.append(f"{obj['key']}: the DR store's SHA-256 is not the manifest's")
                return
            src_sums = self.src_sums.checksums(key, listing)
            shared = common_tokens(src_sums, dst_sums)
            if shared:
                report.by_checksum += 1
                unequal = [t for t in shared if src_sums[t] != dst_sums[t]]
                if unequal:
                    differs.append(f"{obj['key']}: the stores' checksums differ ({', '.join(unequal)})")
                return
        digest, read = _sha256_of(self.dst, key)
        report.by_read += 1
        report.bytes_read += read
        if digest != obj["sha256"]:
            differs.append(f"{obj['key']}: sha256 of the DR copy is not the manifest's")

    def _apply_bounds(self, report: SetReport) -> None:
        if report.status not in (MISSING, PARTIAL):
            return
        retention = self.options.recent_retention
        if report.tier == RECENT and retention is not None and report.age >= retention:
            report.replication, report.status = report.status, EXPIRING
        elif report.age < self.options.max_lag:
            report.replication, report.status = report.status, WITHIN_LAG


def _stored_objects(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The large objects a set keeps in the store: a dump set's dumps, a snapshot set's captured WAL."""
    if manifest.get("kind") == SNAPSHOT_KIND:
        return [
            obj
            for record in manifest["snapshots"]
            for obj in ((record.get("details") or {}).get("wal") or {}).get("objects") or []
        ]
    return [obj for db in manifest["databases"] for obj in db["objects"]]


def _compare_or_report(comparer: _SetComparer, prefix: str, manifest: dict[str, Any], now: datetime) -> SetReport:
    """One set that cannot be read (an object gone between listing and reading, a permission, a cold storage
    class) fails on its own, without hiding the status of the others."""
    try:
        return comparer.compare(prefix, manifest, now)
    except Exception as exc:  # boto3/google errors are neither OSError nor DestinationError
        return SetReport(
            prefix=prefix,
            set_id=manifest["set_id"],
            tier=prefix.split("/")[0],
            migration_id=manifest["migration_id"],
            created_at=manifest["created_at"],
            age=now - parse_time(manifest["created_at"]),
            status=UNREADABLE,
            problems=[f"{type(exc).__name__}: {exc}"],
        )


def check_sets(src: Destination, dst: Destination, options: CheckOptions) -> ReplicaReport:
    now = options.now()
    primary = complete_sets(src) + complete_snapshot_sets(src)
    comparer = _SetComparer(src, dst, options)
    reports = [_compare_or_report(comparer, prefix, manifest, now) for prefix, manifest in primary]
    known = {prefix for prefix, _ in primary}
    only_in_dr = sorted(
        key.rsplit("/", 1)[0]
        for key in comparer.dst_sizes
        if key.count("/") == 3 and key.endswith(f"/{MANIFEST}") and key.rsplit("/", 1)[0] not in known
    )
    errors = [] if primary else [f"{src.url} has no complete set: nothing to compare (wrong URL or prefix?)"]
    return ReplicaReport(sets=reports, only_in_dr=only_in_dr, errors=errors)


# -------------------------------------------------------------------------------------------------- secret


def _version_fields(version) -> dict[str, str]:
    return {"version": version.name, "created_at": version.created_at.isoformat().replace("+00:00", "Z")}


def check_secret(src: SecretReader, dst: SecretReader, options: CheckOptions) -> SecretReport:
    now = options.now()
    primary = src.versions()
    if not primary:
        return SecretReport(NO_SOURCE, [f"{src.url} has no readable version"])
    report = SecretReport(IN_SYNC, primary_newest=_version_fields(primary[0]))
    scanned = primary[:SECRET_SCAN]
    copies = dst.versions()
    match = None
    if copies:
        report.dr_newest = _version_fields(copies[0])
        dr_digest = hashlib.sha256(dst.read(copies[0])).digest()
        for index, version in enumerate(scanned):
            if hashlib.sha256(src.read(version)).digest() == dr_digest:
                match = index
                break
    if match == 0:
        report.common = {
            "primary": primary[0].name,
            "dr": copies[0].name,
            "created_at": report.primary_newest["created_at"],
        }
        return report
    lacking = scanned if match is None else scanned[:match]
    report.lag = now - lacking[-1].created_at
    if not copies:
        report.status = MISSING
        report.problems.append(f"{dst.url} has no readable version")
    elif match is None:
        report.status = DIFFERS
        report.problems.append(
            f"the DR side's newest version ({copies[0].name}) matches none of the primary's newest {len(scanned)}"
        )
        return report
    else:
        report.status = BEHIND
        report.common = {
            "primary": scanned[match].name,
            "dr": copies[0].name,
            "created_at": _version_fields(scanned[match])["created_at"],
        }
        report.problems.append(
            f"the DR side's newest version is the primary's {scanned[match].name}: {match} newer version(s) not there"
        )
    if report.lag < options.max_lag:
        report.status = WITHIN_LAG
    return report
