"""Fixtures that plan a stack in-process through the offline plan engine (engines/offline_plan.py).

    def test_bucket(offline_plan, dev_config):
        dev_config["sv-backups:retention"]["recent"] = "7d"
        result = offline_plan(dev_config)                  # the real program, stack "test"
        bucket = result.of_type("gcp:storage/bucket:Bucket")[0]
        assert bucket["inputs"]["retentionPolicy"]["retentionPeriod"] == "604800"

    def test_shipped(prod_plan):                           # planned once per session: do not mutate
        assert prod_plan.outputs["backupBucket"]

Every plan runs in its own thread and context: a fresh root stack, config and exports, nothing shared with
other tests. `program=` plans any zero-argument callable instead of the real program (component tests).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.offline_plan import (
    PlanResult,
    StackConfig,
    load_project,
    load_stack_file,
    main_program,
    plan_program,
    primary_stack_references,
    stack_config,
)
from tests.stackfiles import stack_names

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT)
# Every stack file under stacks/: a new stack is planned, validated and golden-checked by every generic test.
SHIPPED_STACKS = tuple(stack_names())


def program_ready() -> bool:
    """The real program exists (components/program.py and __main__.py)."""
    return (ROOT / "components" / "program.py").is_file() and (ROOT / "__main__.py").is_file()


def to_stack_config(source: Mapping[str, Any] | Path | StackConfig, *, stack: str, project: str) -> StackConfig:
    if isinstance(source, StackConfig):
        return source
    if isinstance(source, Path):
        return load_stack_file(source, project=project, stack=stack)
    # A whole stack document or just its `config:` map.
    config = source["config"] if set(source) == {"config"} else source
    return stack_config(config, project=project, stack=stack)


PlanFunction = Callable[..., PlanResult]


@pytest.fixture
def offline_plan() -> PlanFunction:
    """plan(source, *, stack="test", project="sv-backups", program=None, mocks=None, stack_references=None).

    source: a `config:` map (keys with or without the project prefix, `{secure: ...}` values allowed), a
    stack file Path, or a StackConfig. program: defaults to the real program (`__main__.py`).
    """

    def plan(
        source: Mapping[str, Any] | Path | StackConfig,
        *,
        stack: str = "test",
        project: str = PROJECT.name,
        program: Callable[[], Any] | None = None,
        mocks: Any = None,
        stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> PlanResult:
        if program is None and not program_ready():
            pytest.skip("the program (components/program.py) is not written yet")
        config = to_stack_config(source, stack=stack, project=project)
        return plan_program(program or main_program(ROOT), config, mocks=mocks, stack_references=stack_references)

    return plan


@pytest.fixture
def stack_config_map() -> Callable[[str], dict[str, Any]]:
    """config_map("dev") -> a fresh, mutable copy of stacks/Pulumi.dev.yaml's `config:` map (full keys)."""

    def config_map(stack: str) -> dict[str, Any]:
        import yaml

        document = yaml.safe_load(PROJECT.stack_file(stack).read_text())
        return copy.deepcopy(dict(document["config"]))

    return config_map


@pytest.fixture
def dev_config(stack_config_map) -> dict[str, Any]:
    return stack_config_map("dev")


@pytest.fixture(scope="session")
def shipped_plan() -> Callable[[str], PlanResult]:
    """shipped_plan("prod") -> the plan of a shipped stack, computed once per session (read it, never mutate)."""
    cache: dict[str, PlanResult] = {}

    def get(stack: str) -> PlanResult:
        if not program_ready():
            pytest.skip("the program (components/program.py) is not written yet")
        if stack not in cache:
            config = load_stack_file(PROJECT.stack_file(stack), project=PROJECT.name, stack=stack)
            # A DR stack reads its primary's outputs: from the (cached) plan of the primary's stack file.
            references = primary_stack_references(config, PROJECT, ROOT, plan=lambda primary: get(primary.stack))
            cache[stack] = plan_program(main_program(ROOT), config, stack_references=references)
        return cache[stack]

    return get


@pytest.fixture(scope="session")
def dump_only_plan() -> Callable[[str], PlanResult]:
    """dump_only_plan("prod") -> the plan of a shipped stack as it was before snapshot sets (no sv-backups:snapshots,
    4-hourly dump sets: tests/stackfiles.py dump_only_config), once per session: the dump sets' own behaviour."""
    from tests.stackfiles import dump_only_config

    cache: dict[str, PlanResult] = {}

    def get(stack: str) -> PlanResult:
        if not program_ready():
            pytest.skip("the program (components/program.py) is not written yet")
        if stack not in cache:
            config = stack_config(dump_only_config(stack), project=PROJECT.name, stack=stack)
            cache[stack] = plan_program(main_program(ROOT), config)
        return cache[stack]

    return get


@pytest.fixture(scope="session")
def dev_plan(shipped_plan) -> PlanResult:
    return shipped_plan("dev")


@pytest.fixture(scope="session")
def prod_plan(shipped_plan) -> PlanResult:
    return shipped_plan("prod")


def plan_config_file(tmp_path: Path, stack: str, config: Mapping[str, Any]) -> subprocess.CompletedProcess:
    """`scripts/plan.py --config-file` on Pulumi.<stack>.yaml written from `config`, as an operator runs it."""
    stack_file = tmp_path / f"Pulumi.{stack}.yaml"
    stack_file.write_text(yaml.safe_dump({"config": dict(config)}))
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plan.py"), "--config-file", str(stack_file), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
