"""`pulumi up` with an invalid config: the real __main__ stops before declaring anything, with every problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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


# --- scripts/plan.py --config-file on a broken copy of a shipped stack: exit 2, one message, no traceback ----------


def _plan_broken_copy(tmp_path: Path, stack: str, mutate) -> tuple[int, list[str], str]:
    """Plan a copy of stacks/Pulumi.<stack>.yaml after `mutate(config)`: (exit code, problem lines, all output)."""
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    mutate(document["config"])
    path = tmp_path / f"Pulumi.{stack}-broken.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plan.py"), "--config-file", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    header, *problems = run.stderr.splitlines()
    assert "has an invalid configuration; nothing was declared" in header, run.stderr
    return run.returncode, problems, run.stdout + run.stderr


def _set(section: str, key: str, value: str):
    def mutate(config):
        config[section][key] = value

    return mutate


def _rename(old: str, new: str):
    def mutate(config):
        config[new] = config.pop(old)

    return mutate


def _set_rds_region(config):
    config["sv-backups:postgres"]["sequencer"]["region"] = "ap-northeast-1a"


@pytest.mark.parametrize(
    ("stack", "mutate", "key"),
    [
        ("aws-prod", lambda c: c.update({"aws:region": "us-east-9"}), "aws:region"),
        ("dev", _set("sv-backups:dr", "region", "us-central9"), "sv-backups:dr.region"),
        ("aws-prod", _set_rds_region, "sv-backups:postgres.sequencer.region"),
        ("dev", _rename("sv-backups:retention", "sv-backup:retention"), "sv-backup:retention"),
        ("prod", _rename("sv-backups:node", "svbackups:node"), "svbackups:node"),
        ("aws-prod", lambda c: c.update({"kubernetes:contxt": "eks-prod"}), "kubernetes:contxt"),
    ],
    ids=[
        "aws-region-typo",
        "dr-region-typo",
        "rds-region-is-a-zone",
        "project-prefix-typo",
        "required-section-under-a-misspelt-prefix",
        "kubernetes-key-typo",
    ],
)
def test_plan_refuses_a_broken_stack_with_one_message(tmp_path, stack, mutate, key):
    code, problems, output = _plan_broken_copy(tmp_path, stack, mutate)
    assert code == 2
    assert len(problems) == 1 and problems[0].startswith(f"{key}: "), problems
    assert "Traceback" not in output


def _plan_file(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "Pulumi.layout.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plan.py"), "--config-file", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def _dev_document() -> dict:
    return yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The settings written at the top level: one message naming the missing `config:`, not one per key.
        (
            yaml.safe_dump(_dev_document()["config"]),
            "no top-level `config:` key; put the settings (gcp:project, gcp:region, sv-backups:cloud, ...) under "
            "`config:`, indented",
        ),
        (yaml.safe_dump({**_dev_document(), "confg": {}}), "unknown top-level key 'confg'; a stack file has config,"),
        ("", "the file is empty; a stack file holds its settings under a top-level `config:`"),
        ("config:\n", "`config:` must be a map of keys to values"),
    ],
    ids=["config-key-missing", "top-level-typo", "empty-file", "empty-config"],
)
def test_a_stack_file_of_the_wrong_shape_gets_one_message(tmp_path, text, expected):
    run = _plan_file(tmp_path, text)
    assert run.returncode == 2
    [line] = run.stderr.splitlines()
    assert expected in line and "Traceback" not in run.stdout + run.stderr
