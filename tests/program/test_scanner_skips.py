"""The scanner's skip annotations (components/scanner_skips.py) on the shipped plans, without running the scanner
(tests/program/test_checkov.py does, in the slow tier): a skip is written only where its condition holds on the
CronJob, every skip carries its reason, and nothing else is written."""

from __future__ import annotations

import pytest

from components.scanner_skips import TOKEN_REASONS
from rules.naming import COMPONENT_LABEL


def _skips(plan) -> dict[str, set[str]]:
    found = {}
    for manifest in plan.manifests.values():
        if manifest["kind"] != "CronJob":
            continue
        annotations = manifest["metadata"].get("annotations") or {}
        checks = set()
        for key, value in annotations.items():
            assert key.startswith("checkov.io/skip"), key
            check, reason = value.split("=", 1)
            assert len(reason) > 20, value
            checks.add(check)
        found[manifest["metadata"]["labels"][COMPONENT_LABEL]] = checks
    return found


def test_a_digest_pinned_stack_skips_only_the_token_and_password_checks(shipped_plan):
    skips = _skips(shipped_plan("prod"))
    assert {c for c, checks in skips.items() if "CKV_K8S_38" in checks} == set(TOKEN_REASONS)
    # No password env var is left (passwords are mounted files, jobs/pgpass.py): CKV_K8S_35 has nothing to skip.
    assert not any("CKV_K8S_35" in checks for checks in skips.values())
    assert not any({"CKV_K8S_43", "CKV_K8S_15"} & checks for checks in skips.values())
    assert skips["history-audit"] == set() and skips["drill-postgres"] == set()


@pytest.mark.parametrize("stack", ["dev", "aws-dev"])
def test_a_stack_on_a_tag_skips_the_digest_checks_on_every_cron_job(shipped_plan, stack):
    skips = _skips(shipped_plan(stack))
    assert all({"CKV_K8S_43", "CKV_K8S_15"} <= checks for checks in skips.values()), skips
