"""The drill settings (`sv-backups:schedule.drill`, `sv-backups:drill`): defaults per cloud and every refusal."""

from datetime import timedelta

import pytest

from components.settings import load_settings
from tests.stackfiles import problems_of, raw_config


@pytest.mark.parametrize(("stack", "schedule"), [("dev", "20 6 * * 0"), ("aws-dev", "20 6 * * 0,3")])
def test_defaults(stack, schedule):
    settings = load_settings(raw_config(stack), stack=stack)
    assert settings.schedule.drill == schedule
    assert (settings.drill.enabled, settings.drill.scratch_size, settings.drill.scratch_gib) == (True, "100Gi", 100)
    assert settings.drill.storage_class is None and settings.drill.cometbft_storage_class is None
    # The Postgres drill's deadline is its timeout; the start window is capped at 15 min.
    assert settings.derived.drill.deadline == timedelta(hours=4)
    assert settings.derived.drill.start_window == timedelta(minutes=15)


def test_an_irregular_schedule_is_measured_over_its_whole_week():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["drill"] = "0 6 * * 1,3"  # Monday, Wednesday: the largest gap is Wednesday to Monday
    assert load_settings(raw, stack="dev").derived.drill.largest_gap == timedelta(days=5)


def test_a_weekly_drill_is_too_sparse_for_cloudwatch():
    raw = raw_config("aws-dev")
    raw.setdefault("sv-backups:schedule", {})["drill"] = "20 6 * * 0"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:schedule.drill: '20 6 * * 0' leaves 168 h between two drills")
    assert "173 h 15 min" in problem and "168 h an alarm on aws can evaluate" in problem and "'20 6 * * 0,3'" in problem


def test_a_timeout_longer_than_the_drill_interval():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["drill"] = "0 6 * * *"
    raw["sv-backups:drill"] = {"timeout": "1d"}
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:drill.timeout: 1d does not fit between two drills")
    assert "23 h 30 min" in problem


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"scratchSize": "100GB"}, "sv-backups:drill.scratchSize: '100GB' must be a Kubernetes quantity in Gi or Ti"),
        ({"scratchSize": "0Gi"}, "sv-backups:drill.scratchSize: '0Gi' must be a Kubernetes quantity"),
        ({"storageClass": "Fast_SSD"}, "sv-backups:drill.storageClass: 'Fast_SSD' must be a Kubernetes object name"),
        ({"timeout": "5m"}, "sv-backups:drill.timeout: '5m' must be at least 15m"),
        ({"enabeld": False}, "sv-backups:drill.enabeld: unknown key"),
    ],
)
def test_bad_drill_values(section, expected):
    raw = raw_config("dev")
    raw["sv-backups:drill"] = section
    [problem] = problems_of(raw)
    assert problem.startswith(expected), problem


def test_a_bad_drill_schedule():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["drill"] = "weekly"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:schedule.drill:") and "5-field cron" in problem
