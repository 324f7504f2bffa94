"""`pulumi up` with an invalid config: the real __main__ stops before declaring anything, with every problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi.errors import RunError

from scripts.offline_plan import PlanMocks, main_program, plan_program, stack_config

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
