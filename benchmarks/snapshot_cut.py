"""The snapshot-set benchmark behind scripts/bench_snapshot_cut.py (its docstring is the usage).

Per participant size, on throwaway clusters (real PostgreSQL) and the fake Kubernetes API (testkit/fake_kube.py):
- the cut of a snapshot set of apps then participant, each an online backup around a VolumeSnapshot
  (CHECKPOINT, slot, pg_backup_start, snapshot requested and waited for, pg_backup_stop, WAL streamed and
  stored): from the first request to the last completion, read from the manifest's monotonic times;
- the longest transaction the backup holds open on the participant's server: a sampler thread reads
  `max(clock_timestamp() - xact_start)` over the other client sessions of `pg_stat_activity` every 20 ms;
- beside it, today's dump step of the same participant database (jobs/pgsets.run_step), sampled the same way.

The fake snapshot controller takes no time of its own, so the cut measures what the job adds: a real CSI driver's
snapshot time comes on top, and is incremental (it grows with what changed, not with the disk).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from benchmarks.scale import build_fixture
from jobs.destinations import open_destination
from jobs.kube import KubeClient, KubeConfig
from jobs.pgdump import DumpSettings
from jobs.pgsets import run_step as dump_step
from jobs.pgsnap import run_step, seal
from jobs.pgsnap_volume import KubeOptions, KubeVolumeSnapshotter, VolumeSnapshotProvider
from rules.snapshot_sets import manifest_snapshots
from testkit.fake_kube import FakeKubeApi
from testkit.pgcluster import PASSWORD, ClusterFactory, load_fixture

APPS_DB, PARTICIPANT_DB = "cantonnet_sv", "participant_1"
NS, CLASS = "sv", "bench-postgres-snapshot-class"
TARGET_RATIO = 1.2


class LongestTransaction:
    """Samples the longest open transaction of the server's other client sessions while running."""

    def __init__(self, dsn: str, interval: float = 0.02):
        self.dsn = dsn
        self.interval = interval
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, password=PASSWORD, autocommit=True) as conn:
            while not self._stop.is_set():
                (seconds,) = conn.execute(
                    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8 "
                    "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' "
                    "AND xact_start IS NOT NULL"
                ).fetchone()
                self.longest = max(self.longest, seconds)
                time.sleep(self.interval)

    def __enter__(self) -> LongestTransaction:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _quiet(*args, **fields) -> None:
    return None


def snapshot_set(api: FakeKubeApi, store: Path, set_id: str, clusters: dict[str, object]) -> tuple[float, float]:
    """One set (apps, then participant); returns (cut seconds, longest transaction seconds on participant)."""
    dest = open_destination(f"file://{store}")
    client = KubeClient(KubeConfig(server=api.url), retry_wait=0.01)
    with LongestTransaction(clusters["participant"].dsn("postgres")) as sampler:
        for role, cluster in clusters.items():
            options = KubeOptions(NS, f"data-{role}-pg-0", CLASS, poll_interval=0.05)
            provider = VolumeSnapshotProvider(
                KubeVolumeSnapshotter(client, options, _quiet), _quiet, dest=dest, online_dsn=cluster.dsn("postgres")
            )
            run_step(dest, provider, role=role, set_id=set_id, migration_id=0)
        manifest = seal(dest, set_id=set_id, migration_id=0, roles=list(clusters))
    client.close()
    snaps = manifest_snapshots(manifest)
    assert {s.consistency for s in snaps} == {"online"}, "the benchmark measures online backups"
    cut = max(s.completed_mono for s in snaps) - min(s.requested_mono for s in snaps)
    return cut, sampler.longest


def dump_participant(cluster, store: Path, set_id: str) -> tuple[float, float]:
    dest = open_destination(f"file://{store}")
    with LongestTransaction(cluster.dsn("postgres")) as sampler:
        start = time.monotonic()
        dump_step(dest, role="participant", set_id=set_id, migration_id=0, dsns=[cluster.dsn(PARTICIPANT_DB)],
                  settings=DumpSettings())  # fmt: skip
        seconds = time.monotonic() - start
    return seconds, sampler.longest


def bench(*, sizes: list[float], apps_mb: float, repeat: int, workdir: Path | None, dump: bool = True) -> int:
    os.environ["PGPASSWORD"] = PASSWORD
    work = Path(tempfile.mkdtemp(prefix="sv-bench-snap-", dir=workdir))
    work.chmod(0o755)  # the servers run as another user (postgres) when this runs as root
    factory = ClusterFactory(work / "pg")
    rows = []
    try:
        apps = factory("apps")
        load_fixture(apps, APPS_DB, "app", apps_mb)
        apps.psql("CHECKPOINT")
        with FakeKubeApi() as api:
            api.ready_after = 1
            api.add_pvc(NS, "data-apps-pg-0")
            api.add_pvc(NS, "data-participant-pg-0")
            for gb in sizes:
                participant = factory(f"participant-{gb}")
                started = time.monotonic()
                build_fixture(participant, PARTICIPANT_DB, "par", gb)
                participant.psql("CHECKPOINT")  # a steady state: the load's dirty buffers are not the backup's
                built = time.monotonic() - started
                size = int(participant.psql(f"SELECT pg_database_size('{PARTICIPANT_DB}')"))
                print(f"participant {size / 1e9:.2f} GB built in {built:.0f}s; load average "
                      f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
                cuts, held = [], []
                for run in range(repeat):
                    cut, longest = snapshot_set(
                        api, work / f"store-{gb}", f"set-{gb}-{run}", {"apps": apps, "participant": participant}
                    )
                    cuts.append(cut)
                    held.append(longest)
                row = {"gb": size / 1e9, "cut": statistics.median(cuts), "snapshot_xact": max(held)}
                if dump:
                    row["dump_seconds"], row["dump_xact"] = dump_participant(participant, work / f"dump-{gb}", "d")
                rows.append(row)
                participant.stop("immediate")
                shutil.rmtree(participant.root, ignore_errors=True)
    finally:
        factory.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'participant':>12} {'set cut (median of ' + str(repeat) + ')':>26} {'longest xact: snapshot':>24} "
          f"{'dump step':>10} {'longest xact: dump':>20}")  # fmt: skip
    for row in rows:
        dump_seconds, dump_xact = row.get("dump_seconds", float("nan")), row.get("dump_xact", float("nan"))
        print(f"{row['gb']:>10.2f}GB {row['cut']:>25.3f}s {row['snapshot_xact']:>23.3f}s "
              f"{dump_seconds:>9.1f}s {dump_xact:>19.1f}s")  # fmt: skip
    ratio = rows[-1]["cut"] / rows[0]["cut"]
    met = ratio <= TARGET_RATIO
    print(f"\ncut ratio {rows[-1]['gb']:.2f} GB / {rows[0]['gb']:.2f} GB participant: {ratio:.2f}x "
          f"(target <= {TARGET_RATIO}x: {'met' if met else 'NOT met'})")  # fmt: skip
    return 0 if met else 1
