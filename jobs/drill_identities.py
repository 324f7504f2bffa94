"""`python -m jobs drill-identities SECRET_URL`: can the node's identities be restored from the secret store?

Run as the reader identity (its own service account / role, never the writer's: the writer can only add
versions), it reads the newest version through jobs/secret_readers.py and checks its shape with the very checks
dump-identities applies before storing (jobs/identities.py `shape_problems`: participant, sequencer and mediator
present, each with its id, authorized store snapshot and well-formed keys). The outcome event (`"kind":
"drill-identities"`) carries the version, its age, size, sha256 and key counts; the payload never leaves the
process, and every message passes through a redactor that knows the key material.
Exit codes: 0 the newest version is restorable, 1 it is not (or cannot be read), 2 usage.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

from jobs import cli_types
from jobs.events import COMPLETED, FAILED, emit
from jobs.identities import NODES, Redactor, secret_values, shape_problems
from jobs.secret_readers import newest, open_reader
from rules.retention import DURATION_HELP

KIND = "drill-identities"


class DrillFailure(Exception):
    def __init__(self, stage: str, message: str, **fields):
        super().__init__(message)
        self.stage = stage
        self.fields = fields


def check_newest(url: str, max_age: timedelta | None, redactor: Redactor, now: datetime) -> dict:
    """Read and check the newest version; returns the event fields (no content). Raises DrillFailure."""
    try:
        version, payload = newest(open_reader(url))
    except Exception as exc:  # the readers' errors name the store and version, never the payload
        raise DrillFailure("read", f"{type(exc).__name__}: {exc}") from None
    facts = {"version": version.name, "created_at": version.created_at.isoformat().replace("+00:00", "Z"),
             "age_seconds": round((now - version.created_at).total_seconds(), 3), "bytes": len(payload),
             "sha256": hashlib.sha256(payload).hexdigest()}
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        # json's messages give a position, never the text; still, only the class and position are kept
        where = f" at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise DrillFailure("shape", f"the newest version is not JSON ({type(exc).__name__}{where})", **facts) from None
    redactor.add(*secret_values(document))
    problems = shape_problems(document)
    if problems:
        raise DrillFailure("shape", "the newest version is not a restorable identities dump: " + "; ".join(problems),
                           problems=len(problems), **facts)
    identities = document["identities"]
    facts["keys"] = {node: len(identities[node]["keys"]) for node in NODES}
    if max_age is not None and now - version.created_at > max_age:
        raise DrillFailure("age", f"the newest version is {facts['age_seconds']:.0f}s old, more than --max-age "
                           f"{max_age.total_seconds():.0f}s", **facts)
    return facts


def cmd_drill_identities(args) -> int:
    started = time.monotonic()
    redactor = Redactor()
    try:
        facts = check_newest(args.url, args.max_age, redactor, datetime.now(UTC))
    except DrillFailure as failure:
        fields = dict(failure.fields)
        record = emit(FAILED, KIND, secret=args.url, stage=failure.stage, error=redactor(str(failure)),
                      seconds=round(time.monotonic() - started, 3), **fields)
        if args.json:
            print(json.dumps({"ok": False, **{k: record[k] for k in ("error", "stage", *fields)}}, sort_keys=True))
        return 1
    emit(COMPLETED, KIND, secret=args.url, seconds=round(time.monotonic() - started, 3), **facts)
    if args.json:
        print(json.dumps({"ok": True, **facts}, sort_keys=True))
    return 0



def register(subparsers) -> None:
    p = subparsers.add_parser("drill-identities", help="as the reader identity, fetch the newest identities version "
                              "and check it is restorable (never printing it)")
    p.add_argument("url", metavar="SECRET_URL",
                   help="gcpsm://projects/P/secrets/S, awssm://REGION/NAME or file:///dir")
    p.add_argument("--max-age", type=cli_types.duration, default=None,
                   help=f"also fail when the newest version is older than this, {DURATION_HELP}")
    p.add_argument("--json", action="store_true", help="also print the result (no content) as one JSON object")
    p.set_defaults(func=cmd_drill_identities)
