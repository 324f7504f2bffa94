"""Fail an SV node over to its DR copy, from the DR side only (docs/runbook.md, "Disaster recovery").

    python scripts/failover.py [--dr-url URL] [--dr-stack-outputs FILE | --dr-stack NAME] [--pg ROLE=URL ...]
                               [--execute [--identities-out FILE]] [...]

1. Reads the DR-side facts from the DR stack's outputs (a `pulumi stack output --json` file, the DR stack's
   offline plan.json, or the Pulumi CLI) and the flags, which win: the DR copy, the node, the cloud and where
   the CometBFT snapshot copies are (GCP project, AWS region). Nothing of the primary region is needed.
2. Lists the complete sets in the DR copy (the node's migration id) and verifies them newest first, as
   `verify-set` does (manifest, every object's size and sha256, the apps-before-participant rule): the first
   that passes is the set, and one set restores the whole node.
3. Prints the exact commands, in order: scale every SV component to 0; restore every database from that set;
   restore the CometBFT volume from its DR snapshot copy; fetch the identities dump; scale back to 1; turn the
   DR stack's backups on.
4. `--execute` also runs what can run from here, in that order, stopping at the first failure: the database
   restore (into the servers given with --pg, with PGPASSWORD or PGPASSFILE from the environment) and, with
   --identities-out, the identities fetch (newest version, shape-checked, written 0600, never printed).

The plan goes to stdout, progress to stderr. Exit codes: 0 plan printed (and every executed step succeeded);
1 no set verifies, or an executed step failed; 2 bad flags or DR facts (one line per problem).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobs.destinations import open_destination  # noqa: E402
from jobs.failover_plan import (  # noqa: E402
    ChosenSet,
    DrFacts,
    FactsError,
    build_plan,
    render,
    resolve_facts,
)
from jobs.identities import shape_problems, summary  # noqa: E402
from jobs.pgsets import complete_sets, verify_set  # noqa: E402
from jobs.secret_readers import newest, open_reader  # noqa: E402
from rules.manifest import check_role, check_set_id, parse_time  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _role_url(text: str) -> tuple[str, str]:
    role, sep, url = text.partition("=")
    if not sep or not url:
        raise argparse.ArgumentTypeError(f"expected ROLE=postgresql://USER@HOST:PORT, got {text.split('=')[0]!r}...")
    try:
        check_role(role)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return role, url


def _set_id(text: str) -> str:
    try:
        return check_set_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="failover.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    facts = parser.add_argument_group("DR facts (default: the DR stack's outputs)")
    source = facts.add_mutually_exclusive_group()
    source.add_argument(
        "--dr-stack-outputs",
        type=Path,
        help="`pulumi stack output --json --stack DR` saved to a file, or the DR stack's offline plan.json",
    )
    source.add_argument("--dr-stack", help="the DR stack's name: runs `pulumi stack output --json --stack NAME`")
    facts.add_argument("--dr-url", help="the DR copy of the backups (default: output backupUrl)")
    facts.add_argument("--cloud", choices=("gcp", "aws"), help="default: output cloud, else the URL's scheme")
    facts.add_argument("--namespace", help="the SV node's namespace in the DR cluster (default: node.namespace)")
    facts.add_argument("--node", help="the node's name (default: node.name)")
    facts.add_argument(
        "--migration-id", type=int, help="restore a set of this migration id (default: node.migrationId)"
    )
    facts.add_argument(
        "--serial-id", type=int, help="the synchronizer serial in deployment names (default: migration id)"
    )
    facts.add_argument("--participant-deployment", help="default `participant` (older Splice: participant-<id>)")
    facts.add_argument("--context", help="kubectl context of the DR cluster (default: output kubeContext)")
    facts.add_argument("--identities-secret", help="the DR identities secret URL (default: identitiesSecretUrl)")
    facts.add_argument("--cometbft-pvc", help="default: global-domain-<serial>-cometbft-cometbft-data")
    facts.add_argument("--cometbft-storage-class", help="StorageClass of the restored CometBFT claim")
    facts.add_argument("--cometbft-snapshot", help="restore this snapshot handle instead of looking one up")
    facts.add_argument(
        "--snapshot-project", help="gcp: the project holding the PD snapshots (default: cometbft.snapshotProject)"
    )
    facts.add_argument(
        "--region", help="aws: the DR region holding the EBS snapshot copies (default: cometbft.snapshotRegion)"
    )
    parser.add_argument("--set-id", type=_set_id, help="restore this set (default: the newest that verifies)")
    parser.add_argument(
        "--pg",
        action="append",
        type=_role_url,
        default=[],
        metavar="ROLE=URL",
        help="the server a role is restored into, postgresql://USER@HOST:PORT (repeat per role; "
        "default: output postgresTargets, else the Splice runbook's in-cluster names)",
    )
    parser.add_argument("--restore-jobs", type=int, default=1, help="pg_restore --jobs per database (default 1)")
    parser.add_argument(
        "--execute",
        action="store_true",
        help="also run the database restore (and the identities "
        "fetch with --identities-out), stopping at the first failure",
    )
    parser.add_argument("--identities-out", type=Path, help="with --execute: write the newest dump here (mode 0600)")
    args = parser.parse_args(argv)
    if args.identities_out and not args.execute:
        parser.error("--identities-out needs --execute")
    if args.restore_jobs < 1:
        parser.error("--restore-jobs must be at least 1")
    return args


def say(message: str) -> None:
    print(f"failover: {message}", file=sys.stderr, flush=True)


def load_outputs(args: argparse.Namespace) -> dict:
    if args.dr_stack_outputs:
        try:
            value = json.loads(args.dr_stack_outputs.read_text())
        except (OSError, ValueError) as exc:
            raise FactsError(f"--dr-stack-outputs {args.dr_stack_outputs}: {exc}") from None
    elif args.dr_stack:
        try:
            done = subprocess.run(
                ["pulumi", "stack", "output", "--json", "--stack", args.dr_stack],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise FactsError(
                "--dr-stack: the pulumi CLI is not installed here; save `pulumi stack output --json --stack "
                f"{args.dr_stack}` where it is and pass --dr-stack-outputs FILE"
            ) from None
        if done.returncode != 0:
            raise FactsError(f"--dr-stack {args.dr_stack}: pulumi stack output failed: {done.stderr.strip()}")
        try:
            value = json.loads(done.stdout)
        except ValueError:
            raise FactsError(f"--dr-stack {args.dr_stack}: pulumi stack output did not print JSON") from None
    else:
        return {}
    if not isinstance(value, dict):
        raise FactsError("the DR stack outputs must be a JSON object (pulumi stack output --json)")
    if isinstance(value.get("outputs"), dict) and isinstance(value.get("resources"), list):
        # The offline plan of the DR stack (scripts/plan.py --stack <dr> writes plan.json): its stack outputs.
        return value["outputs"]
    return value


def choose_set(facts: DrFacts, set_id: str | None) -> ChosenSet | None:
    """The newest complete set (of the migration id) that verifies; failures are reported and skipped."""
    dest = open_destination(facts.dr_url)
    candidates = complete_sets(dest, migration_id=facts.migration_id)
    if set_id:
        candidates = [(prefix, manifest) for prefix, manifest in candidates if manifest["set_id"] == set_id]
    scope = f"migration id {facts.migration_id}" if facts.migration_id is not None else "any migration id"
    if not candidates:
        say(f"no complete set {'named ' + set_id + ' ' if set_id else ''}in {facts.dr_url} ({scope})")
        return None
    for prefix, _ in candidates:
        say(f"verifying {dest.describe(prefix)} (every object is read and hashed)")
        manifest, errors = verify_set(dest, prefix)
        if errors:
            say(f"{dest.describe(prefix)} does not verify: {'; '.join(errors)}")
            continue
        return ChosenSet(
            url=dest.describe(prefix),
            set_id=manifest["set_id"],
            migration_id=manifest["migration_id"],
            tier=prefix.split("/")[0],
            created_at=parse_time(manifest["created_at"]),
            databases=tuple((db["role"], db["database"]) for db in manifest["databases"]),
        )
    say(f"none of the {len(candidates)} complete set(s) in {facts.dr_url} verifies")
    return None


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


def execute(steps, facts: DrFacts, chosen: ChosenSet, args: argparse.Namespace) -> int:
    missing = [role for role in chosen.roles if role not in facts.targets]
    if missing:
        say(f"--execute restores only into servers you name: pass --pg ROLE=URL for {', '.join(missing)}")
        return EXIT_USAGE
    for number, step in enumerate(steps, start=1):
        if step.run is None:
            continue
        say(f"running step {number}: {step.title}")
        argv = [sys.executable, *step.run[1:]] if step.run[0] == "python" else step.run
        if subprocess.run(argv, cwd=ROOT, check=False).returncode != 0:
            say(f"step {number} failed; stopping (nothing after it was run)")
            return EXIT_FAILED
    if args.identities_out:
        if not facts.identities_secret_url:
            say("--identities-out: no identities secret (pass --identities-secret URL)")
            return EXIT_USAGE
        try:
            fetch_identities(facts.identities_secret_url, args.identities_out)
        except Exception as exc:
            say(f"fetching the identities failed: {type(exc).__name__}: {exc}")
            return EXIT_FAILED
    say("executed steps succeeded; run the others in order")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        facts = resolve_facts(load_outputs(args), vars(args))
    except FactsError as exc:
        for line in str(exc).splitlines():
            say(line)
        return EXIT_USAGE
    try:
        chosen = choose_set(facts, args.set_id)
    except Exception as exc:  # the DR store unreachable, a permission missing: one line, not a traceback
        say(f"reading {facts.dr_url} failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    if chosen is None:
        return EXIT_FAILED
    try:
        steps = build_plan(facts, chosen, restore_jobs=args.restore_jobs)
    except FactsError as exc:
        say(str(exc))
        return EXIT_USAGE
    sys.stdout.write(render(steps))
    sys.stdout.flush()
    return execute(steps, facts, chosen, args) if args.execute else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
