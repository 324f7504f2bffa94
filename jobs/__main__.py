"""`python -m jobs <command>`: the entrypoint of the job image.

Each module in COMMAND_MODULES exposes `register(subparsers)`, adding its subcommands with
`set_defaults(func=...)`; `func(args)` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = (
    "jobs.pgsets_cli",
    "jobs.history_cli",
    "jobs.identities",
    "jobs.cometbft",
    "jobs.replica_cli",
    "jobs.drill_cli",
    "jobs.drill_identities",
    "jobs.drill_cometbft",
    "jobs.drill_snapshots",
    "jobs.drill_snapshots_probe",
    "jobs.pgsnap_cli",
)


def build_parser() -> argparse.ArgumentParser:
    # Installed with `pip install '.[jobs]'` the same commands run as `sv-backups-jobs`; --help names what was typed.
    prog = "sv-backups-jobs" if os.path.basename(sys.argv[0]) == "sv-backups-jobs" else "python -m jobs"
    parser = argparse.ArgumentParser(prog=prog, description="sv-backups jobs (see docs/jobs.md)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    # A flag renamed on one side (program or job) must fail, not match as an abbreviation of a longer one.
    for command in subparsers.choices.values():
        command.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
