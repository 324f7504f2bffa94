"""The pack on a DABFT stack (stacks/Pulumi.dabft-dev.yaml): no CometBFT CronJob, class or drill is required when
the plan's Postgres CronJob backs up the canton-bft role; a CometBFT stack that lost its snapshot job still fails."""

from __future__ import annotations

import pytest

from engines.policy_check import run_policy_checks
from policy.props import is_dabft_stack, required_backup_kinds
from policy.rule import StackResource

from . import helpers as h
from .test_rules import violated

SNAPSHOT_CLASS = "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"


def _stack_resources(plan: dict) -> list[StackResource]:
    return [StackResource(r["type"], r["name"], r["urn"], r["inputs"]) for r in plan["resources"]]


def test_dabft_stack_passes_every_rule(plans, plan_copy):
    text, code = run_policy_checks(plans["dabft-dev"])
    assert code == 0, text
    assert violated(h.pin_images(plan_copy("dabft-dev"))) == {}


def test_dabft_is_read_from_the_canton_bft_step_not_the_stack_name(plan_copy):
    plan = plan_copy("dabft-dev")
    assert is_dabft_stack(_stack_resources(plan))
    assert required_backup_kinds(_stack_resources(plan)) == ("postgres", "identities")
    plan["stack"] = "dev"  # the name is not what counts
    assert is_dabft_stack(_stack_resources(plan))
    assert not is_dabft_stack(_stack_resources(plan_copy("dev")))


def test_dabft_stack_without_its_canton_bft_step_needs_cometbft(plan_copy):
    """Take the canton-bft step away and the plan is a CometBFT stack with no snapshot job, class or drill."""
    plan = h.pin_images(plan_copy("dabft-dev"))
    spec = h.pod(plan, "postgres")
    spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] != "canton-bft"]
    found = violated(plan)
    assert any("cometbft-snapshot" in m for m in found["backup-coverage"]), found
    assert any("No VolumeSnapshotClass" in m for m in found["backup-coverage"]), found
    assert any("drill-cometbft" in m for m in found["restore-drill-coverage"]), found
    assert "alerts-per-backup-kind" in found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cometbft_stack_missing_its_snapshot_job_still_fails(plan_copy, stack):
    plan = h.pin_images(plan_copy(stack))
    h.remove(plan, h.cron_job(plan, "cometbft"))
    found = violated(plan)
    assert any("cometbft-snapshot: the cometbft backup never runs" in m for m in found["backup-coverage"]), found


def test_cometbft_stack_missing_its_snapshot_class_still_fails(plan_copy):
    plan = h.pin_images(plan_copy("dev"))
    h.remove(plan, h.one(plan, SNAPSHOT_CLASS))
    found = violated(plan)
    assert any("No VolumeSnapshotClass" in m for m in found["backup-coverage"]), found


def _with_steps_swapped(plan_copy, first: str, second: str):
    """dabft-dev's plan with two of the Postgres CronJob's initContainers (steps) in each other's place."""
    plan = h.pin_images(plan_copy("dabft-dev"))
    init = h.pod(plan, "postgres")["initContainers"]
    names = [c["name"] for c in init]
    a, b = names.index(first), names.index(second)
    init[a], init[b] = init[b], init[a]
    return plan


def test_canton_bft_after_apps_breaks_the_order_rule(plan_copy):
    found = violated(_with_steps_swapped(plan_copy, "apps", "canton-bft"))
    assert set(found) == {"postgres-apps-before-participant"}, found
    [message] = found["postgres-apps-before-participant"]
    assert "'canton-bft' step (the DABFT state) does not complete before 'apps' starts" in message
    assert "Fix:" in message


def test_dabft_stack_keeps_apps_before_participant(plan_copy):
    found = violated(_with_steps_swapped(plan_copy, "apps", "participant"))
    assert any("'participant' runs before 'apps'" in m for m in found["postgres-apps-before-participant"]), found
