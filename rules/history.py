"""The gap-less history rule, checked from complete sets alone (pure: no I/O; `jobs/history_cli.py` reads the store).

What the audit proves, per migration id and role, from the first set ever taken (genesis) to now:

- **Gaps.** A pruned role (participant, sequencer) deletes data older than its pruning window. A historical set
  taken at B holds the data since B - window, so consecutive historical sets A, B leave nothing out only if
  B - A is strictly smaller than the window. A set's time for a role is measured conservatively: the earliest
  `snapshot_requested_at` of the role's databases in A, the latest `snapshot_acquired_at` in B. The gap still
  open after the newest historical set of the current (highest) migration id is measured against now: once it
  reaches the window, the next promotion can no longer close it. Apps and mediator are not pruned: their largest
  gap is reported, not judged.
- **Windows.** Each gap is judged against the smaller of the windows its two sets recorded (the seal records the
  windows it was given; a window shortened between two sets binds the gap between them). Flags override the
  recorded windows for every gap; a set sealed before windows were recorded (format v1) needs the flags.
- **Nothing deleted.** Every manifest records, per migration id, the first historical set ever seen (carried
  forward from earlier manifests, so genesis is never forgotten), the last one and how many there were when it
  was sealed. Historical sets are never deleted, so each record must still hold in the store: its first set
  present, and at least `count` historical sets up to its last. Every migration id that has or had a set must
  still have historical sets: history never expires across synchronizer upgrades.
- **Freshness.** The newest complete set (any tier) is younger than the schedule interval plus slack.

Under logical synchronizer upgrades (sets that record a `serial_id`, manifest v3) the sets are filed per serial id
like migration ids, and the sequencer and mediator series still are per serial (their databases are). The
participant and the apps are preserved across the upgrade: their series is one, from the first serial the node ran
under LSU (`lsu_from`, which every LSU manifest carries forward; with the sets that id had before the node switched
to LSU) through every later serial, and its gaps are judged across each upgrade (docs/synchronizer-upgrade.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from rules.manifest import APPS, HISTORICAL, PARTICIPANT, WINDOW_KEYS, format_time, parse_time, role_sort_key
from rules.retention import format_duration, parse_duration

SEQUENCER = "sequencer"
# Role -> the manifest's windows key of the pruning window that bounds its history.
PRUNED_ROLES = {PARTICIPANT: WINDOW_KEYS[0], SEQUENCER: WINDOW_KEYS[1]}
# The roles whose databases a logical synchronizer upgrade keeps: one series across serial ids.
CONTINUING_ROLES = (APPS, PARTICIPANT)


class _Unknown:
    """A window no manifest recorded and no flag gave."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
Window = timedelta | None | _Unknown  # None: pruning off (no bound)


@dataclass(frozen=True)
class Ref:
    set_id: str
    created_at: datetime

    def as_json(self) -> dict[str, str]:
        return {"set_id": self.set_id, "created_at": format_time(self.created_at)}


@dataclass(frozen=True)
class Recorded:
    """What one manifest says about a migration id's historical sets when it was sealed."""

    first: Ref
    last: Ref
    count: int


@dataclass(frozen=True)
class SetPoint:
    """One complete set as the audit sees it."""

    tier: str
    migration_id: int
    set_id: str
    created_at: datetime
    # role -> (earliest snapshot requested, latest snapshot acquired) over the role's databases
    roles: dict[str, tuple[datetime, datetime]]
    windows: dict[str, timedelta | None] | None  # None: the manifest records no windows (format v1)
    history: dict[int, Recorded] = field(default_factory=dict)
    serial_id: int | None = None  # taken under logical synchronizer upgrades (v3), filed under this serial
    lsu_from: int | None = None  # v3: the first serial the node's sets were taken under LSU

    @property
    def ref(self) -> Ref:
        return Ref(self.set_id, self.created_at)

    @property
    def taken_at(self) -> datetime:
        """When the set's oldest data was taken (what its age, the RPO, is measured from)."""
        return min(start for start, _ in self.roles.values())


