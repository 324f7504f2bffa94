"""The policy pack process: what `pulumi preview --policy-pack policy` starts.

The CLI runs `python -u -m pulumi.policy <engine address> .` in this directory; that puts this directory (not
the repository) on sys.path and runs this file. The rules import the program's own schedule and retention
logic (rules/schedules.py, rules/retention.py) instead of a copy that could drift, so the one line
below adds the repository root: the pack runs from a checkout of this repository.

Production guard-rails: the CLI starts this process with the stack's config in its environment (PULUMI_CONFIG, the
same the program reads). A stack with `sv-backups:production: true` gets the production policy config
(policy/production.py) as the pack's initial config, which the CLI applies after the rules' defaults and before
any `--policy-pack-config`; without the key, the rules' own levels.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi.runtime.config import get_config_env
from pulumi_policy import EnforcementLevel, PolicyPack

from policy.catalog import PACK_NAME, POLICIES
from policy.production import initial_config

PolicyPack(
    name=PACK_NAME,
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    initial_config=initial_config(get_config_env()),
    description="The SV backup contract: 4-hourly ordered backups, immutable history, least privilege, alerts.",
)
