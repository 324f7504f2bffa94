"""Nothing misspelt or impossible passes: regions the providers do not know, and (below) keys nothing reads.

Each mistake gets one message that names the key and the value once, says what is allowed and, for a near miss,
the nearest valid value.
"""

from __future__ import annotations

import pytest

from components.settings import load_settings
from rules.aws_regions import AWS_REGIONS
from rules.gcp_locations import GCP_REGIONS
from tests.stackfiles import problems_of, raw_config

GCP_LIST = "(allowed: the regions listed in rules/gcp_locations.py)"
AWS_LIST = "(allowed: the regions listed in rules/aws_regions.py)"


def _set_region(section: str | None, value: str, role: str | None = None):
    def mutate(raw):
        if section is None:
            raw[f"{'aws' if 'aws:region' in raw else 'gcp'}:region"] = value
        elif role is None:
            raw[f"sv-backups:{section}"]["region"] = value
        else:
            raw["sv-backups:postgres"][role]["region"] = value

    return mutate


@pytest.mark.parametrize(
    ("stack", "mutate", "expected"),
    [
        (
            "aws-prod",
            _set_region(None, "us-east-9"),
            f"aws:region: 'us-east-9' is not an AWS region; did you mean 'us-east-1'? {AWS_LIST}",
        ),
        ("aws-prod", _set_region(None, "us-east-1a"), "aws:region: 'us-east-1a' is a zone; its region is 'us-east-1'"),
        (
            "aws-prod",
            _set_region("postgres", "ap-northeast-1a", role="sequencer"),
            "sv-backups:postgres.sequencer.region: 'ap-northeast-1a' is a zone; its region is 'ap-northeast-1'",
        ),
        (
            "aws-prod",
            _set_region("postgres", "us-east-1-bos-1a", role="sequencer"),  # a Local Zone
            "sv-backups:postgres.sequencer.region: 'us-east-1-bos-1a' is a zone; its region is 'us-east-1'",
        ),
        (
            "aws-prod",
            _set_region("dr", "us-wets-2"),
            f"sv-backups:dr.region: 'us-wets-2' is not an AWS region; did you mean 'us-west-2'? {AWS_LIST}",
        ),
        (
            "dev",
            _set_region("dr", "us-central9"),
            f"sv-backups:dr.region: 'us-central9' is not a GCP region; did you mean 'us-central1'? {GCP_LIST}",
        ),
        (
            "dev",
            _set_region("dr", "europe-west4-b"),
            "sv-backups:dr.region: 'europe-west4-b' is a zone; its region is 'europe-west4'",
        ),
        (
            "dev",
            _set_region(None, "europe-west99"),
            f"gcp:region: 'europe-west99' is not a GCP region; did you mean 'europe-west9'? {GCP_LIST}",
        ),
        (
            "dev",
            _set_region("dr", "mars"),
            "sv-backups:dr.region: 'mars' is not a GCP region; allowed: the regions listed in rules/gcp_locations.py",
        ),
        (
            "prod",
            _set_region("postgres", "us-central1-f", role="participant"),
            "sv-backups:postgres.participant.region: 'us-central1-f' is a zone; its region is 'us-central1'",
        ),
    ],
    ids=[
        "aws-typo",
        "aws-zone",
        "rds-zone",
        "rds-local-zone",
        "aws-dr-typo",
        "gcp-dr-typo",
        "gcp-dr-zone",
        "gcp-typo",
        "gcp-no-guess",
        "cloudsql-zone",
    ],
)
def test_a_region_the_provider_does_not_know(stack, mutate, expected):
    raw = raw_config(stack)
    mutate(raw)
    assert problems_of(raw) == [expected]
    value = expected.split("'")[1]
    assert expected.count(repr(value)) == 1  # the value is named once


def test_every_kept_region_is_accepted():
    for region in sorted(GCP_REGIONS - {"europe-west3"}):
        raw = raw_config("dev")
        raw["sv-backups:dr"]["region"] = region
        assert load_settings(raw, stack="t").dr.region == region
    for region in sorted(AWS_REGIONS - {"us-east-1"}):
        raw = raw_config("aws-prod")
        raw["sv-backups:dr"]["region"] = region
        raw["sv-backups:postgres"]["sequencer"]["region"] = "us-east-1"
        raw["sv-backups:monitoring"]["notificationChannels"] = []
        assert load_settings(raw, stack="t").dr.region == region


def test_the_example_dr_region_is_never_the_primary():
    raw = raw_config("aws-prod")
    raw["aws:region"] = raw["sv-backups:dr"]["region"] = "us-west-2"
    raw["sv-backups:monitoring"]["notificationChannels"] = []
    assert problems_of(raw) == [
        "sv-backups:dr.region: 'us-west-2' is the primary region (aws:region); allowed: any other AWS region, "
        "e.g. us-east-1"
    ]


@pytest.mark.parametrize(
    ("stack", "storage_class", "expected"),
    [
        ("dev", "GLACIER", "'GLACIER' is not a GCP storage class; allowed: COLDLINE, STANDARD, NEARLINE, ARCHIVE"),
        ("aws-prod", "COLDLINE", "'COLDLINE' is not an AWS storage class; allowed: GLACIER_IR, STANDARD, "),
    ],
)
def test_storage_class_messages_name_the_cloud_plainly(stack, storage_class, expected):
    raw = raw_config(stack)
    raw["sv-backups:storage"] = {**raw.get("sv-backups:storage", {}), "historicalStorageClass": storage_class}
    [problem] = problems_of(raw)
    assert problem.startswith(f"sv-backups:storage.historicalStorageClass: {expected}")
