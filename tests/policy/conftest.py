"""Plans of the shipped stacks, built once per session by the offline plan (scripts/plan.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (REPO / "stacks").glob("Pulumi.*.yaml"))
# plan.py exits 3 when a mandatory policy fails; the plan is written either way.
_PLAN_WRITTEN = (0, 3)


@pytest.fixture(scope="session")
def plans(tmp_path_factory) -> dict[str, dict]:
    """Stack name -> plan.json of that stack (read-only: copy before mutating, see `plan_copy`). All are planned
    by one plan.py, as `make plan-all` does (its --jobs copies plan them side by side)."""
    out = tmp_path_factory.mktemp("plans")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "plan.py"),
            *(a for s in STACKS for a in ("--stack", s)),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in _PLAN_WRITTEN, (
        f"plan.py --stack {' --stack '.join(STACKS)} failed:\n{done.stdout}\n{done.stderr}"
    )
    return {stack: json.loads((out / stack / "plan.json").read_text()) for stack in STACKS}


@pytest.fixture
def plan_copy(plans):
    """A deep copy of a shipped stack's plan, free to mutate: plan_copy("dev")."""
    return lambda stack: copy.deepcopy(plans[stack])
