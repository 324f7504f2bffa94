"""The retention simulator over named stacks, the run behind scripts/simulate_retention.py (its docstring is the
usage): each stack read and validated as scripts/plan.py does, simulated (retention_sim), reported, and judged
against the goal; with `table`, the README's Markdown table after the reports.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from engines import offline_plan, retention_sim, snapshot_sim, storage_prices
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
    project = offline_plan.load_project(ROOT)
    return load_file(project.stack_file(stack), stack, project)


def load_file(path: Path, stack: str | None = None, project=None):
    """A stack file's settings (`--config-file`, as scripts/plan.py takes it: the stack is named after the file)."""
    from components.settings import load_settings

    project = project or offline_plan.load_project(ROOT)
    stack = stack or stack_name(path)
    config = offline_plan.load_stack_file(path, project=project.name, stack=stack)
    return load_settings(config.raw_config(), stack=stack)


def stack_name(path: Path) -> str:
    """Pulumi.<stack>.yaml -> <stack> (engines/plan_stacks.py names a --config-file's stack the same way)."""
    name = path.name
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return name.removeprefix("Pulumi.") or "stack"


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:s\s*/\s*GB)?\s*$", re.IGNORECASE)


def parse_dump_rate(text: str) -> float:
    """`16.8s/GB` (or `16.8`) -> seconds per GB of a role's dump."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--dump-rate: {text!r} is not SECONDS s/GB (e.g. 16.8s/GB, the rate docs/jobs.md measured)")
    return float(match.group(1))


TABLE_HEAD = (
    "| stack | dump sets: schedule, runs failing from | cadence | sets: recent + historical (minimum) | stored / "
    "minimum: historical, all | stored at the end (one copy) | per month: storage by class, replication | of it soft "
    "delete / old versions | CometBFT snapshots: historical (minimum; with the 2x margin), storage / minimum's, per "
    "month | Postgres snapshot sets per month | total per month |"
    "\n|---|---|---|---|---|---|---|---:|---|---:|---:|"
)


def table_row(result: retention_sim.Result) -> str:
    ratios = f"{result.ratio:.2f}x, {result.all_sets_ratio:.2f}x" if result.ratio is not None else "pruning off"
    stored = ", ".join(f"{cls} {retention_sim.gib(n)}" for cls, n in sorted(result.bytes_by_class.items()))
    by_class = ", ".join(f"{cls} {retention_sim.money(v)}" for cls, v in sorted(result.monthly_cost.items()))
    overhead = sum(result.monthly_overhead_cost.values())
    failing = result.failed_runs[0].at.date().isoformat() if result.failed_runs else "never"
    snapshots = retention_sim.money(result.postgres_snapshot_monthly_cost) if result.postgres_snapshots else "none"
    return (
        f"| {result.stack} | `{result.dump_schedule}`, {failing} | {format_duration(result.cadence)} | "
        f"{result.recent} + {result.historical} ({result.minimum}) | {ratios} | {stored} | {by_class}, replication "
        f"{retention_sim.money(result.monthly_replication_cost)} | {retention_sim.money(overhead)} | "
        f"{result.snapshot_historical} ({sum(result.minimum_snapshots.values())}; "
        f"{sum(result.minimum_snapshots_margin.values())}), {result.snapshot_bytes_ratio:.2f}x, "
        f"{retention_sim.money(result.snapshot_monthly_cost)} | {snapshots} | "
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
    config_files: list[Path] = (),
    churn: str = snapshot_sim.DEFAULT_CHURN,
    dump_rate: str = str(retention_sim.DEFAULT_DUMP_SECONDS_PER_GB),
    prices: list[str] = (),
    as_json: bool = False,
    cost_goal: float | None = None,
) -> int:
    """Print each stack's report (and the table, or with `as_json` one JSON object per stack); returns the exit code
    of scripts/simulate_retention.py.

    `size`, `growth`, `cometbft_blocks`, `churn`, `dump_rate` and `prices` are the command's texts (parsed here: a
    bad one is exit code 2).
    """
    try:
        sizes = retention_sim.SizeModel(retention_sim.parse_sizes(size), retention_sim.parse_growth(growth))
        cometbft_per_day = retention_sim.parse_daily(cometbft_blocks)
        churn_rates = snapshot_sim.parse_churn(churn)
        seconds_per_gb = parse_dump_rate(dump_rate)
        price_book = storage_prices.PriceBook(dict(storage_prices.parse_price(p) for p in prices))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    ok = True
    rows, documents = [], []
    sources = [(stack, None) for stack in stacks] + [(stack_name(path), path) for path in config_files]
    for stack, path in sources:
        try:
            settings = load(stack) if path is None else load_file(path)
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
            dump_seconds_per_gb=seconds_per_gb,
            churn=churn_rates,
            prices=price_book,
        )
        try:
            result = retention_sim.simulate(settings, options)
        except ValueError as error:  # a missing size, change rate or price: the message says which
            print(f"stack {stack}: {error}", file=sys.stderr)
            return 2
        # CometBFT's goal is on what its snapshots cost (bytes); the counts are reported beside it.
        ok &= result.gapless and not result.failed_runs
        # Against what a rule deciding online can reach (with 4-hourly dumps that is the hindsight minimum, nearly).
        ok &= (result.schedule_ratio is None or result.schedule_ratio <= goal) and result.snapshot_bytes_ratio <= goal
        if cost_goal is not None:
            ok &= result.total_monthly_cost <= cost_goal
        if as_json:
            documents.append(summary(result))
        else:
            print(retention_sim.report(result), flush=True)
            print()
        if table:
            rows.append(table_row(result))
    if as_json:
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    elif table:
        print(TABLE_HEAD)
        print("\n".join(rows))
    return 0 if ok else 1


def summary(result: retention_sim.Result) -> dict:
    """The `--json` document: the month's bill, whether the history stayed gap-less, and what decided both."""
    first = result.failed_runs[0] if result.failed_runs else None
    pg = result.postgres_snapshots
    by_class = {f"bucket {cls}": usd for cls, usd in result.monthly_cost.items()}
    by_class["bucket replication"] = result.monthly_replication_cost
    by_class["cometbft snapshots"] = result.snapshot_monthly_cost
    by_class.update({f"postgres {cls}": usd for cls, usd in (pg.monthly_cost if pg else {}).items()})
    return {
        "stack": result.stack,
        "start": result.start.date().isoformat(),
        "end": result.end.date().isoformat(),
        "monthly_cost_usd": round(result.total_monthly_cost, 2),
        "gapless": result.gapless,
        "monthly_cost_by_class_usd": {k: round(v, 2) for k, v in sorted(by_class.items())},
        "audit_days": result.audit_days,
        "audit_failed_days": len({at for at, _ in result.audit_problems}),
        "first_audit_problem": (
            {"day": result.audit_problems[0][0].date().isoformat(), "problem": result.audit_problems[0][1]}
            if result.audit_problems
            else None
        ),
        "dump_schedule": result.dump_schedule,
        "dump_deadline_seconds": int(result.dump_deadline.total_seconds()),
        "failed_runs": len(result.failed_runs),
        "first_failed_run": None
        if first is None
        else {
            "at": first.at.isoformat(),
            "size_gb": round(first.size / 1e9, 1),
            "needed_seconds": int(first.needed.total_seconds()),
        },
        "historical_cadence": format_duration(result.cadence),
        "historical_dump_sets": sum(n for (tier, _), n in result.sets_by_tier.items() if tier == "historical"),
        "dump_history_gap_seconds": None
        if result.dump_history_gap is None
        else int(result.dump_history_gap.total_seconds()),
        "fewest_dump_sets_per_interval": result.fewest_dump_sets_per_interval,
        "postgres_snapshots": None
        if pg is None
        else {
            "schedule": pg.schedule,
            "historical": pg.historical,
            "taken": pg.taken,
            "kept": pg.kept,
            "stored_gib_per_copy": {role: round(b / 2**30, 1) for role, b in pg.stored.items()},
        },
    }
