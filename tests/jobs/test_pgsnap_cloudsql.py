"""The `cloudsql-backup` provider (jobs/pgsnap_cloudsql.py) against a local fake of the Cloud SQL Admin API
(tests/jobs/fakes/cloudsql_admin.py): on-demand backup runs, their operations, listing, deletion and restore,
with the faults a real API shows (409 operationInProgress, 500s, garbage answers, failed and endless operations).

Time: the waits run on a fake monotonic clock that advances only when the code sleeps, so a deadline is reached
by the number of polls, never by the wall clock."""

from __future__ import annotations

import pytest

from jobs.pgsnap_cloudsql import (
    CloudSqlBackups,
    Poll,
    description,
    parse_description,
    parse_handle,
    provider_from_args,
    restore_cloudsql_backup,
)
from jobs.snapshot_providers import SnapshotError
from rules.manifest import parse_time
from rules.snapshot_sets import CLOUDSQL_BACKUP, PROVIDER, RoleSnapshot
from tests.jobs.fakes.cloudsql_admin import CloudSqlAdmin, error
from tests.jobs.fakes.httpserver import Reply

PROJECT = "sv-node-1"
TOKEN = "ya29.secret-token-value-0123456789"


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeTime()


@pytest.fixture
def poll(clock):
    return Poll(interval=1, max_interval=4, timeout=120, busy_retries=3, transient_retries=2,
                sleep=clock.sleep, monotonic=clock.monotonic)  # fmt: skip


@pytest.fixture
def api():
    with CloudSqlAdmin(token=TOKEN, polls_per_state=2, page_size=2) as fake:
        for instance in ("apps-pg", "participant-pg", "scratch-pg"):
            fake.add_instance(PROJECT, instance)
        yield fake


def provider(api, poll, instance="apps-pg", location="us", token=TOKEN) -> CloudSqlBackups:
    return CloudSqlBackups(PROJECT, instance, location, api_url=api.url, token_source=lambda: token, poll=poll)


def take(p: CloudSqlBackups, role="apps", set_id="sv-pg-snap-29012345-abcde", migration_id=3) -> RoleSnapshot:
    return p.take(role=role, set_id=set_id, migration_id=migration_id)


def test_a_backup_run_is_requested_waited_for_and_recorded_with_the_providers_times(api, poll):
    taken = take(provider(api, poll))

    [run] = api.runs_of(PROJECT, "apps-pg")
    assert run["status"] == "SUCCESSFUL"
    assert taken.handle == f"{PROJECT}/apps-pg/{run['id']}"
    assert (taken.method, taken.consistency, taken.role) == (CLOUDSQL_BACKUP, PROVIDER, "apps")
    assert taken.cut_at == parse_time(run["windowStartTime"])
    # The provider's own times, verbatim, beside ours.
    for name in ("enqueuedTime", "startTime", "endTime", "windowStartTime"):
        assert taken.provider_times[name] == run[name]
    assert {"operation.insertTime", "operation.startTime", "operation.endTime"} <= taken.provider_times.keys()
    assert taken.requested_at <= taken.completed_at and taken.requested_mono <= taken.completed_mono
    assert taken.details["location"] == "us" and taken.dr_copy is None
    # What went over the wire: the description carries the set (backup runs have no labels), location as asked.
    [insert] = [r for r in api.requests if r.method == "POST"]
    assert insert.json() == {"description": description("sv-pg-snap-29012345-abcde", "apps", 3), "location": "us"}
    assert RoleSnapshot.from_record(taken.to_record()) == taken


def test_without_a_backup_context_the_run_is_found_by_its_description(api, poll):
    api.omit_backup_context = True
    api.add_run(PROJECT, "apps-pg")  # an automated backup beside ours
    taken = take(provider(api, poll, location=None))
    ours = [r for r in api.runs_of(PROJECT, "apps-pg") if r["type"] == "ON_DEMAND"]
    assert taken.handle.endswith("/" + ours[0]["id"])
    assert "location" not in next(r for r in api.requests if r.method == "POST").json()


def test_another_operation_in_progress_is_retried_with_backoff(api, poll, clock):
    api.busy(PROJECT, "apps-pg", 2)
    take(provider(api, poll))
    assert api.count("POST", f"/v1/projects/{PROJECT}/instances/apps-pg/backupRuns") == 3
    assert len(api.runs_of(PROJECT, "apps-pg")) == 1


def test_an_instance_busy_for_longer_than_the_retries_fails_the_request_and_creates_nothing(api, poll):
    api.busy(PROJECT, "apps-pg", 10)
    with pytest.raises(SnapshotError) as raised:
        take(provider(api, poll))
    assert raised.value.stage == "request"
    assert "409" in str(raised.value) and "already in progress" in str(raised.value)
    assert api.runs_of(PROJECT, "apps-pg") == []


