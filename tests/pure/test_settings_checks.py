"""The schedules of the checks (the history audit, the DR stack's replica check): measured over a full period, as
irregular as the operator likes, and refused where the cloud cannot watch their stale alert that long."""

from datetime import timedelta

from components.settings import load_settings
from tests.stackfiles import problems_of, raw_config


def test_an_audit_on_weekdays_only_has_the_weekend_as_its_largest_gap():
    raw = raw_config("prod")
    raw["sv-backups:schedule"]["audit"] = "50 5 * * 1-5"
    timing = load_settings(raw, stack="prod").derived.audit
    assert (timing.largest_gap, timing.smallest_gap) == (timedelta(days=3), timedelta(days=1))


def test_a_monthly_audit_is_too_sparse_for_cloudwatch_but_not_for_cloud_monitoring():
    raw = raw_config("aws-prod")
    raw.setdefault("sv-backups:schedule", {})["audit"] = "50 5 1 * *"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:schedule.audit: '50 5 1 * *' leaves 744 h between two audits")
    assert "an alarm on aws can evaluate" in problem and "'50 5 * * *' (the default)" in problem
    gcp = raw_config("prod")
    gcp["sv-backups:schedule"]["audit"] = "50 5 1 * *"
    assert load_settings(gcp, stack="prod").derived.audit.largest_gap == timedelta(days=31)


def test_a_weekly_replica_check_is_too_sparse_for_cloudwatch():
    raw = raw_config("aws-prod-dr")
    raw["sv-backups:dr"]["checkSchedule"] = "0 6 * * 0"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:dr.checkSchedule: '0 6 * * 0' leaves 168 h between two checks")
    assert "replication lag bound" in problem and "'*/30 * * * *' (the default)" in problem


def test_a_primary_does_not_answer_for_the_replica_check_it_does_not_run():
    raw = raw_config("aws-prod")
    raw.setdefault("sv-backups:dr", {})["checkSchedule"] = "0 6 * * 0"
    assert load_settings(raw, stack="aws-prod").derived.dr_check.largest_gap == timedelta(days=7)


def test_an_audit_twice_a_week_fits_cloudwatch_as_the_drills_do():
    # Its run is bounded (2 h), so its stale alarm is one gap away: 4 days + 15 min + 2 h + 1 h slack.
    raw = raw_config("aws-prod")
    raw.setdefault("sv-backups:schedule", {})["audit"] = "50 5 * * 0,3"
    timing = load_settings(raw, stack="aws-prod").derived.audit
    assert timing.deadline == timedelta(hours=2)
    assert timing.stale_after(timedelta(hours=1)) == timedelta(days=4, hours=3, minutes=15)
