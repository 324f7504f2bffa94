"""Fail an SV node over to its DR copy: the run behind scripts/failover.py (its docstring is the usage).

`fail_over` reads the DR stack's outputs, lets the flags win (jobs/failover_plan.py resolves the facts), chooses
the newest complete set that verifies, prints the runbook's commands and, with `execute`, runs those that can run
from here. It imports only what the job image ships (jobs/ and rules/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from jobs.destinations import open_destination
from jobs.failover_plan import ChosenSet, DrFacts, FactsError, Step, build_plan, render, resolve_facts
from jobs.identities import shape_problems, summary
from jobs.pgsets import complete_sets, verify_set
from jobs.pgsnap import complete_snapshot_sets, verify_snapshot_set
from jobs.secret_readers import newest, open_reader
from rules.manifest import data_taken_by as taken_by
from rules.manifest import format_time, parse_time, stale_set_problem, utc_now
from rules.snapshot_sets import data_taken_by as snapshot_taken_by

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The steps run `python -m jobs ...`: from the directory that holds the jobs package.
APP_ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"failover: {message}", file=sys.stderr, flush=True)


def load_outputs(*, dr_stack_outputs: Path | None, dr_stack: str | None) -> dict:
    if dr_stack_outputs:
        try:
            value = json.loads(dr_stack_outputs.read_text())
        except (OSError, ValueError) as exc:
            raise FactsError(f"--dr-stack-outputs {dr_stack_outputs}: {exc}") from None
    elif dr_stack:
        try:
            done = subprocess.run(
                ["pulumi", "stack", "output", "--json", "--stack", dr_stack],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise FactsError(
                "--dr-stack: the pulumi CLI is not installed here; save `pulumi stack output --json --stack "
                f"{dr_stack}` where it is and pass --dr-stack-outputs FILE"
            ) from None
        if done.returncode != 0:
            raise FactsError(f"--dr-stack {dr_stack}: pulumi stack output failed: {done.stderr.strip()}")
        try:
            value = json.loads(done.stdout)
        except ValueError:
            raise FactsError(f"--dr-stack {dr_stack}: pulumi stack output did not print JSON") from None
    else:
        return {}
    if not isinstance(value, dict):
        raise FactsError("the DR stack outputs must be a JSON object (pulumi stack output --json)")
    if isinstance(value.get("outputs"), dict) and isinstance(value.get("resources"), list):
        # The offline plan of the DR stack (scripts/plan.py --stack <dr> writes plan.json): its stack outputs.
        return value["outputs"]
    return value


DUMP, SNAPSHOT = "dump", "snapshot"
KINDS = (DUMP, SNAPSHOT)
WHY_SNAPSHOT = (
    "a snapshot set restores from storage snapshots (a volume, a Cloud SQL backup, an RDS snapshot: minutes, "
    "whatever the size)"
)
WHY_DUMP = "a dump set is portable across clouds and was verified row by row"


def _candidates(facts: DrFacts, dest, kind: str | None, set_id: str | None, before: datetime | None):
    """(kind, prefix, manifest, data taken by) of the complete sets of both kinds (or `kind`), newest data first."""
    found = []
    if kind in (None, DUMP):
        found += [(DUMP, p, m, taken_by(m)) for p, m in complete_sets(dest, migration_id=facts.migration_id)]
    if kind in (None, SNAPSHOT):
        found += [
            (SNAPSHOT, p, m, snapshot_taken_by(m))
            for p, m in complete_snapshot_sets(dest, migration_id=facts.migration_id)
        ]
    if set_id:
        found = [c for c in found if c[2]["set_id"] == set_id]
    if before is not None:
        # The same rule for both kinds: the newest data of the set strictly before the damage.
        found = [c for c in found if c[3] < before]
    return sorted(found, key=lambda c: (c[3], c[1]), reverse=True)


def choose_set(
    facts: DrFacts,
    set_id: str | None,
    now: datetime | None = None,
    before: datetime | None = None,
    kind: str | None = None,
) -> ChosenSet | None:
    """The complete set (of the migration id) with the newest data that verifies, of either kind unless `kind`
    (dump | snapshot) is given; failures are reported and skipped. Its `stale` says whether it is too old for the
    node to catch up (at `now`, default the current time). With `before` (damage noticed at that time): only sets
    whose newest data was cut strictly before it. `why` explains the choice for the plan."""
    dest = open_destination(facts.dr_url)
    candidates = _candidates(facts, dest, kind, set_id, before)
    scope = f"migration id {facts.migration_id}" if facts.migration_id is not None else "any migration id"
    scope += f", {kind} sets only" if kind else ", dump and snapshot sets"
    if before is not None:
        scope += f", every database read before {format_time(before)}"
    if not candidates:
        say(f"no complete set {'named ' + set_id + ' ' if set_id else ''}in {facts.dr_url} ({scope})")
        return None
    for found_kind, prefix, _, data_at in candidates:
        say(f"verifying {found_kind} set {dest.describe(prefix)} (data as of {format_time(data_at)})")
        if found_kind == DUMP:
            manifest, errors = verify_set(dest, prefix)
        else:
            # Manifest, ordering and every WAL object's sha256; each snapshot's presence is checked by
            # restore-snapshot-set itself before it creates anything.
            manifest, errors = verify_snapshot_set(dest, prefix)
        if errors:
            say(f"{dest.describe(prefix)} does not verify: {'; '.join(errors)}")
            continue
        return ChosenSet(
            url=dest.describe(prefix),
            set_id=manifest["set_id"],
            migration_id=manifest["migration_id"],
            tier=prefix.split("/")[0],
            created_at=parse_time(manifest["created_at"]),
            databases=tuple((db["role"], db["database"]) for db in manifest.get("databases") or []),
            stale=stale_set_problem(manifest, now or utc_now()),
            kind=found_kind,
            snapshots=tuple((r["role"], r["method"], _pvc_of(r)) for r in manifest.get("snapshots") or []),
            data_taken_by=data_at,
            why=_why(found_kind, data_at, kind, candidates),
        )
    say(f"none of the {len(candidates)} complete set(s) in {facts.dr_url} ({scope}) verifies")
    return None


def _pvc_of(record: dict) -> str:
    """The PVC a volume role's data snapshot was taken of ("" for a managed role)."""
    for volume in (record.get("details") or {}).get("volume_snapshots") or []:
        if volume.get("volume", "data") == "data":
            return str(volume.get("pvc") or "")
    return ""


