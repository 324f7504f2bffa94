"""Stored data over time: replay a stack's schedules and retention rules with the code the program and jobs run.

Nothing here re-implements a rule. Per simulated Postgres run the real seal (`jobs.pgsets.seal_set`, which
promotes with `rules.retention.promotion_due` at `postgres_historical_cadence` and keeps an earlier
migration id's newest set) writes into an in-memory object store; the bucket's lifecycle rules are
`rules.retention.bucket_lifecycle` with the arguments the bucket components pass (a plan-level test checks
them against what the program declares), applied daily with the stack's soft delete (GCS) or noncurrent-version
window (S3 versioning); per CometBFT run the real pruner (`jobs.cometbft.SnapshotJob.plan_prune` / `prune`)
thins the snapshots; every simulated day the history audit (`rules.history.audit`) judges the store.

Data objects are sizes only (no bytes): one object per database, sized by a size model that grows monthly.
The theoretical minimum of historical sets is computed with hindsight over the sets the run produced (see
`minimum_historical`).
"""

from __future__ import annotations

import contextlib
import heapq
import io
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from croniter import croniter

from components.settings import Settings
from engines import snapshot_sim, storage_prices
from jobs import cometbft as cometbft_job
from jobs import pgsets
from jobs.destinations import Destination, ObjectExists, ObjectInfo, ObjectWriter
from jobs.pgsets import complete_sets as _complete_sets
from jobs.pgsets import promote, read_json, seal_set, to_json
from rules import retention, schedules
from rules.gcp_locations import standalone_snapshot_location, storage_layout
from rules.history import SetPoint, audit, human
from rules.history import set_point as _set_point
from rules.manifest import (
    HISTORICAL,
    MANIFEST,
    RECENT,
    STEP_FORMAT,
    format_time,
    manifest_errors,
    parse_time,
    role_sort_key,
    set_prefix,
    step_key,
)

GIB = 2**30
DAY = timedelta(days=1)
DEFAULT_DUMP_SECONDS_PER_GB = 16.8
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_AMOUNT = r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)"  # NUMBER UNIT
_SIZE = re.compile(rf"^\s*([a-z][a-z0-9-]*)\s*=\s*{_AMOUNT}\s*$")
_DAILY = re.compile(rf"^\s*{_AMOUNT}\s*/\s*day\s*$")
_GROWTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*/\s*(month|year)\s*$")
AVERAGE_MONTH = timedelta(days=365.25 / 12)


# ------------------------------------------------------------------------------------------------ size model


@dataclass(frozen=True)
class SizeModel:
    """Bytes of one set's dump of each role (all its databases together) at the start, growing monthly."""

    sizes: dict[str, int]
    monthly_growth: float = 0.0

    def at(self, role: str, elapsed: timedelta) -> int:
        return int(self.sizes[role] * (1 + self.monthly_growth) ** (elapsed / AVERAGE_MONTH))


def parse_sizes(text: str) -> dict[str, int]:
    """`participant=200GB,sequencer=300GB,apps=20GB,mediator=5GB` -> bytes per role (GB = 10^9, GiB = 2^30)."""
    sizes: dict[str, int] = {}
    for item in text.split(","):
        match = _SIZE.match(item)
        amount = _bytes(*match.group(2, 3)) if match else None
        if amount is None:
            raise ValueError(
                f"--size: {item.strip()!r} is not ROLE=NUMBER UNIT (e.g. participant=200GB; units: "
                f"{', '.join(u for u in _UNITS if u != 'KIB' and u != 'MIB')})"
            )
        sizes[match.group(1)] = amount
    return sizes


def parse_daily(text: str) -> int:
    """`1GB/day` -> bytes per day (GB = 10^9, GiB = 2^30)."""
    match = _DAILY.match(text)
    amount = _bytes(*match.group(1, 2)) if match else None
    if amount is None:
        raise ValueError(f"--cometbft-blocks: {text!r} is not NUMBER UNIT/day (e.g. 1GB/day)")
    return amount


def _bytes(number: str, unit: str) -> int | None:
    """NUMBER UNIT in bytes; None for an unknown unit."""
    factor = _UNITS.get(unit.upper())
    return None if factor is None else int(float(number) * factor)


def parse_growth(text: str) -> float:
    """`5%/month` -> 0.05 per month; `60%/year` -> the monthly rate compounding to it."""
    match = _GROWTH.match(text)
    if not match:
        raise ValueError(f"--growth: {text!r} is not PERCENT%/month or PERCENT%/year (e.g. 5%/month)")
    rate = float(match.group(1)) / 100
    return rate if match.group(2) == "month" else (1 + rate) ** (1 / 12) - 1


# ------------------------------------------------------------------------------------------ in-memory store


@dataclass
class StoredObject:
    size: int
    created_at: datetime
    data: bytes | None  # None: a data object simulated by its size alone


class _MemoryWriter(ObjectWriter):
    def __init__(self, store: MemoryStore, key: str):
        super().__init__(key)
        self._store, self._chunks = store, []

    def _write(self, data: bytes) -> None:
        self._chunks.append(data)

    def _commit(self) -> None:
        self._store.create(self.key, b"".join(self._chunks))

    def _abort(self) -> None:
        self._chunks.clear()


class MemoryStore(Destination):
    """An object store in memory, create-only like the real buckets (the writers cannot delete or overwrite);
    only `expire` (the lifecycle) removes objects. Objects are stamped with the simulated clock."""

    def __init__(self, clock: Callable[[], datetime]):
        super().__init__("mem://sim")
        self.clock = clock
        self.objects: dict[str, StoredObject] = {}
        self.bytes_written = 0
        self.manifest_keys: set[str] = set()  # <tier>/<id>/<set>/manifest.json, for _Listing

    def create(self, key: str, data: bytes | None, size: int | None = None) -> None:
        if key in self.objects:
            raise ObjectExists(f"{key} already exists")
        stored = StoredObject(len(data) if data is not None else int(size or 0), self.clock(), data)
        self.objects[key] = stored
        self.bytes_written += stored.size
        if _is_manifest(key):
            self.manifest_keys.add(key)

    def writer(self, key: str) -> ObjectWriter:
        if key in self.objects:
            raise ObjectExists(f"{key} already exists")
        return _MemoryWriter(self, key)

    def open_read(self, key: str):
        stored = self.objects.get(key)
        if stored is None:
            raise FileNotFoundError(key)
        return io.BytesIO(stored.data if stored.data is not None else b"")

    def size(self, key: str) -> int | None:
        stored = self.objects.get(key)
        return None if stored is None else stored.size

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            yield ObjectInfo(key, self.objects[key].size)

    def copy(self, src: str, dst: str) -> None:
        stored = self.objects.get(src)
        if stored is None:
            raise FileNotFoundError(src)
        self.create(dst, stored.data, stored.size)

    def expire(self, key: str) -> StoredObject:
        self.manifest_keys.discard(key)
        return self.objects.pop(key)


