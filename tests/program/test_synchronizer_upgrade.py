"""A logical synchronizer upgrade (docs/synchronizer-upgrade.md) planned on a primary and its DR stack: the stacks
before the upgrade (serial 4), after it (serial 5), and the one-off switch of a hard-migration node to LSU. What
changes is what the procedure says; nothing that holds backups (bucket, key, secret) is replaced or renamed: no
URN is added or removed at all."""

from __future__ import annotations

import copy

import pytest
import yaml

from engines.offline_plan import main_program, plan_program
from jobs.failover_plan import resolve_facts
from tests.program.conftest import ROOT, to_stack_config

PRIMARY, DR = "prod", "prod-dr"
HOLDS_BACKUPS = ("storage/bucket:Bucket", "kms/cryptoKey:CryptoKey", "kms/keyRing:KeyRing", "secretmanager/secret:")
POSTGRES, COMETBFT = "sv-1-postgres-backup", "sv-1-cometbft-snapshot"
SNAPSHOTS = "sv-1-postgres-snapshot"  # prod's snapshot sets (sv-backups:snapshots) and, with -prune, their pruner
# The DR stack (named sv-1-dr-*) has no drills: its suspended backup jobs move, the replica check does not.
DR_POSTGRES = "sv-1-dr-postgres-backup"
DR_EXPECTED = {DR_POSTGRES, "sv-1-dr-cometbft-snapshot", "sv-1-dr-cometbft-snapshot-role"}


def lsu(config: dict, serial: int) -> dict:
    """The keys the procedure changes: node.serialId (instead of migrationId), the sequencer's and the mediator's
    databases, the CometBFT PVC. The participant's database is preserved by the upgrade: unchanged."""
    config = copy.deepcopy(config)
    node = config["sv-backups:node"]
    node.pop("migrationId", None)
    node["serialId"] = serial
    postgres = config["sv-backups:postgres"]
    for role in ("sequencer", "mediator"):
        postgres[role]["databases"] = [f"{role}_{serial}"]
    config["sv-backups:cometbft"]["pvc"] = f"global-domain-{serial}-cometbft-cometbft-data"
    return config


@pytest.fixture(scope="module")
def plans():
    """(primary, DR) plans: hard migration id 4, LSU serial 4, LSU serial 5; each DR reads its primary's outputs."""

    def raw(stack: str) -> dict:
        return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]

    def plan(config: dict, stack: str, references=None):
        return plan_program(
            main_program(ROOT), to_stack_config(config, stack=stack, project="sv-backups"), stack_references=references
        )

    out = {}
    for name, change in (("hard", lambda c: c), ("serial4", lambda c: lsu(c, 4)), ("serial5", lambda c: lsu(c, 5))):
        primary = plan(change(raw(PRIMARY)), PRIMARY)
        dr = plan(change(raw(DR)), DR, {"sv-operator/sv-backups/prod": primary.outputs})
        out[name] = (primary, dr)
    return out


def by_urn(plan) -> dict[str, dict]:
    return {r["urn"]: r for r in plan.resources}


def changed(before, after) -> set[str]:
    """The names of the resources whose inputs changed; fails if any URN was added or removed."""
    old, new = by_urn(before), by_urn(after)
    assert set(old) == set(new), set(old) ^ set(new)
    return {old[u]["name"] for u in old if old[u]["inputs"] != new[u]["inputs"]}


