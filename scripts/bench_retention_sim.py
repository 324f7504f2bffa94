#!/usr/bin/env python3
"""Benchmark the retention simulator's memoized listing against the jobs' listing on every run, in one run.

    python scripts/bench_retention_sim.py [--stack prod] [--years 2] [--dump-rate 5s/GB]

Both replays must report the same (benchmarks/retention_sim.py); prints CPU seconds of each and their ratio. The
default dump rate is faster than the measured one so that today's 4-hourly dump sets fit their deadline for the
whole run (at 16.8 s/GB prod's runs fail from month 8 on, and a replay without sets is quick either way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import retention_sim as bench  # noqa: E402
from engines import retention_sim, retention_stacks  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_retention_sim.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="prod")
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--dump-rate", default="5s/GB")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = retention_sim.Options(
        years=args.years,
        sizes=retention_sim.SizeModel(
            retention_sim.parse_sizes("participant=200GB,sequencer=300GB,apps=20GB,mediator=5GB"), 0.05
        ),
        dump_seconds_per_gb=retention_stacks.parse_dump_rate(args.dump_rate),
    )
    bench.run(retention_stacks.load(args.stack), options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
