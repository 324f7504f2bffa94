"""The backup benchmark behind scripts/bench_backup.py (its docstring is the usage and says what is measured):
`backup-set` and `restore-set` beside the floor, the naive dump and the restore baseline, on throwaway clusters;
with `scale`, the scale benchmark (benchmarks/scale.py) instead.
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

from benchmarks import scale as scale_bench
from testkit.pgcluster import PASSWORD, PG_BIN, ClusterFactory, load_fixture

# The jobs run as `python -m jobs ...` from the repository root.
REPO = Path(__file__).resolve().parents[1]
APPS_DB, PARTICIPANT_DB = "cantonnet_sv", "participant_1"


def timed(fn) -> tuple[float, object]:
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, check=True, env={**os.environ, "PGPASSWORD": PASSWORD, "PYTHONWARNINGS": "ignore"}, **kwargs
    )


def bench(
    *,
    small: bool,
    apps_mb: float | None,
    participant_mb: float | None,
    repeat: int,
    no_restore: bool,
    workdir: Path | None,
    scale: bool,
    scale_sizes: list[float],
) -> int:
    """Build the fixture, measure, print the tables; returns the exit code (0 every target met)."""
    if scale:
        return scale_bench.bench(sizes=scale_sizes, apps_mb=apps_mb or 100, repeat=repeat, workdir=workdir)
    apps_mb = apps_mb or (30 if small else 300)
    participant_mb = participant_mb or (100 if small else 1000)

    work = Path(tempfile.mkdtemp(prefix="sv-bench-", dir=workdir))
    work.chmod(0o755)  # the servers run as another user (postgres) when this runs as root
    factory = ClusterFactory(work / "pg")
    try:
        apps, participant = factory("apps"), factory("participant")
        load_time, _ = timed(
            lambda: (
                load_fixture(apps, APPS_DB, "app", apps_mb),
                load_fixture(participant, PARTICIPANT_DB, "par", participant_mb),
            )
        )
        sizes = {
            name: int(c.psql(f"SELECT pg_database_size('{db}')", db))
            for name, c, db in (("apps", apps, APPS_DB), ("participant", participant, PARTICIPANT_DB))
        }
        print(
            f"fixture: apps {sizes['apps'] / 1e9:.2f} GB, participant {sizes['participant'] / 1e9:.2f} GB "
            f"(built in {load_time:.0f}s); PostgreSQL {apps.psql('SHOW server_version')}; "
            f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        targets = [(apps, APPS_DB), (participant, PARTICIPANT_DB)]
        pg_dump, pg_restore = str(PG_BIN / "pg_dump"), str(PG_BIN / "pg_restore")
        directory_dumps = work / "fd"
        directory_dumps.mkdir()
        fd_time, _ = timed(
            lambda: [
                run([pg_dump, "-Fd", f"--file={directory_dumps / db}", f"--dbname={c.dsn(db)}"]) for c, db in targets
            ]
        )
        print(f"restore baseline input: `pg_dump -Fd` of each database in {fd_time:.1f}s", flush=True)

        def floor():
            for cluster, db in targets:
                with open(os.devnull, "wb") as null:
                    run([pg_dump, "-Fp", f"--dbname={cluster.dsn(db)}"], stdout=null)
            return 0

        def naive():
            out = work / "naive"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            for cluster, db in targets:
                run([pg_dump, "-Fc", f"--file={out / db}.dump", f"--dbname={cluster.dsn(db)}"])
            return sum(p.stat().st_size for p in out.iterdir())

        sets = []

        def backup_set():
            dest = work / f"sets-{len(sets)}"
            proc = run(
                [
                    sys.executable,
                    "-m",
                    "jobs",
                    "backup-set",
                    "--dest",
                    f"file://{dest}",
                    "--db",
                    f"apps={apps.dsn(APPS_DB)}",
                    "--db",
                    f"participant={participant.dsn(PARTICIPANT_DB)}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            event = json.loads(proc.stdout.strip().splitlines()[-1])
            sets.append(event["urls"][0])
            return event["bytes"]

        def drop_restored():
            for cluster, db in targets:
                cluster.psql(f"DROP DATABASE IF EXISTS {db}_restored")

        def restore_baseline():
            for cluster, db in targets:
                cluster.psql(f"CREATE DATABASE {db}_restored")
                run([pg_restore, "-j2", f"--dbname={cluster.dsn(db + '_restored')}", str(directory_dumps / db)])
            return 0

        def restore_set():
            run(
                [
                    sys.executable,
                    "-m",
                    "jobs",
                    "restore-set",
                    sets[-1],
                    "--db",
                    f"apps={apps.dsn(APPS_DB + '_restored')}",
                    "--db",
                    f"participant={participant.dsn(PARTICIPANT_DB + '_restored')}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            return 0

        results: dict[str, list[float]] = {"floor": [], "naive": [], "backup-set": []}
        if not no_restore:
            results.update({"restore-baseline": [], "restore-set": []})
        size_of: dict[str, int] = {}
        for index in range(repeat):
            measurements = [("floor", floor), ("naive", naive), ("backup-set", backup_set)]
            if not no_restore:
                restores = [("restore-baseline", restore_baseline), ("restore-set", restore_set)]
                measurements += restores if index % 2 == 0 else restores[::-1]
            for name, fn in measurements:
                seconds, size = timed(fn)
                results[name].append(seconds)
                size_of[name] = size
                print(f"  run {index + 1}: {name:<16} {seconds:7.2f}s", flush=True)
                if name.startswith("restore"):
                    drop_restored()
        print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)

        med = {name: statistics.median(values) for name, values in results.items()}
        print()
        print(f"| measurement | wall time (s, median of {repeat}) | bytes written | x floor | naive / this |")
        print("|---|---:|---:|---:|---:|")
        for name, label in (
            ("floor", "floor: `pg_dump -Fp > /dev/null`, each DB in turn"),
            ("naive", "naive: `pg_dump -Fc`, each DB in turn"),
            ("backup-set", "`python -m jobs backup-set` to file://"),
        ):
            written = "-" if name == "floor" else f"{size_of[name]:,}"
            print(
                f"| {label} | {med[name]:.2f} | {written} | {med[name] / med['floor']:.2f} | "
                f"{med['naive'] / med[name]:.2f} |"
            )
        ok_restore = True
        if not no_restore:
            print()
            print(f"| restore | wall time (s, median of {repeat}) | x baseline |")
            print("|---|---:|---:|")
            for name, label in (
                ("restore-baseline", "baseline: `pg_restore -j2` of `pg_dump -Fd`, each DB in turn"),
                ("restore-set", "`python -m jobs restore-set` (defaults: --parallel 2 --jobs 2)"),
            ):
                print(f"| {label} | {med[name]:.2f} | {med[name] / med['restore-baseline']:.2f} |")
            ok_restore = med["restore-set"] <= 1.1 * med["restore-baseline"]
        ok_floor = med["backup-set"] <= 1.3 * med["floor"]
        ok_naive = med["naive"] >= 3 * med["backup-set"]
        ok_size = size_of["backup-set"] <= size_of["naive"]
        print()
        print(
            f"targets: <= 1.3x floor: {'met' if ok_floor else 'MISSED'} ({med['backup-set'] / med['floor']:.2f}x); "
            f">= 3x faster than naive: {'met' if ok_naive else 'MISSED'} ({med['naive'] / med['backup-set']:.2f}x); "
            f"no larger than naive: {'met' if ok_size else 'MISSED'} "
            f"({size_of['backup-set'] / size_of['naive']:.2f} of naive)"
            + (
                ""
                if no_restore
                else f"; restore <= 1.1x baseline: {'met' if ok_restore else 'MISSED'} "
                f"({med['restore-set'] / med['restore-baseline']:.2f}x)"
            )
        )
        return 0 if ok_floor and ok_naive and ok_size and ok_restore else 1
    finally:
        factory.close()
        shutil.rmtree(work, ignore_errors=True)
