"""Stored data over time: sets and bytes per tier, the monthly storage bill, and the minimum the gap rule needs.

    python scripts/simulate_retention.py --stack prod --years 2 \\
        --size participant=200GB,sequencer=300GB,apps=20GB,mediator=5GB --growth 5%/month \\
        [--churn participant=15GB/day,sequencer=20GB/day,apps=2GB/day,mediator=1GB/day] [--dump-rate 16.8s/GB] \\
        [--migration-change 2027-09-01 ...] [--outage 2027-05-01T00:00:2d ...] [--timing jitter|worst|typical]
    python scripts/simulate_retention.py --config-file /tmp/Pulumi.prod-snap.yaml --json   (a stack file, as plan.py)
    python scripts/simulate_retention.py --table --stack dev --stack prod ...   (the README's Markdown table)

Replays the stack's schedules and retention rules with the code the program and the jobs run
(engines/retention_sim.py says which), the stack read and validated as scripts/plan.py does. Sizes are one set's
dump of each role at the start (also the database's size for the dump's time and the volume's for its snapshots).
A dump run takes the sum of its roles' sizes x --dump-rate (the CronJob runs the roles one after another) and fails,
leaving no set, past its activeDeadlineSeconds. Postgres snapshot sets (a stack with `sv-backups:snapshots`) store
each volume once plus the blocks changed between kept snapshots (--churn, growing with the sizes). Exit codes: 0
gap-less every simulated day, no failed run, stored historical sets within --goal x the minimum (pruned stacks),
CometBFT's history gap-less and its snapshot storage within --goal x the minimum's, and the month's bill within
--cost-goal if given; 1 otherwise; 2 bad arguments, stack or a missing price.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engines.retention_sim import DEFAULT_DUMP_SECONDS_PER_GB  # noqa: E402
from engines.retention_stacks import parse_date, parse_outage, simulate_stacks  # noqa: E402
from engines.snapshot_sim import DEFAULT_CHURN  # noqa: E402
from jobs.cli_types import from_parser  # noqa: E402

DEFAULT_SIZE = "participant=200GB,sequencer=300GB,apps=20GB,mediator=5GB"
DEFAULT_GROWTH = "5%/month"
# An assumption, not a measurement: give your node's (the growth of CometBFT's data directory per day).
DEFAULT_COMETBFT_BLOCKS = "1GB/day"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate_retention.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack", action="append", default=[], help="stack name (stacks/Pulumi.<NAME>.yaml); repeat with --table"
    )
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        type=Path,
        help="a stack file (Pulumi.<stack>.yaml layout, as scripts/plan.py takes it; repeatable)",
    )
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--start", type=from_parser(parse_date), default=datetime(2027, 1, 1, tzinfo=UTC))
    parser.add_argument("--size", default=DEFAULT_SIZE, help=f"ROLE=SIZE,... (default {DEFAULT_SIZE})")
    growth_default = DEFAULT_GROWTH.replace("%", "%%")  # argparse formats help with %
    parser.add_argument("--growth", default=DEFAULT_GROWTH, help=f"PERCENT%%/month or /year (default {growth_default})")
    parser.add_argument(
        "--cometbft-blocks",
        default=DEFAULT_COMETBFT_BLOCKS,
        help=f"bytes of blocks CometBFT writes per day (default {DEFAULT_COMETBFT_BLOCKS})",
    )
    parser.add_argument(
        "--migration-change",
        type=from_parser(parse_date),
        action="append",
        default=[],
        help="a synchronizer upgrade at this date: the migration id goes up by one (repeatable)",
    )
    parser.add_argument(
        "--outage",
        type=from_parser(parse_outage),
        action="append",
        default=[],
        help="START:DURATION during which every backup run fails (repeatable)",
    )
    parser.add_argument(
        "--churn",
        default=DEFAULT_CHURN,
        help=f"bytes each role's database changes a day, growing with --growth (default {DEFAULT_CHURN})",
    )
    parser.add_argument(
        "--dump-rate",
        default=f"{DEFAULT_DUMP_SECONDS_PER_GB}s/GB",
        help=f"seconds a dump step takes per GB (default {DEFAULT_DUMP_SECONDS_PER_GB}s/GB, docs/jobs.md on 2 cores)",
    )
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        help="CLASS=USD: a snapshot price engines/storage_prices.py lacks or to override (e.g. "
        "rds-snapshot:eu-central-1=0.095 per GB-month; transfer:FROM>TO per GB); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the report")
    parser.add_argument("--cost-goal", type=float, help="exit 1 when the month's bill is above this (USD)")
    parser.add_argument("--timing", choices=("jitter", "worst", "typical"), default="jitter")
    parser.add_argument("--goal", type=float, default=1.1, help="stored historical / minimum allowed (default 1.1)")
    parser.add_argument("--table", action="store_true", help="after the reports, a Markdown table, one row per stack")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.stack and not args.config_file:
        parser.error("one of the arguments --stack --config-file is required")
    return simulate_stacks(
        stacks=args.stack,
        years=args.years,
        start=args.start,
        size=args.size,
        growth=args.growth,
        cometbft_blocks=args.cometbft_blocks,
        migration_changes=args.migration_change,
        outages=args.outage,
        timing=args.timing,
        goal=args.goal,
        table=args.table,
        config_files=args.config_file,
        churn=args.churn,
        dump_rate=args.dump_rate,
        prices=args.price,
        as_json=args.json,
        cost_goal=args.cost_goal,
    )


if __name__ == "__main__":
    sys.exit(main())