def _is_manifest(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[3] == MANIFEST and parts[0] in (RECENT, HISTORICAL)


class _Listing:
    """`jobs.pgsets.complete_sets` and `rules.history.set_point` over the simulated store, memoized: the seal and
    the daily audit list every complete set, and re-reading and re-validating each manifest on every run made the
    listing nearly all of a 2-year replay's time. The store is create-only, so a manifest's key and object identify
    its content for as long as it exists; each is read and checked once, with the same functions the jobs use
    (read_json, manifest_errors, set_point), and listed in the same order. While `installed`, jobs.pgsets uses
    these (the seal reads through them); `benchmarks/retention_sim.py` checks that a replay with and without the
    cache reports the same, and measures both."""

    def __init__(self, store: MemoryStore):
        self.store = store
        self._manifests: dict[str, tuple[StoredObject, dict[str, Any] | None, datetime | None]] = {}
        self._points: dict[tuple[int, str], tuple[dict[str, Any], SetPoint]] = {}

    def complete_sets(
        self, dest: Destination, tiers: tuple[str, ...] = (RECENT, HISTORICAL), migration_id: int | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        if dest is not self.store:
            return _complete_sets(dest, tiers, migration_id)
        found = []
        for key in self.store.manifest_keys:
            parts = key.split("/")
            if parts[0] not in tiers or (migration_id is not None and parts[1] != str(migration_id)):
                continue
            stored = self.store.objects[key]
            cached = self._manifests.get(key)
            if cached is None or cached[0] is not stored:
                manifest = read_json(dest, key)
                valid = manifest is not None and not manifest_errors(manifest, parts[2])
                cached = (stored, manifest, parse_time(manifest["created_at"])) if valid else (stored, None, None)
                self._manifests[key] = cached
            if cached[1] is not None:
                found.append((cached[2], "/".join(parts[:3]), cached[1]))
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [(prefix, manifest) for _, prefix, manifest in found]

    def set_point(self, tier: str, manifest: dict[str, Any]) -> SetPoint:
        hit = self._points.get((id(manifest), tier))
        if hit is not None and hit[0] is manifest:
            return hit[1]
        point = _set_point(tier, manifest)
        self._points[(id(manifest), tier)] = (manifest, point)
        return point

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Listing]:
        saved = pgsets.complete_sets, pgsets.set_point
        pgsets.complete_sets, pgsets.set_point = self.complete_sets, self.set_point
        try:
            yield self
        finally:
            pgsets.complete_sets, pgsets.set_point = saved


class _PlainListing(_Listing):
    """The same interface without the cache (Options.memoize False): the jobs' own functions every time."""

    def complete_sets(self, dest, tiers=(RECENT, HISTORICAL), migration_id=None):
        return _complete_sets(dest, tiers, migration_id)

    def set_point(self, tier, manifest):
        return _set_point(tier, manifest)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Listing]:
        yield self


# ------------------------------------------------------------------------------------------- bucket model


@dataclass(frozen=True)
class BucketModel:
    """What the stack's buckets do to an object over its life, and where it is billed."""

    rules: list[retention.LifecycleRule]  # as the program declares them (prefixes include storage.prefix)
    prefix: str  # storage.prefix: the store's keys are relative to it
    kept_after_delete: timedelta  # GCS soft delete / S3 noncurrent-version expiration: billed after a delete
    copies: list[storage_prices.Copy]
    replication: tuple[str, str]  # (provider, mode) for storage_prices.replication_per_gib
    overhead_name: str  # "soft delete" | "noncurrent versions (versioning + Object Lock)"

    def storage_class(self, key: str, age: timedelta) -> str:
        """The class an object of `age` is in: the last SetStorageClass rule whose prefix and age it meets."""
        current = "STANDARD"
        for rule in self.rules:
            matches = rule.action == "SetStorageClass" and (self.prefix + key).startswith(rule.prefix)
            if matches and age >= timedelta(days=rule.age_days):
                current = rule.storage_class
        return current

    def deleted(self, key: str, age: timedelta) -> bool:
        return any(
            rule.action == "Delete"
            and (self.prefix + key).startswith(rule.prefix)
            and age >= timedelta(days=rule.age_days)
            for rule in self.rules
        )


def declared_lifecycle(settings: Settings) -> list[retention.LifecycleRule]:
    """The cloud-neutral lifecycle rules the bucket components declare (components/gcp/buckets.py,
    components/aws/s3.py: the same call, with STANDARD meaning no transition)."""
    storage = settings.storage
    historical_class = storage.historical_class(settings.cloud)
    return retention.bucket_lifecycle(
        storage.prefix, settings.retention.recent, None if historical_class == "STANDARD" else historical_class
    )


def bucket_model(settings: Settings) -> BucketModel:
    storage = settings.storage
    rules = declared_lifecycle(settings)
    if settings.cloud == "gcp":
        layout = storage_layout(settings.gcp.region, settings.dr.region)
        if layout.kind == "dual-region":
            regions = [r.lower() for r in layout.primary.data_locations]
            copies = [storage_prices.Copy("gcs", r, "dual-region") for r in regions]
            replication = ("gcs", "ASYNC_TURBO")
        else:
            copies = [storage_prices.Copy("gcs", r, "regional") for r in (settings.gcp.region, settings.dr.region)]
            replication = ("gcs", "TRANSFER")
        return BucketModel(rules, storage.prefix, storage.soft_delete, copies, replication, "soft delete")
    rtc = settings.aws.irsa.replication_time_control
    copies = [storage_prices.Copy("s3", r, "regional") for r in (settings.aws.region, settings.dr.region)]
    # A lifecycle expiration makes the version noncurrent; it is removed noncurrent_days later (whole days).
    noncurrent = timedelta(days=retention.whole_days(storage.soft_delete))
    return BucketModel(
        rules,
        storage.prefix,
        noncurrent,
        copies,
        ("s3", "RTC" if rtc else "CRR"),
        "noncurrent versions (versioning + Object Lock)",
    )


# --------------------------------------------------------------------------------------------- the replay


@dataclass(frozen=True)
class Outage:
    """Every backup run scheduled in [start, start + length) fails and leaves no set."""

    start: datetime
    length: timedelta

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.start + self.length


@dataclass
class Options:
    years: float = 2.0
    start: datetime = datetime(2027, 1, 1, tzinfo=UTC)
    sizes: SizeModel = field(default_factory=lambda: SizeModel({}))
    migration_changes: list[datetime] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    # slow runs start at the end of their start window and seal at their deadline, the pruned roles' snapshots
    # taken last (the bound the cadence is proven against); fast runs start on time and take bytes / throughput.
    # worst: every run slow; typical: every run fast; jitter: each run either, at random (seeded), which puts a
    # fast set next to a slow one, the widest gap the audit can measure.
    timing: str = "jitter"
    seed: int = 1
    # Seconds a dump step takes per GB (10^9 bytes) of its role's size: docs/jobs.md "Scale", 16.8 s/GB measured
    # for backup-set on 2 cores (the backup pod's CPU limit) at 4 GB. A run whose steps take longer than the
    # CronJob's activeDeadlineSeconds is killed and leaves no set.
    dump_seconds_per_gb: float = DEFAULT_DUMP_SECONDS_PER_GB
    cometbft_per_day: int = 10**9  # bytes of blocks CometBFT writes per day (its volume keeps the last window)
    # Postgres snapshot sets (issue 17). Each None: from the stack's settings (`sv-backups:snapshots`); the
    # explicit values let a caller simulate a configuration the stack file does not (yet) declare.
    snapshot_schedule: str | None = None  # "" : no snapshot sets even if the stack declares them
    snapshot_historical: bool | None = None
    dump_schedule: str | None = None  # the dump sets' schedule (the stack's schedule.postgres otherwise)
    churn: dict[str, int] = field(default_factory=lambda: snapshot_sim.parse_churn(snapshot_sim.DEFAULT_CHURN))
    prices: storage_prices.PriceBook = field(default_factory=storage_prices.PriceBook)
    # Read and check each manifest once (_Listing); False: the jobs' listing on every run (the benchmark's baseline).
    memoize: bool = True


