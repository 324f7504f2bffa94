"""The drill benchmark behind scripts/bench_drill.py (its docstring is the usage and says what is measured): backup
with and without the verification data, and `drill-restore` beside `restore-set` of the same set, on throwaway
clusters.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs.destinations import open_destination
from jobs.pgdump import DumpSettings
from jobs.pgsets import backup_set
from testkit.pgcluster import PASSWORD, ClusterFactory, load_fixture

# The jobs run as `python -m jobs ...` from the repository root.
REPO = Path(__file__).resolve().parents[1]
APPS_DB, PARTICIPANT_DB = "cantonnet_sv", "participant_1"


def env() -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": PASSWORD, "PYTHONWARNINGS": "ignore"}


def bench(*, small: bool, repeat: int) -> int:
    """Build the fixture, measure, print the medians and ratios; returns the exit code (always 0: no targets)."""
    apps_mb, participant_mb = (30, 100) if small else (300, 1000)
    work = Path(tempfile.mkdtemp(prefix="sv-bench-drill-"))
    os.chmod(work, 0o755)  # the scratch server's user (postgres, when run as root) must reach the scratch dir
    factory = ClusterFactory(work / "clusters")
    os.environ["PGPASSWORD"] = PASSWORD
    try:
        apps, participant = factory("apps"), factory("participant")
        load_fixture(apps, APPS_DB, "app", apps_mb)
        load_fixture(participant, PARTICIPANT_DB, "par", participant_mb)
        dsns = {"apps": [apps.dsn(APPS_DB)], "participant": [participant.dsn(PARTICIPANT_DB)]}
        times: dict[str, list[float]] = {"with": [], "without": []}
        last_store = None
        for run in range(repeat):
            order = ("with", "without") if run % 2 == 0 else ("without", "with")
            for variant in order:
                store = work / f"store-{variant}-{run}"
                settings = DumpSettings(verify_sample_rows=1000 if variant == "with" else 0)
                start = time.monotonic()
                backup_set(
                    open_destination(f"file://{store}"),
                    dsns=dsns,
                    set_id=f"bench-{variant}-{run}",
                    migration_id=0,
                    settings=settings,
                )
                times[variant].append(time.monotonic() - start)
                if variant == "with":
                    last_store = store
                else:
                    shutil.rmtree(store)
        target = factory("restore-target")
        drill_times, restore_times, rtos = [], [], []
        for run in range(repeat):
            for what in ("drill", "restore") if run % 2 == 0 else ("restore", "drill"):
                start = time.monotonic()
                if what == "drill":
                    scratch = work / f"scratch-{run}"
                    scratch.mkdir(mode=0o755)
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "jobs",
                            "drill-restore",
                            f"file://{last_store}",
                            "--scratch-dir",
                            str(scratch),
                        ],
                        cwd=REPO,
                        env=env(),
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    drill_times.append(time.monotonic() - start)
                    rtos.append(json.loads(out.splitlines()[-1])["rto_seconds"])
                else:
                    (set_dir,) = list((last_store / "recent" / "0").iterdir())
                    subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "jobs",
                            "restore-set",
                            f"file://{last_store}/recent/0/{set_dir.name}",
                            "--no-owner",
                            "--db",
                            f"apps={target.dsn(f'a{run}')}",
                            "--db",
                            f"participant={target.dsn(f'p{run}')}",
                        ],
                        cwd=REPO,
                        env=env(),
                        check=True,
                        capture_output=True,
                    )
                    restore_times.append(time.monotonic() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"data: apps {apps_mb} MB, participant {participant_mb} MB; medians of {repeat}")
        print(f"backup-set with verification data     {med['with']:8.2f} s")
        print(f"backup-set without verification data  {med['without']:8.2f} s")
        print(f"  ratio with/without                  {med['with'] / med['without']:8.3f}")
        print(
            f"drill-restore (process, wall)          {statistics.median(drill_times):8.2f} s "
            f"(rto_seconds: restore+verify {statistics.median(rtos):.2f} s)"
        )
        print(f"restore-set of the same set (wall)     {statistics.median(restore_times):8.2f} s")
        print(
            f"  ratio drill/restore-set             "
            f"{statistics.median(drill_times) / statistics.median(restore_times):8.3f}"
        )
    finally:
        factory.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0
