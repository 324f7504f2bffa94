"""Run every rule of the CrossGuard policy pack (policy/) on an offline plan, without the Pulumi CLI.

    python scripts/policy_check.py PLAN.json [--config policy/config/<stack>.json]

PLAN.json is what `scripts/plan.py` writes. Each resource goes through every ResourceValidationPolicy and the
whole stack through every StackValidationPolicy, built exactly as the pack's gRPC server builds them for the
CLI (props wrapped in CrossGuard's unknown-checking proxy, the policy's config with schema defaults filled in),
so a verdict here is the verdict `pulumi preview --policy-pack policy` gives on the same resources.

Enforcement levels and rule properties come from a policy config file in the CLI's `--policy-pack-config`
format; without --config, `policy/config/<stack>.json` for the plan's stack is used when it exists. Rules that
need more than one stack run their repository half here too (policy/repo_rules.py: with
`production-dr.requireDrStack`, a DR stack of the plan's stack among stacks/).
Exit 0 when no mandatory rule fails, 3 when one does, 2 on an unreadable plan or invalid config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engines import policy_check  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", type=Path, help="plan.json written by scripts/plan.py")
    parser.add_argument("--config", type=Path, help="policy config JSON (pulumi --policy-pack-config format)")
    parser.add_argument(
        "--github-annotations", action="store_true", help="also print GitHub Actions ::error/::warning commands"
    )
    options = parser.parse_args(argv)
    return policy_check.check_plan_file(
        plan=options.plan, config=options.config, with_github_annotations=options.github_annotations
    )


if __name__ == "__main__":
    sys.exit(main())