@dataclass
class Result:
    stack: str
    start: datetime
    end: datetime
    cadence: timedelta
    window: timedelta | None
    sets_by_tier: dict[tuple[str, int], int]  # (tier, migration id) -> complete sets at the end
    bytes_by_class: dict[str, int]  # storage class -> bytes of live objects at the end (one copy)
    bytes_kept_after_delete: dict[str, int]  # class -> bytes soft-deleted / noncurrent at the end (one copy)
    monthly_cost: dict[str, float]  # class -> USD, last 30 simulated days, every copy
    monthly_overhead_cost: dict[str, float]  # class -> USD of the soft-deleted / noncurrent part of it
    monthly_replication_cost: float
    minimum_historical: dict[int, int]  # migration id -> minimum historical sets (hindsight)
    # migration id -> the fewest an online rule can keep: spacing at most what the schedule guarantees
    minimum_by_schedule: dict[int, int]
    largest_legal_spacing: timedelta | None
    guaranteed_spacing: timedelta | None  # window - (largest gap + latest finish)
    audit_days: int
    audit_problems: list[tuple[datetime, str]]
    snapshots_by_tier: dict[tuple[str, int], int]
    minimum_snapshots: dict[int, int]  # migration id -> fewest historical snapshots at the configured block rate
    # The same at twice the block rate (the window halved): the margin Splice's 2-week spacing keeps, which the
    # pruner keeps too (rules/retention.py, WINDOW_SAFETY_DIVISOR).
    minimum_snapshots_margin: dict[int, int]
    snapshot_bytes: int  # incremental snapshot storage of every kept snapshot at the end
    minimum_snapshot_bytes: int  # the same for the minimum's snapshots (and the recent ones, kept either way)
    snapshot_problems: list[tuple[datetime, str]]  # days a kept CometBFT history had a gap of a window or more
    snapshot_days: int  # days the block rule was checked on what was kept
    snapshot_locations: list[str]  # where the snapshots are stored: one billed copy in each
    snapshot_monthly_cost: float  # USD per month of snapshot_bytes at the end, every copy and the copying
    bucket: BucketModel
    sealed: list[SetPoint]  # every set the run sealed (recent tier), for checks
    store: MemoryStore  # the simulated bucket at the end
    dump_schedule: str = ""
    dump_seconds_per_gb: float = 0.0
    dump_deadline: timedelta | None = None  # the CronJob's activeDeadlineSeconds
    failed_runs: list[FailedRun] = field(default_factory=list)  # dump runs killed at their deadline
    # Largest gap between consecutive historical dump sets (and the open one at the end): the dump sets alone keep
    # the gap-less history when it is below the smallest pruning window (None: pruning off or no dump set).
    dump_history_gap: timedelta | None = None
    fewest_dump_sets_per_interval: int | None = None  # complete dump sets in the sparsest `cadence`-long interval
    postgres_snapshots: SnapshotSummary | None = None

    @property
    def historical(self) -> int:
        return sum(n for (tier, _), n in self.sets_by_tier.items() if tier == HISTORICAL)

    @property
    def recent(self) -> int:
        return sum(n for (tier, _), n in self.sets_by_tier.items() if tier == RECENT)

    @property
    def minimum(self) -> int:
        return sum(self.minimum_historical.values())

    @property
    def all_sets_ratio(self) -> float | None:
        """Every stored set / (the recent tier, which the recent window fixes, + the minimum historical)."""
        return None if self.window is None else (self.recent + self.historical) / (self.recent + self.minimum)

    @property
    def ratio(self) -> float | None:
        """Stored historical sets / the minimum that meets the gap rule (None with pruning off)."""
        return None if self.window is None else self.historical / self.minimum

    @property
    def schedule_ratio(self) -> float | None:
        """Stored historical sets / the fewest any rule that decides online could keep (the goal's measure)."""
        return None if self.window is None else self.historical / max(1, sum(self.minimum_by_schedule.values()))

    @property
    def snapshot_historical(self) -> int:
        return sum(n for (tier, _), n in self.snapshots_by_tier.items() if tier == HISTORICAL)

    @property
    def snapshot_ratio(self) -> float:
        """Kept historical CometBFT snapshots / the fewest that keep the history with Splice's 2x margin."""
        return self.snapshot_historical / max(1, sum(self.minimum_snapshots_margin.values()))

    @property
    def snapshot_bytes_ratio(self) -> float:
        """CometBFT snapshot storage kept / the minimum selection's: what the kept count costs."""
        return self.snapshot_bytes / max(1, self.minimum_snapshot_bytes)

    @property
    def postgres_snapshot_monthly_cost(self) -> float:
        return sum(self.postgres_snapshots.monthly_cost.values()) if self.postgres_snapshots else 0.0

    @property
    def total_monthly_cost(self) -> float:
        return (
            sum(self.monthly_cost.values())
            + self.monthly_replication_cost
            + self.snapshot_monthly_cost
            + self.postgres_snapshot_monthly_cost
        )

    @property
    def gapless(self) -> bool:
        """The history audit's gap rule held every simulated day, and CometBFT's block rule."""
        return not self.audit_problems and not self.snapshot_problems


@dataclass(frozen=True)
class FailedRun:
    """A dump run whose steps need longer than the CronJob's deadline: Kubernetes kills it, no set is sealed."""

    at: datetime
    needed: timedelta
    deadline: timedelta
    size: int  # bytes of every role's dump together


@dataclass(frozen=True)
class SnapshotSummary:
    """The Postgres snapshot sets of a run (engines/snapshot_sim.py)."""

    schedule: str
    historical: bool
    cadence: timedelta | None  # the historical tier's (None: no historical tier)
    taken: int
    kept: int
    kept_historical: int
    stored: dict[str, float]  # role -> bytes of one copy of its chain at the end
    placements: dict[str, snapshot_sim.Placement]
    monthly_cost: dict[str, float]  # price class -> USD over the last 30 days (transfer classes: the copying)


def migration_id_at(settings: Settings, changes: list[datetime], at: datetime) -> int:
    return settings.node.migration_id + sum(1 for change in changes if change <= at)


def pvc_for(settings: Settings, migration_id: int) -> str:
    """The CometBFT PVC of a migration id: the stack's, with its serial replaced (global-domain-<serial>-...)."""
    pvc, base = settings.cometbft.pvc, settings.node.migration_id
    if migration_id == base:
        return pvc
    marker = f"-{base}-"
    return pvc.replace(marker, f"-{migration_id}-", 1) if marker in pvc else f"{pvc}-m{migration_id}"


