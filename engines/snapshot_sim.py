"""Postgres snapshot sets over simulated time: incremental storage per role, DR copies, pruning, their bill.

What is modelled (issue 17, docs/cost.md "Snapshot sets"):

- **A chain per role and location.** A storage snapshot (PD or EBS volume snapshot, Cloud SQL backup, RDS snapshot)
  stores the blocks that changed since the previous snapshot of the same volume; the first one stores the whole
  volume. The chain of kept snapshots therefore stores the volume once (as of its oldest kept snapshot) plus, per
  later kept snapshot, the bytes changed since the previous kept one, at most the volume's size. Deleting a
  snapshot merges its blocks into the next one (PD, EBS, Cloud SQL and RDS all keep what a later snapshot still
  needs); deleting the oldest makes the next one whole.
- **Change rate.** Each role writes `churn` bytes a day (`--churn participant=15GB/day,...`), growing with the
  size model (a database twice as large changes twice as many bytes a day).
- **Simplifications.** Changed bytes are distinct blocks: two intervals merged store the sum of their changes (at
  most the volume), where a real workload rewrites hot blocks and stores less: an upper bound. The volume's size
  is the size model's (the database's size; the data directory's free space and the WAL are left out). One chain
  per role even across migration ids (the instance and its volume stay; its databases change). A snapshot's
  steps take STEP_TIME each (the providers cut at the request and report completion within minutes; the volume
  helper's fakes measure the cut). Pruning runs once a day.
- **DR copies.** GCP (PD, Cloud SQL) keeps each snapshot in the multi-region (or DR region) holding both regions:
  one billed copy there, no transfer. AWS (EBS, RDS) copies each snapshot to the DR region: a second chain billed
  at the DR region's rate plus the transfer of each copied increment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from components.settings import InClusterPostgres, Settings
from engines.storage_prices import PriceBook
from rules import retention
from rules.gcp_locations import standalone_snapshot_location, storage_layout
from rules.history import SetPoint
from rules.manifest import HISTORICAL, RECENT, WINDOW_KEYS, role_sort_key

GIB = 2**30
DAY = timedelta(days=1)
AVERAGE_MONTH = timedelta(days=365.25 / 12)
STEP_TIME = timedelta(minutes=2)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "GIB": 2**30, "TIB": 2**40}
_CHURN = re.compile(r"^\s*([a-z][a-z0-9-]*)\s*=\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*/\s*day\s*$")
# Assumptions, not measurements (give your node's: the bytes each database writes a day, e.g. the growth of
# pg_stat_database's blocks written, or the provider's snapshot sizes): about 7.5 % of the default size model's
# participant and sequencer a day, less for apps and the mediator, canton-bft like the mediator.
DEFAULT_CHURN = "participant=15GB/day,sequencer=20GB/day,apps=2GB/day,mediator=1GB/day,canton-bft=1GB/day"


def parse_churn(text: str) -> dict[str, int]:
    """`participant=15GB/day,...` -> bytes a day per role (GB = 10^9, GiB = 2^30)."""
    churn: dict[str, int] = {}
    for item in text.split(","):
        match = _CHURN.match(item)
        factor = _UNITS.get(match.group(3).upper()) if match else None
        if factor is None:
            raise ValueError(
                f"--churn: {item.strip()!r} is not ROLE=NUMBER UNIT/day (e.g. participant=15GB/day; units: "
                f"{', '.join(_UNITS)})"
            )
        churn[match.group(1)] = int(float(match.group(2)) * factor)
    return churn


def historical_cadence(settings: Settings, schedule_gap: timedelta) -> timedelta:
    """The Postgres historical cadence of sets on a schedule whose largest gap is `schedule_gap` (the rule's margin
    is 2 x max(gap, 4 h): every schedule at most 4 h apart gets the cadence of today's 4-hourly sets)."""
    r = settings.retention
    return retention.postgres_historical_cadence(r.participant_pruning, r.sequencer_pruning, schedule_gap=schedule_gap)


# ------------------------------------------------------------------------------------------- growth model


@dataclass(frozen=True)
class Growth:
    """Sizes and change rates of each role, growing monthly from `start`."""

    start: datetime
    sizes: dict[str, int]
    churn: dict[str, int]  # bytes a day at the start
    monthly_growth: float

    def factor(self, at: datetime) -> float:
        return (1 + self.monthly_growth) ** ((at - self.start) / AVERAGE_MONTH)

    def size(self, role: str, at: datetime) -> float:
        return self.sizes[role] * self.factor(at)

    def changed(self, role: str, a: datetime, b: datetime) -> float:
        """Bytes written between a and b (the integral of the growing change rate)."""
        days = (b - a) / DAY
        g = self.monthly_growth
        if g == 0:
            return self.churn[role] * days
        per_day = math.log(1 + g) / (AVERAGE_MONTH / DAY)  # continuous rate per day
        return self.churn[role] * (self.factor(b) - self.factor(a)) / per_day if days else 0.0


# ------------------------------------------------------------------------------------------------ chains


@dataclass
class Chain:
    """One role's kept snapshots in one place, oldest first: (taken_at, bytes stored for it)."""

    role: str
    growth: Growth
    kept: list[list] = field(default_factory=list)  # [taken_at, stored bytes]

    def add(self, at: datetime) -> float:
        """A new snapshot; returns the bytes it stores (what a copy of it transfers)."""
        stored = self._delta(self.kept[-1][0] if self.kept else None, at)
        self.kept.append([at, stored])
        return stored

    def remove(self, at: datetime) -> None:
        """Delete the snapshot taken at `at`: the next one takes over what it still needs."""
        index = next(i for i, (t, _) in enumerate(self.kept) if t == at)
        if index + 1 < len(self.kept):
            before = self.kept[index - 1][0] if index > 0 else None
            self.kept[index + 1][1] = self._delta(before, self.kept[index + 1][0])
        del self.kept[index]

    def _delta(self, previous: datetime | None, at: datetime) -> float:
        size = self.growth.size(self.role, at)
        return size if previous is None else min(size, self.growth.changed(self.role, previous, at))

    @property
    def stored(self) -> float:
        return sum(stored for _, stored in self.kept)


@dataclass(frozen=True)
class Placement:
    """Where a role's snapshots are stored and billed."""

    method: str  # volume-snapshot | cloudsql-backup | rds-snapshot (rules.snapshot_sets.METHODS)
    price_classes: tuple[str, ...]  # one billed chain each: the primary and, where copied, the DR copy
    transfer_class: str | None  # per GiB each copy transfers (AWS copies to the DR region)


def placements(settings: Settings) -> dict[str, Placement]:
    """Per role, how the program takes its snapshot and where it is kept (components/gcp/snapshots.py: the snapshot
    class's storage-locations and the Cloud SQL backups' --location, the stack region's layout; AWS: the copy to the
    DR region); tests/program/test_retention_sim_plan.py checks them against the plan."""
    out = {}
    dr = settings.dr.region
    for role in settings.roles:
        instance = settings.postgres[role]
        if settings.cloud == "gcp":
            location = (
                storage_layout(settings.gcp.region, dr).snapshot_location
                if dr
                else standalone_snapshot_location(settings.gcp.region)
            )
            kind = "pd-snapshot" if isinstance(instance, InClusterPostgres) else "cloudsql-backup"
            method = "volume-snapshot" if kind == "pd-snapshot" else "cloudsql-backup"
            out[role] = Placement(method, (f"{kind}:{location}",), None)
            continue
        region = getattr(instance, "region", None) or settings.aws.region
        in_cluster = isinstance(instance, InClusterPostgres)
        kind, method = ("ebs-snapshot", "volume-snapshot") if in_cluster else ("rds-snapshot", "rds-snapshot")
        classes = (f"{kind}:{region}",) + ((f"{kind}:{dr}",) if dr else ())
        out[role] = Placement(method, classes, f"transfer:{region}>{dr}" if dr else None)
    return out


# ---------------------------------------------------------------------------------------- snapshot sets


@dataclass
class SnapshotSet:
    set_id: str
    migration_id: int
    taken_at: datetime
    roles: dict[str, tuple[datetime, datetime]]  # role -> (requested, completed)


@dataclass
class SnapshotSets:
    """The snapshot sets of one stack: taken on their schedule, pruned daily, billed per price class."""

    settings: Settings
    growth: Growth
    prices: PriceBook
    historical: bool
    cadence: timedelta
    sets: list[SnapshotSet] = field(default_factory=list)
    chains: dict[str, Chain] = field(default_factory=dict)
    gib_days: dict[str, float] = field(default_factory=dict)  # price class -> GiB-days accounted
    transferred: dict[str, float] = field(default_factory=dict)  # transfer class -> bytes copied while accounting
    taken: int = 0
    pruned: int = 0

    def __post_init__(self):
        self.where = placements(self.settings)
        missing = [r for r in self.where if r not in self.growth.churn]
        if missing:
            raise ValueError(
                f"--churn: no change rate for role(s) {', '.join(missing)} of stack {self.settings.stack} "
                f"(roles: {', '.join(self.settings.roles)})"
            )
        for placement in self.where.values():  # refuse an unpriced region before simulating anything
            for price_class in (*placement.price_classes, *filter(None, [placement.transfer_class])):
                self.prices.get(price_class)
        self.chains = {role: Chain(role, self.growth) for role in self.where}

    def take(self, at: datetime, migration_id: int, accounting: bool) -> SnapshotSet:
        """One set: the roles one after another in ROLE_ORDER, each complete before the next is requested."""
        roles: dict[str, tuple[datetime, datetime]] = {}
        step = at + timedelta(seconds=30)
        for role in sorted(self.where, key=role_sort_key):
            roles[role] = (step, step + STEP_TIME)
            stored = self.chains[role].add(at)
            transfer = self.where[role].transfer_class
            if accounting and transfer:
                self.transferred[transfer] = self.transferred.get(transfer, 0.0) + stored
            step += STEP_TIME + timedelta(seconds=1)
        snapshot_set = SnapshotSet(f"{at.strftime('%Y%m%dT%H%M%SZ')}-snap", migration_id, at, roles)
        self.sets.append(snapshot_set)
        self.taken += 1
        return snapshot_set

    def prune(self, now: datetime) -> None:
        """The pruner: sets within the recent window kept; older ones kept only as the historical tier
        (select_kept at the cadence) when `historical`, else deleted; the newest set of the current id always kept.
        Sets are kept or deleted whole."""
        recent = self.settings.retention.recent
        if self.historical:
            items = [retention.Keepable(s.set_id, s.taken_at, s.migration_id) for s in self.sets]
            kept = retention.select_kept(items, now, recent, self.cadence)
        else:
            newest = max(self.sets, key=lambda s: s.taken_at, default=None)
            kept = {s.set_id for s in self.sets if now - s.taken_at <= recent or s is newest}
        for gone in [s for s in self.sets if s.set_id not in kept]:
            for role in gone.roles:
                self.chains[role].remove(gone.taken_at)
            self.sets.remove(gone)
            self.pruned += 1

    def account(self) -> None:
        """One day of storage, per price class (every chain of a role: primary and copy store the same bytes)."""
        for role, chain in self.chains.items():
            for price_class in self.where[role].price_classes:
                self.gib_days[price_class] = self.gib_days.get(price_class, 0.0) + chain.stored / GIB

    def monthly_cost(self, days: int) -> dict[str, float]:
        """USD per price class over the accounted `days` (a month's worth), plus the DR copies' transfer."""
        cost = {c: g / days * self.prices.get(c) for c, g in self.gib_days.items()}
        cost.update({t: copied / GIB * self.prices.get(t) for t, copied in self.transferred.items()})
        return cost

    def points(self, now: datetime) -> list[SetPoint]:
        """The sets as the history audit sees them: historical once older than the recent window when the snapshot
        sets keep a historical tier; otherwise all recent (they count for freshness, the gap rule is the dump
        sets')."""
        r = self.settings.retention
        windows = dict(zip(WINDOW_KEYS, (r.participant_pruning, r.sequencer_pruning), strict=True))
        out = []
        for s in self.sets:
            tier = HISTORICAL if self.historical and now - s.taken_at > r.recent else RECENT
            out.append(SetPoint(tier, s.migration_id, s.set_id, max(c for _, c in s.roles.values()), s.roles, windows))
        return out

    def stored_bytes(self) -> dict[str, float]:
        """Per role, the bytes one copy of its chain stores now."""
        return {role: chain.stored for role, chain in self.chains.items()}
