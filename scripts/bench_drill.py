#!/usr/bin/env python3
"""What the restore drill's verification data costs at backup time, and what the drill takes (RTO), on real
PostgreSQL.

Builds two throwaway clusters (apps and participant, Splice-shaped fixture data; `--small` for 30 MB / 100 MB),
then, in the same run:

- backup with verification data (the default: row counts and sampled checksums read on the snapshot connection
  while the parts stream) and without it (`DumpSettings.verify_sample_rows = 0`), `--repeat` times each, in
  alternating order so that drifting load favours neither; the same in-process `backup_set` both ways;
- `python -m jobs drill-restore` of the last set, as the drill pod runs it (its own scratch server), and
  `python -m jobs restore-set` of the same set into a test cluster (restore without the verification), the two
  alternating as well.

Prints medians and the ratios: backup with / without verification data (target: close to 1.0), drill /
restore-set (what the scratch server's start and the verification add).

Usage: python scripts/bench_drill.py [--small] [--repeat 3]   (as root the servers run as user postgres)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.drill import bench  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="apps 30 MB, participant 100 MB (a quick run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are printed")
    args = parser.parse_args()
    return bench(small=args.small, repeat=args.repeat)


if __name__ == "__main__":
    sys.exit(main())
