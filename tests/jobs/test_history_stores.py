"""`audit-history` on real stores (file://, moto S3, the GCS emulator) filled by the real backup_set (real
PostgreSQL, pg_dump, uploads, seal and promotion) at chosen times: the clock it reads is injected, the rest is
what the CronJob runs. The audit runs as the pod runs it: `python -m jobs audit-history`."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from jobs.pgdump import DumpSettings
from jobs.pgsets import backup_set
from tests.jobs.pg_helpers import make_sources

pytestmark = pytest.mark.slow

WINDOW = timedelta(days=30)


@pytest.fixture(scope="module")
def sources(pg_factory):
    return make_sources(pg_factory, size_mb=1)


@pytest.fixture(params=["file", "s3", "gs"])
def store(request, tmp_path):
    if request.param == "file":
        return f"file://{tmp_path}/store"
    bucket = request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")
    return f"{request.param}://{bucket}/sv-1/postgres"


class TickingClock:
    """Starts at a chosen time and advances one microsecond per reading: every recorded time is known to the
    microsecond (and still strictly increasing, as the ordering proof needs)."""

    def __init__(self, start: datetime):
        self.at = start

    def __call__(self) -> datetime:
        self.at += timedelta(microseconds=1)
        return self.at


def take(url: str, sources, set_id: str, at: datetime, migration_id: int = 0):
    result = backup_set(
        open_destination(url),
        dsns={"apps": [sources.apps.dsn("cantonnet_sv")], "participant": [sources.participant.dsn("participant_1")]},
        set_id=set_id,
        migration_id=migration_id,
        settings=DumpSettings(dump_jobs=1),
        participant_pruning=WINDOW,
        sequencer_pruning=WINDOW,
        clock=TickingClock(at),
    )
    assert result.promoted  # every set here is due (first of its id, or a cadence later)
    return result


def audit(jobs_cli, url: str, *flags: str) -> tuple[int, dict, dict]:
    result = jobs_cli("audit-history", url, "--json", *flags)
    report, event = (json.loads(line) for line in result.stdout.splitlines())
    assert event["kind"] == "history" and event["event"] == (
        "backup.completed" if result.returncode == 0 else "backup.failed"
    )
    return result.returncode, report, event


def series(report: dict, role: str, migration_id: int = 0) -> dict:
    (found,) = [s for s in report["series"] if s["role"] == role and s["migration_id"] == migration_id]
    return found


@pytest.mark.parametrize("off_by", [-1, 1], ids=["one-second-shorter", "one-second-too-long"])
def test_a_gap_one_second_too_long_fails_and_one_second_shorter_passes(store, off_by, sources, pg_env, jobs_cli):
    latest = datetime.now(UTC) - timedelta(minutes=10)
    earliest = latest - WINDOW - timedelta(seconds=off_by)
    take(store, sources, "genesis", earliest)
    take(store, sources, "latest", latest)
    code, report, event = audit(jobs_cli, store)
    participant = series(report, "participant")
    assert participant["count"] == 2 and participant["first"]["set_id"] == "genesis"
    # From genesis's first participant snapshot request to latest's last acquisition: a few clock ticks apart.
    assert participant["largest_gap"]["seconds"] == pytest.approx(
        (WINDOW + timedelta(seconds=off_by)).total_seconds(), abs=0.001
    )
    assert participant["largest_gap"]["window"] == "30d"  # as recorded by the seal, no flag given
    if off_by < 0:
        assert code == 0 and report["ok"] and participant["verdict"] == "ok", report["problems"]
        assert report["newest"]["fresh"] and event["sets"] == 4  # both tiers of both sets
    else:
        assert code == 1 and participant["verdict"] == "gap"
        assert "historical sets genesis and latest are 30d 1s apart" in event["error"]
        assert series(report, "apps")["verdict"] == "ok"  # apps is not pruned: its gap is only reported


def test_a_migration_id_whose_history_was_deleted_fails(store, sources, pg_env, jobs_cli):
    now = datetime.now(UTC)
    # 28 days apart: beyond the cadence of a 30-day window (30d - 8h margin - 2d outage budget), so each is promoted
    take(store, sources, "m0-genesis", now - timedelta(days=60))
    take(store, sources, "m0-later", now - timedelta(days=32))
    take(store, sources, "m1-first", now - timedelta(days=29), migration_id=1)  # a synchronizer upgrade
    take(store, sources, "m1-latest", now - timedelta(hours=1), migration_id=1)
    code, report, _ = audit(jobs_cli, store)
    assert code == 0, report["problems"]
    assert {(s["migration_id"], s["role"]) for s in report["series"]} == {
        (0, "apps"),
        (0, "participant"),
        (1, "apps"),
        (1, "participant"),
    }

    for tier in ("historical", "recent"):  # e.g. a lifecycle rule that wrongly expired the old id
        delete_prefix(store, f"{tier}/0/")
    code, report, event = audit(jobs_cli, store)
    assert code == 1 and not report["ok"]
    assert "migration id 0: set m1-" in event["error"] and "none is left: its history was deleted" in event["error"]
    assert series(report, "*", 0)["verdict"] == "no-history"
    assert code == audit(jobs_cli, store, "--participant-pruning", "off")[0]  # no flag makes it whole again


def test_freshness_and_flags(store, sources, pg_env, jobs_cli):
    take(store, sources, "old", datetime.now(UTC) - timedelta(hours=6))
    code, report, event = audit(jobs_cli, store)
    assert code == 1 and not report["newest"]["fresh"] and "was taken 6h" in event["error"]
    assert audit(jobs_cli, store, "--interval", "6h", "--slack", "10m")[0] == 0
    code, report, _ = audit(jobs_cli, store, "--interval", "6h", "--participant-pruning", "6h")
    assert code == 1 and "not less than the pruning window 6h" in report["problems"][0]  # the open gap
    bad = jobs_cli("audit-history", store, "--participant-pruning", "a month")
    assert bad.returncode == 2 and "or 'off'" in bad.stderr


def delete_prefix(url: str, prefix: str) -> None:
    """Delete as an administrator would (the backup writer cannot)."""
    dest = open_destination(url)
    if url.startswith("file://"):
        shutil.rmtree(Path(dest.root) / prefix)
    elif url.startswith("s3://"):
        for info in list(dest.list(prefix)):
            dest.client.delete_object(Bucket=dest.bucket, Key=dest.name(info.key))
    else:
        for info in list(dest.list(prefix)):
            dest.bucket.blob(dest.name(info.key)).delete()
    assert not list(dest.list(prefix))
