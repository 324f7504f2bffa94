"""`python -m jobs audit-history URL`: prove the store's Postgres history gap-less (rules: rules/history.py).

Reads only complete sets (their manifests, never the dumps). Prints the table (or `--json`), then one outcome
event: `backup.completed` / `backup.failed` with `"kind": "history"`, which the alerts can watch like every
other job's. Exit codes: 0 gap-less and fresh, 1 a problem found or the store unreadable, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta

from jobs import cli_types
from jobs.destinations import open_destination
from jobs.events import COMPLETED, FAILED, emit
from jobs.pgsets import complete_sets
from jobs.pgsnap import complete_snapshot_sets
from rules.chain import ChainSet, check_chain, manifest_digest
from rules.history import PRUNED_ROLES, audit, set_point, table
from rules.manifest import RECENT, utc_now
from rules.retention import DURATION_HELP, parse_duration
from rules.snapshot_sets import history_point

KIND = "history"
# What the problems in the event's `error` may add up to: the full list is in the table or --json.
ERROR_LIMIT = 2000


class _Off:
    """`--participant-pruning off`: judge every gap as unpruned, whatever the manifests recorded."""


OFF = _Off()


def _window(text: str) -> timedelta | _Off:
    if text.strip().lower() == "off":
        return OFF
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or 'off')") from None



def cmd_audit_history(args) -> int:
    started = time.monotonic()
    try:
        dest = open_destination(args.url)
        listed = complete_sets(dest)
        points = [set_point(prefix.split("/", 1)[0], manifest) for prefix, manifest in listed]
        # Snapshot sets count as recent sets (freshness); the gap-less proof rests on the dump sets' historical
        # tier (docs/jobs-snapshots.md).
        snapshots = [history_point(RECENT, manifest) for _, manifest in complete_snapshot_sets(dest)]
    except Exception as exc:
        emit(FAILED, KIND, error=f"{type(exc).__name__}: {exc}", store=args.url)
        return 1
    overrides = {}
    for role in PRUNED_ROLES:
        given = getattr(args, f"{role}_pruning")
        if given is not None:
            overrides[role] = None if given is OFF else given
    report = audit(points + snapshots, now=utc_now(), max_age=args.interval + args.slack, overrides=overrides)
    chains, chain_problems = _chains(listed, args.expect_head)
    kinds = {
        kind: {"sets": len(group), "newest_set_id": max(group, key=lambda p: p.created_at).set_id if group else None}
        for kind, group in (("dump", points), ("snapshot", snapshots))
    }
    if args.json:
        print(json.dumps({**report.as_json(), "kinds": kinds, "chain": chains}, sort_keys=True), flush=True)
    else:
        print(table(report), flush=True)
        print("kinds: " + ", ".join(f"{k} {v['sets']} (newest {v['newest_set_id']})" for k, v in kinds.items()))
        for mid, chain in sorted(chains.items()):
            print(f"chain of migration id {mid}: head {chain['head']}, {chain['checked']} links hold, "
                  f"{chain['unverifiable']} to expired recent sets" + (f"; BROKEN: {chain['break']}"
                                                                       if chain["break"] else ""))
        for problem in chain_problems:
            print(f"chain: {problem}")
    fields = {
        "store": args.url,
        "sets": len(points) + len(snapshots),
        "kinds": kinds,
        "series": len(report.series),
        "newest_set_id": report.newest.set_id if report.newest else None,
        "newest_age_seconds": round(report.newest_age.total_seconds(), 3) if report.newest else None,
        "seconds": round(time.monotonic() - started, 3),
        # The heads, for an auditor to write down and pass back as --expect-head (rules/chain.py).
        "chain_heads": {str(mid): chain["head"] for mid, chain in chains.items()},
    }
    problems = report.problems + chain_problems
    if report.ok and not chain_problems:
        emit(COMPLETED, KIND, **fields)
        return 0
    error = "; ".join(problems)
    if len(error) > ERROR_LIMIT:
        error = error[:ERROR_LIMIT] + f"... ({len(problems)} problems in all)"
    emit(FAILED, KIND, error=error, problems=len(problems), **fields)
    return 1


def _chains(listed, expected_heads: list[tuple[str, str]]) -> tuple[dict[int, dict], list[str]]:
    """Each migration id's chain of dump sets (rules/chain.py): its head, the links that hold, the first break; and
    the problems, including a head written down earlier (--expect-head SET_ID=SHA256) that no longer matches."""
    by_migration: dict[int, list[ChainSet]] = {}
    for prefix, manifest in listed:
        tier = prefix.split("/", 1)[0]
        by_migration.setdefault(manifest["migration_id"], []).append(ChainSet(tier, manifest["created_at"], manifest))
    chains, problems = {}, []
    digests = {}
    for mid, sets in by_migration.items():
        report = check_chain(sets)
        head = f"{report.head['set_id']}={report.head['sha256']}" if report.head else None
        chains[mid] = {"head": head, "checked": report.checked, "unverifiable": report.unverifiable,
                       "break": report.first_break}
        if report.first_break:
            problems.append(f"migration id {mid}: the chain of sets is broken: {report.first_break}")
        for item in sets:
            digests.setdefault(item.manifest["set_id"], set()).add(manifest_digest(item.manifest))
    for set_id, digest in expected_heads:
        found = digests.get(set_id)
        if found is None:
            problems.append(f"--expect-head: set {set_id} is gone from the store")
        elif digest not in found:
            problems.append(f"--expect-head: set {set_id} was changed since its digest {digest[:16]}... was recorded")
    return chains, problems


def _head(text: str) -> tuple[str, str]:
    set_id, sep, digest = text.partition("=")
    if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(f"{text!r} is not SET_ID=SHA256 (as the event's chain_heads print it)")
    return set_id, digest


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit-history",
        help="prove the history gap-less: per migration id and role, from genesis, under the pruning windows",
    )
    p.add_argument("url", help="the store: file:///path, gs://bucket/prefix or s3://bucket/prefix")
    p.add_argument(
        "--participant-pruning",
        type=_window,
        default=None,
        help=f"judge every participant gap against this window ({DURATION_HELP}, or 'off'); default: "
        "the windows each set's manifest recorded",
    )
    p.add_argument(
        "--sequencer-pruning",
        type=_window,
        default=None,
        help="likewise for the sequencer (default: the recorded windows)",
    )
    p.add_argument(
        "--interval",
        type=cli_types.duration,
        default=timedelta(hours=4),
        help="the schedule's largest gap between two sets (default 4h)",
    )
    p.add_argument(
        "--slack",
        type=cli_types.duration,
        default=timedelta(hours=1),
        help="how much older than --interval the newest set may be: run time and grace (default 1h)",
    )
    p.add_argument("--json", action="store_true", help="the report as one JSON object instead of the table")
    p.add_argument(
        "--expect-head",
        type=_head,
        action="append",
        default=[],
        metavar="SET_ID=SHA256",
        help="a chain head an earlier audit printed (chain_heads): fail unless that set is still there, unchanged",
    )
    p.set_defaults(func=cmd_audit_history)