def snapshot_config(settings: Settings, options: Options) -> tuple[str, bool] | None:
    """(schedule, historical) of the stack's Postgres snapshot sets, or None when it takes none: the options'
    explicit values first, then the stack's `sv-backups:snapshots`."""
    declared = getattr(settings, "snapshots", None)
    schedule = options.snapshot_schedule
    if schedule is None:
        schedule = declared.schedule if declared is not None else ""
    if not schedule:
        return None
    historical = options.snapshot_historical
    if historical is None:
        historical = bool(declared.historical) if declared is not None else False
    return schedule, historical


def dump_timing(settings: Settings, options: Options) -> tuple[str, schedules.Timing, timedelta]:
    """The dump sets' schedule, its timing (the CronJob's startingDeadlineSeconds and activeDeadlineSeconds) and
    their historical cadence: the program's (settings.derived, as components/postgres.py passes them on), or, for a
    schedule the options give, the same rules on it (a schedule sparser than 4 h as settings allows it beside
    snapshot sets: the exact largest gap, runs bounded by MAX_RUN_DEADLINE, the gap in the cadence's margin)."""
    if not options.dump_schedule or options.dump_schedule == settings.schedule.postgres:
        derived = settings.derived
        return settings.schedule.postgres, derived.timing["postgres"], derived.postgres_historical_cadence
    expression = options.dump_schedule
    timing = schedules.schedule_timing(expression, max_gap=None, max_run=schedules.MAX_RUN_DEADLINE.get("postgres"))
    gap = max(timing.largest_gap, retention.SV_SCHEDULE_GAP)
    return expression, timing, snapshot_sim.historical_cadence(settings, gap)


def simulate(settings: Settings, options: Options) -> Result:
    clock = {"now": options.start}
    store = MemoryStore(lambda: clock["now"])
    listing = _Listing(store) if options.memoize else _PlainListing(store)
    with listing.installed():
        return _simulate(settings, options, clock, store, listing)


def _simulate(settings: Settings, options: Options, clock: dict, store: MemoryStore, listing: _Listing) -> Result:
    end = options.start + timedelta(days=round(365 * options.years))
    bucket = bucket_model(settings)
    roles = settings.roles
    missing = [r for r in roles if r not in options.sizes.sizes]
    if missing:
        raise ValueError(
            f"--size: no size for role(s) {', '.join(missing)} of stack {settings.stack} (roles: {', '.join(roles)})"
        )
    # The dump sets' historical cadence: its margin grows with their schedule's largest gap (issue 17).
    dump_schedule, timing, dump_cadence = dump_timing(settings, options)
    windows = settings.retention
    snapshots = _Snapshots(settings)
    configured = snapshot_config(settings, options)
    pg_snapshots = None
    if configured is not None:
        snapshot_schedule, historical = configured
        # Snapshot sets are at most 4 h apart (settings refuses sparser): the cadence of a 4-hourly schedule.
        snapshot_gap = schedules.schedule_timing(snapshot_schedule).largest_gap
        growth = snapshot_sim.Growth(options.start, options.sizes.sizes, options.churn, options.sizes.monthly_growth)
        pg_snapshots = snapshot_sim.SnapshotSets(
            settings,
            growth,
            options.prices,
            historical,
            settings.derived.snapshot_historical_cadence
            or snapshot_sim.historical_cadence(settings, max(snapshot_gap, retention.SV_SCHEDULE_GAP)),
        )
    # CometBFT's snapshots are priced like the Postgres ones: a location without a price is refused up front.
    cometbft_classes, transfer = cometbft_price_classes(settings)
    for price_class in (*cometbft_classes, *([transfer] if transfer else [])):
        options.prices.get(price_class)
    for copy in bucket.copies:  # and so is a bucket region (every class the lifecycle moves objects to)
        for storage_class in dict.fromkeys(["STANDARD", *(r.storage_class for r in bucket.rules if r.storage_class)]):
            options.prices.bucket(copy, storage_class)
    deleted: list[tuple[str, StoredObject, datetime]] = []  # key, object, when it stops being billed
    gib_days: dict[str, float] = {}
    gib_days_overhead: dict[str, float] = {}
    written_last_month = 0
    problems: list[tuple[datetime, str]] = []
    snapshot_problems: list[tuple[datetime, str]] = []
    snapshot_days = 0
    audit_days = 0
    sealed: list[SetPoint] = []
    failed: list[FailedRun] = []
    promoted_at: dict[int, datetime] = {}  # migration id -> when its newest historical dump set was taken
    # The freshness the program gives the audit: --interval (the largest gap) + --slack (latest finish + slack).
    max_age = timing.stale_after(settings.monitoring.slack)
    rng = random.Random(options.seed)

    events = _merge(
        (_runs(dump_schedule, options.start, end), "postgres"),
        (_runs(configured[0], options.start, end) if configured else [], "pg-snapshot"),
        # A DABFT node has no CometBFT node: no snapshots (its state is the Postgres set's canton-bft role).
        (_runs(settings.schedule.cometbft, options.start, end) if not settings.dabft else [], "cometbft"),
        (_days(options.start, end), "day"),
    )
    for at, kind in events:
        last_month = end - at <= timedelta(days=30)
        if kind == "postgres":
            if any(o.covers(at) for o in options.outages):
                continue
            migration_id = migration_id_at(settings, options.migration_changes, at)
            before = store.bytes_written
            taken = _take_set(
                store, clock, settings, options, at, migration_id, roles, timing, rng, dump_cadence, promoted_at
            )
            if isinstance(taken, FailedRun):
                failed.append(taken)
                continue
            sealed.append(taken)
            if last_month:
                written_last_month += store.bytes_written - before
        elif kind == "pg-snapshot":
            if any(o.covers(at) for o in options.outages):
                continue
            pg_snapshots.take(at, migration_id_at(settings, options.migration_changes, at), accounting=last_month)
        elif kind == "cometbft":
            if any(o.covers(at) for o in options.outages):
                continue
            snapshots.run(at, migration_id_at(settings, options.migration_changes, at))
        else:
            clock["now"] = at
            _apply_lifecycle(store, bucket, at, deleted)
            deleted = [d for d in deleted if d[2] > at]
            if pg_snapshots is not None:
                pg_snapshots.prune(at)
            if last_month:
                _account(store, bucket, at, deleted, gib_days, gib_days_overhead)
                if pg_snapshots is not None:
                    pg_snapshots.account()
            snapshot_days += 1
            snapshot_problems += [(at, p) for p in snapshots.gaps(at)]
            points = [listing.set_point(prefix.split("/", 1)[0], m) for prefix, m in listing.complete_sets(store)]
            if pg_snapshots is not None:  # the audit sees snapshot sets beside dump sets (issue 17)
                points += pg_snapshots.points(at)
            if points:
                audit_days += 1
                report = audit(points, now=at, max_age=max_age)
                problems += [(at, p) for p in report.problems if not p.startswith("the newest complete set")]

    final = [(prefix.split("/", 1)[0], m) for prefix, m in listing.complete_sets(store)]
    sets_by_tier: dict[tuple[str, int], int] = {}
    for tier, manifest in final:
        key = (tier, int(manifest["migration_id"]))
        sets_by_tier[key] = sets_by_tier.get(key, 0) + 1
    bytes_by_class: dict[str, int] = {}
    for key, obj in store.objects.items():
        cls = bucket.storage_class(key, end - obj.created_at)
        bytes_by_class[cls] = bytes_by_class.get(cls, 0) + obj.size
    kept_after: dict[str, int] = {}
    for key, obj, _until in deleted:
        cls = bucket.storage_class(key, end - obj.created_at)
        kept_after[cls] = kept_after.get(cls, 0) + obj.size
    days_accounted = 30
    monthly = {c: _cost(bucket, options.prices, c, g / days_accounted) for c, g in gib_days.items()}
    overhead = {c: _cost(bucket, options.prices, c, g / days_accounted) for c, g in gib_days_overhead.items()}
    replication = written_last_month / GIB * storage_prices.replication_per_gib(*bucket.replication)
    window = settings.derived.min_pruning_window
    role_windows = {
        role: w
        for role, w in (("participant", windows.participant_pruning), ("sequencer", windows.sequencer_pruning))
        if w is not None
    }
    minimum, spacing = minimum_historical(sealed, role_windows, end)
    # What an online rule can reach: it must promote before it knows the next run's time, so its sets are never
    # further apart than the schedule can guarantee (window - largest gap - latest finish), where hindsight may
    # use the whole window. With 4-hourly dumps the two nearly agree; with weekly dumps hindsight is ~30% lower.
    guaranteed = None if window is None else window - timing.largest_gap - timing.latest_finish
    by_schedule = (
        minimum_historical(sealed, {role: w - (window - guaranteed) for role, w in role_windows.items()}, end)[0]
        if guaranteed is not None and guaranteed > timedelta(0)
        else minimum
    )
    snapshot_bytes = snapshots.stored_bytes(snapshots.kept(), options.cometbft_per_day)
    locations = snapshot_locations(settings)
    # A copy in a second region is incremental too: what it transfers each month is the month's new blocks.
    copied_gib = max(len(locations) - 1, 0) * options.cometbft_per_day * days_accounted / GIB
    copying = copied_gib * options.prices.get(transfer) if transfer else 0.0
    snapshot_cost = sum(snapshot_bytes / GIB * options.prices.get(c) for c in cometbft_classes)
    historical_dumps = sorted(listing.set_point(tier, m).taken_at for tier, m in final if tier == HISTORICAL)
    return Result(
        stack=settings.stack,
        start=options.start,
        end=end,
        cadence=dump_cadence,
        window=window,
        sets_by_tier=sets_by_tier,
        bytes_by_class=bytes_by_class,
        bytes_kept_after_delete=kept_after,
        monthly_cost=monthly,
        monthly_overhead_cost=overhead,
        monthly_replication_cost=replication,
        minimum_historical=minimum,
        minimum_by_schedule=by_schedule,
        largest_legal_spacing=spacing,
        guaranteed_spacing=guaranteed,
        audit_days=audit_days,
        audit_problems=problems,
        snapshots_by_tier=snapshots.by_tier(end),
        minimum_snapshots=_counts(snapshots.minimum(end)),
        minimum_snapshots_margin=_counts(snapshots.minimum(end, snapshots.window / retention.WINDOW_SAFETY_DIVISOR)),
        snapshot_bytes=snapshot_bytes,
        minimum_snapshot_bytes=snapshots.stored_bytes(snapshots.minimum_kept(end), options.cometbft_per_day),
        snapshot_problems=snapshot_problems,
        snapshot_days=snapshot_days,
        snapshot_locations=locations,
        snapshot_monthly_cost=snapshot_cost + copying,
        bucket=bucket,
        sealed=sealed,
        store=store,
        dump_schedule=dump_schedule,
        dump_seconds_per_gb=options.dump_seconds_per_gb,
        dump_deadline=timing.deadline,
        failed_runs=failed,
        dump_history_gap=max((b - a for a, b in pairwise([*historical_dumps, end])), default=None),
        fewest_dump_sets_per_interval=_fewest_per_interval(sealed, options.start, end, dump_cadence),
        postgres_snapshots=None if pg_snapshots is None else _summary(pg_snapshots, configured[0], end, days_accounted),
    )


