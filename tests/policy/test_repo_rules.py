"""`production-dr`: a production stack (policy config `requireDrStack`) declares a DR region (per-stack half, on
real plans) and has a DR stack in the repository (repository half, over stacks/ and over broken copies of it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from engines.policy_check import EnforcementLevel, evaluate
from policy.catalog import CONFIG_DIR
from policy.repo_rules import dr_stack_problems, production_stacks, requires_dr_stack

from . import helpers as h
from .conftest import REPO

PRODUCTION = {"production-dr": {"requireDrStack": True}}
LABEL = "svbackups-dr-region"


def test_the_shipped_production_stacks_each_have_a_dr_stack():
    stacks = production_stacks(REPO, CONFIG_DIR)
    assert sorted(stacks) == ["aws-prod", "prod", "prod-ch"]
    for stack in stacks:
        assert dr_stack_problems(stack, REPO) == [], stack


@pytest.mark.parametrize(
    ("config", "required"),
    [
        (PRODUCTION, True),
        ({"production-dr": {"requireDrStack": False}}, False),
        ({"production-dr": "mandatory"}, False),
        ({"production-dr": {"requireDrStack": True, "enforcementLevel": "disabled"}}, False),
        ({"all": "disabled", **PRODUCTION}, False),
        ({"all": "disabled", "production-dr": {"requireDrStack": True, "enforcementLevel": "advisory"}}, True),
        ({}, False),
    ],
)
def test_which_policy_configs_make_a_stack_production(config, required):
    assert requires_dr_stack(config) is required


# --- the repository half, on a copy of the repository's stack files broken one way at a time ----------------


@pytest.fixture
def repo(tmp_path) -> Path:
    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    shutil.copytree(REPO / "stacks", tmp_path / "stacks")
    return tmp_path


def _edit(repo: Path, stack: str, change) -> None:
    path = repo / "stacks" / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text())
    change(document["config"])
    path.write_text(yaml.safe_dump(document))


def _set_dr(key, value):
    return lambda config: config["sv-backups:dr"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("stack", "breaks", "expected"),
    [
        ("prod", lambda repo: (repo / "stacks" / "Pulumi.prod-dr.yaml").unlink(), "no stack file in stacks/ is the DR"),
        (
            "prod-ch",
            lambda repo: _edit(repo, "prod-ch-dr", lambda c: c.pop("sv-backups:role")),
            "no stack file in stacks/ is the DR stack",
        ),
        (
            "prod",
            lambda repo: _edit(repo, "prod-dr", _set_dr("primaryStack", "sv-operator/other-project/prod")),
            "names a stack prod of another project",
        ),
        (
            "aws-prod",
            lambda repo: _edit(repo, "aws-prod-dr", _set_dr("primaryStack", "sv-operator/sv-backups/aws-dev")),
            "is the DR stack of this production stack",
        ),
        ("prod", lambda repo: _edit(repo, "prod", lambda c: c["sv-backups:dr"].pop("region")), "dr.region is missing"),
        (
            "prod",
            lambda repo: _edit(repo, "prod-dr", lambda c: c.__setitem__("gcp:region", "us-west1")),
            "is deployed in 'us-west1' (gcp:region), not in its primary's DR region 'us-east4'",
        ),
        (
            "aws-prod",
            lambda repo: _edit(repo, "aws-prod", _set_dr("region", "eu-west-1")),
            "not in its primary's DR region 'eu-west-1'",
        ),
        (
            "prod",
            lambda repo: _edit(repo, "prod-dr", lambda c: c.__setitem__("sv-backups:cloud", "aws")),
            "is on cloud 'aws', its primary on 'gcp'",
        ),
        ("prod-dr", lambda repo: None, "a DR stack (sv-backups:role: dr) is marked production"),
        ("prod-eu", lambda repo: None, "stacks/Pulumi.prod-eu.yaml: no such stack file"),
    ],
)
def test_a_production_stack_without_its_dr_stack_or_dr_region_fails(repo, stack, breaks, expected):
    assert stack == "prod-dr" or stack == "prod-eu" or dr_stack_problems(stack, repo) == []
    breaks(repo)
    problems = dr_stack_problems(stack, repo)
    assert any(expected in p for p in problems), problems
    assert all("Fix:" in p for p in problems), problems


def test_an_unreadable_stack_file_is_reported_not_raised(repo):
    (repo / "stacks" / "Pulumi.prod-dr.yaml").write_text("config: [unclosed\n")
    (problem,) = dr_stack_problems("prod", repo)
    assert "is the DR stack of this production stack" in problem


def test_the_offline_check_runs_the_repository_half_for_the_plans_stack(plan_copy, repo):
    plan = h.pin_images(plan_copy("prod"))
    (repo / "stacks" / "Pulumi.prod-dr.yaml").unlink()
    [verdict] = [v for v in evaluate(plan, PRODUCTION, repo=repo) if v.policy.name == "production-dr"]
    assert verdict.level == EnforcementLevel.MANDATORY and verdict.status == "FAIL"
    assert [v.resource for v in verdict.violations] == ["repository"]
    # without requireDrStack (dev), no DR stack is asked for
    assert not [v for v in evaluate(plan, {}, repo=repo) if v.violations]
    # the shipped policy config of prod sets it: the CLI path (policy_check.py PLAN) picks it up
    assert requires_dr_stack(json.loads((CONFIG_DIR / "prod.json").read_text()))


# --- the per-stack half, on the shipped plans -------------------------------------------------------------


def _primary_bucket(plan: dict) -> dict:
    names = {"prod": "sv-prod-project-sv-1-backups", "prod-ch": "sv-ch-project-sv-ch-backups"}
    if plan["stack"] == "aws-prod":
        return h.one(plan, "aws:s3/bucket:Bucket", lambda r: "svbackups-replica-of" not in r["inputs"].get("tags", {}))
    return h.one(plan, "gcp:storage/bucket:Bucket", lambda r: r["inputs"]["name"] == names[plan["stack"]])


def _marks(plan: dict) -> dict:
    bucket = _primary_bucket(plan)["inputs"]
    return bucket["tags"] if plan["stack"] == "aws-prod" else bucket["labels"]


def _drop_label(plan):
    _marks(plan).pop(LABEL)


def _label(value):
    return lambda plan: _marks(plan).__setitem__(LABEL, value)


# (rule, stack, policy config, mutation, text a message must contain): breaks exactly that rule.
CONFIGURED_CASES = [
    ("production-dr", "prod", PRODUCTION, _drop_label, "names no DR region (label/tag svbackups-dr-region)"),
    ("production-dr", "prod", PRODUCTION, _label("us-central1"), "its DR region us-central1 is its own region"),
    ("production-dr", "prod", PRODUCTION, _label("europe-west1"), "names DR region europe-west1, but none"),
    # (on paired buckets a wrong label is also backup-bucket-survives-region-loss's: the DR bucket is elsewhere)
    ("production-dr", "prod-ch", PRODUCTION, _drop_label, "names no DR region"),
    ("production-dr", "aws-prod", PRODUCTION, _drop_label, "names no DR region"),
    ("production-dr", "aws-prod", PRODUCTION, _label("eu-west-1"), "names DR region eu-west-1, but none"),
    ("production-dr", "prod-dr", PRODUCTION, lambda plan: None, "This is a DR stack"),
]


@pytest.mark.parametrize(
    ("rule", "stack", "config", "mutate", "expected"),
    CONFIGURED_CASES,
    ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CONFIGURED_CASES)],
)
def test_breaking_the_production_rule_fails_that_rule_only(plan_copy, rule, stack, config, mutate, expected):
    plan = h.pin_images(plan_copy(stack))
    assert not [v for v in evaluate(plan, config) if v.violations and stack != "prod-dr"]
    mutate(plan)
    found = {v.policy.name: [x.message for x in v.violations] for v in evaluate(plan, config) if v.violations}
    assert set(found) == {rule}, found
    assert any(expected in message for message in found[rule]), found[rule]
    assert all("Fix:" in message for message in found[rule]), found[rule]


@pytest.mark.parametrize("stack", ["prod", "prod-ch", "aws-prod"])
def test_without_require_dr_stack_nothing_is_asked(plan_copy, stack):
    plan = h.pin_images(plan_copy(stack))
    _drop_label(plan)
    assert not [v for v in evaluate(plan, {}) if v.violations]


def test_the_production_key_alone_makes_a_stack_need_a_dr_stack(tmp_path):
    """No policy config file: `sv-backups:production: true` on a primary is enough (policy/production.py); on its
    DR stack it asks for nothing more."""
    from engines import new_stack
    from tests.checkout import make_checkout

    root = make_checkout(tmp_path / "repo")
    answers = new_stack.NewStack(
        cloud="gcp", stack="mine", node="node-b", namespace="sv", migration_id=0,
        region="us-central1", dr_region="us-east4", project="my-project-2",
    )  # fmt: skip
    new_stack.write(answers, root / "stacks")
    empty = tmp_path / "no-policy-config"
    empty.mkdir()
    assert production_stacks(root, empty) == ["mine"]
    assert dr_stack_problems("mine", root) == []
    (root / "stacks" / "Pulumi.mine-dr.yaml").unlink()
    [problem] = dr_stack_problems("mine", root)
    assert "no stack file in stacks/ is the DR stack of this production stack" in problem
    _edit(root, "mine", lambda config: config.pop("sv-backups:production"))
    assert production_stacks(root, empty) == []
