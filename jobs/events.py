"""Structured outcome events: one JSON object per line on stdout.

GKE's logging agent turns each line into a `jsonPayload`, and the program's log-based metrics and alerts
match on `event` and `kind` (see docs/contracts.md section 3). Never pass secret material as a field.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

COMPLETED = "backup.completed"
FAILED = "backup.failed"
# drill-*: the restore drills (jobs/drill_cli.py, drill_identities.py, drill_cometbft.py).
# postgres-snapshots: the snapshot sets' steps and seal (jobs/pgsnap_cli.py); snapshot-prune: their pruner;
# drill-postgres-snapshots: the weekly restore drill of snapshot sets (jobs/drill_snapshots.py).
KINDS = (
    "postgres",
    "cometbft",
    "identities",
    "replica",
    "history",
    "drill-postgres",
    "drill-cometbft",
    "drill-identities",
    "postgres-snapshots",
    "snapshot-prune",
    "drill-postgres-snapshots",
)


def emit(event: str, kind: str, *, stream=None, **fields: Any) -> dict[str, Any]:
    """Write one event line and return it (so callers and tests can inspect what was logged)."""
    if kind not in KINDS:
        raise ValueError(f"event kind {kind!r} is not one of {', '.join(KINDS)}")
    record = {
        "severity": "ERROR" if event == FAILED else "INFO",
        "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "event": event,
        "kind": kind,
        **fields,
    }
    out = stream or sys.stdout
    out.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    out.flush()
    return record