def test_an_operation_that_fails_fails_the_step_and_its_run_is_removed(api, poll):
    api.fate("error")
    with pytest.raises(SnapshotError) as raised:
        take(provider(api, poll))
    assert raised.value.stage == "wait"
    assert "INTERNAL_ERROR: backup failed" in str(raised.value) and "removed" in str(raised.value)
    assert api.runs_of(PROJECT, "apps-pg") == []


def test_a_failed_run_the_creator_cannot_delete_is_left_not_ready_for_the_pruner(api, poll):
    api.fate("error")
    api.deny_delete = True
    p = provider(api, poll)
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert "left for the pruner" in str(raised.value) and "403" in str(raised.value)
    [leftover] = p.list_taken()
    assert (leftover.role, leftover.ready) == ("apps", False)


def test_an_operation_that_never_finishes_fails_at_the_deadline(api, poll, clock):
    api.fate("never")
    p = provider(api, poll)
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert raised.value.stage == "wait" and "not DONE after 120s" in str(raised.value)
    assert clock.now >= 120
    # The run is still RUNNING, so its delete is refused as Cloud SQL refuses it; it stays, not ready.
    assert "left for the pruner" in str(raised.value)
    assert [t.ready for t in p.list_taken()] == [False]


@pytest.mark.parametrize(
    ("method", "path", "reply", "words"),
    [
        ("GET", "/operations/", Reply(200, b"<html>Service Unavailable</html>", "text/html"), "not a JSON object"),
        ("GET", "/operations/", Reply.json({"kind": "sql#operation", "name": "x"}), "no valid 'status'"),
        ("GET", "/operations/", Reply.json({"name": "x", "status": "EXPLODED"}), "'EXPLODED'"),
        ("GET", r"/backupRuns/\d+$", Reply.json({"kind": "sql#backupRun"}), "no valid 'status'"),
        ("GET", r"/backupRuns/\d+$", Reply.json({"status": "SUCCESSFUL", "windowStartTime": "yesterday"}),
         "not the one requested"),
        ("POST", "/backupRuns$", Reply.json({"kind": "sql#operation"}), "no valid 'name'"),
    ],
)  # fmt: skip
def test_a_garbage_answer_fails_the_step_with_a_clear_message(api, poll, method, path, reply, words):
    api.inject(method, path, reply, times=100)
    with pytest.raises(SnapshotError) as raised:
        take(provider(api, poll))
    assert words in str(raised.value)


def test_a_cut_that_is_not_a_time_fails_the_step(api, poll):
    p = provider(api, poll)
    answering(p, {"windowStartTime": "not a time"})
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert "windowStartTime 'not a time' is not an RFC 3339 time" in str(raised.value)


def test_transient_errors_while_waiting_are_retried_and_persistent_ones_fail(api, poll):
    api.inject("GET", "/operations/", error(503, "backend unavailable"), times=2)
    take(provider(api, poll, instance="apps-pg"))

    api.inject("GET", "/operations/", error(500, "internal error"), times=100)
    with pytest.raises(SnapshotError) as raised:
        take(provider(api, poll, instance="participant-pg"), role="participant")
    assert raised.value.stage == "wait" and "HTTP 500: internal error" in str(raised.value)


def test_a_500_on_the_request_fails_it_without_a_blind_retry(api, poll):
    api.inject("POST", "/backupRuns$", error(500, "internal error"))
    with pytest.raises(SnapshotError) as raised:
        take(provider(api, poll))
    assert raised.value.stage == "request" and "HTTP 500" in str(raised.value)
    assert api.count("POST") == 1 and api.runs_of(PROJECT, "apps-pg") == []


def test_a_refused_token_is_reported_without_the_token(api, poll):
    with pytest.raises(SnapshotError) as raised:
        take(provider(api, poll, token="ya29.wrong-token-value-987654321"))
    assert "HTTP 401" in str(raised.value)
    assert "ya29" not in str(raised.value)
    assert all(r.headers.get("authorization") == "Bearer ya29.wrong-token-value-987654321" for r in api.requests)


def test_list_taken_pages_through_every_run_and_keeps_only_ours(api, poll):
    p = provider(api, poll)
    for role in ("apps", "participant", "sequencer"):
        take(p, role=role)
    api.add_run(PROJECT, "apps-pg")  # automated
    api.add_run(PROJECT, "apps-pg", description="taken by hand before an upgrade")
    api.add_run(PROJECT, "apps-pg", description=description("old-set", "apps", 2), status="FAILED")

    taken = p.list_taken()
    assert api.count("GET", f"/v1/projects/{PROJECT}/instances/apps-pg/backupRuns") >= 3  # 6 runs, pages of 2
    assert sorted((t.set_id, t.role, t.migration_id, t.ready) for t in taken) == [
        ("old-set", "apps", 2, False),
        ("sv-pg-snap-29012345-abcde", "apps", 3, True),
        ("sv-pg-snap-29012345-abcde", "participant", 3, True),
        ("sv-pg-snap-29012345-abcde", "sequencer", 3, True),
    ]
    assert all(parse_handle(t.handle)[:2] == (PROJECT, "apps-pg") for t in taken)