def set_point(tier: str, manifest: dict[str, Any]) -> SetPoint:
    """Read a manifest that `manifest_errors` accepted."""
    roles: dict[str, tuple[datetime, datetime]] = {}
    for db in manifest["databases"]:
        requested, acquired = parse_time(db["snapshot_requested_at"]), parse_time(db["snapshot_acquired_at"])
        if db["role"] in roles:
            start, end = roles[db["role"]]
            requested, acquired = min(start, requested), max(end, acquired)
        roles[db["role"]] = (requested, acquired)
    recorded = manifest.get("windows")
    windows = None
    if recorded is not None:
        windows = {key: parse_duration(recorded[key]) if recorded.get(key) else None for key in WINDOW_KEYS}
    history = {
        int(mid): Recorded(_ref(entry["first"]), _ref(entry["last"]), entry["count"])
        for mid, entry in (manifest.get("history") or {}).items()
    }
    return SetPoint(
        tier,
        int(manifest["migration_id"]),
        manifest["set_id"],
        parse_time(manifest["created_at"]),
        roles,
        windows,
        history,
        manifest.get("serial_id"),
        manifest.get("lsu_from"),
    )


def _ref(entry: dict[str, str]) -> Ref:
    return Ref(entry["set_id"], parse_time(entry["created_at"]))


# ---------------------------------------------------------------------------------- what the seal records


def history_record(known: list[SetPoint], exclude: str | None = None) -> dict[str, Any]:
    """The `history` a new manifest records, from the complete sets in the store (`exclude`: the set being sealed):
    per migration id, the first historical set ever seen (the earliest of those present and of those any manifest
    recorded), and the last one and the count present now. Ids that manifests recorded but that have no set left
    keep their record, so that their loss stays visible after the sets that saw it expire."""
    present: dict[int, list[Ref]] = {}
    for point in known:
        if point.tier == HISTORICAL and point.set_id != exclude:
            present.setdefault(point.migration_id, []).append(point.ref)
    recorded: dict[int, list[Recorded]] = {}
    for point in known:
        for mid, entry in point.history.items():
            recorded.setdefault(mid, []).append(entry)
    out: dict[str, Any] = {}
    for mid in sorted(set(present) | set(recorded)):
        refs = sorted(present.get(mid, []), key=_ref_key)
        firsts = [r.first for r in recorded.get(mid, [])] + refs[:1]
        first = min(firsts, key=_ref_key)
        if refs:
            entry = Recorded(first, refs[-1], len(refs))
        else:
            kept = max(recorded[mid], key=lambda r: r.count)
            entry = Recorded(first, kept.last, kept.count)
        out[str(mid)] = {"first": entry.first.as_json(), "last": entry.last.as_json(), "count": entry.count}
    return out


def _ref_key(ref: Ref) -> tuple[datetime, str]:
    return (ref.created_at, ref.set_id)


# ------------------------------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class Gap:
    seconds: float
    from_set: str
    to_set: str | None  # None: the open gap, up to now
    window: Window

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "human": human(timedelta(seconds=self.seconds)),
            "from": self.from_set,
            "to": self.to_set,
            "window": window_text(self.window),
        }


@dataclass
class Series:
    migration_id: int
    role: str
    pruned: bool
    first: Ref | None = None
    last: Ref | None = None
    count: int = 0
    largest_gap: Gap | None = None
    open_gap: Gap | None = None
    verdict: str = "ok"  # ok | gap | unknown-window | no-history
    through: int | None = None  # a participant (or apps) series under LSU: it runs from migration_id to this serial

    @property
    def id_text(self) -> str:
        return str(self.migration_id) if self.through is None else f"{self.migration_id}..{self.through}"

    def as_json(self) -> dict[str, Any]:
        through = {} if self.through is None else {"through_serial_id": self.through}
        return {
            "migration_id": self.migration_id,
            "role": self.role,
            "pruned": self.pruned,
            "first": self.first.as_json() if self.first else None,
            "last": self.last.as_json() if self.last else None,
            "count": self.count,
            "largest_gap": self.largest_gap.as_json() if self.largest_gap else None,
            "open_gap": self.open_gap.as_json() if self.open_gap else None,
            "verdict": self.verdict,
            **through,
        }


