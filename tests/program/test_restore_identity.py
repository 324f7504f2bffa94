"""A person restores as the stack's restore identity, never with a key: on GCP the members of
sv-backups:restore.impersonators may impersonate the restore service account (token creator on that account
only); on AWS people assume sv-backups:aws.restoreRoleArns, and the key is refused with that way out."""

from __future__ import annotations

import pytest

from components.settings import SettingsError, load_settings

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"


@pytest.mark.parametrize("stack", ["prod", "prod-dr"])
def test_the_named_people_may_impersonate_the_restore_account_and_nothing_else(
    offline_plan, stack_config_map, prod_plan, stack
):
    config = stack_config_map(stack)
    config["sv-backups:restore"] = {"impersonators": ["group:sv-oncall@example.com", "user:alice@example.com"]}
    references = {"sv-operator/sv-backups/prod": prod_plan.outputs} if stack.endswith("-dr") else None
    plan = offline_plan(config, stack=stack, stack_references=references)
    grants = [r for r in plan.of_type(MEMBER) if r["inputs"]["role"] == TOKEN_CREATOR]
    assert sorted(g["inputs"]["member"] for g in grants) == ["group:sv-oncall@example.com", "user:alice@example.com"]
    accounts = plan.of_type("gcp:serviceaccount/account:Account")
    restore = [a for a in accounts if a["inputs"]["accountId"].endswith("-restore")]
    assert len(restore) == 1  # one restore identity per stack, the only one people may act as
    assert all("-restore-impersonator-" in grant["name"] for grant in grants)
    shipped = offline_plan(stack_config_map(stack), stack=stack, stack_references=references)
    assert not [r for r in shipped.of_type(MEMBER) if r["inputs"]["role"] == TOKEN_CREATOR]


def test_bad_members_and_the_aws_key_are_refused_with_the_way_out(stack_config_map):
    config = stack_config_map("prod")
    config["sv-backups:restore"] = {"impersonators": ["sv-oncall@example.com"]}
    with pytest.raises(SettingsError, match="are not IAM members; allowed: user:EMAIL, group:EMAIL"):
        load_settings(config, stack="prod")
    config = stack_config_map("aws-prod")
    config["sv-backups:restore"] = {"impersonators": ["group:sv-oncall@example.com"]}
    with pytest.raises(SettingsError, match="restoreRoleArns"):
        load_settings(config, stack="aws-prod")