def _fewest_per_interval(sealed: list[SetPoint], start: datetime, end: datetime, cadence: timedelta) -> int | None:
    """Complete dump sets in the sparsest of the whole `cadence`-long intervals from `start` (None if none fits)."""
    counts = [0] * int((end - start) / cadence)
    for point in sealed:
        index = int((point.taken_at - start) / cadence)
        if index < len(counts):
            counts[index] += 1
    return min(counts, default=None)


def _summary(sets: snapshot_sim.SnapshotSets, schedule: str, end: datetime, days: int) -> SnapshotSummary:
    recent = sets.settings.retention.recent
    return SnapshotSummary(
        schedule=schedule,
        historical=sets.historical,
        cadence=sets.cadence if sets.historical else None,
        taken=sets.taken,
        kept=len(sets.sets),
        kept_historical=sum(1 for s in sets.sets if end - s.taken_at > recent) if sets.historical else 0,
        stored=sets.stored_bytes(),
        placements=sets.where,
        monthly_cost=sets.monthly_cost(days),
    )


def snapshot_locations(settings: Settings) -> list[str]:
    """Where CometBFT's snapshots are stored, one billed copy each: GCP, the VolumeSnapshotClass's
    `storage-locations` (components/gcp/backend.py); AWS, the cluster's region, and on a primary with a DR region
    the copy the snapshot job makes there (`--copy-to-region`, components/aws/backend.py). None on a DABFT node."""
    if settings.dabft:
        return []
    if settings.cloud == "gcp":
        if settings.dr.region is None:
            return [standalone_snapshot_location(settings.gcp.region)]
        return [storage_layout(settings.gcp.region, settings.dr.region).snapshot_location]
    return [settings.aws.region, *([settings.dr.region] if settings.dr.region else [])]


def cometbft_price_classes(settings: Settings) -> tuple[list[str], str | None]:
    """The price classes (engines/storage_prices.py) of CometBFT's snapshots, one per billed copy, and the transfer
    class of the AWS copy to the DR region (None without one)."""
    locations = snapshot_locations(settings)
    kind = "pd-snapshot" if settings.cloud == "gcp" else "ebs-snapshot"
    transfer = f"transfer:{locations[0]}>{locations[1]}" if settings.cloud == "aws" and len(locations) > 1 else None
    return [f"{kind}:{location}" for location in locations], transfer


def _counts(selection: dict[int, list[datetime]]) -> dict[int, int]:
    return {mid: len(times) for mid, times in selection.items()}


def _cost(bucket: BucketModel, prices: storage_prices.PriceBook, storage_class: str, gib: float) -> float:
    return sum(gib * prices.bucket(copy, storage_class) for copy in bucket.copies)


def _runs(expression: str, start: datetime, end: datetime) -> Iterator[datetime]:
    runs = croniter(expression, start - timedelta(seconds=1), ret_type=datetime)
    while (at := runs.get_next()) < end:
        yield at


def _days(start: datetime, end: datetime) -> Iterator[datetime]:
    at = start + DAY
    while at <= end:
        yield at
        at += DAY


def _tagged(times: Iterator[datetime], kind: str) -> Iterator[tuple[datetime, str]]:
    for at in times:
        yield at, kind