def _why(chosen: str, data_at: datetime, asked: str | None, candidates) -> str:
    if asked:
        reason = WHY_SNAPSHOT if asked == SNAPSHOT else WHY_DUMP
        return f"the newest {asked} set that verifies (--kind {asked}: {reason})"
    other = SNAPSHOT if chosen == DUMP else DUMP
    newest_other = next((c for c in candidates if c[0] == other), None)
    versus = (
        f"newer than the newest {other} set ({newest_other[2]['set_id']}, data as of {format_time(newest_other[3])})"
        if newest_other
        else f"no {other} set is there"
    )
    reason = WHY_SNAPSHOT if chosen == SNAPSHOT else WHY_DUMP
    alternative = WHY_DUMP if chosen == SNAPSHOT else WHY_SNAPSHOT
    return (
        f"the newest set that verifies, of either kind: data as of {format_time(data_at)}, {versus}; {reason}. "
        f"--kind {other} picks the other kind ({alternative})"
    )


def fetch_identities(url: str, out: Path) -> None:
    """Newest version, shape-checked, to a new private file. Only public facts are printed."""
    version, payload = newest(open_reader(url))
    try:
        document = json.loads(payload)
    except ValueError:
        raise RuntimeError(f"{version.name} is not JSON") from None
    problems = shape_problems(document)
    if problems:
        raise RuntimeError(f"{version.name} is not a valid identities dump: {'; '.join(problems)}")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(payload)
    say(
        f"identities dump {version.name} ({version.created_at.isoformat()}) written to {out}: "
        f"{json.dumps(summary(document))}"
    )


