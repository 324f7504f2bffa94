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