def _merge(*sources) -> Iterator[tuple[datetime, str]]:
    """Events in time order; at the same instant runs come before the day's lifecycle and audit ("cometbft",
    "day", "postgres" sort that way only by accident, so the order is explicit)."""
    order = {"postgres": 0, "pg-snapshot": 1, "cometbft": 2, "day": 3}
    streams = [_tagged(times, kind) for times, kind in sources]
    return heapq.merge(*streams, key=lambda event: (event[0], order[event[1]]))


def _take_set(
    store, clock, settings, options, at, migration_id, roles, timing, rng, cadence, promoted_at
) -> SetPoint | FailedRun:
    """One dump run as the CronJob runs it: one init container per role in ROLE_ORDER, each to completion before
    the next starts (components/postgres.py), then the seal. Writes the step records and (size-only) data objects,
    then runs the real seal. A run whose steps need longer than the Job's activeDeadlineSeconds is killed: nothing
    is sealed (its steps' objects are left, as a killed pod leaves them, and expire with the recent tier)."""
    elapsed = at - options.start
    sizes = {role: options.sizes.at(role, elapsed) for role in roles}
    durations = {r: timedelta(seconds=max(1.0, sizes[r] / 1e9 * options.dump_seconds_per_gb)) for r in roles}
    ordered = sorted(roles, key=role_sort_key)
    # one second between steps (the kubelet starting the next container) and ten for the seal
    needed = sum(durations.values(), timedelta(0)) + timedelta(seconds=len(ordered) + 10)
    if needed > timing.deadline:
        return FailedRun(at, needed, timing.deadline, sum(sizes.values()))
    slow = options.timing == "worst" or (options.timing == "jitter" and rng.random() < 0.5)
    # A fast run starts 30 s after its time; a slow one starts at the end of its start window and its steps end
    # as late as its deadline allows (the pruned roles taken last: the bound the cadence is proven against).
    begin = at + timedelta(seconds=30) if not slow else at + timing.latest_finish - needed
    begin = max(begin, at + (timing.start_window if slow else timedelta(seconds=30)))
    starts, cursor = {}, begin
    for role in ordered:
        starts[role] = cursor
        cursor += durations[role] + timedelta(seconds=1)
    sealed_at = cursor + timedelta(seconds=9)
    set_id = f"{at.strftime('%Y%m%dT%H%M%SZ')}-sim"
    prefix = set_prefix(RECENT, migration_id, set_id)
    for role in ordered:
        started = starts[role]
        database = f"{role}_{migration_id}"
        key = f"data/{role}/{database}.pgdump.zst"
        clock["now"] = started + durations[role]
        store.create(f"{prefix}/{key}", None, sizes[role])
        record = {
            "role": role,
            "database": database,
            "server_version": "16.4",
            "snapshot_requested_at": format_time(started),
            "snapshot_acquired_at": format_time(started + timedelta(milliseconds=50)),
            "finished_at": format_time(started + durations[role]),
            "wal_lsn": "0/0",
            "objects": [{"key": key, "size": sizes[role], "sha256": "0" * 64}],
        }
        step = {
            "format": STEP_FORMAT,
            "set_id": set_id,
            "migration_id": migration_id,
            "role": role,
            "code_version": "sim",
            "started_at": format_time(started),
            "finished_at": format_time(started + durations[role]),
            "databases": [record],
        }
        store.put_bytes(f"{prefix}/{step_key(role)}", to_json(step))
    clock["now"] = sealed_at
    gap = max(timing.largest_gap, retention.SV_SCHEDULE_GAP)
    result = _seal(store, settings, set_id, migration_id, roles, sealed_at, gap)
    point = _set_point(RECENT, result.manifest)
    if not result.promoted and retention.promotion_due(promoted_at.get(migration_id), sealed_at, cadence):
        # The seal on this branch promotes at the 4-hour schedule's cadence only; a sparser dump schedule (weekly
        # beside snapshot sets) promotes at the cadence its gap allows (issue 17), with the seal's own promote.
        promote(store, result.manifest, prefix, set_prefix(HISTORICAL, migration_id, set_id))
        result.promoted = True
    if result.promoted:
        promoted_at[migration_id] = point.taken_at
    return point


def _seal(store, settings, set_id, migration_id, roles, sealed_at, schedule_gap):
    """The real seal, given the dump schedule's largest gap (`--schedule-gap`), as the CronJob's seal step is."""
    return seal_set(
        store,
        set_id=set_id,
        migration_id=migration_id,
        roles=roles,
        participant_pruning=settings.retention.participant_pruning,
        sequencer_pruning=settings.retention.sequencer_pruning,
        now=lambda: sealed_at,
        schedule_gap=schedule_gap,
    )


def _apply_lifecycle(store: MemoryStore, bucket: BucketModel, now: datetime, deleted: list) -> None:
    for key in [k for k, o in store.objects.items() if bucket.deleted(k, now - o.created_at)]:
        obj = store.expire(key)
        deleted.append((key, obj, now + bucket.kept_after_delete))


def _account(store, bucket, now, deleted, gib_days, overhead) -> None:
    for key, obj in store.objects.items():
        cls = bucket.storage_class(key, now - obj.created_at)
        gib_days[cls] = gib_days.get(cls, 0.0) + obj.size / GIB
    for key, obj, _until in deleted:
        cls = bucket.storage_class(key, now - obj.created_at)
        gib_days[cls] = gib_days.get(cls, 0.0) + obj.size / GIB
        overhead[cls] = overhead.get(cls, 0.0) + obj.size / GIB


# ------------------------------------------------------------------------------------------ the minimum


def _role_gap(a: SetPoint, b: SetPoint, role: str) -> timedelta:
    """The audit's measure of a gap (rules/history.py): b's latest acquisition minus a's earliest request."""
    return b.roles[role][1] - a.roles[role][0]


def minimum_historical(
    sealed: list[SetPoint], windows: dict[str, timedelta], end: datetime
) -> tuple[dict[int, int], timedelta | None]:
    """The fewest historical sets, chosen with hindsight among the sets that existed, that meet the audit's rule:
    per migration id its first set (genesis of that id), every gap between consecutive kept sets strictly below
    the window for every pruned role, for the current id the open gap at `end` too, and for an earlier id its
    last set (history up to the upgrade). Greedy furthest-reachable choice, which is optimal for covering a line
    with steps shorter than the window. Returns the counts and the largest spacing used."""
    by_id: dict[int, list[SetPoint]] = {}
    for point in sorted(sealed, key=lambda p: (p.taken_at, p.set_id)):
        by_id.setdefault(point.migration_id, []).append(point)
    current = max(by_id, default=None)
    counts: dict[int, int] = {}
    widest: timedelta | None = None
    for mid, points in by_id.items():
        pruned = [r for r in points[0].roles if r in windows]
        if not pruned:
            counts[mid] = 1 if mid == current else min(2, len(points))
            continue

        def fits(a: SetPoint, b: SetPoint, pruned=pruned) -> bool:
            return all(_role_gap(a, b, r) < windows[r] for r in pruned)

        chosen = [0]
        while True:
            a = points[chosen[-1]]
            if mid == current and all(end - a.roles[r][0] < windows[r] for r in pruned):
                break
            if mid != current and chosen[-1] == len(points) - 1:
                break
            reach = chosen[-1] + 1
            if reach >= len(points):
                break
            while reach + 1 < len(points) and fits(a, points[reach + 1]):
                reach += 1
            chosen.append(reach)
        counts[mid] = len(chosen)
        for i, j in pairwise(chosen):
            spacing = points[j].taken_at - points[i].taken_at
            widest = spacing if widest is None else max(widest, spacing)
    return counts, widest


