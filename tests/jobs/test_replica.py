"""check-replica against two real stores of each kind: two file:// dirs, two moto S3 buckets, two GCS emulator
buckets. Replication is simulated by the test (object by object, manifests first, as CRR gives no order)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from jobs.__main__ import main
from jobs.destinations import Destination, open_destination
from jobs.replica import CheckOptions, check_sets
from tests.jobs.replica_helpers import corrupt, replicate, write_set

pytestmark = pytest.mark.slow

OLD = timedelta(hours=3)
YOUNG = timedelta(minutes=5)


@dataclass
class Pair:
    kind: str
    src_url: str
    dst_url: str

    @property
    def src(self) -> Destination:
        return open_destination(self.src_url)

    @property
    def dst(self) -> Destination:
        return open_destination(self.dst_url)


def _second_bucket(kind: str) -> str:
    name = f"dr-{secrets.token_hex(6)}"
    if kind == "s3":
        import boto3

        boto3.client("s3").create_bucket(Bucket=name)
    else:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(name)
    return name


@pytest.fixture(params=["file", "s3", "gs"])
def pair(request, tmp_path) -> Pair:
    if request.param == "file":
        return Pair("file", f"file://{tmp_path}/primary", f"file://{tmp_path}/dr")
    bucket = request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")
    scheme = request.param
    return Pair(scheme, f"{scheme}://{bucket}/sv-1", f"{scheme}://{_second_bucket(scheme)}/sv-1")


def ago(delta: timedelta) -> datetime:
    return datetime.now(UTC) - delta


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def outcome(result) -> dict:
    (event,) = [e for e in events(result.stdout) if e["event"] in ("backup.completed", "backup.failed")]
    assert event["kind"] == "replica"
    return event


def per_set(result) -> dict[str, dict]:
    return {e["set_id"]: e for e in events(result.stdout) if e["event"] == "replica.set"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """`python -m jobs ...` in this process (the subprocess start costs seconds on a loaded machine; one test
    runs the real entrypoint as a subprocess)."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


def check(cli, pair: Pair, *extra: str) -> Run:
    return cli("check-replica", pair.src_url, pair.dst_url, "--json", *extra)


def test_in_sync_across_tiers_with_store_checksums(pair, jobs_cli, cli):
    src = pair.src
    write_set(src, "s-old", ago(OLD))
    write_set(src, "s-old", ago(OLD), tier="historical")  # a promoted copy is a set of its own
    write_set(src, "s-new", ago(YOUNG))
    replicate(src, pair.dst)
    result = jobs_cli("check-replica", pair.src_url, pair.dst_url, "--json")  # the image's entrypoint
    assert result.returncode == 0, result.stdout + result.stderr
    event = outcome(result)
    assert event["event"] == "backup.completed" and event["status"] == "in_sync"
    assert event["lag_seconds"] == 0 and event["sets"] == {"in_sync": 3}
    sets = [e for e in events(result.stdout) if e["event"] == "replica.set"]
    assert sorted((e["tier"], e["set_id"]) for e in sets) == [
        ("historical", "s-old"),
        ("recent", "s-new"),
        ("recent", "s-old"),
    ]
    for e in sets:
        assert e["status"] == "in_sync" and e["objects"] == 5  # manifest, 2 step records, 2 dumps
        if pair.kind == "file":  # no store checksum: every dump is re-read and hashed
            assert (e["verified_by_read"], e["verified_by_checksum"]) == (5, 0)
        else:  # GCS CRC32C / S3 checksums: the dumps are not read, only the small records are
            assert (e["verified_by_read"], e["verified_by_checksum"]) == (3, 2)
    deep = check(cli, pair, "--deep")
    assert deep.returncode == 0
    assert all(e["verified_by_read"] == 5 for e in per_set(deep).values())


def test_missing_set_fails_with_its_age_as_lag(pair, cli):
    src = pair.src
    write_set(src, "s-old", ago(OLD))
    write_set(src, "s-new", ago(YOUNG))
    replicate(src, pair.dst, under="recent/0/s-new/")
    result = check(cli, pair)
    assert result.returncode == 1
    event = outcome(result)
    assert event["event"] == "backup.failed" and event["severity"] == "ERROR" and event["status"] == "out_of_sync"
    assert event["sets"] == {"missing": 1, "in_sync": 1}
    assert event["lag_seconds"] == per_set(result)["s-old"]["age_seconds"] >= OLD.total_seconds() - 1
    assert "recent/0/s-old: not in the DR copy" in event["problems"]


