"""Retention math: windows and cadences -> tiers, counts and keep decisions.

Pure functions, no Pulumi: the program uses them to size lifecycle rules and backups, and the job image ships
this same file so that the seal step and the snapshot pruner decide exactly as the program planned
(one piece of code for both; see docs/contracts.md).

The rule we implement (Splice docs, "Historical backups"): with pruning enabled, two consecutive historical
backups must be closer together than the smallest pruning `retentionPeriod` of the sequencer and the
participant; history is kept from genesis and across migration ids, never expiring by age.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rules.schedules import MAX_RUN_DEADLINE, MAX_START_WINDOW

# Splice recommends one CometBFT snapshot every 2 weeks kept forever; with pruning off we keep historical Postgres
# sets at the same spacing (the databases hold their own history; the sets are audit checkpoints).
DEFAULT_HISTORICAL_CADENCE = timedelta(days=14)
# CometBFT snapshots: Splice's 2 weeks, or half the block-retention window when that is shorter.
WINDOW_SAFETY_DIVISOR = 2
# Postgres cadence with pruning on (the safety argument, see postgres_historical_cadence):
# - SCHEDULE_MARGIN bounds "the schedule's largest gap + a run's latest finish" for every schedule settings.py
#   accepts: the largest gap is at most MAX_SCHEDULE_GAP (4 h, the SV docs' RPO) and a run finishes at most
#   start window + deadline = smallest gap - start window < largest gap after its time. One bound for every
#   valid schedule keeps the rule a function of the windows alone, so the seal step (which is given only the
#   windows) and the program compute the same cadence without the schedule being passed around.
#   A schedule sparser than 4 h (the dump sets when snapshot sets carry the 4-hourly duty) gets the same bound
#   from its own largest gap g: a run finishes before the next one starts, so gap + latest finish < 2 g
#   (schedule_margin).
SCHEDULE_MARGIN = 2 * timedelta(hours=4)
# The SV docs' bound on a backup schedule's gap (rules/schedules.py MAX_SCHEDULE_GAP): the margin of every schedule
# at most this sparse is SCHEDULE_MARGIN, so every stack planned before sparser dump schedules plans as before.
SV_SCHEDULE_GAP = timedelta(hours=4)
# - OUTAGE_BUDGET: how long backups may fail at the worst moment (just when a promotion is due) before the gap
#   rule breaks. Stale alerts fire a few hours after the first missed run (monitoring: largest gap + start window
#   + deadline + slack), so two days leave operators a working weekend day to repair, long after being paged.
OUTAGE_BUDGET = timedelta(days=2)
# Cadences are rounded down to whole hours: humans read them in alerts and lifecycle reviews.
CADENCE_GRANULARITY = timedelta(hours=1)

_SHORT = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_ISO = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_HELP = "a duration such as 30d, 12h, 90m, 2w or ISO 8601 P30D, PT12H, P1DT6H"


def parse_duration(text: str) -> timedelta:
    """Parse `30d`, `12h`, `90m`, `45s`, `2w` or ISO 8601 (`P30D`, `PT12H`, `P1DT6H`; no years or months,
    whose length is ambiguous). Raises ValueError naming the value and the accepted forms."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    short = _SHORT.match(text)
    if short:
        return timedelta(seconds=int(short.group(1)) * _UNIT_SECONDS[short.group(2)])
    iso = _ISO.match(text.strip().upper())
    if iso and text.strip().upper() not in ("P", "PT") and not text.strip().upper().endswith("T"):
        parts = {k: int(v) for k, v in iso.groupdict().items() if v is not None}
        return timedelta(**parts)
    raise ValueError(f"{text!r} is not {DURATION_HELP}")