def seal_args(plan, name: str = POSTGRES) -> list[str]:
    [job] = [r for r in plan.resources if r["name"] == name and r["type"].endswith("CronJob")]
    spec = job["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [seal] = [c for c in spec["containers"] if c["name"] == "seal"]
    return seal["args"]


def test_nothing_that_holds_backups_changes(plans):
    for side in (0, 1):
        urns = [set(by_urn(plans[name][side])) for name in ("hard", "serial4", "serial5")]
        assert urns[0] == urns[1] == urns[2]
        held = [by_urn(plans[name][side]) for name in ("hard", "serial4", "serial5")]
        for urn, resource in held[0].items():
            if any(kind in resource["type"] for kind in HOLDS_BACKUPS):
                assert held[1][urn]["inputs"] == held[2][urn]["inputs"] == resource["inputs"], urn
    assert any(any(k in r["type"] for k in HOLDS_BACKUPS) for r in plans["hard"][0].resources)


def test_switching_a_node_to_lsu_changes_only_the_seal_and_the_node_output(plans):
    (hard, hard_dr), (lsu4, lsu4_dr) = plans["hard"], plans["serial4"]
    # prod's snapshot sets name the serial id too (their steps and seal file under it, like the dump sets').
    assert changed(hard, lsu4) == {POSTGRES, SNAPSHOTS} and changed(hard_dr, lsu4_dr) == {DR_POSTGRES}
    assert "--serial-id" not in seal_args(hard)
    args = seal_args(lsu4)
    assert args[args.index("--migration-id") + 1] == args[args.index("--serial-id") + 1] == "4"
    assert hard.outputs["node"] == {"name": "sv-1", "namespace": "sv", "migrationId": 4}
    assert lsu4.outputs["node"] == {"name": "sv-1", "namespace": "sv", "serialId": 4}
    assert hard.outputs["recentSetsUrl"] == lsu4.outputs["recentSetsUrl"]  # the same id: the sets stay put


def test_the_upgrade_moves_the_jobs_to_the_new_serial_on_both_stacks(plans):
    (before, before_dr), (after, after_dr) = plans["serial4"], plans["serial5"]
    # The snapshot sets' drill restores the sets of the node's current serial (its --migration-id) too.
    expected = {POSTGRES, COMETBFT, f"{COMETBFT}-role", "sv-1-drill-cometbft", SNAPSHOTS, f"{SNAPSHOTS}-prune",
                "sv-1-drill-postgres-snapshots"}  # fmt: skip
    # The new CometBFT PVC names the snapshots the drill's claims may restore (components/admission.py).
    expected.add("sv-1-drill-cometbft-claim-admission")
    assert changed(before, after) == expected
    assert changed(before_dr, after_dr) == DR_EXPECTED
    for args in (seal_args(after), seal_args(after_dr, DR_POSTGRES)):
        assert args[args.index("--serial-id") + 1] == "5"
    assert after.outputs["recentSetsUrl"].endswith("/recent/5/")
    assert after.outputs["backupUrl"] == before.outputs["backupUrl"]
    # The participant's database is the same; the sequencer's and mediator's are the new serial's.
    text = str(by_urn(after))
    assert "participant_4" in text and "sequencer_5" in text and "mediator_5" in text and "sequencer_4" not in text


def test_failover_after_the_upgrade_restores_a_set_of_the_new_serial(plans):
    for name, serial in (("serial4", 4), ("serial5", 5)):
        facts = resolve_facts(plans[name][1].outputs, {})
        assert (facts.migration_id, facts.serial_id) == (serial, serial)
        assert f"global-domain-{serial}-sequencer" in facts.deployments
    hard = resolve_facts(plans["hard"][1].outputs, {})
    assert (hard.migration_id, hard.serial_id) == (4, 4)


def test_a_dr_stack_left_on_the_old_serial_is_refused_against_the_upgraded_primary(plans):
    """DR pairing (rules/dr_pairing.py) compares serialId like migrationId: edit both stack files together; only
    the DR stack's `pulumi up` waits (docs/synchronizer-upgrade.md, step 3)."""
    upgraded = plans["serial5"][0]
    config = lsu(yaml.safe_load((ROOT / "stacks" / f"Pulumi.{DR}.yaml").read_text())["config"], 4)
    with pytest.raises(Exception, match=r"sv-backups:node.serialId: 4 differs from the primary stack"):
        plan_program(
            main_program(ROOT),
            to_stack_config(config, stack=DR, project="sv-backups"),
            stack_references={"sv-operator/sv-backups/prod": upgraded.outputs},
        )
