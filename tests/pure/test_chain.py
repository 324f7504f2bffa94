"""The set chain (rules/chain.py): a manifest edited in a copy is found, wherever it sits in the history."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from rules.chain import ChainSet, chain_errors, chain_record, check_chain, manifest_digest

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def history(count: int = 6, promote_every: int = 2) -> list[ChainSet]:
    """`count` sets sealed 4 h apart, each linked as the seal links it; every `promote_every`-th also historical."""
    sets: list[ChainSet] = []
    newest = newest_historical = None
    for index in range(count):
        manifest = {
            "set_id": f"s{index}",
            "migration_id": 0,
            "tier": "recent",
            "created_at": (T0 + timedelta(hours=4 * index)).isoformat(),
            "databases": [{"role": "participant", "rows": 100 + index}],
            "chain": chain_record(newest, newest_historical),
        }
        sets.append(ChainSet("recent", manifest["created_at"], manifest))
        if index % promote_every == 0:
            promoted = {**manifest, "tier": "historical", "promoted_from": f"recent/0/s{index}"}
            sets.append(ChainSet("historical", manifest["created_at"], promoted))
            newest_historical = manifest
        newest = manifest
    return sets


def edited(sets: list[ChainSet], set_id: str, tier: str | None = None) -> list[ChainSet]:
    """A copy in which the row count of `set_id` (in every tier, or one) was changed."""
    out = []
    for item in sets:
        manifest = copy.deepcopy(item.manifest)
        if manifest["set_id"] == set_id and tier in (None, item.tier):
            manifest["databases"][0]["rows"] += 1
        out.append(ChainSet(item.tier, item.created_at, manifest))
    return out


def expire(sets: list[ChainSet], keep_recent: int) -> list[ChainSet]:
    """The recent tier's lifecycle: only the newest `keep_recent` recent sets remain."""
    recent = sorted((s for s in sets if s.tier == "recent"), key=lambda s: s.created_at)
    gone = {s.manifest["set_id"] for s in recent[:-keep_recent]}
    return [s for s in sets if s.tier == "historical" or s.manifest["set_id"] not in gone]


def test_an_untouched_history_holds_and_both_copies_of_a_promoted_set_have_one_digest():
    sets = history()
    report = check_chain(sets)
    assert report.first_break is None and report.checked == 5 + 5 and report.unverifiable == 0
    assert report.head == {"set_id": "s5", "sha256": manifest_digest(sets[-1].manifest)}
    recent, historical = sets[0].manifest, sets[1].manifest
    assert manifest_digest(recent) == manifest_digest(historical)


def test_after_recent_sets_expire_the_historical_links_still_reach_genesis():
    report = check_chain(expire(history(count=9), keep_recent=2))
    assert report.first_break is None
    assert report.unverifiable > 0  # `previous` links into expired recent sets


@pytest.mark.parametrize("where", ["s0", "s2", "s4"])
def test_an_edited_historical_set_is_found_first_middle_or_last_of_the_historical_chain(where):
    report = check_chain(expire(edited(history(count=9), where), keep_recent=2))
    assert report.first_break is not None and report.first_break.startswith(f"set {where} differs from what set")


def test_an_edited_recent_set_is_found_by_the_next_set():
    report = check_chain(edited(history(), "s3"))
    assert report.first_break == (
        "set s3 differs from what set s4 recorded of it (chain.previous): s3 was changed after s4 was sealed"
    )


def test_the_newest_set_is_checked_by_its_head():
    """Nothing links to the newest set yet: an auditor compares the head with the one the last audit printed."""
    sets = history()
    before = check_chain(sets).head
    after = check_chain(edited(sets, "s5"))
    assert after.first_break is None and after.head != before and after.head["set_id"] == before["set_id"]


def test_copies_that_differ_a_lost_historical_set_and_a_dropped_chain_are_breaks():
    assert check_chain(edited(history(), "s2", tier="historical")).first_break == (
        "set s2: its recent and historical copies differ"
    )
    without_s2 = [s for s in history() if not (s.manifest["set_id"] == "s2" and s.tier == "historical")]
    assert "chain.historical names set s2, which is gone" in check_chain(expire(without_s2, 2)).first_break
    dropped = history()
    del dropped[-1].manifest["chain"]
    assert check_chain(dropped).first_break == "set s5 has no chain, yet set s0 before it has"


def test_chain_shape_errors():
    assert chain_errors(None) == []
    assert chain_errors({"previous": None}) == ["chain is not {previous, historical}"]
    assert chain_errors({"previous": {"set_id": "a", "sha256": "x"}, "historical": None}) == [
        "chain.previous.sha256 is not a sha256 hex digest"
    ]