# --------------------------------------------------------------------------------------------- CometBFT


class _Kube:
    """The two calls SnapshotJob's pruning makes, over an in-memory namespace of VolumeSnapshots."""

    def __init__(self):
        self.snapshots: dict[str, dict[str, Any]] = {}

    def list(self, _path: str, label_selector: Any = None) -> list[dict[str, Any]]:
        return list(self.snapshots.values())

    def get_optional(self, path: str) -> dict[str, Any] | None:
        return self.snapshots.get(path.rsplit("/", 1)[-1])

    def merge_patch(self, _path: str, _body: dict) -> None:
        return None

    def delete(self, path: str) -> None:
        self.snapshots.pop(path.rsplit("/", 1)[-1], None)


class _Snapshots:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.kube = _Kube()
        self.taken: list[tuple[datetime, int]] = []

    def _options(self, migration_id: int) -> cometbft_job.Options:
        s = self.settings
        return cometbft_job.Options(
            namespace=s.node.namespace,
            pvc=pvc_for(s, migration_id),
            snapshot_class="sim",
            migration_id=migration_id,
            keep_recent=s.retention.recent,
            retain_blocks=s.retention.cometbft_retain_blocks,
            blocks_per_hour=s.retention.cometbft_blocks_per_hour,
        )

    def run(self, at: datetime, migration_id: int) -> None:
        options = self._options(migration_id)
        taken_at = int(at.timestamp())
        name = cometbft_job.snapshot_name(options.pvc, taken_at)
        self.kube.snapshots[name] = {
            "metadata": {
                "name": name,
                "labels": {
                    cometbft_job.MIGRATION_ID_LABEL: str(migration_id),
                    cometbft_job.TAKEN_AT_LABEL: str(taken_at),
                },
            },
            "spec": {"source": {"persistentVolumeClaimName": options.pvc}},
            "status": {"readyToUse": True},
        }
        self.taken.append((at, migration_id))
        job = cometbft_job.SnapshotJob(self.kube, options, log=lambda *a, **k: {})
        job.prune(job.plan_prune(at))

    def by_tier(self, end: datetime) -> dict[tuple[str, int], int]:
        """Kept snapshots by (tier, migration id): recent within the recent window of `end`, as `minimum` counts."""
        cutoff = end - self.settings.retention.recent
        counts: dict[tuple[str, int], int] = {}
        for mid, times in self.kept().items():
            for taken in times:
                key = (RECENT if taken >= cutoff else HISTORICAL, mid)
                counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def window(self) -> timedelta:
        r = self.settings.retention
        return retention.cometbft_retention_window(r.cometbft_retain_blocks, r.cometbft_blocks_per_hour)

    def kept(self) -> dict[int, list[datetime]]:
        """The snapshots left now, by migration id, oldest first."""
        kept: dict[int, list[datetime]] = {}
        for snapshot in self.kube.snapshots.values():
            labels = snapshot["metadata"]["labels"]
            taken = datetime.fromtimestamp(int(labels[cometbft_job.TAKEN_AT_LABEL]), UTC)
            kept.setdefault(int(labels[cometbft_job.MIGRATION_ID_LABEL]), []).append(taken)
        return {mid: sorted(times) for mid, times in sorted(kept.items())}

    def gaps(self, now: datetime) -> list[str]:
        """The block rule on what is kept now (Splice: two kept snapshots fewer blocks apart than CometBFT
        retains): consecutive kept snapshots of an id, and for the current id the newest to now, less than a
        window apart at the configured block rate."""
        kept = self.kept()
        current = max(kept, default=None)
        problems = []
        for mid, times in kept.items():
            ends = [*times, now] if mid == current else times
            for a, b in pairwise(ends):
                if b - a >= self.window:
                    problems.append(
                        f"CometBFT id {mid}: kept snapshots {format_time(a)} and {format_time(b)} are "
                        f"{human(b - a)} apart, not less than the {human(self.window)} CometBFT keeps"
                    )
        return problems

    def minimum(self, end: datetime, window: timedelta | None = None) -> dict[int, list[datetime]]:
        """The fewest snapshots older than the recent window that keep every two kept ones fewer blocks apart than
        CometBFT retains (`window`: at the configured block rate unless given): per id the first, then greedily
        the furthest reachable, up to the first recent one (for the current id) or the last one (an earlier id,
        whose newest is kept). Chosen with hindsight among every snapshot the run took."""
        window = self.window if window is None else window
        cutoff = end - self.settings.retention.recent
        current = max((m for _, m in self.taken), default=None)
        chosen_by_id: dict[int, list[datetime]] = {}
        for mid in sorted({m for _, m in self.taken}):
            times = [t for t, m in self.taken if m == mid]
            recent = [i for i, t in enumerate(times) if t >= cutoff]
            target = recent[0] if mid == current and recent else len(times) - 1
            chosen = [0]
            while chosen[-1] != target and times[target] - times[chosen[-1]] >= window:
                step = chosen[-1] + 1
                while step < target and times[step + 1] - times[chosen[-1]] < window:
                    step += 1
                chosen.append(step)
            if mid != current and chosen[-1] != target:
                chosen.append(target)
            chosen_by_id[mid] = [times[i] for i in chosen if times[i] < cutoff]
        return chosen_by_id

    def minimum_kept(self, end: datetime) -> dict[int, list[datetime]]:
        """The minimum's snapshots plus the recent ones (the recent window keeps every snapshot either way)."""
        cutoff = end - self.settings.retention.recent
        selection = self.minimum(end)
        for mid, times in self.kept().items():
            selection[mid] = sorted({*selection.get(mid, []), *(t for t in times if t >= cutoff)})
        return selection

    def stored_bytes(self, selection: dict[int, list[datetime]], per_day: int) -> int:
        """Incremental snapshot storage (PD and EBS snapshots keep each block once, in the oldest snapshot still
        holding it): a snapshot taken at t holds the blocks of (t - window, t] (those of its id: a new id's chain
        starts at its first snapshot), so the bytes are the block rate times the union of those spans. Deleting
        a snapshot whose span overlaps its neighbours' frees nothing: any spacing under the window stores the
        same bytes as the minimum. CometBFT's state besides the blocks is left out (small next to them)."""
        total = 0.0
        for mid, times in selection.items():
            if not times:
                continue
            # The stack's own id has run for a while when the simulation starts: its first snapshot is full.
            reached = times[0] - self.window if mid == self.settings.node.migration_id else times[0]
            covered = timedelta(0)
            for t in times:
                covered += t - max(t - self.window, reached)
                reached = t
            total += covered / DAY * per_day
        return int(total)


# -------------------------------------------------------------------------------------------- rendering


def gib(n: int | float) -> str:
    return f"{n / GIB:,.0f} GiB" if n < 10 * 2**40 else f"{n / 2**40:,.1f} TiB"


