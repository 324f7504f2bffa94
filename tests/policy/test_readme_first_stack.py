"""README's two commands and "Your first stack", followed offline from a checkout with no example stacks: the
new-stack command README shows writes a stack and its DR stack that plan and pass the policy pack as written; the
Makefile targets and CI say what README says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import yaml

from tests.checkout import REPO, make_checkout, plan_checkout

README = (REPO / "README.md").read_text()


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_the_two_commands_are_make_plan_and_make_test_and_ci_runs_the_second():
    first = _blocks(README)[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["make plan", "make test"]
    makefile = (REPO / "Makefile").read_text()
    # make plan: the dev stack offline (no cloud account, no Pulumi CLI); make test: every test.
    assert re.search(r"^STACK \?= dev$", makefile, re.M)
    assert re.search(r"^plan: .*\n\t\$\(PY\) scripts/plan.py --stack \$\(STACK\)$", makefile, re.M)
    assert re.search(r"^test: .*\n\t\$\(PY\) -m pytest \$\(PYTEST_ARGS\)$", makefile, re.M)
    assert "\nmake test " in (REPO / ".ci" / "run").read_text()
    assert (REPO / "stacks" / "Pulumi.dev.yaml").is_file()


def test_readme_names_the_pulumi_version_pulumi_yaml_requires():
    required = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["requiredPulumiVersion"]
    assert f'`requiredPulumiVersion: "{required}"`' in README
    assert "pulumi stack select prod" not in README
    assert "GOOGLE_CREDENTIALS" not in README


def test_the_first_stack_checklist_offline(tmp_path):
    """Step 1 as README writes it (its scripts/new_stack.py command, into a checkout of our own), then `make plan`
    of both stacks: written, planned, passed."""
    step = _blocks(README.split("## Your first stack", 1)[1])[0]
    command = " ".join(
        line.rstrip("\\").strip() for line in step.splitlines() if "new_stack.py" in line or "--" in line
    )
    argv = shlex.split(command.split("#")[0])
    assert argv[:2] == [".venv/bin/python", "scripts/new_stack.py"]
    root = make_checkout(tmp_path / "repo")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "new_stack.py"),
            *argv[2:],
            "--no-input",
            "--out",
            str(root / "stacks"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    stack = argv[argv.index("--stack") + 1]
    assert sorted(p.name for p in (root / "stacks").iterdir()) == [f"Pulumi.{stack}-dr.yaml", f"Pulumi.{stack}.yaml"]
    assert "# CHANGE:" in (root / "stacks" / f"Pulumi.{stack}.yaml").read_text()
    code, printed = plan_checkout(root, tmp_path / "out")
    assert code == 0, printed
    for name in (stack, f"{stack}-dr"):
        assert "config: production (sv-backups:production: true)" in printed[name]
        assert "PASSED: no mandatory rule violated." in printed[name]


def test_new_stack_refuses_bad_answers_with_one_line_each(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "new_stack.py"),
            *("--cloud", "gcp", "--stack", "a", "--node", "Bad_Name", "--namespace", "sv", "--migration-id", "1"),
            *("--region", "us-central1", "--dr-region", "us-centrl2", "--project", "p", "--postgres", "managed"),
            *("--no-input", "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "new-stack: --node: 'Bad_Name': lowercase letters, digits and '-', starting with a letter, <= 20",
        "new-stack: --dr-region: 'us-centrl2' is not a gcp region (rules/ kept lists)",
        "new-stack: --project: 'p' is not a GCP project id (required on gcp)",
    ]
    assert list(tmp_path.iterdir()) == []


def test_new_stack_without_answers_names_each_missing_flag(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "new_stack.py"),
            "--cloud",
            "aws",
            "--no-input",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    missing = [line.split(":")[1].strip() for line in done.stderr.splitlines()]
    assert missing == [
        "--stack", "--node", "--namespace", "--migration-id", "--region", "--dr-region", "--postgres",
        "--cluster-name", "--restore-role-arn",
    ]  # fmt: skip
