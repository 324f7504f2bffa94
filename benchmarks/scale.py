"""`scripts/bench_backup.py --scale`: does `backup-set` hold at size? Memory, time per GB, and concurrent roles.

Builds, on throwaway clusters, an apps database (`--apps-mb`, default 100 MB) and one participant database per
`--scale-sizes` entry (GB of `pg_database_size`, default 0.5 and 4), plus a sequencer (as large as the smallest
participant) and a mediator (as large as apps) for the four-role set. The participant fixture is a realistic mix
built server-side with generate_series: contracts (JSON-ish bytea arguments), events (jsonb), payloads
(hashes and protobuf-ish bytea), with their primary keys and secondary indexes built after the load (as a
restore would), filled by one session per table at once.

Then, `--repeat` times, alternating sizes so that drifting load favours neither:
- floor: `pg_dump -Fp > /dev/null` of apps and that participant, one after the other;
- backup-set: `python -m jobs backup-set --dest file://...` of apps + that participant, as a subprocess whose
  process tree (python, pg_dump) is sampled from /proc every 20 ms for its summed RSS (peak), with the
  kernel's ru_maxrss of the largest process as a cross-check;
- on the smallest size also the four-role set (apps, participant, sequencer, mediator) with the default
  `--parallel 2`, and the same with `--parallel 1` (the roles one after the other, as the CronJob's init
  containers run them).
`naive` (`pg_dump -Fc`, pg_dump's default gzip) runs once per size, in the first round: it is 3-4x slower than
the rest and only gives the naive/set and bytes ratios.

Prints medians and: set/floor and naive/set per size, bytes set/naive, peak RSS large/small (goal <= 1.2),
seconds per GB large/small (goal <= 1.1), four-role/two-role, serial/concurrent four-role.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from testkit.pgcluster import PASSWORD, PG_BIN, Cluster, ClusterFactory, load_fixture

APPS_DB, PARTICIPANT_DB, SEQUENCER_DB, MEDIATOR_DB = "cantonnet_sv", "participant_1", "sequencer_1", "mediator_1"
GB = 1e9

# --------------------------------------------------------------------------------------------- fixture

_TABLES_SQL = """
CREATE TABLE {p}_contracts (contract_id text NOT NULL, template_id text NOT NULL, owner_party text NOT NULL,
  create_argument bytea NOT NULL, ledger_offset bigint NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE {p}_events (event_sequential_id bigint NOT NULL, update_id text NOT NULL, party text NOT NULL,
  payload jsonb NOT NULL, recorded_at timestamptz NOT NULL);
CREATE TABLE {p}_payloads (id bigint NOT NULL, digest bytea NOT NULL, body bytea NOT NULL);
CREATE TABLE {p}_static_config (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO {p}_static_config SELECT 'k' || g, repeat(md5(g::text), 4) FROM generate_series(1, 500) g;
"""

# table -> (share of the target size, bytes per row with its indexes on PostgreSQL 15, batch INSERT, indexes)
_TABLES = {
    "contracts": (
        0.45,
        605,
        """
INSERT INTO {p}_contracts
  SELECT '00' || md5(g::text) || md5((g * 7)::text), 'Splice.Amulet:Amulet' || (g % 17),
         'party-' || (g % 211) || '::1220' || md5((g % 211)::text),
         convert_to(format('{{"owner":"party-%s::1220%s","amount":{{"initialAmount":"%s.%s","createdAt":'
                           '{{"number":"%s"}},"ratePerRound":{{"rate":"0.00004"}}}},"dso":"DSO::1220%s","lock":%s}}',
                           g % 211, md5((g % 211)::text), g % 100000, g % 9973, g / 50, md5('dso'),
                           CASE WHEN g % 5 = 0 THEN '{{"holders":["h1","h2"],"expiresAt":"2026-01-01"}}'
                                ELSE 'null' END), 'UTF8'),
         g, timestamptz '2026-01-01' + g * interval '10 ms'
  FROM generate_series({lo}, {hi}) g""",
        "ALTER TABLE {p}_contracts ADD PRIMARY KEY (contract_id); "
        "CREATE INDEX ON {p}_contracts (owner_party, ledger_offset)",
    ),
    "events": (
        0.35,
        411,
        """
INSERT INTO {p}_events
  SELECT g, md5((g / 3)::text), 'party-' || (g % 211) || '::1220' || md5((g % 211)::text),
         jsonb_build_object('kind', CASE WHEN g % 3 = 0 THEN 'created' ELSE 'exercised' END,
                            'choice', 'Amulet_Transfer' || (g % 11), 'contractId', '00' || md5(g::text),
                            'witnesses', jsonb_build_array('party-' || (g % 211), 'DSO'), 'round', g / 1000),
         timestamptz '2026-01-01' + g * interval '10 ms'
  FROM generate_series({lo}, {hi}) g""",
        "ALTER TABLE {p}_events ADD PRIMARY KEY (event_sequential_id); "
        "CREATE INDEX ON {p}_events (party, event_sequential_id)",
    ),
    "payloads": (
        0.20,
        423,
        """
INSERT INTO {p}_payloads
  SELECT g, sha256(int8send(g)),
         sha256(int8send(g)) || sha256(int8send(-g))
           || convert_to(repeat('Splice.DsoRules:VoteRequest/' || (g % 97) || ';', 6), 'UTF8')
  FROM generate_series({lo}, {hi}) g""",
        "ALTER TABLE {p}_payloads ADD PRIMARY KEY (id); CREATE UNIQUE INDEX ON {p}_payloads (digest)",
    ),
}
_BATCH_ROWS = 500_000


def parse_sizes(text: str) -> list[float]:
    """--scale-sizes: two or more distinct participant sizes in GB, e.g. 0.5,4."""
    try:
        sizes = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) <= 0 or len(set(sizes)) != len(sizes):
        raise ValueError(f"{text!r}: give two or more distinct sizes in GB, e.g. 0.5,4")
    return sizes


def build_fixture(cluster: Cluster, database: str, prefix: str, size_gb: float) -> None:
    """About `size_gb` of participant-shaped data, one loading session per table at once, indexes last."""
    cluster.createdb(database)
    cluster.psql(_TABLES_SQL.format(p=prefix), database)

    def fill(table: str) -> None:
        share, per_row, insert, indexes = _TABLES[table]
        rows = max(1000, int(size_gb * GB * share / per_row))
        for lo in range(1, rows + 1, _BATCH_ROWS):
            cluster.psql(insert.format(p=prefix, lo=lo, hi=min(rows, lo + _BATCH_ROWS - 1)), database)
        cluster.psql(indexes.format(p=prefix), database)

    with ThreadPoolExecutor(max_workers=len(_TABLES)) as pool:
        list(pool.map(fill, _TABLES))
    cluster.psql("VACUUM ANALYZE", database)


def database_size(cluster: Cluster, database: str) -> int:
    return int(cluster.psql(f"SELECT pg_database_size('{database}')", database))


# ------------------------------------------------------------------------------------------ measuring


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    """Summed RSS of `root` and all its descendants (pg_dump processes included)."""
    tree, total, pending = _children(), 0, [root]
    while pending:
        pid = pending.pop()
        total += _rss(pid)
        pending += tree.get(pid, [])
    return total


@dataclass
class Run:
    seconds: float
    peak_rss: int  # summed over the process tree, sampled
    max_rss: int  # the kernel's ru_maxrss of the largest process of the tree
    stored: int
    event: dict = field(default_factory=dict)


def run_job(args: list[str], env: dict[str, str], interval: float = 0.02) -> Run:
    """Run `python -m jobs ARGS`, sampling its process tree's RSS; returns time, memory and the outcome event."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = [], []
    readers = [
        threading.Thread(target=lambda s=s, o=o: o.append(s.read()), daemon=True)
        for s, o in ((proc.stdout, stdout), (proc.stderr, stderr))
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    for reader in readers:
        reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"backup-set failed ({proc.returncode}): {''.join(stderr)[-2000:]}")
    event = json.loads("".join(stdout).strip().splitlines()[-1])
    return Run(seconds, peak[0], usage.ru_maxrss * 1024, event["bytes"], event)  # ru_maxrss: KiB


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------- the bench


def bench(*, sizes: list[float], apps_mb: float, repeat: int, workdir: Path | None) -> int:
    """Build the fixture, measure, print the tables; returns the exit code (0 both targets met)."""
    sizes = sorted(sizes)
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PYTHONWARNINGS": "ignore"}
    work = Path(tempfile.mkdtemp(prefix="sv-bench-scale-", dir=workdir))
    work.chmod(0o755)  # the servers run as another user (postgres) when this runs as root
    free = shutil.disk_usage(work).free
    needed = sum(sizes) * GB * 2.5 + 2 * GB  # data, WAL, the sets of one round and naive's dumps
    if free < needed:
        print(
            f"{work}: {free / GB:.1f} GB free, about {needed / GB:.1f} GB needed; use smaller --scale-sizes",
            file=sys.stderr,
        )
        return 2
    factory = ClusterFactory(work / "pg")
    try:
        apps, sequencer, mediator = factory("apps"), factory("sequencer"), factory("mediator")
        participants = {size: factory(f"participant-{size:g}") for size in sizes}
        started = time.monotonic()
        load_fixture(apps, APPS_DB, "app", apps_mb)
        load_fixture(mediator, MEDIATOR_DB, "med", apps_mb)
        build_fixture(sequencer, SEQUENCER_DB, "seq", sizes[0])
        for size, cluster in participants.items():
            build_fixture(cluster, PARTICIPANT_DB, "par", size)
        apps_bytes = database_size(apps, APPS_DB)
        db_bytes = {size: apps_bytes + database_size(c, PARTICIPANT_DB) for size, c in participants.items()}
        print(
            f"fixture built in {time.monotonic() - started:.0f}s: apps {apps_bytes / GB:.2f} GB; participant "
            + ", ".join(f"{(db_bytes[s] - apps_bytes) / GB:.2f} GB" for s in sizes)
            + f"; sequencer {database_size(sequencer, SEQUENCER_DB) / GB:.2f} GB, mediator "
            f"{database_size(mediator, MEDIATOR_DB) / GB:.2f} GB; PostgreSQL {apps.psql('SHOW server_version')}; "
            f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )

        pg_dump = str(PG_BIN / "pg_dump")
        two = {
            size: ["--db", f"apps={apps.dsn(APPS_DB)}", "--db", f"participant={c.dsn(PARTICIPANT_DB)}"]
            for size, c in participants.items()
        }
        four = [
            *two[sizes[0]],
            "--db",
            f"sequencer={sequencer.dsn(SEQUENCER_DB)}",
            "--db",
            f"mediator={mediator.dsn(MEDIATOR_DB)}",
        ]

        def floor(size: float) -> None:
            for cluster, db in ((apps, APPS_DB), (participants[size], PARTICIPANT_DB)):
                with open(os.devnull, "wb") as null:
                    subprocess.run([pg_dump, "-Fp", f"--dbname={cluster.dsn(db)}"], stdout=null, check=True, env=env)

        def naive(size: float) -> int:
            out = work / "naive"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            for cluster, db in ((apps, APPS_DB), (participants[size], PARTICIPANT_DB)):
                subprocess.run(
                    [pg_dump, "-Fc", f"--file={out / db}.dump", f"--dbname={cluster.dsn(db)}"], check=True, env=env
                )
            stored = sum(p.stat().st_size for p in out.iterdir())
            shutil.rmtree(out)
            return stored

        def backup(label: str, dbs: list[str], *extra: str) -> Run:
            dest = work / f"set-{label}"
            try:
                return run_job(["backup-set", "--dest", f"file://{dest}", *dbs, *extra], env)
            finally:
                shutil.rmtree(dest, ignore_errors=True)

        floors: dict[float, list[float]] = {s: [] for s in sizes}
        sets: dict[float, list[Run]] = {s: [] for s in sizes}
        naive_of: dict[float, tuple[float, int]] = {}
        fours: dict[str, list[Run]] = {"parallel 2": [], "parallel 1": []}
        for index in range(repeat):
            order = sizes if index % 2 == 0 else sizes[::-1]
            for size in order:
                floors[size].append(timed(lambda s=size: floor(s)))
                run = backup(f"{size:g}", two[size])
                sets[size].append(run)
                print(
                    f"  run {index + 1}: {size:g} GB: floor {floors[size][-1]:7.2f}s, backup-set {run.seconds:7.2f}s"
                    f" peak RSS {run.peak_rss / 2**20:6.0f} MiB (largest process {run.max_rss / 2**20:.0f} MiB)",
                    flush=True,
                )
                if index == 0:
                    start = time.monotonic()
                    stored = naive(size)
                    naive_of[size] = (time.monotonic() - start, stored)
                    print(f"  run 1: {size:g} GB: naive {naive_of[size][0]:7.2f}s", flush=True)
            for label in fours if index % 2 == 0 else list(fours)[::-1]:
                run = backup("four", four, "--parallel", label.split()[1])
                fours[label].append(run)
                print(
                    f"  run {index + 1}: four roles, --{label}: {run.seconds:7.2f}s peak RSS "
                    f"{run.peak_rss / 2**20:6.0f} MiB",
                    flush=True,
                )
        print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
        return report(repeat, sizes, db_bytes, floors, sets, naive_of, fours)
    finally:
        factory.close()
        shutil.rmtree(work, ignore_errors=True)


def report(repeat, sizes, db_bytes, floors, sets, naive_of, fours) -> int:
    med = statistics.median
    print()
    print(
        "| databases (apps + participant) | floor s | backup-set s | set / floor | naive s (1 run) | naive / set | "
        "bytes set | bytes set / naive | peak RSS MiB (tree) | largest process MiB | s per GB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_gb, rss = {}, {}
    for size in sizes:
        floor_s, set_s = med(floors[size]), med(r.seconds for r in sets[size])
        naive_s, naive_bytes = naive_of[size]
        stored = sets[size][-1].stored
        per_gb[size] = set_s / (db_bytes[size] / GB)
        rss[size] = med(r.peak_rss for r in sets[size])
        print(
            f"| {db_bytes[size] / GB:.2f} GB | {floor_s:.2f} | {set_s:.2f} | {set_s / floor_s:.2f} | {naive_s:.2f} | "
            f"{naive_s / set_s:.2f} | {stored:,} | {stored / naive_bytes:.2f} | {rss[size] / 2**20:.0f} | "
            f"{med(r.max_rss for r in sets[size]) / 2**20:.0f} | {per_gb[size]:.2f} |"
        )
    small, large = sizes[0], sizes[-1]
    rss_ratio, time_ratio = rss[large] / rss[small], per_gb[large] / per_gb[small]
    # The floor's own growth, for context: what the server and pg_dump cost per GB at each size.
    floor_ratio = (med(floors[large]) / db_bytes[large]) / (med(floors[small]) / db_bytes[small])
    concurrent, serial = med(r.seconds for r in fours["parallel 2"]), med(r.seconds for r in fours["parallel 1"])
    two_roles = med(r.seconds for r in sets[small])
    print()
    print(
        f"| set ({db_bytes[small] / GB:.2f} GB apps + participant; sequencer and mediator added) | wall s "
        f"(median of {repeat}) | peak RSS MiB | x two-role |"
    )
    print("|---|---:|---:|---:|")
    print(f"| two roles (apps -> participant) | {two_roles:.2f} | {rss[small] / 2**20:.0f} | 1.00 |")
    for label, runs in fours.items():
        print(
            f"| four roles, `--{label}` | {med(r.seconds for r in runs):.2f} | "
            f"{med(r.peak_rss for r in runs) / 2**20:.0f} | {med(r.seconds for r in runs) / two_roles:.2f} |"
        )
    print()
    print(
        f"targets: peak RSS {large:g} GB / {small:g} GB <= 1.2: {'met' if rss_ratio <= 1.2 else 'MISSED'} "
        f"({rss_ratio:.2f}x); time per GB {large:g} GB / {small:g} GB <= 1.1: "
        f"{'met' if time_ratio <= 1.1 else 'MISSED'} ({time_ratio:.2f}x; the floor's: {floor_ratio:.2f}x); "
        f"four roles / two roles: "
        f"{concurrent / two_roles:.2f}x (serial four roles / concurrent: {serial / concurrent:.2f}x; "
        f"{os.cpu_count()} CPUs)"
    )
    return 0 if rss_ratio <= 1.2 and time_ratio <= 1.1 else 1