def test_delete_removes_the_run_and_a_gone_run_counts_as_deleted(api, poll):
    p = provider(api, poll)
    taken = take(p)
    p.delete(taken.handle)
    assert api.runs_of(PROJECT, "apps-pg") == []
    p.delete(taken.handle)  # already gone: nothing to do


def test_delete_refused_or_malformed_is_a_delete_error(api, poll):
    p = provider(api, poll)
    taken = take(p)
    api.deny_delete = True
    with pytest.raises(SnapshotError) as raised:
        p.delete(taken.handle)
    assert raised.value.stage == "delete" and "403" in str(raised.value)
    with pytest.raises(SnapshotError, match="not a Cloud SQL backup handle"):
        p.delete("default/apps-snapshot")


def test_description_round_trips_and_rejects_what_is_not_ours():
    assert parse_description(description("set-1", "canton-bft", 7)) == ("set-1", "canton-bft", 7)
    assert parse_description("sv-backups snapshot-set set=a role=b migration=x") is None
    assert parse_description(None) is None


def test_bad_names_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="instance 'Apps_PG'"):
        CloudSqlBackups(PROJECT, "Apps_PG", None)
    with pytest.raises(ValueError, match="project ''"):
        CloudSqlBackups("", "apps-pg", None)
    with pytest.raises(ValueError, match="location 'US EAST'"):
        CloudSqlBackups(PROJECT, "apps-pg", "US EAST")


def test_restore_onto_another_instance_waits_for_the_operation(api, poll):
    taken = take(provider(api, poll))
    run_id = parse_handle(taken.handle)[2]
    result = restore_cloudsql_backup(PROJECT, "apps-pg", run_id, "scratch-pg", api_url=api.url,
                                     token_source=lambda: TOKEN, poll=poll)  # fmt: skip
    assert api.restored == [
        {"target": (PROJECT, "scratch-pg"), "source": (PROJECT, "apps-pg"), "backup_run_id": run_id}
    ]
    assert result["target"] == f"{PROJECT}/scratch-pg" and "endTime" in result["provider_times"]
    [request] = [r for r in api.requests if r.path.endswith("/restoreBackup")]
    assert request.json()["restoreBackupContext"] == {
        "kind": "sql#restoreBackupContext", "backupRunId": run_id, "instanceId": "apps-pg", "project": PROJECT
    }  # fmt: skip


def test_restore_onto_the_source_needs_in_place(api, poll):
    taken = take(provider(api, poll))
    run_id = parse_handle(taken.handle)[2]
    kw = {"api_url": api.url, "token_source": lambda: TOKEN, "poll": poll}
    with pytest.raises(SnapshotError, match=r"refusing to restore .* onto its own instance"):
        restore_cloudsql_backup(PROJECT, "apps-pg", run_id, "apps-pg", **kw)
    assert not any(r.path.endswith("/restoreBackup") for r in api.requests)
    restore_cloudsql_backup(PROJECT, "apps-pg", run_id, "apps-pg", in_place=True, **kw)
    assert api.restored[-1]["target"] == (PROJECT, "apps-pg")


def test_restore_failures_are_restore_errors(api, poll):
    taken = take(provider(api, poll))
    run_id = parse_handle(taken.handle)[2]
    kw = {"api_url": api.url, "token_source": lambda: TOKEN, "poll": poll}
    with pytest.raises(SnapshotError, match="instance missing-pg does not exist") as raised:
        restore_cloudsql_backup(PROJECT, "apps-pg", run_id, "missing-pg", **kw)
    assert raised.value.stage == "restore"
    api.fate("error")
    with pytest.raises(SnapshotError, match=r"operation .* failed: INTERNAL_ERROR"):
        restore_cloudsql_backup(PROJECT, "apps-pg", run_id, "scratch-pg", **kw)
    assert api.restored == []
    with pytest.raises(ValueError, match="backup run id 'latest'"):
        restore_cloudsql_backup(PROJECT, "apps-pg", "latest", "scratch-pg", **kw)


def answering(p: CloudSqlBackups, change: dict) -> None:
    """Make the run's GET answer carry `change` (a provider that says DONE but a run that did not succeed)."""
    real_call = p.api.call

    def call(method, path, **kw):
        answer = real_call(method, path, **kw)
        if method == "GET" and "/backupRuns/" in path:
            answer = {**answer, **change}
        return answer

    p.api.call = call


