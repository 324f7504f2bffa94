"""The drill's pure parts: the manifest's optional verification record, scratch sizing, the server binaries'
choice, offsets compared for the ordering check."""

from __future__ import annotations

import pytest

from jobs.drill import SERVER_OVERHEAD, MiB, _offset, required_space, server_major
from jobs.scratch_pg import ScratchError, server_bin
from rules.manifest import database_errors, verification_errors

DB = {"role": "apps", "database": "cantonnet_sv", "server_version": "15.8", "snapshot_requested_at": "x",
      "snapshot_acquired_at": "x", "finished_at": "x", "wal_lsn": "0/1",
      "objects": [{"key": "data/apps/a.pgdump.zst", "size": 1, "sha256": "0" * 64}]}
GOOD = {"sample_rows": 1000, "database_size": 8 * MiB, "encoding": "UTF8", "collate": "C", "ctype": "C",
        "tables": [{"schema": "public", "name": "t", "size": 8192, "rows": 3,
                    "sample": {"rows": 3, "sha256": "a" * 64, "key": ["id"], "collatable_key": False}},
                   {"schema": "public", "name": "nokey", "size": 0, "rows": 5000}]}


def test_a_record_without_verification_data_is_valid():
    assert database_errors(DB) == []


def test_a_good_verification_record_is_valid_and_bad_ones_are_named():
    assert database_errors({**DB, "verification": GOOD}) == []
    assert verification_errors("apps/x", []) == ["apps/x: verification is not an object"]
    assert verification_errors("apps/x", {**GOOD, "database_size": -1}) == [
        "apps/x: verification.database_size must be a non-negative integer"]
    bad_table = {**GOOD, "tables": [{"schema": "public", "name": "t"}]}
    assert "needs schema, name and rows" in verification_errors("apps/x", bad_table)[0]
    bad_sample = {**GOOD, "tables": [{"schema": "public", "name": "t", "rows": 1, "sample": {"rows": 1}}]}
    assert verification_errors("apps/x", bad_sample) == [
        "apps/x: verification sample of public.t needs rows and sha256"]


def test_scratch_space_comes_from_the_recorded_sizes_else_the_dumps():
    with_data = {"databases": [{**DB, "verification": GOOD}]}
    assert required_space(with_data) == int(8 * MiB * 1.2) + SERVER_OVERHEAD
    older = {"databases": [{**DB, "uncompressed_size": 10 * MiB}]}
    assert required_space(older) == int(20 * MiB * 1.2) + SERVER_OVERHEAD


def test_the_server_major_is_the_newest_dumped():
    manifest = {"databases": [{**DB, "server_version_num": 150008}, {**DB, "server_version": "16.2"}]}
    assert server_major(manifest) == 16


def test_server_binaries_of_the_same_or_a_newer_major(tmp_path):
    for major in ("14", "16", "17"):
        for tool in ("initdb", "pg_ctl", "postgres"):
            (tmp_path / major / "bin").mkdir(parents=True, exist_ok=True)
            (tmp_path / major / "bin" / tool).touch()
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "pg_dump").touch()  # client tools only: not a server
    assert server_bin(14, tmp_path) == tmp_path / "14" / "bin"
    assert server_bin(15, tmp_path) == tmp_path / "16" / "bin"
    with pytest.raises(ScratchError, match=r"no PostgreSQL server binaries for major 18 or newer .*: 14, 16, 17"):
        server_bin(18, tmp_path)


def test_offsets_integers_and_canton_2_hex_strings():
    assert _offset(42) == 42
    assert _offset("000000000000000a") == 10 and _offset("00000000000000ff") > _offset("000000000000000a")
    assert _offset("not an offset") is None and _offset(None) is None
