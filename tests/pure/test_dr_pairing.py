"""A DR stack must name its primary's node (rules/dr_pairing.py)."""

from __future__ import annotations

from rules.dr_pairing import node_mismatches, synchronizer_mismatches

PRIMARY = {"name": "sv-1", "namespace": "sv", "migrationId": 4}


def test_the_same_node_matches():
    assert node_mismatches(dict(PRIMARY), PRIMARY, "org/sv-backups/prod") == []


def test_each_differing_key_is_one_message_with_the_fix():
    problems = node_mismatches({"name": "sv-1", "namespace": "sv-b", "migrationId": 5}, PRIMARY, "prod")
    assert problems == [
        "sv-backups:node.namespace: 'sv-b' differs from the primary stack prod's 'sv'; "
        "a DR stack restores its primary's node: set namespace: 'sv'",
        "sv-backups:node.migrationId: 5 differs from the primary stack prod's 4; "
        "a DR stack restores its primary's node: set migrationId: 4",
    ]


def test_every_key_the_primary_exports_is_compared():
    """A key a newer primary exports (e.g. a serial id) must match too, without a change here."""
    primary = {**PRIMARY, "serialId": 7}
    assert node_mismatches(dict(PRIMARY), primary, "prod") == [
        "sv-backups:node.serialId: is not set, unlike the primary stack prod's 7; "
        "a DR stack restores its primary's node: set serialId: 7"
    ]


def test_numbers_read_from_the_engine_are_shown_as_the_config_writes_them():
    """A StackReference's numbers arrive as floats (protobuf Struct): 4.0 matches 4, and 5.0 is shown as 5."""
    assert node_mismatches(dict(PRIMARY), {**PRIMARY, "migrationId": 4.0}, "prod") == []
    [problem] = node_mismatches(dict(PRIMARY), {**PRIMARY, "migrationId": 5.0}, "prod")
    assert problem.endswith("set migrationId: 5") and "prod's 5;" in problem


def test_a_primary_without_a_node_output_is_named():
    [problem] = node_mismatches(dict(PRIMARY), None, "prod")
    assert problem.startswith("sv-backups:dr.primaryStack: the primary stack prod exports no `node`")


def test_the_synchronizer_must_match_the_primarys():
    """The primary exports `synchronizer` on a DABFT stack only: none is cometbft."""
    assert synchronizer_mismatches("cometbft", None, "prod") == []
    assert synchronizer_mismatches("dabft", "dabft", "prod") == []
    assert synchronizer_mismatches("dabft", None, "prod") == [
        "sv-backups:synchronizer: 'dabft' differs from the primary stack prod's 'cometbft'; "
        "a DR stack restores its primary's node: set synchronizer: 'cometbft'"
    ]
    [problem] = synchronizer_mismatches("cometbft", "dabft", "prod")
    assert problem.startswith("sv-backups:synchronizer: 'cometbft' differs from the primary stack prod's 'dabft'")
