"""An external scanner over what we ship: a pinned checkov (tests/pinned/checkov.txt, its whole closure pinned by
version, installed by tests/pinned_venvs.py into a venv of its own under the temp directory, never into the
project's) runs its Kubernetes checks over every shipped stack's manifests, extracted from the offline plan as
YAML. Every check a CronJob does not meet on purpose is skipped on the object itself, with its reason
(components/scanner_skips.py writes the `checkov.io/skipN` annotations); any other finding fails the test.

Offline: `--skip-download` (no guidelines or policies fetched from the vendor's API) and no API key.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from engines.offline_plan import manifest_yaml
from tests.pinned_venvs import CHECKOV
from tests.program.conftest import SHIPPED_STACKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkov():
    python = CHECKOV.python()

    def scan(directory: Path) -> dict:
        done = subprocess.run(
            [str(python), "-c", "from checkov.main import Checkov; import sys; sys.exit(Checkov().run())",
             "--directory", str(directory), "--framework", "kubernetes", "--output", "json", "--quiet",
             "--skip-download", "--no-fail-on-crash"],
            capture_output=True, text=True, timeout=600, check=False,
            # No telemetry, no vendor lookups: the scan is the pinned checks only.
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        )  # fmt: skip
        assert done.stdout.strip(), f"checkov printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
        report = json.loads(done.stdout)
        reports = report if isinstance(report, list) else [report]
        [kubernetes] = [r for r in reports if r.get("check_type") == "kubernetes"]
        return kubernetes

    return scan


def _write(manifests: dict[str, dict], directory: Path) -> None:
    for name, manifest in manifests.items():
        (directory / name).write_text(manifest_yaml(manifest))


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_checkov_finds_nothing_that_is_not_skipped_with_a_reason(shipped_plan, checkov, tmp_path, stack):
    _write(shipped_plan(stack).manifests, tmp_path)
    report = checkov(tmp_path)
    results = report["results"]
    findings = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in results["failed_checks"]]
    assert not findings, "\n".join(findings)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] == len(shipped_plan(stack).manifests)
    for skipped in results.get("skipped_checks", []):
        # The reason is written next to the check id on the object: never a bare skip.
        assert len(skipped.get("suppress_comment") or "") > 20, skipped


def test_an_unskipped_finding_is_reported(shipped_plan, checkov, tmp_path):
    """The test can fail: the drill's CronJob with its skip annotations removed is found again."""
    manifests = shipped_plan("prod").manifests
    [name] = [
        n for n, m in manifests.items() if m["kind"] == "CronJob" and m["metadata"]["name"] == "sv-1-drill-cometbft"
    ]
    job = json.loads(json.dumps(manifests[name]))
    del job["metadata"]["annotations"]
    (tmp_path / name).write_text(manifest_yaml(job))
    failed = {f["check_id"] for f in checkov(tmp_path)["results"]["failed_checks"]}
    assert failed == {"CKV_K8S_38"}
