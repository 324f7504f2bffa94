"""Read shipped stack files the way the offline plan does (secure values become '[secret]')."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

STACKS = Path(__file__).resolve().parent.parent / "stacks"


def _strip_secure(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return "[secret]"
        return {k: _strip_secure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secure(v) for v in value]
    return value


def stack_names() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS.glob("Pulumi.*.yaml"))


def raw_config(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    return copy.deepcopy(_strip_secure(document["config"]))


def problems_of(raw: dict[str, Any]) -> list[str]:
    """The problems `load_settings` refuses `raw` with (one message each); fails the test if it accepts it."""
    import pytest

    from components.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as error:
        load_settings(raw, stack="test")
    return error.value.problems


def dump_only_config(stack: str) -> dict[str, Any]:
    """`stack`'s config as it was before snapshot sets (issue 17): no sv-backups:snapshots, the dump sets 4-hourly.
    The production examples (prod, aws-prod) run snapshot sets beside weekly dumps; tests of the dump sets' own
    rules (the 4-hour bound, the cadence of a 4-hourly schedule) start from this."""
    raw = raw_config(stack)
    raw.pop("sv-backups:snapshots", None)
    raw.setdefault("sv-backups:schedule", {})["postgres"] = "0 */4 * * *"
    return raw


class Example:
    """Values of a shipped example stack, read from its file. Tests that plan an example assert these instead of
    literals, so that an operator who edits the example (its project, instance names, databases) keeps a
    passing suite."""

    def __init__(self, stack: str):
        self.stack = stack
        self.config = raw_config(stack)

    @property
    def project(self) -> str:
        return self.config["gcp:project"]

    @property
    def node(self) -> str:
        return self.config["sv-backups:node"]["name"]

    def instance(self, role: str) -> str:
        return self.config["sv-backups:postgres"][role]["instance"]

    def database(self, role: str) -> str:
        [database] = self.config["sv-backups:postgres"][role]["databases"]
        return database

    @property
    def participant_instance(self) -> str:
        return self.instance("participant")

    @property
    def sequencer_instance(self) -> str:
        return self.instance("sequencer")

    @property
    def participant_db(self) -> str:
        return self.database("participant")

    @property
    def sequencer_db(self) -> str:
        return self.database("sequencer")

    @property
    def cometbft_pvc(self) -> str:
        return self.config["sv-backups:cometbft"]["pvc"]
