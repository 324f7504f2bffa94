"""argparse types for the jobs' command lines.

The jobs' parsers (durations, set ids, roles, selectors) raise ValueError with a message that names the value and
what is allowed; `from_parser` turns such a parser into an argparse type, so that argparse prints that message as
the usage error (exit 2) instead of its own "invalid value".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from rules.manifest import check_role, check_set_id, parse_moment
from rules.retention import parse_duration

T = TypeVar("T")


def from_parser(parse: Callable[[str], T]) -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # what argparse names in its own messages
    return convert


def parse_count(text: str) -> int:
    """A whole number of at least 1 (processes, parts, stacks at once)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def parse_role_url(text: str) -> tuple[str, str]:
    """ROLE=postgresql://USER@HOST:PORT: where one role's database is restored (failover's --pg)."""
    role, sep, url = text.partition("=")
    if not sep or not url:
        # Only the part before '=' is shown: the rest may hold a password.
        raise ValueError(f"expected ROLE=postgresql://USER@HOST:PORT, got {text.split('=')[0]!r}...")
    return check_role(role), url


count: Callable[[str], int] = from_parser(parse_count)
role_url: Callable[[str], tuple[str, str]] = from_parser(parse_role_url)
duration: Callable[[str], timedelta] = from_parser(parse_duration)
set_id: Callable[[str], str] = from_parser(check_set_id)
role: Callable[[str], str] = from_parser(check_role)
moment: Callable[[str], datetime] = from_parser(parse_moment)
