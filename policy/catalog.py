"""Every rule of the pack, in the order reviewers read them, and the pack's identity."""

from __future__ import annotations

from pathlib import Path

from pulumi_policy import Policy

from . import (
    admission_rules,
    aws_cloud,
    aws_iam_rules,
    aws_rules,
    aws_s3_rules,
    cloudsql_iam_rules,
    coverage_rules,
    dr_rules,
    drill_rules,
    gcp_replication_rules,
    gcp_rules,
    grant_location_rules,
    key_rules,
    kubernetes_rules,
    snapshot_rules,
    stack_rules,
)
from .clouds import Cloud

PACK_NAME = "sv-backups"
PACK_DIR = Path(__file__).resolve().parent
# Per-stack enforcement: `pulumi preview --policy-pack policy --policy-pack-config policy/config/<stack>.json`;
# engines/policy_check.py picks the same file for the plan's stack.
CONFIG_DIR = PACK_DIR / "config"

# The clouds the cloud-neutral rules (coverage_rules.py) know: each stack is held to the profiles of the clouds
# it is on. A rule about one cloud's resources only applies to that cloud's resource types.
CLOUDS: tuple[Cloud, ...] = (stack_rules.GCP, aws_cloud.AWS)

POLICIES: list[Policy] = [
    *kubernetes_rules.POLICIES,
    *gcp_rules.POLICIES,
    *key_rules.POLICIES,
    *stack_rules.policies(CLOUDS),
    *aws_rules.POLICIES,
    *aws_s3_rules.POLICIES,
    *aws_iam_rules.POLICIES,
    *coverage_rules.policies(CLOUDS),
    *cloudsql_iam_rules.POLICIES,
    *gcp_replication_rules.POLICIES,
    *dr_rules.POLICIES,
    *drill_rules.POLICIES,
    *snapshot_rules.POLICIES,
    *admission_rules.POLICIES,
    *grant_location_rules.POLICIES,
]


def pack_version() -> str:
    """The version in PulumiPolicy.yaml (what the CLI reports), read without a YAML dependency."""
    for line in (PACK_DIR / "PulumiPolicy.yaml").read_text().splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    return "0.0.0"
