"""`python -m jobs snapshot-cometbft` as the CronJob runs it: a real process against the fake Kubernetes API,
including SIGTERM (the Job's activeDeadlineSeconds) while it waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jobs.fakes.kube import FakeKubeApi

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT / "jobs" / "__main__.py").exists(), reason="the jobs CLI (jobs/__main__.py) is absent"
    ),
]
PVC = "global-domain-1-cometbft-cometbft-data"


def command(api: FakeKubeApi, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "jobs", "snapshot-cometbft", "--namespace", "sv", "--pvc", PVC,
        "--class", "cometbft-retain", "--migration-id", "1", "--keep-recent", "3d",
        "--retain-blocks", "5040000", "--blocks-per-hour", "7000", "--poll-interval", "0.05",
        "--kube-api", api.url, *extra,
    ]  # fmt: skip


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def api():
    with FakeKubeApi() as fake:
        fake.add_pvc("sv", PVC)
        yield fake


def test_snapshot_as_the_cronjob_runs_it(api):
    result = subprocess.run(command(api), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "backup.completed" and last["kind"] == "cometbft"
    assert len(api.names("volumesnapshots", "sv")) == 1


def test_sigterm_while_waiting_removes_the_unready_snapshot(api):
    api.mode = "pending"
    process = subprocess.Popen(command(api, "--ready-timeout", "5m"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not api.names("volumesnapshots", "sv") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.names("volumesnapshots", "sv"), "the job never created its snapshot"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    assert api.names("volumesnapshots", "sv") == []
    assert json.loads(out.splitlines()[-1])["event"] == "backup.failed"