def test_partial_set_manifest_copied_a_dump_missing(pair, cli):
    src = pair.src
    write_set(src, "s-old", ago(OLD))
    replicate(src, pair.dst, skip=("participant_0.0a1b2c3d.pgdump.zst",))
    result = check(cli, pair)
    assert result.returncode == 1
    report = per_set(result)["s-old"]
    assert report["status"] == "partial"
    assert report["problems"] == [
        "1 of 5 objects not in the DR copy: data/participant/participant_0.0a1b2c3d.pgdump.zst"
    ]
    assert outcome(result)["event"] == "backup.failed"


def test_corrupted_copy_of_the_same_size_differs(pair, cli):
    src = pair.src
    prefix = write_set(src, "s-old", ago(OLD))
    dump = f"{prefix}/data/apps/cantonnet_sv.0a1b2c3d.pgdump.zst"
    replicate(src, pair.dst, skip=(dump,))
    corrupt(pair.dst, dump, src)
    assert pair.dst.size(dump) == src.size(dump)
    result = check(cli, pair)
    assert result.returncode == 1
    report = per_set(result)["s-old"]
    assert report["status"] == "differs"
    if pair.kind == "file":
        assert report["problems"] == [
            "data/apps/cantonnet_sv.0a1b2c3d.pgdump.zst: sha256 of the DR copy is not the manifest's"
        ]
    elif pair.kind == "s3":  # the job uploads with a full-object SHA-256: compared with the manifest's directly
        assert report["problems"][0].startswith(
            "data/apps/cantonnet_sv.0a1b2c3d.pgdump.zst: the DR store's SHA-256 is not the manifest's"
        )
    else:  # caught by the stores' own checksums, without reading the dump
        assert report["problems"][0].startswith(
            "data/apps/cantonnet_sv.0a1b2c3d.pgdump.zst: the stores' checksums differ"
        )
    # A young corrupted copy fails too: replication never writes wrong bytes, only missing ones.
    write_set(src, "s-new", ago(YOUNG))
    young = "recent/0/s-new/data/apps/cantonnet_sv.0a1b2c3d.pgdump.zst"
    replicate(src, pair.dst, under="recent/0/s-new/", skip=(young,))
    corrupt(pair.dst, young, src)
    assert per_set(check(cli, pair))["s-new"]["status"] == "differs"


def test_lag_within_and_over_the_bound(pair, cli):
    src = pair.src
    write_set(src, "s-old", ago(OLD))
    write_set(src, "s-new", ago(YOUNG))
    write_set(src, "s-newer", ago(timedelta(minutes=1)))
    replicate(src, pair.dst, under="recent/0/s-old/")
    replicate(src, pair.dst, under="recent/0/s-newer/", skip=("steps/apps.json",))  # half-way replicated
    within = check(cli, pair)
    assert within.returncode == 0, within.stdout
    event = outcome(within)
    assert event["event"] == "backup.completed" and event["status"] == "within_lag"
    assert event["sets"] == {"in_sync": 1, "within_lag": 2}
    reports = per_set(within)
    assert (reports["s-new"]["replication"], reports["s-newer"]["replication"]) == ("missing", "partial")
    assert event["lag_seconds"] == reports["s-new"]["age_seconds"]  # the oldest set not yet in DR
    over = check(cli, pair, "--max-lag", "2m")
    assert over.returncode == 1
    assert outcome(over)["sets"] == {"in_sync": 1, "missing": 1, "within_lag": 1}


def test_never_in_sync_when_any_object_of_a_set_is_missing_or_differs(pair):
    """Every object of a set, one at a time: left out of the copy, or copied with one byte flipped."""
    src = pair.src
    prefix = write_set(src, "s-old", ago(OLD))
    keys = sorted(info.key for info in src.list(f"{prefix}/"))
    assert len(keys) == 5
    for index, key in enumerate(keys):
        for damage in ("missing", "corrupt"):
            dst = open_destination(f"{pair.dst_url}/case-{index}-{damage}")
            replicate(src, dst, skip=(key,))
            if damage == "corrupt":
                corrupt(dst, key, src)
            (report,) = check_sets(src, dst, CheckOptions()).sets
            expected = "partial" if damage == "missing" else "differs"
            assert report.status == expected, (key, damage, report)


