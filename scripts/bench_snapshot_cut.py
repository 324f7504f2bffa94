#!/usr/bin/env python3
"""Benchmark a snapshot set's cut against the database size, and the transaction it holds open beside a dump's.

Real PostgreSQL (throwaway clusters: apps --apps-mb, participants of --sizes GB, Splice-shaped fixture data) and
the fake Kubernetes API. Per participant size it prints the median cut of a snapshot set (apps then
participant, online backups around VolumeSnapshots: first request to last completion), the longest transaction
the backup held open on the participant's server (pg_stat_activity, sampled every 20 ms), and the same for
today's dump step of that database; then the cut ratio of the largest to the smallest size (target <= 1.2x).

Usage: python scripts/bench_snapshot_cut.py [--sizes 0.5,4] [--repeat 3] [--apps-mb 100] [--no-dump]
       (as root the servers run as user postgres)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import parse_sizes  # noqa: E402
from benchmarks.snapshot_cut import bench  # noqa: E402
from jobs.cli_types import from_parser  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=from_parser(parse_sizes), default=[0.5, 4.0], metavar="GB,GB",
                        help="participant sizes in GB (default 0.5,4)")  # fmt: skip
    parser.add_argument("--apps-mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="sets per size; the median cut is printed")
    parser.add_argument("--no-dump", action="store_true", help="skip the dump step beside")
    parser.add_argument("--workdir", type=Path, default=None, help="where clusters and stores go (default: TMPDIR)")
    opts = parser.parse_args()
    return bench(sizes=opts.sizes, apps_mb=opts.apps_mb, repeat=opts.repeat, workdir=opts.workdir,
                 dump=not opts.no_dump)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
