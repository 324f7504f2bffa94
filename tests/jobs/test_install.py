"""The restore tools on a workstation: `pip install '.[jobs]'` into a clean venv, as docs/runbook.md says.

The install is made from a copy of the tracked files (so the build leaves nothing in the checkout), into a venv
that has nothing else; the commands then run from a directory outside the repository, on a real set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs.destinations import open_destination
from tests.jobs.replica_helpers import write_set

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _tracked_copy(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_pip_install_jobs_gives_the_restore_tools_working_from_any_directory(tmp_path):
    clone = tmp_path / "clone"
    _tracked_copy(clone)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{clone}[jobs]"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "store"
    write_set(open_destination(f"file://{store}"), "s-1", datetime.now(UTC) - timedelta(hours=1), migration_id=0)

    def run(*argv) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=elsewhere, capture_output=True, text=True, env=env)

    jobs_help = run(bin_dir / "sv-backups-jobs", "--help")
    assert jobs_help.returncode == 0 and jobs_help.stdout.startswith("usage: sv-backups-jobs"), jobs_help.stderr
    assert "restore-set" in jobs_help.stdout
    assert run(bin_dir / "python", "-m", "jobs", "--help").returncode == 0
    failover_help = run(bin_dir / "sv-backups-failover", "--help")
    assert failover_help.returncode == 0 and "--context" in failover_help.stdout, failover_help.stderr
    verified = run(bin_dir / "sv-backups-jobs", "verify-set", f"file://{store}/recent/0/s-1")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    listed = run(bin_dir / "sv-backups-jobs", "list-sets", f"file://{store}")
    assert listed.returncode == 0 and "s-1" in listed.stdout, listed.stdout + listed.stderr
    # Nothing of the dev venv leaked in: the tools import from the install, not from the checkout.
    where = run(bin_dir / "python", "-c", "import jobs, rules; print(jobs.__file__, rules.__file__)")
    assert str(env_dir) in where.stdout and str(REPO) not in where.stdout, where.stdout + where.stderr
    assert sys.prefix not in where.stdout
