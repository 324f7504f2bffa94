"""The production policy config: what a stack that says `sv-backups:production: true` is held to, with no file.

One copy, read by both ways the pack runs: the pack process under `pulumi preview --policy-pack policy` (policy/
__main__.py reads the stack config the CLI hands it and gives this as the pack's initial config, which the CLI
applies after the rules' defaults and before `--policy-pack-config`), and the offline runner
(engines/policy_check.py), which layers a stack's policy/config/<stack>.json or a given config over it the same
way. A stack without the key keeps the rules' own levels, where the production-only rules are advisory (the image
pin, key rotation) or off (the DR stack requirement): that is the opt-out, and the runner says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import EnforcementLevel

from rules.config_keys import PRODUCTION_KEY, production_flag

ROLE_KEY = "sv-backups:role"

# What policy/config/prod.json held for the production examples, for both clouds (a rule about one cloud's
# resources never sees the other's: bucket-immutability is GCS, s3-versioning-enabled S3).
_PRODUCTION_RULES: dict[str, Any] = {
    # An alert that notifies nobody is a production failure; elsewhere a warning (issue 21: one rule, decided once).
    "alert-notification-channels": "mandatory",
    "job-image-pinned-by-digest": "mandatory",
    "kms-key-rotation": "mandatory",
    "bucket-immutability": {"minSoftDeleteDays": 30},
    "s3-versioning-enabled": {"minSoftDeleteDays": 30},
}
# A production primary must have a DR stack; a DR stack stands in for its primary and has none of its own
# (policy/repo_rules.py refuses a DR stack marked so).
_PRIMARY_ONLY: dict[str, Any] = {"production-dr": {"requireDrStack": True}}

NOT_PRODUCTION = (
    f"not a production stack: production rules advisory; set {PRODUCTION_KEY}: true "
    "(then: image pinned by digest, KMS rotation, 30-day soft delete, alerts that notify someone and a DR stack "
    "are mandatory)"
)


def production_config(role: str = "primary") -> dict[str, Any]:
    """The production policy config (--policy-pack-config form) of a stack of `role` (primary | dr)."""
    config = {name: dict(entry) if isinstance(entry, dict) else entry for name, entry in _PRODUCTION_RULES.items()}
    if role != "dr":
        config.update({name: dict(entry) for name, entry in _PRIMARY_ONLY.items()})
    return config


def is_production(stack_config: Mapping[str, Any]) -> bool:
    """Whether a stack config (full key -> value, as a stack file or the engine holds it) says it is production.
    Raises ValueError for a value that is not a boolean."""
    return production_flag(stack_config.get(PRODUCTION_KEY))


def stack_role(stack_config: Mapping[str, Any]) -> str:
    role = stack_config.get(ROLE_KEY)
    return role if isinstance(role, str) and role else "primary"


def layered(base: Mapping[str, Any] | None, over: Mapping[str, Any] | None) -> dict[str, Any]:
    """`over` applied on top of `base`, both in --policy-pack-config form, as the CLI applies a given config over
    the pack's initial one: a rule's level and properties from `over` win, its other properties stay; `all` in
    `over` sets every rule's level, then its own entries."""
    merged: dict[str, Any] = {
        name: dict(entry) if isinstance(entry, dict) else entry for name, entry in (base or {}).items()
    }
    over = dict(over or {})
    if "all" in over:
        # `all` resets every level the base set, as it does the rules' own; the base's properties stay.
        level = over["all"]
        merged = {
            name: {k: v for k, v in entry.items() if k != "enforcementLevel"} if isinstance(entry, dict) else level
            for name, entry in merged.items()
        }
        merged["all"] = level
    for name, entry in over.items():
        if name == "all":
            continue
        old = merged.get(name)
        if isinstance(entry, dict):
            merged[name] = {**(old if isinstance(old, dict) else {}), **entry}
            if isinstance(old, str) and "enforcementLevel" not in entry:
                merged[name]["enforcementLevel"] = old
        elif isinstance(old, dict):
            merged[name] = {**old, "enforcementLevel": entry}
        else:
            merged[name] = entry
    return merged


def initial_config(stack_config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pack's initial config (PolicyPack's `initial_config`: levels as EnforcementLevel) for the stack whose
    config (the engine's: full key -> text) is `stack_config`: the production config when it says it is
    production, else none. A value that is not a boolean stops the pack with the message that names it (the
    program refuses the same value on `pulumi up`)."""
    if not is_production(stack_config):
        return None

    def level(entry: Any) -> Any:
        if isinstance(entry, str):
            return EnforcementLevel(entry)
        if "enforcementLevel" in entry:
            return {**entry, "enforcementLevel": EnforcementLevel(entry["enforcementLevel"])}
        return entry

    return {name: level(entry) for name, entry in production_config(stack_role(stack_config)).items()}
