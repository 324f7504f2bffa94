"""`pulumi up` with an invalid config: the real __main__ stops before declaring anything, with every problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi.errors import RunError

from engines.offline_plan import PlanMocks, main_program, plan_program, stack_config

ROOT = Path(__file__).resolve().parents[2]


class CountingMocks(PlanMocks):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.declared: list[str] = []

    def new_resource(self, args):
        self.declared.append(args.typ)
        return super().new_resource(args)


def test_invalid_config_declares_nothing_and_names_every_problem(dev_config):
    dev_config["sv-backups:schedule"]["postgres"] = "0 */6 * * *"
    dev_config["sv-backups:node"]["migrationId"] = -1
    del dev_config["sv-backups:postgres"]["participant"]
    mocks = CountingMocks(project="sv-dev-project", region="europe-west6")
    with pytest.raises(RunError) as error:
        plan_program(main_program(ROOT), stack_config(dev_config, project="sv-backups", stack="dev"), mocks=mocks)
    message = str(error.value)
    assert "sv-backups:schedule.postgres: '0 */6 * * *' leaves a gap of 6 h" in message
    assert "sv-backups:node.migrationId:" in message
    assert "sv-backups:postgres.participant: is required but missing" in message
    assert [t for t in mocks.declared if t != "pulumi:pulumi:Stack"] == []


def _rds_without_instance(config):
    del config["sv-backups:postgres"]["participant"]["instance"]


def _dr_is_primary(config):
    config["sv-backups:dr"]["region"] = config["aws:region"]


def _cloudsql_on_aws(config):
    sequencer = config["sv-backups:postgres"]["sequencer"]
    config["sv-backups:postgres"]["sequencer"] = {
        "kind": "cloudsql",
        **{key: sequencer[key] for key in ("instance", "passwordSecret", "databases")},
    }


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_rds_without_instance, "sv-backups:postgres.participant.instance: is required but missing"),
        (_dr_is_primary, "sv-backups:dr.region: 'us-east-1' is the primary region (aws:region)"),
        (_cloudsql_on_aws, "sv-backups:postgres.sequencer.kind: 'cloudsql' is not available on aws"),
    ],
    ids=["rds-without-instance", "dr-is-primary", "cloudsql-on-aws"],
)
def test_invalid_aws_config_declares_nothing(stack_config_map, mutate, message):
    config = stack_config_map("aws-prod")
    mutate(config)
    mocks = CountingMocks(project="", region="us-east-1")
    with pytest.raises(RunError) as error:
        plan_program(main_program(ROOT), stack_config(config, project="sv-backups", stack="aws-prod"), mocks=mocks)
    assert message in str(error.value)
    assert [t for t in mocks.declared if t != "pulumi:pulumi:Stack"] == []
