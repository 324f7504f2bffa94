"""Enforcement levels and rule settings per stack (policy/config/<stack>.json), and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pulumi_policy import EnforcementLevel

from engines.policy_check import PolicyConfigError, evaluate, resolve_config, run_policy_checks
from policy.catalog import CONFIG_DIR, POLICIES

from . import helpers as h
from .conftest import REPO, STACKS


def _break_schedule(plan: dict) -> dict:
    h.cron_job(plan, "postgres")["inputs"]["spec"]["schedule"] = "0 */6 * * *"
    return plan


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.name)
def test_shipped_policy_configs_are_valid_and_belong_to_a_stack(path):
    assert path.stem in STACKS
    resolve_config(json.loads(path.read_text()))


def test_levels_and_properties_from_the_rules_by_default():
    resolved = resolve_config(None)
    assert [name for name in resolved] == [p.name for p in POLICIES]
    assert resolved["backup-schedule-max-gap"] == (EnforcementLevel.MANDATORY, {"maxGapHours": 4})
    assert resolved["kms-key-rotation"] == (EnforcementLevel.ADVISORY, {"maxRotationDays": 90})


def test_all_then_per_rule_as_the_cli_reconciles():
    resolved = resolve_config({"all": "advisory", "bucket-cmek": {"enforcementLevel": "mandatory"}})
    assert resolved["bucket-cmek"][0] == EnforcementLevel.MANDATORY
    assert resolved["backup-schedule-max-gap"][0] == EnforcementLevel.ADVISORY


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"backup-schedule-gap": "advisory"}, "unknown rule(s) backup-schedule-gap"),
        ({"bucket-cmek": "off"}, "'off' is not one of"),
        ({"backup-schedule-max-gap": {"maxGapHours": 6}}, "violates maximum 4"),
        ({"backup-schedule-max-gap": {"maxGapHour": 3}}, "has no property 'maxGapHour'"),
        ({"bucket-immutability": {"minSoftDeleteDays": "7"}}, "is not a number"),
        ({"bucket-immutability": {"minSoftDeleteDays": 3}}, "violates minimum 7"),
    ],
)
def test_invalid_config_is_refused(config, complaint):
    with pytest.raises(PolicyConfigError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(config)


def test_a_mandatory_rule_made_advisory_no_longer_blocks(plan_copy):
    plan = _break_schedule(plan_copy("dev"))
    assert run_policy_checks(plan)[1] == 3
    text, code = run_policy_checks(plan, {"backup-schedule-max-gap": "advisory"})
    assert code == 0
    assert "WARN advisory  backup-schedule-max-gap" in text


def test_a_disabled_rule_does_not_run(plan_copy):
    plan = _break_schedule(plan_copy("dev"))
    verdict = next(
        v for v in evaluate(plan, {"backup-schedule-max-gap": "disabled"}) if v.policy.name == "backup-schedule-max-gap"
    )
    assert verdict.status == "OFF" and verdict.violations == []


def test_rule_properties_reach_the_rule(plan_copy):
    plan = plan_copy("dev")
    assert run_policy_checks(plan, {"backup-schedule-max-gap": {"maxGapHours": 2}})[1] == 3
    text, code = run_policy_checks(plan, {"bucket-immutability": {"minSoftDeleteDays": 60}})
    assert code == 3 and "at least 60 days" in text


def test_the_stack_file_is_used_when_no_config_is_given(plan_copy):
    plan = plan_copy("dev")
    text, _code = run_policy_checks(plan)
    assert "config: policy/config/dev.json" in text
    assert "OFF  disabled  job-image-pinned-by-digest" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "policy_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_command_line_exit_codes(plan_copy, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(plan_copy("dev")))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_break_schedule(plan_copy("dev"))))
    relaxed = tmp_path / "relaxed.json"
    relaxed.write_text(json.dumps({"backup-schedule-max-gap": "advisory"}))
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"backup-schedule": "advisory"}))

    assert _cli(str(good)).returncode == 0
    failed = _cli(str(bad), "--github-annotations")
    assert failed.returncode == 3
    assert "FAIL mandatory backup-schedule-max-gap" in failed.stdout
    (annotation,) = [line for line in failed.stdout.splitlines() if line.startswith("::")]
    assert annotation.startswith(
        "::error title=dev%3A backup-schedule-max-gap (mandatory)::[kubernetes:batch/v1:CronJob"
    )
    assert _cli(str(bad), "--config", str(relaxed)).returncode == 0
    refused = _cli(str(good), "--config", str(typo))
    assert refused.returncode == 2 and "unknown rule(s) backup-schedule" in refused.stderr
    assert _cli(str(tmp_path / "missing.json")).returncode == 2
