"""The repository half of `production-dr`: a production stack has a DR stack, in the repository's stacks/.

CrossGuard runs a pack on one stack at a time and shows it that stack's resources only, so "some other stack
stands in for this one" cannot be a pack rule. It is a rule over the repository instead, run where the whole
repository is at hand: by engines/policy_check.py (and so `make plan` and every pull request's offline policy
job) on each plan whose policy config sets `production-dr.requireDrStack`, and by tests/policy/test_repo_rules.py
over every shipped stack. The per-stack half (policy/dr_rules.py) checks what one stack can see: its bucket names
a DR region that holds a copy.

A stack S of project P (Pulumi.yaml `name`) is production when its stack file says `sv-backups:production: true`
(policy/production.py: the production config sets it for a primary) or its policy config (policy/config/S.json)
sets `requireDrStack: true` on `production-dr`. It then needs, in the stack config directory (Pulumi.yaml
`stackConfigDir`):
- `sv-backups:dr.region` in stacks/Pulumi.S.yaml, and S is a primary (not `sv-backups:role: dr`);
- a stack file with `sv-backups:role: dr` and `sv-backups:dr.primaryStack: <org>/P/S`, on the same cloud
  (`sv-backups:cloud`) and deployed in S's DR region (its `gcp:region` or `aws:region`).
Reading only YAML and JSON, never the program: a broken stack is reported, not a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .production import is_production, layered, production_config

RULE = "production-dr"
REQUIRE_DR_STACK = "requireDrStack"
PROJECT = "sv-backups"  # the config namespace of the program's own keys


@dataclass(frozen=True)
class StackFile:
    name: str
    path: Path
    config: dict[str, Any]

    def get(self, key: str, *path: str) -> Any:
        value: Any = self.config.get(key)
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    @property
    def role(self) -> str:
        return self.get(f"{PROJECT}:role") or "primary"

    @property
    def cloud(self) -> Any:
        return self.get(f"{PROJECT}:cloud")

    @property
    def region(self) -> Any:
        """The provider region: where the stack is deployed."""
        return self.get(f"{self.cloud}:region") if isinstance(self.cloud, str) else None


def project_layout(repo: Path) -> tuple[str, Path]:
    """The project name and its stack config directory, from Pulumi.yaml."""
    document = yaml.safe_load((repo / "Pulumi.yaml").read_text()) or {}
    return str(document.get("name")), repo / str(document.get("stackConfigDir") or ".")


def stack_files(stacks_dir: Path) -> dict[str, StackFile]:
    """Every Pulumi.<stack>.yaml of the directory, by stack name. A file that is not a YAML map with a `config:`
    map is kept with an empty config (and so has no DR region)."""
    found = {}
    for path in sorted(stacks_dir.glob("Pulumi.*.yaml")):
        name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        try:
            # libyaml's parser under the safe constructor (the pure-Python parser is 9x slower, and every stack
            # file is read on every run of the pack).
            document = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            document = None
        config = document.get("config") if isinstance(document, dict) else None
        found[name] = StackFile(name, path, config if isinstance(config, dict) else {})
    return found


def requires_dr_stack(config: dict[str, Any] | None) -> bool:
    """A policy config (--policy-pack-config form) that makes the stack production: `production-dr` set to an
    object with `requireDrStack: true`, and neither it nor `all` disabled."""
    if not isinstance(config, dict):
        return False
    entry = config.get(RULE)
    if not isinstance(entry, dict) or entry.get(REQUIRE_DR_STACK) is not True:
        return False
    level = entry.get("enforcementLevel", config.get("all"))
    return level != "disabled"


def production_stacks(repo: Path, config_dir: Path) -> list[str]:
    """The stacks of the repository that must have a DR stack: their production config (`sv-backups:production:
    true` on a primary) with their policy config file, if any, over it."""
    _, stacks_dir = project_layout(repo)
    names = []
    for name, stack in stack_files(stacks_dir).items():
        try:
            base = production_config(stack.role or "primary") if is_production(stack.config) else None
        except ValueError:
            base = None  # refused by the program's settings, with its own message
        path = config_dir / f"{name}.json"
        config = layered(base, json.loads(path.read_text()) if path.is_file() else None)
        if requires_dr_stack(config):
            names.append(name)
    return names


def dr_stack_problems(stack: str, repo: Path) -> list[str]:
    """Why the repository does not show a DR stack for production stack `stack` (empty: it does). Each problem
    names the file and key, and ends with the fix."""
    project, stacks_dir = project_layout(repo)
    files = stack_files(stacks_dir)
    where = f"{stacks_dir.name}/Pulumi.{stack}.yaml"
    primary = files.get(stack)
    if primary is None:
        return [
            f"{where}: no such stack file, so nothing shows this production stack's DR region or DR stack. Fix: "
            f"plan a stack of the repository, or set {REQUIRE_DR_STACK} only in its own policy config."
        ]
    if primary.role == "dr":
        return [
            f"{where}: a DR stack (sv-backups:role: dr) is marked production ({RULE}.{REQUIRE_DR_STACK}); a DR stack "
            f"stands in for its primary and has no DR stack of its own. Fix: set {REQUIRE_DR_STACK} in the primary's "
            f"policy config only."
        ]
    problems = []
    dr_region = primary.get(f"{PROJECT}:dr", "region")
    if not isinstance(dr_region, str) or not dr_region:
        problems.append(
            f"{where}: {PROJECT}:dr.region is missing, so this production stack copies its backups to no second "
            f"region. Fix: set {PROJECT}:dr.region to the region its DR stack runs in."
        )
    wanted = f"{project}/{stack}"
    standing_in = []
    elsewhere = []
    for other in files.values():
        if other.name == stack or other.role != "dr":
            continue
        reference = other.get(f"{PROJECT}:dr", "primaryStack")
        if not isinstance(reference, str):
            continue
        parts = reference.split("/")
        if len(parts) == 3 and "/".join(parts[1:]) == wanted:
            standing_in.append(other)
        elif parts[-1] == stack:
            elsewhere.append(f"{stacks_dir.name}/{other.path.name} ({reference})")
    if not standing_in:
        hint = f"; {', '.join(elsewhere)} names a stack {stack} of another project" if elsewhere else ""
        problems.append(
            f"{where}: no stack file in {stacks_dir.name}/ is the DR stack of this production stack (sv-backups:role: "
            f"dr with {PROJECT}:dr.primaryStack <org>/{wanted}){hint}, so nothing stands by in the DR region for the "
            f"day the primary region is gone. Fix: add {stacks_dir.name}/Pulumi.{stack}-dr.yaml (README 'Disaster "
            f"recovery'; stacks/Pulumi.prod-dr.yaml is an example)."
        )
    for dr in standing_in:
        dr_where = f"{stacks_dir.name}/{dr.path.name}"
        if dr.cloud != primary.cloud:
            problems.append(
                f"{dr_where}: the DR stack of {stack} is on cloud {dr.cloud!r}, its primary on {primary.cloud!r}: it "
                f"cannot read the primary's copies. Fix: set {PROJECT}:cloud: {primary.cloud}."
            )
        elif isinstance(dr_region, str) and dr.region != dr_region:
            problems.append(
                f"{dr_where}: the DR stack of {stack} is deployed in {dr.region!r} ({dr.cloud}:region), not in its "
                f"primary's DR region {dr_region!r} ({PROJECT}:dr.region), where the copies are. Fix: set "
                f"{dr.cloud}:region: {dr_region}."
            )
    return problems
