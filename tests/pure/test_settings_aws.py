"""The stack config schema on AWS: one clear message per problem, naming the key, the value and what is allowed."""

from components.settings import load_settings
from tests.stackfiles import problems_of, raw_config


def test_aws_prod_settings():
    settings = load_settings(raw_config("aws-prod"), stack="aws-prod")
    assert (settings.cloud, settings.region, settings.dr.region) == ("aws", "us-east-1", "us-west-2")
    assert settings.aws.irsa.cluster_name == "sv-1-prod" and settings.aws.irsa.replication_time_control is True
    assert [settings.postgres[r].kind for r in settings.roles] == ["in-cluster", "rds", "rds", "in-cluster"]
    assert settings.storage.historical_class("aws") == "GLACIER_IR"


def test_rds_without_instance():
    raw = raw_config("aws-prod")
    del raw["sv-backups:postgres"]["participant"]["instance"]
    assert problems_of(raw) == ["sv-backups:postgres.participant.instance: is required but missing"]


def test_dr_region_equal_to_the_primary():
    raw = raw_config("aws-prod")
    raw["sv-backups:dr"]["region"] = "us-east-1"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:dr.region: 'us-east-1' is the primary region (aws:region)")


def test_cloudsql_on_aws():
    raw = raw_config("aws-prod")
    raw["sv-backups:postgres"]["participant"] = {
        "kind": "cloudsql",
        "instance": "sv-1-participant-pg-4",
        "passwordSecret": "participant-pg-secret",
        "databases": ["participant_4"],
    }
    assert problems_of(raw) == [
        "sv-backups:postgres.participant.kind: 'cloudsql' is not available on aws; allowed: 'in-cluster' or 'rds'"
    ]


def test_the_cluster_name_is_required():
    raw = raw_config("aws-prod")
    del raw["sv-backups:aws"]["clusterName"]
    assert problems_of(raw) == ["sv-backups:aws.clusterName: is required but missing"]


def test_an_oidc_issuer_that_is_not_eks():
    raw = raw_config("aws-prod")
    raw["sv-backups:aws"]["oidcProvider"] = "https://token.actions.githubusercontent.com"
    [problem] = problems_of(raw)
    assert problem.startswith(
        "sv-backups:aws.oidcProvider: 'https://token.actions.githubusercontent.com' must be an EKS"
    )


def test_sns_topics_must_be_in_the_alarms_region():
    raw = raw_config("aws-prod")
    raw["sv-backups:monitoring"]["notificationChannels"] = ["arn:aws:sns:eu-west-1:123456789012:oncall"]
    [problem] = problems_of(raw)
    assert problem.startswith(
        "sv-backups:monitoring.notificationChannels: ['arn:aws:sns:eu-west-1:123456789012:oncall']"
    )
    assert "only notify SNS topics of their own region" in problem


def test_an_rds_instance_in_the_dr_region():
    raw = raw_config("aws-prod")
    raw["sv-backups:postgres"]["sequencer"]["region"] = "us-west-2"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.sequencer.region: 'us-west-2' is dr.region")


def test_gcp_keys_on_an_aws_stack_and_an_unknown_lock_mode():
    raw = raw_config("aws-prod")
    raw["gcp:project"] = "sv-prod-project"
    raw["sv-backups:storage"]["objectLockMode"] = "LEGAL_HOLD"
    problems = problems_of(raw)
    assert "gcp:project: is gcp configuration, but sv-backups:cloud is aws; remove it" in problems
    assert any(p.startswith("sv-backups:storage.objectLockMode:") and "COMPLIANCE" in p for p in problems)
    assert len(problems) == 2
