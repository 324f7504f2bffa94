"""Fail an SV node over to its DR copy, from the DR side only (docs/runbook.md, "Disaster recovery").

The command `sv-backups-failover` (`pip install '.[jobs]'`), or `python scripts/failover.py` in a clone:

    sv-backups-failover [--dr-url URL] [--dr-stack-outputs FILE | --dr-stack NAME] [--pg ROLE=URL ...]
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

import argparse
from pathlib import Path

from jobs import cli_types
from jobs.failover import fail_over
from jobs.pgsnap_cli import parse_role_target

_role_target = cli_types.from_parser(parse_role_target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sv-backups-failover", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
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
    facts.add_argument(
        "--context",
        help="kubectl context of the DR cluster (default: output kubeContext, which a DR stack with "
        "kubernetes:context exports); required when the outputs have none",
    )
    facts.add_argument(
        "--stack", help="the DR stack's name, put on every pulumi command printed (default: output stack, --dr-stack)"
    )
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
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--set-id", type=cli_types.set_id, help="restore this set (default: the newest that verifies)")
    choice.add_argument(
        "--before",
        type=cli_types.moment,
        metavar="TIME",
        help="damage noticed at TIME (e.g. 2026-12-07T03:10Z): the newest set that verifies whose every database was "
        "read strictly before it",
    )
    parser.add_argument(
        "--pg",
        action="append",
        type=cli_types.role_url,
        default=[],
        metavar="ROLE=URL",
        help="the server a role is restored into, postgresql://USER@HOST:PORT (repeat per role; "
        "default: output postgresTargets, else the Splice runbook's in-cluster names)",
    )
    parser.add_argument(
        "--kind",
        choices=("dump", "snapshot"),
        help="restore only this kind of set (default: the newest that verifies of either kind; a snapshot set "
        "restores far faster, a dump set is portable across clouds and verified row by row)",
    )
    parser.add_argument(
        "--target",
        action="append",
        type=_role_target,
        default=[],
        metavar="ROLE=NAME",
        help="snapshot sets: where a role is restored (volume: the PVC, default the one it was taken of; Cloud SQL: "
        "the DR instance, overwritten; RDS: a NEW instance id in the DR region); repeat per role",
    )
    parser.add_argument(
        "--image",
        help="snapshot sets: the job image pinned by digest, for the prepare-datadir pods (default: jobImage)",
    )
    parser.add_argument("--pg-storage-class", help="snapshot sets: StorageClass of the restored Postgres claims")
    parser.add_argument(
        "--kube-api",
        help="snapshot sets with --execute: the DR cluster's API as this machine reaches it (e.g. `kubectl proxy`: "
        "http://127.0.0.1:8001)",
    )
    parser.add_argument("--restore-jobs", type=int, default=1, help="pg_restore --jobs per database (default 1)")
    parser.add_argument(
        "--execute",
        action="store_true",
        help="also run the database restore (and the identities "
        "fetch with --identities-out), stopping at the first failure",
    )
    parser.add_argument("--identities-out", type=Path, help="with --execute: write the newest dump here (mode 0600)")
    parser.add_argument(
        "--accept-stale-set",
        action="store_true",
        help="go on with a set at least as old as the sequencer pruning window in its manifest (refused without: "
        "a node restored from it cannot catch up); restore-set is passed the flag too",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.identities_out and not args.execute:
        parser.error("--identities-out needs --execute")
    if args.restore_jobs < 1:
        parser.error("--restore-jobs must be at least 1")
    return fail_over(
        dr_stack_outputs=args.dr_stack_outputs,
        dr_stack=args.dr_stack,
        dr_url=args.dr_url,
        cloud=args.cloud,
        namespace=args.namespace,
        node=args.node,
        migration_id=args.migration_id,
        serial_id=args.serial_id,
        participant_deployment=args.participant_deployment,
        context=args.context,
        stack=args.stack,
        identities_secret=args.identities_secret,
        cometbft_pvc=args.cometbft_pvc,
        cometbft_storage_class=args.cometbft_storage_class,
        cometbft_snapshot=args.cometbft_snapshot,
        snapshot_project=args.snapshot_project,
        region=args.region,
        set_id=args.set_id,
        before=args.before,
        kind=args.kind,
        target=args.target,
        image=args.image,
        pg_storage_class=args.pg_storage_class,
        kube_api=args.kube_api,
        accept_stale_set=args.accept_stale_set,
        pg=args.pg,
        restore_jobs=args.restore_jobs,
        execute=args.execute,
        identities_out=args.identities_out,
    )
