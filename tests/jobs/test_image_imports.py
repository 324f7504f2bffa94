"""The job image ships jobs/ and rules/ (the pure ground floor) only, without Pulumi or pydantic: every command
must import and build its parser in exactly that environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PACKAGES = ("rules", "jobs")  # keep in step with jobs/Dockerfile

PROBE = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pulumi", "pulumi_gcp", "pulumi_kubernetes", "pydantic", "yaml"):
            raise ImportError(f"{name} is not in the job image")
sys.meta_path.insert(0, Refuse())
import jobs.failover  # scripts/failover.py's run: no subcommand yet, but it must run on what the image has
from jobs.__main__ import build_parser
parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
print(" ".join(commands))
"""


def test_every_command_imports_with_only_what_the_image_ships(tmp_path):
    app = tmp_path / "app"
    for package in IMAGE_PACKAGES:
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile*"))
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=app, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(
        ["backup-set", "backup-step", "seal-set", "verify-set", "list-sets", "restore-set", "audit-history",
         "dump-identities", "snapshot-cometbft", "check-replica", "drill-restore", "drill-identities", "drill-cometbft",
         "snapshot-step", "snapshot-seal", "prune-snapshots", "prepare-datadir", "restore-snapshot-volume",
         "restore-snapshot-set", "drill-snapshots", "drill-snapshots-pick", "drill-snapshots-probe"]
    )  # fmt: skip


def test_dockerfile_copies_exactly_those_packages():
    dockerfile = (ROOT / "jobs" / "Dockerfile").read_text()
    copied = {
        line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "requirements" not in line
    }
    assert copied == {f"{package}/" for package in IMAGE_PACKAGES}
