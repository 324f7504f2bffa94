"""`sv-backups:production`: a boolean, from YAML or as the engine hands it (text); anything else is refused with one
message naming the key and what is allowed."""

from __future__ import annotations

import pytest

from components.settings import load_settings
from tests.stackfiles import problems_of, raw_config


@pytest.mark.parametrize(("value", "expected"), [(None, False), (True, True), ("true", True), ("false", False)])
def test_production_is_read_as_a_boolean(value, expected):
    raw = raw_config("dev")
    raw.pop("sv-backups:production", None)
    if value is not None:
        raw["sv-backups:production"] = value
    assert load_settings(raw, stack="mine").production is expected


@pytest.mark.parametrize("value", ["yes", 1, "TRUE", ""])
def test_a_production_value_that_is_not_a_boolean(value):
    raw = {**raw_config("dev"), "sv-backups:production": value}
    assert problems_of(raw) == [f"sv-backups:production: {value!r} is not a boolean; allowed: true, false"]


def test_a_misspelt_production_key_is_named():
    raw = {**raw_config("dev"), "sv-backups:prodution": "true"}
    assert problems_of(raw) == ["sv-backups:prodution: unknown key; did you mean sv-backups:production?"]
