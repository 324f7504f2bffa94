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


# --- keys nothing reads ---------------------------------------------------------------------------------------


def _rename(old: str, new: str):
    def mutate(raw):
        raw[new] = raw.pop(old)

    return mutate


def _add(key: str, value):
    def mutate(raw):
        raw[key] = value

    return mutate


@pytest.mark.parametrize(
    ("stack", "mutate", "expected"),
    [
        (
            "dev",
            _rename("sv-backups:retention", "sv-backup:retention"),
            "sv-backup:retention: unknown key; did you mean sv-backups:retention?",
        ),
        # a required section misspelt: not also reported missing (fixing the spelling fixes both)
        (
            "dev",
            _rename("sv-backups:node", "svbackups:node"),
            "svbackups:node: unknown key; did you mean sv-backups:node?",
        ),
        (
            "dev",
            _rename("sv-backups:node", "sv-backups:nodes"),
            "sv-backups:nodes: unknown key; did you mean sv-backups:node?",
        ),
        ("dev", _add("kubernetes:contxt", "gke"), "kubernetes:contxt: unknown key; did you mean kubernetes:context?"),
        ("dev", _rename("gcp:region", "gcp:regoin"), "gcp:regoin: unknown key; did you mean gcp:region?"),
        ("aws-prod", _rename("aws:region", "aws:regin"), "aws:regin: unknown key; did you mean aws:region?"),
        (
            "dev",
            _add("gcp:frobnicate", "x"),
            "gcp:frobnicate: unknown key; the gcp provider reads no such key (see rules/config_keys.py)",
        ),
        (
            "dev",
            _add("foo:bar", "x"),
            "foo:bar: unknown key; nothing reads the namespace 'foo'; allowed: keys of sv-backups:, gcp:, aws:, "
            "kubernetes:, pulumi:",
        ),
        (
            "dev",
            lambda raw: raw["sv-backups:retention"].update(paticipantPruning="30d"),
            "sv-backups:retention.paticipantPruning: unknown key; did you mean participantPruning?",
        ),
        (
            "prod",
            lambda raw: raw["sv-backups:postgres"]["participant"].update(instanse="x"),
            "sv-backups:postgres.participant.instanse: unknown key; did you mean instance?",
        ),
        (
            "dev",
            _add("sv-backups:drill", {"xyzzy": True}),
            "sv-backups:drill.xyzzy: unknown key; allowed: enabled, scratchSize, storageClass, cometbftStorageClass, "
            "timeout",
        ),
    ],
    ids=[
        "project-prefix-typo",
        "project-prefix-typo-required",
        "section-typo-required",
        "kubernetes-typo",
        "gcp-typo-required",
        "aws-typo-required",
        "gcp-no-guess",
        "unknown-namespace",
        "nested-typo",
        "nested-typo-in-a-postgres-kind",
        "nested-no-guess",
    ],
)
def test_a_key_nothing_reads(stack, mutate, expected):
    raw = raw_config(stack)
    mutate(raw)
    assert problems_of(raw) == [expected]


def test_the_program_section_list_is_named_when_nothing_is_near():
    raw = raw_config("dev")
    raw["sv-backups:typo"] = 1
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:typo: unknown key; allowed: sv-backups:cloud, sv-backups:node, ")


def test_keys_the_engine_and_the_providers_read_are_accepted():
    raw = raw_config("dev")
    raw.update(
        {
            "pulumi:tags": {"team": "sv"},
            "pulumi:anything": "the engine's namespace is open",
            "gcp:zone": "europe-west3-a",
            "gcp:defaultLabels": {"team": "sv"},
            "kubernetes:context": "gke_sv-dev",
            "kubernetes:namespace": "sv",
            "kubernetes:enableServerSideApply": True,
        }
    )
    load_settings(raw, stack="t")
    raw = raw_config("aws-prod")
    raw.update({"aws:defaultTags": {"tags": {"team": "sv"}}, "aws:profile": "sv", "kubernetes:kubeconfig": "~/.kube"})
    load_settings(raw, stack="t")


def test_the_other_clouds_keys_keep_their_one_message():
    raw = raw_config("dev")
    raw["aws:region"] = "us-east-1"
    raw["aws:regoin"] = "us-east-1"  # misspelt as well: still the one message saying to remove it
    assert problems_of(raw) == [
        "aws:region: is aws configuration, but sv-backups:cloud is gcp; remove it",
        "aws:regoin: is aws configuration, but sv-backups:cloud is gcp; remove it",
    ]


# --- each message once, plainly -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "mutate", "expected"),
    [
        ("dev", _add("sv-backups:cloud", {"name": "gcp"}), "sv-backups:cloud: must be a non-empty string, not a map"),
        ("dev", _add("gcp:project", {"id": "p"}), "gcp:project: must be a string, not a map"),
        ("aws-prod", _add("aws:region", {"name": "us-east-1"}), "aws:region: must be a string, not a map"),
        (
            "dev",
            _add("sv-backups:node", ["sv-dev"]),
            "sv-backups:node: must be a map of keys (YAML key: value lines), not ['sv-dev']",
        ),
        (
            "dev",
            lambda raw: raw["sv-backups:node"].update(name={"first": "sv"}),
            "sv-backups:node.name: Input should be a valid string (got a map)",
        ),
    ],
    ids=["scalar-section", "gcp-project", "aws-region", "section-as-list", "field"],
)
def test_a_map_where_a_value_belongs_is_not_printed_whole(stack, mutate, expected):
    raw = raw_config(stack)
    mutate(raw)
    assert problems_of(raw) == [expected]


def test_a_list_message_names_only_the_offending_items():
    raw = raw_config("dev")
    raw["sv-backups:postgres"]["apps"]["databases"] = ["ok", "bad-name"]
    assert problems_of(raw) == [
        "sv-backups:postgres.apps.databases: ['bad-name'] are not plain PostgreSQL identifiers "
        "(letters, digits, _ and $)"
    ]