@dataclass
class Report:
    now: datetime
    max_age: timedelta
    series: list[Series] = field(default_factory=list)
    newest: SetPoint | None = None
    genesis: Ref | None = None  # the first historical set ever, as present or as recorded
    genesis_present: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def newest_age(self) -> timedelta | None:
        return None if self.newest is None else self.now - self.newest.taken_at

    def as_json(self) -> dict[str, Any]:
        newest = None
        if self.newest is not None:
            newest = {
                "set_id": self.newest.set_id,
                "migration_id": self.newest.migration_id,
                "taken_at": format_time(self.newest.taken_at),
                "age_seconds": self.newest_age.total_seconds(),
                "max_age": format_duration(self.max_age),
                "fresh": self.newest_age < self.max_age,
            }
        genesis = None if self.genesis is None else {**self.genesis.as_json(), "present": self.genesis_present}
        return {
            "ok": self.ok,
            "now": format_time(self.now),
            "genesis": genesis,
            "series": [s.as_json() for s in self.series],
            "newest": newest,
            "problems": self.problems,
        }


def audit(
    points: list[SetPoint], now: datetime, max_age: timedelta, overrides: dict[str, timedelta | None] | None = None
) -> Report:
    """Judge a store's complete sets. `overrides`: role -> window (None: pruning off) replacing every recorded
    window of that role."""
    overrides = overrides or {}
    report = Report(now=now, max_age=max_age)
    if not points:
        report.problems.append("the store holds no complete set")
        return report
    report.newest = max(points, key=lambda p: (p.taken_at, p.set_id))
    if report.newest_age >= max_age:
        report.problems.append(
            f"the newest complete set {report.newest.set_id} ({_filed(report.newest)}) was taken "
            f"{human(report.newest_age)} ago, not less than the allowed {human(max_age)}"
        )
    current = max(p.migration_id for p in points)
    # (id, role) -> sets. Under LSU the continuing roles join one series from the first LSU serial on.
    base = lsu_from(points)
    groups: dict[int, dict[str, list[SetPoint]]] = {}
    for point in points:
        for role in point.roles:
            continuing = base is not None and role in CONTINUING_ROLES and point.migration_id >= base
            key = base if continuing else point.migration_id
            groups.setdefault(key, {}).setdefault(role, []).append(point)
    recorded_ids = {mid for p in points for mid in p.history}
    for mid in sorted(set(groups) | recorded_ids):
        roles = groups.get(mid, {})
        if not roles:  # only recorded by other manifests: the id's sets are all gone
            report.series.append(Series(mid, "*", False, verdict="no-history"))
            continue
        for role in sorted(roles, key=role_sort_key):
            sets = roles[role]
            through = max(p.migration_id for p in sets) if mid == base and role in CONTINUING_ROLES else None
            last_id = mid if through is None else through
            report.series.append(_series(mid, role, sets, now, overrides, last_id == current, report.problems, through))
    report.problems += _deletions(points)
    firsts = [p.ref for p in points if p.tier == HISTORICAL] + [r.first for p in points for r in p.history.values()]
    if firsts:
        report.genesis = min(firsts, key=_ref_key)
        report.genesis_present = any(p.tier == HISTORICAL and p.set_id == report.genesis.set_id for p in points)
    return report


def lsu_from(points: list[SetPoint]) -> int | None:
    """The first serial the node ran under logical synchronizer upgrades, as any v3 set records it (None: none)."""
    return min((p.lsu_from for p in points if p.lsu_from is not None), default=None)


def _filed(point: SetPoint) -> str:
    kind = "migration id" if point.serial_id is None else "serial id"
    return f"{kind} {point.migration_id}"


def _role_time(point: SetPoint, role: str) -> tuple[datetime, datetime]:
    return point.roles[role]


