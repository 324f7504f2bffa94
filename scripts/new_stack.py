"""Write a starting stack for one SV node on GKE or EKS, and its DR stack: the recommended production configuration.

    python scripts/new_stack.py --cloud gcp --stack sv-1 --node sv-1 --namespace sv --migration-id 4 \
        --region us-central1 --dr-region us-east4 --project my-project [--postgres in-cluster]
    make new-stack          (asks each missing answer)

Writes stacks/Pulumi.<stack>.yaml and stacks/Pulumi.<stack>-dr.yaml (engines/new_stack.py): production on
(`sv-backups:production: true`), snapshot sets every 4 hours, a DR region and DR stack. Each value only you know
is marked `# CHANGE:`; the files plan and pass the policy pack as written. Exit 0, or 2 with one line per problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engines import new_stack  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cloud", choices=new_stack.CLOUDS)
    parser.add_argument("--stack", help="stack name: the file is Pulumi.<stack>.yaml, its DR stack <stack>-dr")
    parser.add_argument("--node", help="SV node name (sv-backups:node.name)")
    parser.add_argument("--namespace", help="the SV node's Kubernetes namespace")
    parser.add_argument("--migration-id", help="the current migration id (synchronizer serial)")
    parser.add_argument("--region", help="the primary region (the cluster's)")
    parser.add_argument("--dr-region", help="the DR region")
    parser.add_argument("--postgres", choices=new_stack.POSTGRES_KINDS, help="participant and sequencer Postgres")
    parser.add_argument("--project", help="gcp: the project id")
    parser.add_argument("--cluster-name", help="aws: the EKS cluster")
    parser.add_argument("--dr-cluster-name", help="aws: the DR EKS cluster (default <cluster-name>-dr)")
    parser.add_argument(
        "--restore-role-arn", dest="restore_role_arns", action="append", help="aws: may read the identities secret"
    )
    parser.add_argument("--organization", help="Pulumi organization (default organization)")
    parser.add_argument("--image", help="the job image, pinned by digest (default: a placeholder marked CHANGE)")
    parser.add_argument("--dr-kube-context", help="the DR cluster's kubectl context (kubernetes:context)")
    parser.add_argument("--out", type=Path, default=REPO / "stacks", help="directory (default stacks/)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.add_argument("--no-input", action="store_true", help="never ask: a missing flag is an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = vars(build_parser().parse_args(argv))
    ask = None if options.pop("no_input") or not sys.stdin.isatty() else (lambda question: input(f"{question}: "))
    return new_stack.run(options, options.pop("out"), force=options.pop("force"), ask=ask)


if __name__ == "__main__":
    sys.exit(main())