def test_a_run_that_did_not_succeed_fails_the_step_even_when_its_operation_is_done(api, poll):
    p = provider(api, poll)
    answering(p, {"status": "FAILED", "error": {"code": "ERROR", "message": "disk full"}})
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert raised.value.stage == "wait" and "is FAILED (disk full)" in str(raised.value)


def test_missing_credentials_fail_the_request_with_a_clear_message(api, poll, monkeypatch, tmp_path):
    # No ADC anywhere: google-auth's own error, as a request error of the step.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    p = CloudSqlBackups(PROJECT, "apps-pg", None, api_url=api.url, poll=poll)
    with pytest.raises(SnapshotError) as raised:
        take(p)
    assert raised.value.stage == "request" and "no Google credentials" in str(raised.value)
    assert api.requests == [] and "could not look" not in str(raised.value)


def test_the_pruners_provider_lists_every_instance_of_the_project_and_deletes_by_handle(api, poll):
    take(provider(api, poll, instance="apps-pg"), role="apps")
    take(provider(api, poll, instance="participant-pg"), role="participant")
    pruner = CloudSqlBackups(PROJECT, None, None, api_url=api.url, token_source=lambda: TOKEN, poll=poll)
    taken = sorted(pruner.list_taken(), key=lambda t: t.role)
    assert [(t.role, parse_handle(t.handle)[1]) for t in taken] == [
        ("apps", "apps-pg"),
        ("participant", "participant-pg"),
    ]
    for item in taken:
        pruner.delete(item.handle)
    assert api.runs_of(PROJECT, "apps-pg") == [] and api.runs_of(PROJECT, "participant-pg") == []
    with pytest.raises(SnapshotError, match="this provider only prunes"):
        take(pruner)


def test_provider_from_the_cli_flags():
    from argparse import Namespace
    from datetime import timedelta

    p = provider_from_args(Namespace(project=PROJECT, instance="apps-pg", location="us", poll_interval=2.0,
                                     ready_timeout=timedelta(minutes=45)))  # fmt: skip
    assert (p.project, p.instance, p.location) == (PROJECT, "apps-pg", "us")
    assert (p.api.poll.interval, p.api.poll.timeout) == (2.0, 2700.0)
    assert provider_from_args(Namespace(project=PROJECT)).instance is None
    with pytest.raises(ValueError, match="needs --project"):
        provider_from_args(Namespace(project=None, instance="apps-pg"))


def test_the_emulator_env_points_the_cli_provider_at_a_local_api(monkeypatch, poll):
    from argparse import Namespace

    with CloudSqlAdmin(token="emulator") as fake:
        fake.add_instance(PROJECT, "apps-pg")
        monkeypatch.setenv("SV_BACKUPS_CLOUDSQL_EMULATOR", fake.url)
        p = provider_from_args(Namespace(project=PROJECT, instance="apps-pg", location=None))
        p.api.poll = poll
        taken = take(p)
        assert taken.handle.startswith(f"{PROJECT}/apps-pg/") and fake.requests


def test_a_set_through_the_job_cli_step_seal_and_prune(jobs_cli, tmp_path):
    """`python -m jobs snapshot-step/snapshot-seal/prune-snapshots --method cloudsql-backup` as the CronJobs run
    them (jobs/pgsnap_cli.py builds the provider with provider_from_args), against the fake Admin API."""
    pytest.importorskip("jobs.pgsnap_cli")
    import json

    from tests.jobs.conftest import job_env

    with CloudSqlAdmin(token="emulator") as fake:
        for instance in ("apps-pg", "participant-pg"):
            fake.add_instance(PROJECT, instance)
        env = job_env(SV_BACKUPS_CLOUDSQL_EMULATOR=fake.url)
        store = f"file://{tmp_path}"
        common = ["--dest", store, "--set-id", "sv-pg-snap-1", "--migration-id", "0"]
        for role, instance in (("apps", "apps-pg"), ("participant", "participant-pg")):
            where = ["--project", PROJECT, "--instance", instance, "--location", "us", "--poll-interval", "0.01"]
            done = jobs_cli("snapshot-step", "--role", role, *common, "--method", "cloudsql-backup", *where, env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            event = json.loads(done.stdout.splitlines()[-1])
            assert event["handle"].startswith(f"{PROJECT}/{instance}/") and event["consistency"] == "provider"
        sealed = jobs_cli("snapshot-seal", *common, "--roles", "apps,participant", env=env)
        assert sealed.returncode == 0, sealed.stdout + sealed.stderr
        pruned = jobs_cli("prune-snapshots", "--dest", store, "--migration-id", "0", "--keep-recent", "0s",
                          "--project", PROJECT, "--poll-interval", "0.01", env=env)  # fmt: skip
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "emulator" not in done.stderr + sealed.stderr + pruned.stderr
