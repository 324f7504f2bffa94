"""The jobs' argparse types report the parser's own message as the usage error."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from jobs import cli_types


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="job")
    parser.add_argument("--every", type=cli_types.duration)
    parser.add_argument("--set-id", type=cli_types.set_id)
    parser.add_argument("--role", type=cli_types.role)
    return parser


def test_good_values_are_parsed():
    args = _parser().parse_args(["--every", "90m", "--set-id", "20270101T000000Z-abc123", "--role", "participant"])
    assert (args.every, args.set_id, args.role) == (timedelta(minutes=90), "20270101T000000Z-abc123", "participant")


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--every", "soon", "'soon' is not a duration"), ("--set-id", "../x", "../x"), ("--role", "Apps!", "Apps!")],
)
def test_a_bad_value_is_refused_with_the_parsers_message(flag, value, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args([flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "invalid" not in err  # the parser's words, not argparse's generic "invalid value"

