"""list-sets --before T (damage noticed at T): only sets whose every database was read strictly before T, dump and
snapshot sets alike; the first row is the set to restore. The boundary: a set read at T exactly is listed, one
read 1 µs later is not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs.destinations import open_destination
from rules.manifest import data_taken_by, format_time
from rules.snapshot_sets import data_taken_by as snapshot_taken_by
from rules.snapshot_sets import snapshot_set_prefix
from tests.jobs.replica_helpers import write_set
from tests.jobs.test_pgsnap_rules import manifest_of, snap

pytestmark = pytest.mark.slow
NOW = datetime.now(UTC).replace(microsecond=0)


def test_list_sets_before_a_time_at_the_boundary(tmp_path, jobs_cli):
    store = f"file://{tmp_path}"
    dest = open_destination(store)
    write_set(dest, "d-old", NOW - timedelta(hours=8), migration_id=1)
    write_set(dest, "d-new", NOW - timedelta(hours=4), migration_id=1)
    manifest = manifest_of(snap("apps", 1, 2), snap("participant", 3, 4), set_id="snap-1", migration_id=1)
    dest.put_bytes(f"{snapshot_set_prefix(1, 'snap-1')}/manifest.json", json.dumps(manifest).encode())
    dump_read = data_taken_by(json.loads(dest.read_bytes("recent/1/d-new/manifest.json")))
    snap_read = snapshot_taken_by(manifest)

    def listed(before: datetime) -> list[str]:
        done = jobs_cli("list-sets", store, "--json", "--before", format_time(before))
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["set_id"] for line in done.stdout.splitlines()]

    everything = listed(NOW + timedelta(days=1))
    assert set(everything) == {"d-old", "d-new", "snap-1"}
    assert "d-new" in listed(dump_read + timedelta(microseconds=1))
    assert "d-new" not in listed(dump_read) and "d-old" in listed(dump_read)
    assert "snap-1" in listed(snap_read + timedelta(microseconds=1)) and "snap-1" not in listed(snap_read)
    refused = jobs_cli("list-sets", store, "--before", "2026-12-07 03:10")
    assert refused.returncode == 2 and "has no time zone" in refused.stderr