def _window(role: str, points: list[SetPoint], overrides: dict[str, timedelta | None]) -> Window:
    if role in overrides:
        return overrides[role]
    bounds = []
    for point in points:
        if point.windows is None:
            return UNKNOWN
        bounds.append(point.windows.get(PRUNED_ROLES[role]))
    bounds = [b for b in bounds if b is not None]
    return min(bounds) if bounds else None


def _series(
    mid: int,
    role: str,
    sets: list[SetPoint],
    now: datetime,
    overrides: dict[str, timedelta | None],
    current: bool,
    problems: list[str],
    through: int | None = None,
) -> Series:
    pruned = role in PRUNED_ROLES
    series = Series(mid, role, pruned, through=through)
    with_role = [p for p in sets if role in p.roles]
    kept = sorted((p for p in with_role if p.tier == HISTORICAL), key=lambda p: (_role_time(p, role)[0], p.set_id))
    label = f"migration id {mid}, {role}" if through is None else f"serial ids {series.id_text}, {role}"
    newest_any = max(with_role, key=lambda p: (_role_time(p, role)[0], p.set_id))
    if not kept:
        series.verdict = "no-history"
        earliest = min(with_role, key=lambda p: _role_time(p, role)[0])
        pending = now - _role_time(earliest, role)[0]
        window = _window(role, [newest_any], overrides) if pruned else None
        waiting = current and (window is None or (window is not UNKNOWN and pending < window))
        if not waiting:
            problems.append(
                f"{label}: no historical set, only {len(with_role)} recent set(s) that will expire "
                f"(the first set of a migration id is always promoted: did promotion fail?)"
            )
        else:
            series.verdict = "ok"
        return series
    series.first, series.last, series.count = kept[0].ref, kept[-1].ref, len(kept)
    unknown = []
    for a, b in pairwise(kept):
        window = _window(role, [a, b], overrides) if pruned else None
        gap = Gap((_role_time(b, role)[1] - _role_time(a, role)[0]).total_seconds(), a.set_id, b.set_id, window)
        if series.largest_gap is None or gap.seconds > series.largest_gap.seconds:
            series.largest_gap = gap
        if window is UNKNOWN:
            unknown.append(b.set_id if a.windows is not None else a.set_id)
        elif window is not None and gap.seconds >= window.total_seconds():
            series.verdict = "gap"
            problems.append(
                f"{label}: historical sets {a.set_id} and {b.set_id} are {human(_delta(gap))} apart, "
                f"not less than the pruning window {window_text(window)}: the data in between is lost"
            )
    if current:
        window = _window(role, [kept[-1], newest_any], overrides) if pruned else None
        last = kept[-1]
        series.open_gap = Gap((now - _role_time(last, role)[0]).total_seconds(), last.set_id, None, window)
        if window is UNKNOWN:
            unknown.append(last.set_id)
        elif window is not None and series.open_gap.seconds >= window.total_seconds():
            series.verdict = "gap"
            problems.append(
                f"{label}: the newest historical set {last.set_id} was taken "
                f"{human(_delta(series.open_gap))} ago, not less than the pruning window "
                f"{window_text(window)}: no later promotion can close this gap"
            )
    if unknown:
        if series.verdict == "ok":
            series.verdict = "unknown-window"
        problems.append(
            f"{label}: set(s) {', '.join(sorted(set(unknown)))} record no pruning window (sealed "
            f"before windows were recorded): pass --{role}-pruning to judge their gaps"
        )
    return series


