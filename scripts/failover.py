"""`python scripts/failover.py ...`: fail an SV node over to its DR copy, from a clone of the repository.

The same command as `sv-backups-failover` (`pip install '.[jobs]'`); what it does, its flags and exit codes are in
jobs/failover_cli.py and `--help`; the procedure in docs/runbook.md, "Disaster recovery".
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The command lives in the jobs package, so `pip install '.[jobs]'` gives it as the console script
# `sv-backups-failover`, working from any directory; this file keeps the repository path.
from jobs.failover_cli import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
