"""The daily history audit CronJob of a primary stack, through the mock engine."""

from __future__ import annotations

import json

import pytest

from jobs.__main__ import build_parser
from tests.stackfiles import Example, raw_config

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")

CRON_JOB = "kubernetes:batch/v1:CronJob"


def audit_job(plan) -> dict:
    [job] = [j for j in plan.of_type(CRON_JOB) if j["name"].endswith("-history-audit")]
    return job["inputs"]


@pytest.mark.parametrize(
    ("stack", "interval", "slack"),
    [
        # 4-hourly dump sets: fresh within 4 h, plus a run's start window and deadline (3 h 45 min) and the 1 h slack.
        ("dev", "4h", "285m"),
        # Beside snapshot sets the dump sets run weekly (prod) or twice a week (aws-prod): fresh within that gap,
        # plus a run's start window and its 24 h bound (rules/schedules.py MAX_RUN_DEADLINE) and the slack.
        ("prod", "7d", "1515m"),
        ("aws-prod", "4d", "1515m"),
    ],
)
def test_the_audit_runs_daily_on_the_store_with_the_freshness_bound(shipped_plan, stack, interval, slack):
    plan = shipped_plan(stack)
    job = audit_job(plan)
    assert job["spec"]["schedule"] == "50 5 * * *" and "suspend" not in job["spec"]
    [container] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "audit-history",
        plan.outputs["backupUrl"],
        "--interval",
        interval,
        "--slack",
        slack,
        "--json",
    ]
    # A day between audits, but a run that has not finished in 2 h is hung (schedules.MAX_CHECK_RUN).
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 2 * 3600
    args = build_parser().parse_args(container["args"])  # the job's own parser accepts exactly these flags
    assert args.url == plan.outputs["backupUrl"]
    assert plan.outputs["cronJobs"]["historyAudit"] == f"{plan.outputs['node']['name']}-history-audit"


def test_the_audit_reads_only_its_store_on_gcp(shipped_plan):
    plan = shipped_plan("prod")
    member = f"serviceAccount:sv-1-restore@{EX.project}.iam.gserviceaccount.com"
    grants = [r for r in plan.resources if r["inputs"].get("member") == member]
    # The store for the audit (and the Postgres drill); the secret for the identities drill (test_drill.py).
    assert sorted((g["type"], g["inputs"]["role"]) for g in grants) == [
        ("gcp:projects/iAMMember:IAMMember", "roles/storage.objectViewer"),
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor"),
    ]
    grants = [g for g in grants if g["type"] == "gcp:projects/iAMMember:IAMMember"]
    bucket = plan.outputs["backupBucket"]
    assert f'resource.name == "projects/_/buckets/{bucket}"' in grants[0]["inputs"]["condition"]["expression"]


def test_the_audit_reads_only_its_store_on_aws(shipped_plan):
    plan = shipped_plan("aws-prod")
    [policy] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r["name"] == "sv-1-backups-reader-audit"]
    assert policy["inputs"]["role"] == "sv-1-restore"
    actions = set()
    for statement in json.loads(policy["inputs"]["policy"])["Statement"]:
        assert statement["Effect"] == "Allow"
        actions |= {statement["Action"]} if isinstance(statement["Action"], str) else set(statement["Action"])
    assert actions == {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}


@pytest.mark.parametrize(("stack", "alert_type"), [("prod", "gcp:monitoring/alertPolicy:AlertPolicy")])
def test_the_audit_alerts_when_it_fails_or_stops_passing(shipped_plan, stack, alert_type):
    alerts = shipped_plan(stack).of_type(alert_type)
    kinds = {
        (a["inputs"]["userLabels"]["svbackups-kind"], a["inputs"]["userLabels"]["svbackups-alert"]) for a in alerts
    }
    assert {("history", "stale"), ("history", "failed")} <= kinds


def test_an_audit_on_weekdays_only_is_stale_after_the_weekend_not_after_a_day(offline_plan):
    # Friday's audit to Monday's is 3 days: the stale alert must wait that long, or it pages every Monday.
    raw = raw_config("prod")
    raw["sv-backups:schedule"]["audit"] = "50 5 * * 1-5"
    alerts = {a["name"]: a["inputs"] for a in offline_plan(raw).of_type("gcp:monitoring/alertPolicy:AlertPolicy")}
    duration = alerts["sv-1-alert-history-stale"]["conditions"][0]["conditionAbsent"]["duration"]
    # 3 days + the start window (15 min) + the run (at most 2 h, schedules.MAX_CHECK_RUN) + 1 h slack
    assert duration == f"{3 * 86400 + 15 * 60 + 2 * 3600 + 3600}s"