def _deletions(points: list[SetPoint]) -> list[str]:
    """Records of historical sets that no longer hold: one problem per migration id and kind (the worst)."""
    present: dict[int, list[Ref]] = {}
    for point in points:
        if point.tier == HISTORICAL:
            present.setdefault(point.migration_id, []).append(point.ref)
    ids = {mid: {r.set_id for r in refs} for mid, refs in present.items()}
    gone_all: dict[int, tuple[SetPoint, Recorded]] = {}
    gone_first: dict[int, tuple[SetPoint, Recorded]] = {}
    missing: dict[int, tuple[int, SetPoint, Recorded]] = {}
    for point in sorted(points, key=lambda p: (p.created_at, p.set_id)):
        for mid, entry in point.history.items():
            if mid not in present:
                gone_all.setdefault(mid, (point, entry))
                continue
            if entry.first.set_id not in ids[mid]:
                gone_first.setdefault(mid, (point, entry))
            up_to = sum(1 for r in present[mid] if r.created_at <= entry.last.created_at)
            lost = entry.count - up_to
            if lost > 0 and lost > missing.get(mid, (0,))[0]:
                missing[mid] = (lost, point, entry)
    problems = []
    for mid, (point, entry) in sorted(gone_all.items()):
        problems.append(
            f"migration id {mid}: set {point.set_id} records {entry.count} historical set(s) of it "
            f"(first {entry.first.set_id} at {format_time(entry.first.created_at)}), none is left: "
            "its history was deleted"
        )
    for mid, (point, entry) in sorted(gone_first.items()):
        problems.append(
            f"migration id {mid}: its first historical set {entry.first.set_id} (sealed "
            f"{format_time(entry.first.created_at)}), recorded by set {point.set_id}, is gone: the "
            "history from its beginning is incomplete"
        )
    for mid, (lost, point, entry) in sorted(missing.items()):
        problems.append(
            f"migration id {mid}: set {point.set_id} records {entry.count} historical set(s) up to "
            f"{entry.last.set_id}, {lost} of them are gone"
        )
    return problems


# ------------------------------------------------------------------------------------------------ output


def _delta(gap: Gap) -> timedelta:
    return timedelta(seconds=gap.seconds)


def human(value: timedelta) -> str:
    """`14d 3h 2m 5s`: exact to the second (a gap one second too long must read differently)."""
    seconds = int(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return sign + " ".join(parts)


def window_text(window: Window) -> str | None:
    if window is UNKNOWN:
        return "unknown"
    return None if window is None else format_duration(window)


def _window_cell(series: Series) -> str:
    """The window that bounded the largest gap (else the open one); `-` for roles that are not pruned."""
    if not series.pruned:
        return "-"
    judged = series.largest_gap or series.open_gap
    return (window_text(judged.window) if judged else None) or "off"


def table(report: Report) -> str:
    """The human table: one row per migration id and role, then the freshness line and every problem."""
    head = (
        "migration",
        "role",
        "first historical set",
        "last historical set",
        "count",
        "largest gap",
        "window",
        "open gap",
        "verdict",
    )
    rows = [head]
    for s in report.series:
        gap = s.largest_gap
        rows.append(
            (
                s.id_text,
                s.role,
                f"{s.first.set_id} {format_time(s.first.created_at)[:19]}Z" if s.first else "-",
                f"{s.last.set_id} {format_time(s.last.created_at)[:19]}Z" if s.last else "-",
                str(s.count),
                human(_delta(gap)) if gap else "-",
                _window_cell(s),
                human(_delta(s.open_gap)) if s.open_gap else "-",
                s.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if report.genesis is not None:
        lines.append(
            f"genesis: {report.genesis.set_id}, sealed {format_time(report.genesis.created_at)[:19]}Z, "
            + ("present" if report.genesis_present else "GONE")
        )
    if report.newest is not None:
        fresh = "fresh" if report.newest_age < report.max_age else "STALE"
        lines.append(
            f"newest set: {report.newest.set_id} ({_filed(report.newest)}), taken "
            f"{human(report.newest_age)} ago, allowed {human(report.max_age)}: {fresh}"
        )
    lines += [f"PROBLEM: {p}" for p in report.problems]
    lines.append("history is gap-less" if report.ok else f"history audit FAILED: {len(report.problems)} problem(s)")
    return "\n".join(lines)


__all__ = ["UNKNOWN", "Report", "SetPoint", "audit", "history_record", "set_point", "table"]
