"""`python -m jobs drill-restore STORE_URL --scratch-dir DIR ...`: the weekly Postgres restore drill (jobs/drill.py).

Prints the result (a table, or `--json`) on stdout, then one outcome event: `backup.completed` /
`backup.failed` with `"kind": "drill-postgres"`, `rto_seconds` (restore and verify wall time), `rpo_seconds`
(age of the set) and per-database results. Progress goes to stderr. Exit codes: 0 the drill passed, 1 it
failed (or could not run), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

from jobs import cli_types
from jobs.destinations import open_destination
from jobs.drill import DrillOptions, DrillResult, run_drill
from jobs.events import COMPLETED, FAILED, emit
from jobs.pgdump import redact
from rules.manifest import utc_now
from rules.retention import DURATION_HELP

KIND = "drill-postgres"
ERROR_LIMIT = 2000


class Terminated(Exception):
    """SIGTERM: unwind so that the scratch server stops and the outcome event is logged."""


def _on_sigterm(signum, frame):
    raise Terminated("terminated by SIGTERM before the drill finished")


def _dsn(text: str) -> str:
    from jobs.pgdump import parse_dsn

    try:
        parse_dsn(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--scratch-dsn: {exc}") from None
    return text


def table(result: DrillResult) -> str:
    lines = [f"set {result.set_url}  created {result.created_at}  age {result.rpo_seconds:.0f}s  "
             f"restore+verify {result.rto_seconds if result.rto_seconds is not None else '-'}s",
             f"scratch: {result.scratch or '-'}",
             f"{'database':<40} {'status':<11} {'tables':>6} {'rows':>12} {'samples':>8}"]
    for db in result.databases:
        lines.append(f"{db.label:<40} {db.status:<11} {db.tables:>6} {db.rows:>12} {db.samples_checked:>8}")
        lines += [f"    note: {note}" for note in db.notes]
    for name, check in result.ordering.items():
        if name == "manifest_proof":
            lines.append(f"ordering (manifest proof): {'holds' if check['holds'] else 'BROKEN'}")
        elif check.get("checked"):
            lines.append(f"ordering (restored data): {'holds' if check['holds'] else 'BROKEN'}: {check['detail']}")
        else:
            lines.append(f"ordering (restored data): not checked: {check['detail']}")
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines += [f"PROBLEM: {p}" for p in result.all_problems()]
    lines.append("PASSED" if result.ok else "FAILED")
    return "\n".join(lines)


def cmd_drill_restore(args) -> int:
    # SIGTERM (the Job's deadline) unwinds, so that the scratch server is stopped and backup.failed is logged.
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    fields = {"store": args.url}
    if args.scratch_dsn:
        fields["scratch_dsn"] = redact(args.scratch_dsn)
    try:
        if not args.scratch_dir.is_dir():
            raise ValueError(f"--scratch-dir {args.scratch_dir} is not a directory")
        result = run_drill(open_destination(args.url),
                           DrillOptions(scratch_dir=args.scratch_dir, scratch_dsn=args.scratch_dsn,
                                        set_id=args.set_id, max_age=args.max_age, jobs=args.jobs,
                                        parallel=args.parallel, pg_bin=args.pg_bin),
                           now=utc_now())
    except Exception as exc:
        emit(FAILED, KIND, error=f"{type(exc).__name__}: {exc}", seconds=round(time.monotonic() - started, 3),
             **fields)
        return 1
    print(json.dumps(result.as_json(), sort_keys=True) if args.json else table(result), flush=True)
    fields.update(set_id=result.set_id, migration_id=result.migration_id, set_url=result.set_url,
                  rto_seconds=result.rto_seconds, rpo_seconds=result.rpo_seconds,
                  databases=[{"role": db.role, "database": db.database, "status": db.status, "tables": db.tables,
                              "rows": db.rows, "restore_seconds": db.restore_seconds} for db in result.databases],
                  ordering={name: check.get("holds") for name, check in result.ordering.items()},
                  seconds=round(time.monotonic() - started, 3))
    if result.warnings:  # only when there are some: the event keeps its shape otherwise
        fields["warnings"] = result.warnings
    if result.ok:
        emit(COMPLETED, KIND, **fields)
        return 0
    problems = result.all_problems()
    error = "; ".join(problems)
    if len(error) > ERROR_LIMIT:
        error = error[:ERROR_LIMIT] + f"... ({len(problems)} problems in all)"
    emit(FAILED, KIND, error=error, problems=len(problems), **fields)
    return 1


def register(subparsers) -> None:
    p = subparsers.add_parser("drill-restore", help="restore the newest complete set into a scratch server and "
                              "verify it against its manifest (RTO, RPO)")
    p.add_argument("url", metavar="STORE_URL", help="the store: file:///path, gs://bucket/prefix or s3://bucket/prefix")
    p.add_argument("--scratch-dir", required=True, type=Path,
                   help="an empty, writable directory (the pod's scratch volume): the scratch server's data and "
                        "socket, and the schema archives")
    p.add_argument("--scratch-dsn", type=_dsn, default=None,
                   help="restore into this operator-provided instance instead (a Cloud SQL/RDS clone; connection "
                        "to its maintenance database, password in PGPASSWORD); its set databases must be absent or "
                        "empty, and those the drill creates are dropped at the end")
    p.add_argument("--set-id", type=cli_types.set_id, default=None,
                   help="drill this complete set (default: the newest)")
    p.add_argument("--max-age", type=cli_types.duration, default=None,
                   help=f"fail when the set is older than this (the RPO bound), {DURATION_HELP}")
    p.add_argument("--jobs", type=cli_types.count, default=2, help="pg_restore processes per database (default 2)")
    p.add_argument("--parallel", type=cli_types.count, default=2, help="databases restored at once (default 2)")
    p.add_argument("--pg-bin", type=Path, default=None,
                   help="directory of pg_restore (default: by the server's major under /usr/lib/postgresql)")
    p.add_argument("--json", action="store_true", help="the result as one JSON object instead of the table")
    p.set_defaults(func=cmd_drill_restore)
