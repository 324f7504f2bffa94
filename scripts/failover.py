"""Fail an SV node over to its DR copy, from the DR side only (docs/runbook.md, "Disaster recovery").

    python scripts/failover.py [--dr-url URL] [--dr-stack-outputs FILE | --dr-stack NAME] [--pg ROLE=URL ...]
                               [--context CONTEXT] [--execute [--identities-out FILE]] [...]

1. Reads the DR-side facts from the DR stack's outputs (a `pulumi stack output --json` file, the DR stack's
   offline plan.json, or the Pulumi CLI) and the flags, which win: the DR copy, the node, the cloud and where
   the CometBFT snapshot copies are (GCP project, AWS region). Nothing of the primary region is needed.
2. Lists the complete sets in the DR copy (the node's migration id), dump sets and snapshot sets, and verifies
   them newest data first, as `verify-set` does (manifest, every object's size and sha256, the
   apps-before-participant rule): the first that passes is the set (`--kind dump|snapshot` for one kind only;
   `--before TIME` for both), the plan says why, and one set restores the whole node.
3. Prints the exact commands, in order: scale every SV component to 0; restore every database from that set
   (`restore-set`, or for a snapshot set `restore-snapshot-set --from-dr-copy` with `--target ROLE=NAME`);
   restore the CometBFT volume from its DR snapshot copy; fetch the identities dump; scale back to 1; turn the
   DR stack's backups on.
4. `--execute` also runs what can run from here, in that order, stopping at the first failure: the database
   restore (into the servers given with --pg, with PGPASSWORD or PGPASSFILE from the environment; for a
   snapshot set through --kube-api and the clouds' APIs) and, with
   --identities-out, the identities fetch (newest version, shape-checked, written 0600, never printed).

The plan goes to stdout, progress to stderr. Exit codes: 0 plan printed (and every executed step succeeded);
1 no set verifies, or an executed step failed; 2 bad flags or DR facts (one line per problem).
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
