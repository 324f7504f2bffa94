"""The snapshot-set records and rules (rules/snapshot_sets.py): the ordering rule on both clocks, what a manifest
must hold, and the keep decision on whole sets."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from rules.snapshot_sets import (
    CLOUDSQL_BACKUP,
    CRASH_CONSISTENT,
    ONLINE,
    PROVIDER,
    VOLUME_SNAPSHOT,
    RoleSnapshot,
    build_manifest,
    build_step,
    history_point,
    kept_sets,
    manifest_errors,
    ordering_errors,
    step_errors,
)

T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)


def snap(role, start_min, end_min, *, mono=None, boot="b1", method=VOLUME_SNAPSHOT, consistency=CRASH_CONSISTENT,
         details=None) -> RoleSnapshot:  # fmt: skip
    start, end = T0 + timedelta(minutes=start_min), T0 + timedelta(minutes=end_min)
    mono = mono or (start_min * 60.0, end_min * 60.0)
    return RoleSnapshot(role=role, method=method, handle=f"sv/{role}", consistency=consistency, requested_at=start,
                        cut_at=start, completed_at=end, requested_mono=mono[0], completed_mono=mono[1], boot_id=boot,
                        details=details or {})  # fmt: skip


def manifest_of(*snaps, set_id="s1", migration_id=1, serial_id=None):
    steps = [build_step(s, set_id=set_id, migration_id=migration_id, code_version="t", host="h") for s in snaps]
    return build_manifest(set_id=set_id, migration_id=migration_id, created_at=T0 + timedelta(hours=1),
                          code_version="t", steps=steps, serial_id=serial_id)  # fmt: skip


def test_apps_before_participant_holds_and_is_summarised():
    manifest = manifest_of(snap("participant", 3, 4), snap("apps", 1, 2), snap("sequencer", 1, 5))
    assert manifest_errors(manifest, "s1") == []
    assert manifest["roles"] == ["apps", "participant", "sequencer"]
    assert manifest["ordering"]["holds"] is True and manifest["kind"] == "snapshot"


def test_overlap_is_refused_on_either_clock():
    # wall clocks overlap, different kernels: refused
    assert ordering_errors([snap("apps", 1, 3, boot="a"), snap("participant", 2, 4, boot="b")])
    # same kernel: the monotonic clock decides, even when the wall clock (stepped back) says otherwise
    stepped = [snap("apps", 1, 3, mono=(10.0, 20.0)), snap("participant", 2, 4, mono=(25.0, 30.0))]
    assert ordering_errors(stepped) == []
    stepped = [snap("apps", 1, 2, mono=(10.0, 20.0)), snap("participant", 3, 4, mono=(15.0, 30.0))]
    (error,) = ordering_errors(stepped)
    assert "apps snapshot completed" in error and "monotonic" in error


def test_canton_bft_goes_first():
    assert ordering_errors([snap("canton-bft", 1, 2), snap("apps", 3, 4), snap("participant", 5, 6)]) == []
    errors = ordering_errors([snap("canton-bft", 1, 4), snap("apps", 3, 5), snap("participant", 6, 7)])
    assert len(errors) == 1 and errors[0].startswith("canton-bft snapshot completed")


def test_a_manifest_must_be_complete_and_consistent():
    good = manifest_of(snap("apps", 1, 2), snap("participant", 3, 4))
    for breaks, expected in (
        (lambda m: m.update(complete=False), "not marked complete"),
        (lambda m: m.update(format="sv-backups/postgres-set/v2"), "is not sv-backups/snapshot-set/v1"),
        (lambda m: m["snapshots"][0].update(handle=""), "no handle"),
        (lambda m: m["snapshots"][0].update(method="tape"), "method 'tape'"),
        (lambda m: m["snapshots"][0].update(consistency=PROVIDER), "does not fit method"),
        (lambda m: m["snapshots"][1].update(role="apps"), "listed twice"),
        (lambda m: m.update(serial_id=7), "serial id 7"),
        (lambda m: m["snapshots"][0].pop("completed_at"), "malformed snapshot record"),
        (lambda m: m["snapshots"][0].update(consistency=ONLINE), "without its backup label"),
    ):
        broken = copy.deepcopy(good)
        breaks(broken)
        errors = manifest_errors(broken, "s1")
        assert any(expected in e for e in errors), (expected, errors)
    assert manifest_errors(good, "other")[0].startswith("manifest set id")
    lsu = manifest_of(snap("apps", 1, 2), serial_id=1)
    assert manifest_errors(lsu, "s1") == [] and lsu["serial_id"] == 1


def test_an_online_snapshot_needs_its_label_and_wal_objects():
    wal = {
        "objects": [
            {
                "key": "wal/apps/x/000000010000000000000003.zst",
                "segment": "000000010000000000000003",
                "size": 10,
                "segment_size": 16777216,
                "sha256": "a" * 64,
                "segment_sha256": "b" * 64,
            }
        ]
    }
    details = {"backup_label": "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n", "wal": wal}
    assert manifest_errors(manifest_of(snap("apps", 1, 2, consistency=ONLINE, details=details)), "s1") == []
    bad = copy.deepcopy(details)
    bad["wal"]["objects"][0]["key"] = "../escape"
    assert "bad WAL object key" in manifest_errors(manifest_of(snap("apps", 1, 2, consistency=ONLINE,
                                                                    details=bad)), "s1")[0]  # fmt: skip


def test_managed_snapshots_are_provider_consistent():
    cloudsql = snap("apps", 1, 2, method=CLOUDSQL_BACKUP, consistency=PROVIDER)
    assert manifest_errors(manifest_of(cloudsql), "s1") == []
    wrong = snap("apps", 1, 2, method=CLOUDSQL_BACKUP, consistency=CRASH_CONSISTENT)
    assert manifest_errors(manifest_of(wrong), "s1")


def test_step_records_name_their_set():
    step = build_step(snap("apps", 1, 2), set_id="s1", migration_id=1, code_version="t", host="h")
    assert step_errors(step, "s1", 1, "apps") == []
    assert step_errors(step, "s2", 1, "apps") == ["step apps: set id 's1' is not 's2'"]
    assert "records role 'apps'" in step_errors(step, "s1", 1, "participant")[0]
    assert step_errors(None, "s1", 1, "apps") == ["step apps: not a JSON object"]


@pytest.mark.parametrize("cadence", [None, timedelta(days=4)])
def test_kept_sets_are_whole_sets_by_tier(cadence):
    sets = []
    for index in range(30):  # daily, newest first
        m = manifest_of(snap("apps", -index * 1440, -index * 1440 + 1), set_id=f"d{index:02d}")
        sets.append((f"snapshot-sets/1/d{index:02d}", m))
    kept = kept_sets(sets, T0 + timedelta(hours=1), timedelta(days=3), cadence)
    recent = {f"snapshot-sets/1/d{i:02d}" for i in range(3)}  # within 3 days of now (T0 + 1 h)
    assert recent <= kept
    if cadence is None:
        assert kept == recent
    else:
        assert "snapshot-sets/1/d29" in kept and 8 <= len(kept) <= 12


def test_history_point_counts_a_set_without_bounding_gaps():
    point = history_point("recent", manifest_of(snap("apps", 1, 2), snap("participant", 3, 4)))
    assert point.windows == {} and set(point.roles) == {"apps", "participant"}
    assert point.taken_at == T0 + timedelta(minutes=1)
