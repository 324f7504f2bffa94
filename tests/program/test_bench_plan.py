"""scripts/bench_plan.py runs end to end (a smoke run: its figures are not checked, only that it measures and
reports every ratio it promises; the benchmark itself is run by hand, README "Benchmarks")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_benchmark_runs_in_quick_mode():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_plan.py"), "--repeat", "1", "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # The floors were derived from what the plans loaded, and matched it module for module.
    assert "gcp: prod declares" in out and "aws: aws-prod declares" in out and "(its floor too)" in out
    assert "pulumi_gcp.storage" in out and "pulumi_aws.s3" in out and "pulumi_kubernetes.batch.v1" in out
    ratios = ("start-up gcp / bare floor", "start-up aws / bare floor", "start-up gcp / floor frozen at exit")
    for ratio in (*ratios, "gcp collector on / gcp program", "2 nodes / 1 node"):
        assert ratio in out
