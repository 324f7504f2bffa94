"""engines/new_stack.py without the plan: which questions `make new-stack` asks, and what the files hold."""

from __future__ import annotations

import pytest
import yaml

from engines import new_stack

FLAGS = {
    "cloud": "aws", "stack": "eks-1", "node": "sv-7", "namespace": "sv", "migration_id": "3",
    "region": "eu-central-1", "dr_region": "eu-west-1", "postgres": "managed",
}  # fmt: skip


def test_only_the_missing_answers_are_asked_and_only_those_of_the_cloud():
    asked = []
    replies = {
        new_stack.QUESTIONS["cluster_name"]: "sv-eks",
        new_stack.QUESTIONS["restore_role_arns"]: "arn:aws:iam::111122223333:role/restore",
    }

    def ask(question: str) -> str:
        asked.append(question)
        return replies[question]

    answers = new_stack.answers_from({**FLAGS, "project": None, "cluster_name": None}, ask)
    assert asked == [new_stack.QUESTIONS["cluster_name"], new_stack.QUESTIONS["restore_role_arns"]]
    assert answers.restore_role_arns == ("arn:aws:iam::111122223333:role/restore",)
    assert answers.migration_id == 3


def test_the_files_are_the_recommended_production_configuration():
    answers = new_stack.answers_from(
        {**FLAGS, "cluster_name": "sv-eks", "restore_role_arns": ["arn:aws:iam::111122223333:role/restore"]}
    )
    files = new_stack.render(answers)
    primary = yaml.safe_load(files["Pulumi.eks-1.yaml"])["config"]
    dr = yaml.safe_load(files["Pulumi.eks-1-dr.yaml"])["config"]
    assert primary["sv-backups:production"] is True and dr["sv-backups:production"] is True
    assert primary["sv-backups:snapshots"] == {"schedule": "0 */4 * * *"}
    assert primary["sv-backups:dr"] == {"region": "eu-west-1"}
    assert {r: i["kind"] for r, i in primary["sv-backups:postgres"].items()} == {
        "apps": "in-cluster", "participant": "rds", "sequencer": "rds", "mediator": "in-cluster",
    }  # fmt: skip
    assert dr["sv-backups:role"] == "dr"
    assert dr["aws:region"] == "eu-west-1"
    assert dr["sv-backups:dr"]["primaryStack"] == "organization/sv-backups/eks-1"
    assert primary["sv-backups:jobImage"].endswith("@" + new_stack.PLACEHOLDER_DIGEST)
    assert primary["sv-backups:identities"]["clientSecret"].keys() == {"secure"}


def test_existing_files_are_not_replaced_without_force(tmp_path):
    answers = new_stack.answers_from(
        {**FLAGS, "cluster_name": "sv-eks", "restore_role_arns": ["arn:aws:iam::111122223333:role/restore"]}
    )
    new_stack.write(answers, tmp_path)
    with pytest.raises(new_stack.NewStackError, match="exists; choose another --stack or pass --force"):
        new_stack.write(answers, tmp_path)
    new_stack.write(answers, tmp_path, overwrite=True)
