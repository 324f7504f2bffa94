#!/usr/bin/env python3
"""Benchmark the program's start-up and the offline plan of several SV nodes, against their floors, in one run.

    python scripts/bench_plan.py [--repeat 5] [--nodes 8] [--quick]

Every measurement is a fresh Python process (wall time from spawn to exit, peak RSS from wait4), repeated
`--repeat` times with the variants interleaved (their order rotates every round, so drifting load on a shared
machine favours none); medians and min-max spreads are printed, and the ratios of medians:

- start-up: the program (`__main__.py`: import + validate + declare) run under Pulumi's mock engine for the full
  `prod` stack (GCP) and `aws-prod` (AWS), against the floor: a bare `python -c "import pulumi, <the provider
  submodules the program uses>"`. The submodule list is derived, not written here: a planning process
  records which provider packages it loaded (sys.modules after the plan). The provider SDKs load submodules
  lazily (`import pulumi_gcp.storage` only registers a lazy stand-in module), so the floor touches each to load
  it, as the program must. Goal: <= 1.3x the floor.
  The same program with the collector left on during start-up (`__main__.py` pauses it) shows what that pause buys.
  `__main__.py` also freezes what it made, so the full collection Python runs at exit skips it (the bare floor
  spends a fifth to a third of its time there): the floor frozen the same way before it exits gives the
  like-for-like ratio.
- 8 nodes: one stack per SV node (the Pulumi norm: each node its own state and `pulumi up`), so N node stacks are
  generated from prod's stack file (node name `sv-<i>` wherever prod says `sv-1`, namespace `sv-<i>`), and one
  `scripts/plan.py` plans all N (as `make plan-all` plans the shipped stacks), against the same command for node 1
  alone: once all in its process (`--jobs 1`), once with the other nodes in forked copies of it, one per usable
  core (`--jobs <cores>`, its default). Goal: N nodes <= 1.5x one node.

Byte-code: each process reads and writes compiled modules under a private PYTHONPYCACHEPREFIX (warmed by one
untimed run of every variant), as on any machine after the program's first run; without it (e.g. with
PYTHONDONTWRITEBYTECODE set) every process would spend most of its time compiling the provider SDKs' sources.

`--quick` (a smoke run: tests) plans 2 nodes and skips the warm-up runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import plan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_plan.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians over them (default 5)")
    parser.add_argument("--nodes", type=int, default=8, help="SV node stacks planned in one process (default 8)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 nodes, no warm-up (figures meaningless)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    nodes = 2 if args.quick else args.nodes
    if nodes < 2:
        parser.error("--nodes must be at least 2")
    return plan.run(repeat=args.repeat, nodes=nodes, warm_up=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