def test_bad_input_and_empty_primary(pair, cli, tmp_path):
    mixed = cli(
        "check-replica", pair.src_url, pair.src_url + "/", "--secret-src", "file:///a", "--secret-dst", "file:///b"
    )
    assert mixed.returncode == 2 and "one store but the secrets differ" in mixed.stderr
    half = cli("check-replica", pair.src_url, pair.dst_url, "--secret-src", f"file://{tmp_path}/ids")
    assert half.returncode == 2 and "--secret-src and --secret-dst go together" in half.stderr
    bad = cli("check-replica", pair.src_url, pair.dst_url, "--max-lag", "soon")
    assert bad.returncode == 2 and "--max-lag" in bad.stderr
    empty = cli("check-replica", pair.src_url, pair.dst_url)
    assert empty.returncode == 1
    assert "has no complete set" in outcome(empty)["problems"][0]


def test_incomplete_primary_sets_are_ignored_dr_only_sets_reported_expiring_tolerated(pair, cli):
    src, dst = pair.src, pair.dst
    write_set(src, "s-old", ago(OLD))
    replicate(src, dst)
    # An unsealed set on the primary (a failed run): it does not exist, so it is not required in DR.
    src.put_bytes("recent/0/s-unsealed/steps/apps.json", b"{}")
    # A set the primary's lifecycle already removed (written to DR only here).
    write_set(dst, "s-expired-on-primary", ago(timedelta(days=8)))
    # A recent set older than the retention, gone from DR first.
    write_set(src, "s-expiring", ago(timedelta(days=7, hours=2)))
    result = check(cli, pair, "--recent-retention", "7d")
    assert result.returncode == 0, result.stdout
    event = outcome(result)
    assert event["sets"] == {"in_sync": 1, "expiring": 1} and event["dr_only_sets"] == 1
    assert per_set(result)["s-expiring"]["replication"] == "missing"
    assert check(cli, pair).returncode == 1  # without the retention bound, the old set is required


def test_s3_full_object_sha256_is_checked_against_the_manifest(s3_bucket, cli):
    """Uploads with a SHA-256 checksum (what the S3 writer sends): the DR object's own SHA-256 proves its content
    equals the manifest's sha256, without a read, even where the primary's object carries another algorithm."""
    import boto3

    client = boto3.client("s3")
    dr_bucket = _second_bucket("s3")
    src = open_destination(f"s3://{s3_bucket}/p")
    prefix = write_set(src, "s-old", ago(OLD))
    bad = f"{prefix}/data/apps/cantonnet_sv.0a1b2c3d.pgdump.zst"
    for info in src.list(f"{prefix}/"):
        body = src.read_bytes(info.key)
        if info.key == bad:
            body = body[:-1] + bytes([body[-1] ^ 1])
        client.put_object(Bucket=dr_bucket, Key=f"p/{info.key}", Body=body, ChecksumAlgorithm="SHA256")
    result = cli("check-replica", f"s3://{s3_bucket}/p", f"s3://{dr_bucket}/p", "--json")
    report = per_set(result)["s-old"]
    assert result.returncode == 1 and report["status"] == "differs"
    assert report["problems"] == [f"{bad[len(prefix) + 1 :]}: the DR store's SHA-256 is not the manifest's"]
    assert report["verified_by_checksum"] == 2 and report["verified_by_read"] == 3  # dumps not read


def test_one_store_spanning_both_regions_is_checked_readable_from_this_side(pair, cli):
    """A GCS dual-region bucket is its own DR copy: the check then proves the DR side can read every set."""
    write_set(pair.src, "s-one", ago(YOUNG))
    result = cli("check-replica", pair.src_url, pair.src_url, "--json", "--deep")
    assert result.returncode == 0, result.stdout + result.stderr
    event = outcome(result)
    assert event["single_store"] is True and event["sets"] == {"in_sync": 1}
    # every object of the set was read back from this side
    assert per_set(result)["s-one"]["verified_by_read"] == 5
