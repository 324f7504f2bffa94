"""sv-backups:synchronizer: a DABFT node has no CometBFT section; its state is the cantonBft Postgres role."""

from __future__ import annotations

import pytest

from components.settings import load_settings
from tests.stackfiles import problems_of, raw_config

CANTON_BFT = {"kind": "in-cluster", "host": "sequencer-pg", "passwordSecret": "s", "databases": ["cantonbft_0"]}


def test_the_dabft_example_is_a_dabft_stack_without_cometbft():
    settings = load_settings(raw_config("dabft-dev"), stack="dabft-dev")
    assert settings.dabft and settings.synchronizer == "dabft"
    assert settings.cometbft is None
    # canton-bft first, as Splice's backup script takes it; apps strictly before participant.
    assert settings.roles == ["canton-bft", "apps", "participant", "sequencer", "mediator"]
    assert settings.postgres["canton-bft"].databases == ["cantonbft_0"]


def test_cometbft_is_the_default_synchronizer():
    settings = load_settings(raw_config("dev"), stack="dev")
    assert settings.synchronizer == "cometbft" and not settings.dabft
    assert settings.cometbft.pvc == "global-domain-0-cometbft-cometbft-data"
    assert "canton-bft" not in settings.roles


def test_dabft_with_a_cometbft_section_is_refused():
    raw = raw_config("dabft-dev")
    raw["sv-backups:cometbft"] = {"pvc": "global-domain-0-cometbft-cometbft-data"}
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:cometbft: a DABFT synchronizer (sv-backups:synchronizer: dabft) has no")
    assert "remove this section" in problem


def test_dabft_without_canton_bft_is_refused():
    raw = raw_config("dabft-dev")
    del raw["sv-backups:postgres"]["cantonBft"]
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.cantonBft: is required with sv-backups:synchronizer dabft")


def test_cometbft_without_its_section_is_still_refused():
    raw = raw_config("dev")
    del raw["sv-backups:cometbft"]
    assert problems_of(raw) == ["sv-backups:cometbft: is required but missing"]


def test_cometbft_without_pvc_is_still_refused():
    raw = raw_config("dev")
    raw["sv-backups:cometbft"] = {}
    assert problems_of(raw) == ["sv-backups:cometbft.pvc: is required but missing"]


def test_explicit_cometbft_synchronizer_needs_its_section():
    raw = raw_config("dev")
    raw["sv-backups:synchronizer"] = "cometbft"
    del raw["sv-backups:cometbft"]
    assert problems_of(raw) == ["sv-backups:cometbft: is required but missing"]


def test_canton_bft_on_a_cometbft_stack_is_refused():
    raw = raw_config("dev")
    raw["sv-backups:postgres"]["cantonBft"] = dict(CANTON_BFT)
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.cantonBft: only a DABFT synchronizer has a cantonBft database")


@pytest.mark.parametrize("value", ["bft", "DABFT", "cometBFT"])
@pytest.mark.parametrize("stack", ["dabft-dev", "dev"])
def test_unknown_synchronizer(value, stack):
    """One message, whether or not the stack has a cometbft section (which it needs depends on the fix)."""
    raw = raw_config(stack)
    raw["sv-backups:synchronizer"] = value
    assert problems_of(raw) == [f"sv-backups:synchronizer: {value!r} is not a synchronizer; allowed: cometbft, dabft"]


def test_dabft_on_a_dr_stack_is_accepted():
    """A production DABFT node needs its DR stack (policy production-dr); failover restores canton-bft first."""
    raw = raw_config("prod-dr")
    raw["sv-backups:synchronizer"] = "dabft"
    del raw["sv-backups:cometbft"]
    raw["sv-backups:postgres"]["cantonBft"] = dict(CANTON_BFT)
    settings = load_settings(raw, stack="prod-dr")
    assert settings.role == "dr" and settings.dabft and settings.cometbft is None
    assert settings.roles[0] == "canton-bft"


def test_dabft_dr_stack_still_refuses_a_cometbft_section():
    raw = raw_config("prod-dr")
    raw["sv-backups:synchronizer"] = "dabft"
    raw["sv-backups:postgres"]["cantonBft"] = dict(CANTON_BFT)
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:cometbft: a DABFT synchronizer (sv-backups:synchronizer: dabft) has no")


def test_dabft_refuses_the_cometbft_drill_class():
    raw = raw_config("dabft-dev")
    raw["sv-backups:drill"] = {"cometbftStorageClass": "standard-rwo"}
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:drill.cometbftStorageClass: a DABFT stack has no CometBFT drill")


def test_canton_bft_kind_errors_name_the_config_key():
    raw = raw_config("dabft-dev")
    raw["sv-backups:postgres"]["cantonBft"]["kind"] = "oracle"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.cantonBft: kind 'oracle' is not allowed")
