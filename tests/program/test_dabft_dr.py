"""A DABFT DR stack (sv-backups:synchronizer: dabft, role dr) planned against a DABFT primary (dabft-dev): no
CometBFT resource or fact, the synchronizer said, the policy pack passes; a synchronizer unlike the primary's is
refused."""

from __future__ import annotations

import pytest

from engines.policy_check import run_policy_checks
from tests.program.conftest import plan_config_file

PRIMARY = "sv-operator/sv-backups/dabft-dev"
CANTON_BFT = {"kind": "in-cluster", "host": "sequencer-pg", "databases": ["cantonbft_0"]}


@pytest.fixture
def dabft_dr_config(stack_config_map):
    """prod-dr made the DR stack of dabft-dev: its node, migration id 0's databases, a DABFT synchronizer."""
    config = stack_config_map("prod-dr")
    config["gcp:region"] = "europe-west4"  # dabft-dev's DR region
    config["sv-backups:synchronizer"] = "dabft"
    del config["sv-backups:cometbft"]
    config["sv-backups:node"] = {"name": "sv-dabft-dev", "namespace": "sv", "migrationId": 0}
    postgres = config["sv-backups:postgres"]
    postgres["cantonBft"] = dict(CANTON_BFT)
    for role in ("participant", "sequencer", "mediator"):
        postgres[role]["databases"] = [f"{role}_0"]
    config["sv-backups:dr"]["primaryStack"] = PRIMARY
    return config


@pytest.fixture
def references(shipped_plan):
    return {PRIMARY: shipped_plan("dabft-dev").outputs}


def test_a_dabft_dr_stack_plans_without_cometbft_and_passes_the_pack(offline_plan, dabft_dr_config, references):
    plan = offline_plan(dabft_dr_config, stack="dabft-dr", stack_references=references)
    assert not [r["urn"] for r in plan.resources if "cometbft" in r["urn"].lower()]
    assert not plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    outputs = plan.outputs
    # The failover facts: the synchronizer, no CometBFT facts (jobs/failover_plan.py skips that step).
    assert outputs["synchronizer"] == "dabft" and "cometbft" not in outputs
    assert outputs["postgresRoles"][0] == "canton-bft"
    assert outputs["standby"] is True and outputs["primaryStack"] == PRIMARY
    text, code = run_policy_checks(plan.plan)
    assert code == 0, text


def test_a_cometbft_dr_stack_of_a_dabft_primary_is_refused(offline_plan, stack_config_map, references):
    """prod-dr's own CometBFT config against the DABFT primary (its node made to match): one synchronizer message."""
    config = stack_config_map("prod-dr")
    config["sv-backups:node"] = {"name": "sv-dabft-dev", "namespace": "sv", "migrationId": 0}
    config["sv-backups:dr"]["primaryStack"] = PRIMARY
    with pytest.raises(Exception, match=r"sv-backups:synchronizer: 'cometbft' differs from the primary stack "):
        offline_plan(config, stack="prod-dr", stack_references=references)


def test_a_dabft_dr_stack_of_a_cometbft_primary_is_refused(offline_plan, dabft_dr_config, shipped_plan):
    outputs = dict(shipped_plan("dev").outputs)
    outputs["node"] = {"name": "sv-dabft-dev", "namespace": "sv", "migrationId": 0}
    expected = r"sv-backups:synchronizer: 'dabft' differs from the primary stack .*'cometbft'"
    with pytest.raises(Exception, match=expected):
        offline_plan(dabft_dr_config, stack="dabft-dr", stack_references={PRIMARY: outputs})


def test_scripts_plan_refuses_the_synchronizer_mismatch_before_anything_is_declared(tmp_path, stack_config_map):
    """The offline pre-check (engines/plan_stacks.py) against the shipped dabft-dev: one message, exit 2."""
    config = stack_config_map("prod-dr")
    config["sv-backups:node"] = {"name": "sv-dabft-dev", "namespace": "sv", "migrationId": 0}
    config["sv-backups:dr"]["primaryStack"] = PRIMARY
    done = plan_config_file(tmp_path, "cometbft-dr", config)
    assert done.returncode == 2, done.stderr
    header, *problems = done.stderr.splitlines()
    assert header == "plan: DR stack 'cometbft-dr' does not match its primary; nothing was declared:"
    assert problems == [
        f"sv-backups:synchronizer: 'cometbft' differs from the primary stack {PRIMARY}'s 'dabft'; "
        "a DR stack restores its primary's node: set synchronizer: 'dabft'"
    ]
