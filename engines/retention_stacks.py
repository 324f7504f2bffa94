"""The retention simulator over named stacks, the run behind scripts/simulate_retention.py (its docstring is the
usage): each stack read and validated as scripts/plan.py does, simulated (retention_sim), reported, and judged
against the goal; with `table`, the README's Markdown table after the reports.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from engines import offline_plan, retention_sim
from rules.retention import format_duration, parse_duration

ROOT = Path(__file__).resolve().parent.parent


def parse_date(text: str) -> datetime:
    """An ISO date or time (--start, an outage's start); UTC unless it names a zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date such as 2027-09-01 or 2027-09-01T12:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_outage(text: str) -> retention_sim.Outage:
    """START:DURATION, a span in which every run fails (--outage)."""
    start, _, length = text.rpartition(":")
    try:
        return retention_sim.Outage(parse_date(start), parse_duration(length))
    except ValueError:
        raise ValueError(
            f"{text!r} is not START:DURATION such as 2027-05-01T00:00:2d (every run in that span fails)"
        ) from None


def load(stack: str):
    """The stack's settings, read and validated exactly as scripts/plan.py does."""
    from components.settings import load_settings

    project = offline_plan.load_project(ROOT)
    config = offline_plan.load_stack_file(project.stack_file(stack), project=project.name, stack=stack)
    return load_settings(config.raw_config(), stack=stack)


TABLE_HEAD = (
    "| stack | cadence | sets: recent + historical (minimum) | stored / minimum: historical, all | stored at the "
    "end (one copy) | per month: storage by class, replication | of it soft delete / old versions | CometBFT "
    "snapshots: historical (minimum; with the 2x margin), storage / minimum's, per month | total per month |"
    "\n|---|---|---|---|---|---|---:|---|---:|"
)


def table_row(result: retention_sim.Result) -> str:
    ratios = f"{result.ratio:.2f}x, {result.all_sets_ratio:.2f}x" if result.ratio is not None else "pruning off"
    stored = ", ".join(f"{cls} {retention_sim.gib(n)}" for cls, n in sorted(result.bytes_by_class.items()))
    by_class = ", ".join(f"{cls} {retention_sim.money(v)}" for cls, v in sorted(result.monthly_cost.items()))
    overhead = sum(result.monthly_overhead_cost.values())
    return (
        f"| {result.stack} | {format_duration(result.cadence)} | {result.recent} + {result.historical} "
        f"({result.minimum}) | {ratios} | {stored} | {by_class}, replication "
        f"{retention_sim.money(result.monthly_replication_cost)} | {retention_sim.money(overhead)} | "
        f"{result.snapshot_historical} ({sum(result.minimum_snapshots.values())}; "
        f"{sum(result.minimum_snapshots_margin.values())}), {result.snapshot_bytes_ratio:.2f}x, "
        f"{retention_sim.money(result.snapshot_monthly_cost)} | "
        f"{retention_sim.money(result.total_monthly_cost)} |"
    )


def simulate_stacks(
    *,
    stacks: list[str],
    years: float,
    start: datetime,
    size: str,
    growth: str,
    cometbft_blocks: str,
    migration_changes: list[datetime],
    outages: list[retention_sim.Outage],
    timing: str,
    goal: float,
    table: bool,
) -> int:
    """Print each stack's report (and the table); returns the exit code of scripts/simulate_retention.py.

    `size`, `growth` and `cometbft_blocks` are the command's texts (parsed here: a bad one is exit code 2).
    """
    try:
        sizes = retention_sim.SizeModel(retention_sim.parse_sizes(size), retention_sim.parse_growth(growth))
        cometbft_per_day = retention_sim.parse_daily(cometbft_blocks)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    ok = True
    rows = []
    for stack in stacks:
        try:
            settings = load(stack)
        except Exception as error:  # unreadable or invalid stack: the loader's own message
            print(f"stack {stack}: {error}", file=sys.stderr)
            return 2
        options = retention_sim.Options(
            years=years,
            start=start,
            sizes=sizes,
            migration_changes=sorted(migration_changes),
            outages=outages,
            timing=timing,
            cometbft_per_day=cometbft_per_day,
        )
        try:
            result = retention_sim.simulate(settings, options)
        except ValueError as error:
            print(f"stack {stack}: {error}", file=sys.stderr)
            return 2
        # CometBFT's goal is on what its snapshots cost (bytes); the counts are reported beside it.
        ok &= not result.audit_problems and not result.snapshot_problems
        ok &= (result.ratio is None or result.ratio <= goal) and result.snapshot_bytes_ratio <= goal
        print(retention_sim.report(result), flush=True)
        print()
        if table:
            rows.append(table_row(result))
    if table:
        print(TABLE_HEAD)
        print("\n".join(rows))
    return 0 if ok else 1