def execute_steps(steps: list[Step], facts: DrFacts, chosen: ChosenSet, identities_out: Path | None) -> int:
    if chosen.kind == SNAPSHOT:
        if any(method == "volume-snapshot" for _, method, _ in chosen.snapshots) and not facts.kube_api:
            say(
                "--execute restores volume roles through the Kubernetes API: start `kubectl --context "
                f"{facts.kube_context} proxy --port 8001` and pass --kube-api http://127.0.0.1:8001"
            )
            return EXIT_USAGE
    else:
        missing = [role for role in chosen.roles if role not in facts.targets]
        if missing:
            say(f"--execute restores only into servers you name: pass --pg ROLE=URL for {', '.join(missing)}")
            return EXIT_USAGE
    for number, step in enumerate(steps, start=1):
        if step.run is None:
            continue
        say(f"running step {number}: {step.title}")
        argv = [sys.executable, *step.run[1:]] if step.run[0] == "python" else step.run
        if subprocess.run(argv, cwd=APP_ROOT, check=False).returncode != 0:
            say(f"step {number} failed; stopping (nothing after it was run)")
            return EXIT_FAILED
    if identities_out:
        if not facts.identities_secret_url:
            say("--identities-out: no identities secret (pass --identities-secret URL)")
            return EXIT_USAGE
        try:
            fetch_identities(facts.identities_secret_url, identities_out)
        except Exception as exc:
            say(f"fetching the identities failed: {type(exc).__name__}: {exc}")
            return EXIT_FAILED
    say("executed steps succeeded; run the others in order")
    return EXIT_OK


def fail_over(
    *,
    dr_stack_outputs: Path | None = None,
    dr_stack: str | None = None,
    dr_url: str | None = None,
    cloud: str | None = None,
    namespace: str | None = None,
    node: str | None = None,
    migration_id: int | None = None,
    serial_id: int | None = None,
    participant_deployment: str | None = None,
    context: str | None = None,
    stack: str | None = None,
    identities_secret: str | None = None,
    cometbft_pvc: str | None = None,
    cometbft_storage_class: str | None = None,
    cometbft_snapshot: str | None = None,
    snapshot_project: str | None = None,
    region: str | None = None,
    set_id: str | None = None,
    before: datetime | None = None,
    kind: str | None = None,
    target: list[tuple[str, str]] | None = None,
    image: str | None = None,
    pg_storage_class: str | None = None,
    kube_api: str | None = None,
    pg: list[tuple[str, str]] | None = None,
    restore_jobs: int = 1,
    execute: bool = False,
    identities_out: Path | None = None,
    accept_stale_set: bool = False,
) -> int:
    """Print the failover plan (and with `execute` run its runnable steps); returns the exit code.

    The DR facts left None come from the DR stack's outputs (`dr_stack_outputs` or `dr_stack`); `pg` is the
    (role, server URL) pairs of --pg; `kind` (dump | snapshot) limits the choice to one kind of set, `target`
    the (role, name) pairs of --target for a snapshot set.
    """
    # resolve_facts names each problem after its flag: the keys are the flags' dests.
    flags = {
        "dr_stack": dr_stack,
        "dr_url": dr_url,
        "cloud": cloud,
        "namespace": namespace,
        "node": node,
        "migration_id": migration_id,
        "serial_id": serial_id,
        "participant_deployment": participant_deployment,
        "context": context,
        "stack": stack,
        "identities_secret": identities_secret,
        "cometbft_pvc": cometbft_pvc,
        "cometbft_storage_class": cometbft_storage_class,
        "cometbft_snapshot": cometbft_snapshot,
        "snapshot_project": snapshot_project,
        "region": region,
        "pg": pg,
        "target": target,
        "image": image,
        "pg_storage_class": pg_storage_class,
        "kube_api": kube_api,
    }
    try:
        facts = resolve_facts(load_outputs(dr_stack_outputs=dr_stack_outputs, dr_stack=dr_stack), flags)
    except FactsError as exc:
        for line in str(exc).splitlines():
            say(line)
        return EXIT_USAGE
    try:
        chosen = choose_set(facts, set_id, before=before, kind=kind)
    except Exception as exc:  # the DR store unreachable, a permission missing: one line, not a traceback
        say(f"reading {facts.dr_url} failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    if chosen is None:
        return EXIT_FAILED
    if chosen.stale and not accept_stale_set:
        # The newest set that verifies is the freshest there is: an older one is staler still.
        say(
            f"refusing to fail over: {chosen.stale}; a node restored from it cannot catch up. Pass "
            "--accept-stale-set to print (and run) the plan anyway"
        )
        return EXIT_FAILED
    if chosen.stale:
        say(f"WARNING (--accept-stale-set): {chosen.stale}")
    try:
        steps = build_plan(facts, chosen, restore_jobs=restore_jobs)
    except FactsError as exc:
        say(str(exc))
        return EXIT_USAGE
    sys.stdout.write(render(steps))
    sys.stdout.flush()
    return execute_steps(steps, facts, chosen, identities_out) if execute else EXIT_OK
