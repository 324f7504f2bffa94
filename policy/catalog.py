"""Every rule of the pack, in the order reviewers read them, and the pack's identity."""

from __future__ import annotations

from pathlib import Path

from pulumi_policy import Policy

from . import cloudsql_iam_rules, gcp_replication_rules, gcp_rules, kubernetes_rules, stack_rules

PACK_NAME = "sv-backups"
PACK_DIR = Path(__file__).resolve().parent
# Per-stack enforcement: `pulumi preview --policy-pack policy --policy-pack-config policy/config/<stack>.json`;
# scripts/policy_check.py picks the same file for the plan's stack.
CONFIG_DIR = PACK_DIR / "config"

POLICIES: list[Policy] = [
    *kubernetes_rules.POLICIES,
    *gcp_rules.POLICIES,
    *stack_rules.POLICIES,
    *cloudsql_iam_rules.POLICIES,
    *gcp_replication_rules.POLICIES,
]


def pack_version() -> str:
    """The version in PulumiPolicy.yaml (what the CLI reports), read without a YAML dependency."""
    for line in (PACK_DIR / "PulumiPolicy.yaml").read_text().splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    return "0.0.0"
