"""audit-history walks the chain of sets (rules/chain.py) on real seals: an untouched store holds; a copy whose
manifest was edited (row counts, checksums: verify-set still passes it) is found at the first, a middle or the
newest set, the newest through the head an earlier audit printed (--expect-head)."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from jobs.pgsets import seal_set, to_json
from rules.manifest import format_time, utc_now

pytestmark = pytest.mark.slow
ROLES = ("apps", "participant")


def take(dest, set_id: str, at) -> None:
    """The two steps of a set whose databases were read at `at` (as backup-step writes them), sealed a minute later."""
    for index, role in enumerate(ROLES):
        requested = at + timedelta(seconds=20 * index)
        data = f"{set_id}/{role}".encode()
        key = f"data/{role}/{role}_db.a1.pgdump.zst"
        record = {
            "role": role, "database": f"{role}_db", "server_version": "15.18",
            "snapshot_requested_at": format_time(requested),
            "snapshot_acquired_at": format_time(requested + timedelta(milliseconds=5)),
            "finished_at": format_time(requested + timedelta(seconds=10)), "wal_lsn": "0/1A2B3C",
            "objects": [{"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
            "verification": {"database_size": 8192, "sample_rows": 1000,
                             "tables": [{"schema": "public", "name": "ledger", "rows": 100 + index}]},
        }  # fmt: skip
        dest.put_bytes(f"recent/0/{set_id}/{key}", data)
        dest.put_bytes(f"recent/0/{set_id}/steps/{role}.json", to_json({
            "format": "sv-backups/postgres-step/v1", "set_id": set_id, "migration_id": 0, "role": role,
            "databases": [record]}))  # fmt: skip
    seal_set(dest, set_id=set_id, migration_id=0, roles=list(ROLES), participant_pruning=timedelta(days=1),
             now=lambda: at + timedelta(minutes=1))  # fmt: skip


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    dest = open_destination(f"file://{root}")
    now = utc_now()
    for index in range(9):  # every 4 h over 32 h, the newest an hour ago; promoted every 8 h (1-day pruning)
        take(dest, f"s{index}", now - timedelta(hours=1 + 4 * (8 - index)))
    return root


def audit(jobs_cli, root: Path, *extra: str) -> tuple[int, dict, dict]:
    done = jobs_cli("audit-history", f"file://{root}", "--json", *extra)
    report, event = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    return done.returncode, report, event


def edit(root: Path, set_id: str) -> None:
    """Change a recorded row count in every copy of the set (an edit made in a copy of the store)."""
    for path in root.glob(f"*/0/{set_id}/manifest.json"):
        manifest = json.loads(path.read_text())
        manifest["databases"][1]["verification"]["tables"][0]["rows"] += 1
        path.write_text(json.dumps(manifest))


def test_an_untouched_store_holds_and_prints_its_head(store, jobs_cli):
    code, report, event = audit(jobs_cli, store)
    assert code == 0, event
    chain = report["chain"]["0"]
    assert chain["break"] is None and chain["checked"] >= 8 and chain["head"].startswith("s8=")
    assert event["chain_heads"] == {"0": chain["head"]}
    historical = sorted(p.parent.name for p in store.glob("historical/0/*/manifest.json"))
    assert len(historical) >= 3  # the coarse chain has links of its own


@pytest.mark.parametrize("where", ["s0", "s4"])
def test_an_edited_set_is_found_by_the_set_after_it(store, jobs_cli, tmp_path, where):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    edit(copy, where)
    assert jobs_cli("verify-set", f"file://{copy}/recent/0/{where}").returncode == 0  # the manifest alone passes
    code, report, event = audit(jobs_cli, copy)
    assert code == 1 and event["event"] == "backup.failed"
    assert report["chain"]["0"]["break"].startswith(f"set {where} differs from what set s")
    assert "the chain of sets is broken" in event["error"]


def test_an_edited_newest_set_is_found_by_the_head_written_down_before(store, jobs_cli, tmp_path):
    _, _, event = audit(jobs_cli, store)
    head = event["chain_heads"]["0"]
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    edit(copy, "s8")
    code, report, _ = audit(jobs_cli, copy)
    assert code == 0 and report["chain"]["0"]["head"] != head  # nothing links to the newest set yet
    code, _, event = audit(jobs_cli, copy, "--expect-head", head)
    assert code == 1 and "set s8 was changed since its digest" in event["error"]
    code, _, event = audit(jobs_cli, store, "--expect-head", head)
    assert code == 0, event
    bad = jobs_cli("audit-history", f"file://{store}", "--expect-head", "s8=abc")
    assert bad.returncode == 2 and "is not SET_ID=SHA256" in bad.stderr
