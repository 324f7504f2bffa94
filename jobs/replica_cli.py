"""`python -m jobs check-replica SRC DST`: is the DR copy complete and identical? (see jobs/replica.py)

Outcome: one event on stdout, kind `replica`: `backup.completed` when every set and the secret are in sync or
within the lag bound, `backup.failed` otherwise (with the lag, the counts per status and the problems), so the
same log-based metrics and alerts as the backup jobs watch it (docs/contracts.md section 3). `--json` adds one
`replica.set` event per set and one `replica.secret` event before it; otherwise a table goes to stderr.
Exit codes: 0 in sync or within the bound, 1 not in sync or the check failed, 2 usage.

It runs as a reader: it needs list/read on both stores and read on both secrets (never write or delete); the
backup writers cannot read secrets, so this is a separate identity.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta

from jobs import cli_types
from jobs.destinations import open_destination
from jobs.events import COMPLETED, FAILED, emit
from jobs.replica import CheckOptions, ReplicaReport, check_secret, check_sets
from jobs.secret_readers import open_reader
from rules.retention import DURATION_HELP

KIND = "replica"
# The outcome event names at most this many problems (the per-set events and the table have them all).
MAX_PROBLEMS = 20


def _positive_duration(text: str):
    value = cli_types.duration(text)
    if value.total_seconds() <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be longer than zero")
    return value


def _usage(message: str) -> int:
    print(f"check-replica: {message}", file=sys.stderr)
    return 2


def _age(value: timedelta) -> str:
    """`2d3h`, `3h12m`, `45m`, `12s`: two units are enough to read a lag."""
    seconds = max(0, int(value.total_seconds()))
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2]) or "0s"


def _table(report: ReplicaReport) -> None:
    out = sys.stderr
    print(f"{'STATUS':<11} {'AGE':>7}  {'TIER':<10} {'MIG':>4}  {'SET ID':<40} DETAIL", file=out)
    for s in report.sets:
        detail = (
            "; ".join(s.problems)
            if s.status != "in_sync"
            else (f"{s.objects} objects ({s.by_checksum} by store checksum, {s.by_read} re-read)")
        )
        print(f"{s.status:<11} {_age(s.age):>7}  {s.tier:<10} {s.migration_id:>4}  {s.set_id:<40} {detail}", file=out)
    for prefix in report.only_in_dr:
        print(
            f"{'dr-only':<11} {'':>7}  {prefix} (not in the primary: removed there by its lifecycle rules?)", file=out
        )
    if report.secret is not None:
        sec = report.secret
        newest = (sec.primary_newest or {}).get("version")
        print(
            f"secret: {sec.status} (primary newest {newest}; newest on both {sec.common}); " + "; ".join(sec.problems),
            file=out,
        )
    for error in report.errors:
        print(f"error: {error}", file=out)
    print(f"lag {_age(report.lag)}: {report.status}", file=out)


def cmd_check_replica(args) -> int:
    if (args.secret_src is None) != (args.secret_dst is None):
        return _usage("--secret-src and --secret-dst go together")
    # One store that spans both regions (a GCS dual-region bucket, replicated by GCS itself): there is no copy
    # to compare, so the check proves what a DR restore needs from it instead: that this side can list and read
    # every complete set (and the secret's versions). Replication inside the store is the provider's.
    single_store = args.src.rstrip("/") == args.dst.rstrip("/")
    if single_store and args.secret_src != args.secret_dst:
        return _usage(
            "SRC and DST are one store but the secrets differ: compare two stores, or one store and one secret"
        )
    started = time.monotonic()
    options = CheckOptions(max_lag=args.max_lag, deep=args.deep, recent_retention=args.recent_retention)
    base = {
        "src": args.src,
        "dst": args.dst,
        "max_lag_seconds": int(args.max_lag.total_seconds()),
        "deep": args.deep,
        "single_store": single_store,
    }
    try:
        report = check_sets(open_destination(args.src), open_destination(args.dst), options)
        if args.secret_src:
            report.secret = check_secret(open_reader(args.secret_src), open_reader(args.secret_dst), options)
    except Exception as exc:
        emit(FAILED, KIND, status="error", error=f"{type(exc).__name__}: {exc}", **base)
        return 1
    if args.json:
        for s in report.sets:
            emit("replica.set", KIND, **s.fields())
        if report.secret is not None:
            emit("replica.secret", KIND, **report.secret.fields())
    else:
        _table(report)
    problems = report.problems()
    fields = {
        **base,
        "status": report.status,
        "lag_seconds": int(report.lag.total_seconds()),
        "sets": report.counts(),
        "dr_only_sets": len(report.only_in_dr),
        "secret": report.secret.status if report.secret else None,
        "bytes_read": sum(s.bytes_read for s in report.sets),
        "seconds": round(time.monotonic() - started, 3),
    }
    if report.ok:
        emit(COMPLETED, KIND, **fields)
        return 0
    emit(
        FAILED,
        KIND,
        error=f"{len(problems)} problem(s): " + "; ".join(problems[:3]),
        problems=problems[:MAX_PROBLEMS],
        **fields,
    )
    return 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check-replica", help="compare the complete sets (and the identities secret) of the primary and the DR copy"
    )
    p.add_argument("src", metavar="SRC", help="the primary store: file:///path, gs://bucket/prefix, s3://bucket/prefix")
    p.add_argument("dst", metavar="DST", help="the DR copy, same forms")
    p.add_argument("--secret-src", default=None, help="the primary identities secret (gcpsm://, awssm://, file://)")
    p.add_argument("--secret-dst", default=None, help="its DR copy")
    p.add_argument(
        "--max-lag",
        type=_positive_duration,
        default=timedelta(hours=1),
        help=f"how long a complete set may take to reach DST, {DURATION_HELP} (default 1h)",
    )
    p.add_argument(
        "--recent-retention",
        type=_positive_duration,
        default=None,
        help="the recent tier's retention: recent sets at least this old are not required in DST "
        "(lifecycle rules delete them on each side at their own pace); default: all are",
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help="re-read every DR dump and recompute its sha256 (default: store checksums where both "
        "sides have one, a re-read otherwise)",
    )
    p.add_argument("--json", action="store_true", help="one replica.set / replica.secret event per line on stdout")
    p.set_defaults(func=cmd_check_replica)