def format_duration(value: timedelta) -> str:
    """Shortest exact form among d/h/m/s: 30d, 36h, 90m, 45s."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def _round_down(value: timedelta, granularity: timedelta = CADENCE_GRANULARITY) -> timedelta:
    steps = math.floor(value / granularity)
    return max(steps, 1) * granularity


def schedule_margin(schedule_gap: timedelta = SV_SCHEDULE_GAP) -> timedelta:
    """The bound on "largest gap + a run's latest finish" of a schedule whose largest gap is `schedule_gap`:
    SCHEDULE_MARGIN for every schedule at most 4 h apart. A sparser one (dump sets beside snapshot sets) finishes a
    run at most start window + deadline after its time, and both are bounded (rules/schedules.py MAX_START_WINDOW,
    MAX_RUN_DEADLINE), as well as by the gap itself: the smaller of the two bounds. For weekly dumps that is
    7 d + 24 h 15 m rather than 14 d: with 30-day pruning the cadence is 19 d 23 h instead of 14 d, a third fewer
    historical sets kept forever for the same guarantee (docs/cost.md)."""
    if schedule_gap <= SV_SCHEDULE_GAP:
        return SCHEDULE_MARGIN
    latest_finish = MAX_START_WINDOW + MAX_RUN_DEADLINE["postgres"]
    return schedule_gap + min(schedule_gap, latest_finish)


def outage_budget(window: timedelta, margin: timedelta = SCHEDULE_MARGIN) -> timedelta:
    """How long backups may fail before a `window` is breached: OUTAGE_BUDGET, or, for windows too short to spare
    it, half of what the schedule (its `margin`) leaves (the cadence gets the other half)."""
    return max(timedelta(0), min(OUTAGE_BUDGET, (window - margin) / 2))


def postgres_historical_cadence(
    participant_pruning: timedelta | None,
    sequencer_pruning: timedelta | None,
    schedule_gap: timedelta = SV_SCHEDULE_GAP,
) -> timedelta:
    """How far apart historical Postgres sets are kept: with pruning on, the smallest window minus the schedule
    margin and the outage budget, rounded down to the hour (at least 1 h); with pruning off, the 2-week default.

    Safety (the history audit's rule, rules/history.py: consecutive historical sets A, B with B's latest snapshot
    acquired minus A's earliest snapshot requested strictly below the window W). The seal promotes the first
    successful set sealed at least `cadence` after A was taken (promotion_due, measured from A's `taken_at`, its
    earliest snapshot request). Let s be the first scheduled run at or after A.taken + cadence: s <= A.taken +
    cadence + largest gap, and its set is acquired by s + latest finish. So without failures B - A <= cadence +
    largest gap + latest finish <= cadence + SCHEDULE_MARGIN = W - budget. If that run fails (or its promotion
    does), A stays the newest historical set and the next successful set is promoted instead (the fallback is
    the same rule): runs may fail for up to the budget before the gap reaches W. The audit and the open-gap
    alert watch the same bound from the store.

    `schedule_gap` is the largest gap of the schedule whose sets are promoted (the dump sets'): the margin is
    schedule_margin(schedule_gap), SCHEDULE_MARGIN for any schedule at most 4 h apart, so only a sparser dump
    schedule (allowed beside snapshot sets) changes the cadence; its seal is given the gap (`--schedule-gap`)."""
    windows = [w for w in (participant_pruning, sequencer_pruning) if w is not None]
    if not windows:
        return DEFAULT_HISTORICAL_CADENCE
    window = min(windows)
    margin = schedule_margin(schedule_gap)
    return _round_down(window - margin - outage_budget(window, margin))


def cometbft_retention_window(retain_blocks: int, blocks_per_hour: float) -> timedelta:
    """How much wall-clock time CometBFT keeps before pruning blocks (`retainBlocks` / block rate)."""
    if retain_blocks <= 0 or blocks_per_hour <= 0:
        raise ValueError("retain_blocks and blocks_per_hour must be positive")
    return timedelta(hours=retain_blocks / blocks_per_hour)


def cometbft_historical_cadence(retain_blocks: int, blocks_per_hour: float) -> timedelta:
    """Spacing of kept CometBFT snapshots: Splice's 2 weeks, or half the block-retention window if shorter."""
    window = cometbft_retention_window(retain_blocks, blocks_per_hour)
    return min(DEFAULT_HISTORICAL_CADENCE, _round_down(window / WINDOW_SAFETY_DIVISOR))


def worst_case_history_gap(cadence: timedelta, schedule_max_gap: timedelta, run_time: timedelta) -> timedelta:
    """The largest distance between two consecutive historical backups when every run succeeds: promotion
    waits for the cadence, then for the next run, which may start late and take its whole deadline
    (`run_time` = start window + run deadline)."""
    return cadence + schedule_max_gap + run_time


def promotion_due(last_historical_at: datetime | None, now: datetime, cadence: timedelta) -> bool:
    """True when a just-sealed set must also be kept as historical: none exists yet in this migration id
    (genesis, or the first set after a synchronizer upgrade), or the newest one is at least `cadence` old.

    `last_historical_at` is when the newest historical set was taken (its earliest snapshot request: the start of
    the gap the audit measures), `now` when the new set was sealed; see postgres_historical_cadence."""
    if last_historical_at is None:
        return True
    return now - last_historical_at >= cadence


@dataclass(frozen=True)
class Keepable:
    """One backup (e.g. a VolumeSnapshot) as the pruner sees it."""

    key: Hashable
    taken_at: datetime
    migration_id: int


def select_kept(items: Iterable[Keepable], now: datetime, keep_recent: timedelta, cadence: timedelta) -> set:
    """Keys of the backups to keep: everything taken within `keep_recent` of `now`, and, older than that,
    per migration id, the first one plus every one whose removal would leave a gap longer than `cadence`
    between the kept ones before and after it.

    Properties (tested): the newest backup of each migration id and everything recent are kept; within a
    migration id, consecutive kept backups are never further apart than `cadence` unless no backup exists
    in between; the decision for a backup depends only on it and its neighbours, so re-running later never
    removes one that an earlier run kept (older backups are never added after the fact).
    """
    by_migration: dict[int, list[Keepable]] = {}
    for item in items:
        by_migration.setdefault(item.migration_id, []).append(item)

    kept: set = set()
    for series in by_migration.values():
        series.sort(key=lambda i: (i.taken_at, str(i.key)))
        last_kept: Keepable | None = None
        for index, item in enumerate(series):
            following = series[index + 1] if index + 1 < len(series) else None
            recent = now - item.taken_at <= keep_recent
            needed_for_gap = last_kept is None or following is None or following.taken_at - last_kept.taken_at > cadence
            if recent or needed_for_gap:
                kept.add(item.key)
                last_kept = item
    return kept


@dataclass(frozen=True)
class LifecycleRule:
    """A cloud-neutral bucket lifecycle rule: `action` on objects under `prefix` older than `age_days`."""

    action: str  # "Delete" | "SetStorageClass" | "AbortIncompleteMultipartUpload"
    prefix: str
    age_days: int
    storage_class: str | None = None


RECENT_TIER = "recent/"
HISTORICAL_TIER = "historical/"


def whole_days(value: timedelta) -> int:
    """Lifecycle ages are whole days; round up so an object is never deleted before its window ends."""
    return math.ceil(value / timedelta(days=1))


def bucket_lifecycle(prefix: str, recent: timedelta, historical_storage_class: str | None) -> list[LifecycleRule]:
    """The only deletions the bucket ever performs: recent sets after the recent window. Historical sets have
    no Delete rule at all (they are kept from genesis, per migration id); they may move to a colder class."""
    rules = [
        LifecycleRule("Delete", prefix + RECENT_TIER, whole_days(recent)),
        # An upload cut off mid-way leaves parts that are invisible but billed: drop them after a day.
        LifecycleRule("AbortIncompleteMultipartUpload", prefix, 1),
    ]
    if historical_storage_class:
        # Coldline's 90-day minimum storage duration is no cost for objects that are never deleted.
        rules.append(LifecycleRule("SetStorageClass", prefix + HISTORICAL_TIER, 30, historical_storage_class))
    return rules