def money(x: float) -> str:
    return f"${x:,.2f}"


def report(result: Result) -> str:
    lines = [f"stack {result.stack}: {format_time(result.start)[:10]} .. {format_time(result.end)[:10]}"]
    lines.append(
        f"historical cadence {retention.format_duration(result.cadence)}"
        + (
            f", smallest pruning window {retention.format_duration(result.window)}"
            if result.window
            else ", pruning off (14d audit checkpoints)"
        )
    )
    lines.append(
        f"dump sets: schedule {result.dump_schedule!r}, run deadline {human(result.dump_deadline)} "
        "(activeDeadlineSeconds)"
    )
    if result.failed_runs:
        first = result.failed_runs[0]
        after = sum(1 for p in result.sealed if p.taken_at > first.at)
        lines.append(
            f"  FAILED RUNS: {len(result.failed_runs)}, the first at {format_time(first.at)[:16]}: a set of "
            f"{first.size / 1e9:,.0f} GB needs {first.needed.total_seconds():,.1f} s at "
            f"{result.dump_seconds_per_gb:g} s/GB, more than the deadline of {first.deadline.total_seconds():,.0f} s; "
            + ("no set was sealed after it" if not after else f"{after} sets sealed after it")
        )
    else:
        lines.append("  every run fit its deadline")
    ids = sorted({mid for _, mid in result.sets_by_tier})
    lines.append("sets stored at the end:")
    for mid in ids:
        lines.append(
            f"  migration id {mid}: recent {result.sets_by_tier.get((RECENT, mid), 0)}, "
            f"historical {result.sets_by_tier.get((HISTORICAL, mid), 0)} (minimum "
            f"{result.minimum_historical.get(mid, 0)})"
        )
    ratio = result.ratio
    lines.append(
        f"  historical {result.historical} / minimum {result.minimum}"
        + (
            f" = {ratio:.2f}x; all sets {result.recent + result.historical} / (recent + minimum) = "
            f"{result.all_sets_ratio:.2f}x"
            if ratio is not None
            else " (pruning off: the gap rule asks only for each id's first)"
        )
    )
    if result.largest_legal_spacing is not None:
        lines.append(
            f"  largest legal spacing with hindsight {human(result.largest_legal_spacing)}; guaranteed by the "
            f"schedule: window - (largest gap + latest finish) = {human(result.guaranteed_spacing)}"
        )
        lines.append(
            f"  historical {result.historical} / the fewest a rule deciding online can keep "
            f"{sum(result.minimum_by_schedule.values())} = {result.schedule_ratio:.2f}x (the goal's measure)"
        )
    if not result.snapshot_locations:
        lines.append("CometBFT snapshots: none (a DABFT node: its state is the Postgres sets' canton-bft role)")
    else:
        lines.append(
            "CometBFT snapshots at the end: "
            + ", ".join(
                f"{tier} {n} (migration id {mid})" for (tier, mid), n in sorted(result.snapshots_by_tier.items())
            )
            + "; minimum historical "
            + ", ".join(f"{n} (id {m})" for m, n in sorted(result.minimum_snapshots.items()))
            + " at the configured block rate, "
            + ", ".join(f"{n} (id {m})" for m, n in sorted(result.minimum_snapshots_margin.items()))
            + " at twice that rate (the margin of Splice's 2-week spacing)"
        )
        lines.append(
            f"  historical {result.snapshot_historical} / minimum with the margin "
            f"{sum(result.minimum_snapshots_margin.values())} = {result.snapshot_ratio:.2f}x; incremental snapshot "
            f"storage "
            f"{gib(result.snapshot_bytes)}, the minimum's {gib(result.minimum_snapshot_bytes)} = "
            f"{result.snapshot_bytes_ratio:.2f}x (any spacing under the window stores each block once); "
            f"{money(result.snapshot_monthly_cost)}/month in {' + '.join(result.snapshot_locations)}"
        )
    if result.window is not None and result.dump_history_gap is not None:
        verdict = "below" if result.dump_history_gap < result.window else "NOT below"
        lines.append(
            f"historical dump sets: largest gap {human(result.dump_history_gap)}, {verdict} the window; at least "
            f"{result.fewest_dump_sets_per_interval} complete dump set(s) in every {human(result.cadence)} interval"
        )
    pg = result.postgres_snapshots
    if pg is not None:
        tier = f"historical tier at {human(pg.cadence)}" if pg.historical else "recent window only"
        lines.append(
            f"Postgres snapshot sets: schedule {pg.schedule!r}, {tier}; taken {pg.taken}, kept {pg.kept} at the end "
            f"({pg.kept_historical} historical)"
        )
        for role, stored in sorted(pg.stored.items(), key=lambda item: role_sort_key(item[0])):
            place = pg.placements[role]
            lines.append(f"  {role:<12} {place.method:<16} {gib(stored)} per copy in {', '.join(place.price_classes)}")
    lines.append(
        "bytes stored at the end (one copy): "
        + ", ".join(f"{cls} {gib(n)}" for cls, n in sorted(result.bytes_by_class.items()))
        + (
            f"; {result.bucket.overhead_name}: "
            + ", ".join(f"{cls} {gib(n)}" for cls, n in sorted(result.bytes_kept_after_delete.items()))
            if result.bytes_kept_after_delete
            else ""
        )
    )
    copies = ", ".join(f"{c.provider} {c.region} ({c.sku})" for c in result.bucket.copies)
    lines.append(f"monthly cost, last 30 days, {copies}; list prices of {storage_prices.PRICES_READ_ON}:")
    for cls, usd in sorted(result.monthly_cost.items()):
        extra = result.monthly_overhead_cost.get(cls)
        note = f" (of which {result.bucket.overhead_name} {money(extra)})" if extra else ""
        lines.append(f"  {cls:<12} {money(usd)}{note}")
    lines.append(f"  {'replication':<12} {money(result.monthly_replication_cost)} (per GiB written)")
    lines.append(f"  {'CometBFT':<12} {money(result.snapshot_monthly_cost)} (disk snapshots)")
    if pg is not None:
        for price_class, usd in sorted(pg.monthly_cost.items()):
            lines.append(f"  {price_class:<12} {money(usd)} (Postgres snapshot sets)")
    lines.append(f"  {'total':<12} {money(result.total_monthly_cost)}")
    if result.snapshot_locations:  # none on a DABFT node
        if result.snapshot_problems:
            first_at, first = result.snapshot_problems[0]
            lines.append(
                f"CometBFT history: GAPS on {len({a for a, _ in result.snapshot_problems})} days; first "
                f"{format_time(first_at)[:10]}: {first}"
            )
        else:
            lines.append(
                f"CometBFT history: gap-less on every one of {result.snapshot_days} simulated days (the block "
                "rule, at the configured block rate)"
            )
    if result.audit_problems:
        first_at, first = result.audit_problems[0]
        lines.append(
            f"history audit: FAILED on {len({a for a, _ in result.audit_problems})} of {result.audit_days} "
            f"days; first {format_time(first_at)[:10]}: {first}"
        )
    else:
        lines.append(f"history audit: gap-less on every one of {result.audit_days} simulated days")
    return "\n".join(lines)
