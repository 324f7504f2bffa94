#!/usr/bin/env python3
"""Benchmark a Postgres backup set against the naive baseline and the floor, on real PostgreSQL.

Builds two throwaway clusters (apps ~0.3 GB, participant ~1 GB by default; `--small` for 30 MB / 100 MB) with
Splice-shaped fixture data, then, in the same run, times:

- floor:      `pg_dump -Fp > /dev/null` of each database, one after the other (a dump with no compression);
- naive:      `pg_dump -Fc -f FILE` of each database, one after the other (pg_dump's default gzip);
- backup-set: `python -m jobs backup-set --dest file://...` (process start, snapshots, dumps, zstd, sha256,
              step records, manifest, historical promotion included);
- restore baseline: `CREATE DATABASE` + `pg_restore -j2` of a `pg_dump -Fd` (its default compression) of each
              database, one after the other (the dumps are made once, before the runs);
- restore-set: `python -m jobs restore-set` of the newest set into new databases, default flags (process start,
              fetching, decompression, sha256 and the table-of-contents check included).
Each run measures the two restores in alternating order, so that drifting load favours neither.

Prints wall times (medians over --repeat runs), bytes written and the ratios the issues set targets for:
backup-set <= 1.3x the floor, >= 3x faster than naive, output no larger than naive's; restore-set <= 1.1x the
restore baseline.

With `--scale` (benchmarks/scale.py): memory and time per GB of `backup-set` on a 0.5 GB and a 4 GB
participant (`--scale-sizes`), and the four-role set against the two-role set.

Usage: python scripts/bench_backup.py [--small] [--repeat 3]   (as root the servers run as user postgres)
       python scripts/bench_backup.py --scale [--scale-sizes 0.5,4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.backup import bench  # noqa: E402
from benchmarks.scale import parse_sizes  # noqa: E402
from jobs.cli_types import from_parser  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="apps 30 MB, participant 100 MB (a quick run)")
    parser.add_argument("--apps-mb", type=float, default=None)
    parser.add_argument("--participant-mb", type=float, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; medians are printed")
    parser.add_argument("--no-restore", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="where clusters and outputs go (default: TMPDIR)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="memory and time per GB on participants of --scale-sizes, and four roles vs two",
    )
    parser.add_argument(
        "--scale-sizes",
        type=from_parser(parse_sizes),
        default=[0.5, 4.0],
        metavar="GB,GB",
        help="participant sizes in GB for --scale (default 0.5,4); apps is --apps-mb (default 100)",
    )
    opts = parser.parse_args()
    return bench(
        small=opts.small,
        apps_mb=opts.apps_mb,
        participant_mb=opts.participant_mb,
        repeat=opts.repeat,
        no_restore=opts.no_restore,
        workdir=opts.workdir,
        scale=opts.scale,
        scale_sizes=opts.scale_sizes,
    )


if __name__ == "__main__":
    sys.exit(main())
