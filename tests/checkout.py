"""A checkout of the repository with a stacks/ of the test's own: the program, rules, jobs and policy pack linked
from this repository, no example stacks. What an operator has after replacing the examples with their own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_checkout(root: Path) -> Path:
    (root / "stacks").mkdir(parents=True)
    (root / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    for name in ("__main__.py", "components", "rules", "jobs", "policy"):
        (root / name).symlink_to(REPO / name)
    return root


def plan_checkout(root: Path, out: Path, stacks: list[str] | None = None) -> tuple[int, dict[str, str]]:
    """Plan the checkout's stacks (default: every file in its stacks/) by one run of the plan command, as `make
    plan-all` does. Returns the exit code and stack -> what it printed (its stdout section, then the stderr lines
    that name it)."""
    if stacks is None:
        stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (root / "stacks").iterdir())
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from engines import plan_stacks; "
        "sys.exit(plan_stacks.run(stacks=sys.argv[4:], config_files=[], out=Path(sys.argv[3]), primary_plan=None, "
        "jobs=2, root=Path(sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO), str(root), str(out), *stacks],
        capture_output=True,
        text=True,
        timeout=600,
    )
    sections = dict(re.findall(r"^=== (\S+)\n(.*?)(?=^=== |\Z)", done.stdout, re.S | re.M))
    if len(stacks) == 1:
        sections = {stacks[0]: done.stdout}
    for stack in stacks:
        errors = [line for line in done.stderr.splitlines() if f"{stack!r}" in line or line.startswith("sv-backups:")]
        sections[stack] = sections.get(stack, "") + "\n".join(errors)
    return done.returncode, sections
