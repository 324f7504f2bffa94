"""Throwaway PostgreSQL clusters for tests and benchmarks (Debian binaries, a temp dir, a loopback port).

Running as root, the server runs as the unprivileged `postgres` user (initdb refuses root). Each cluster has
a superuser `postgres` with a password, so the jobs authenticate the way they do in a pod (PGPASSWORD).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("SV_BACKUPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "test-password-not-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class Cluster:
    """One running cluster; `dsn(db)` is what the jobs get (no password: it comes from PGPASSWORD)."""

    name: str
    root: Path
    port: int = field(default_factory=free_port)
    settings: tuple[str, ...] = ()
    # pg_hba.conf lines checked before initdb's own (password for every user): e.g. trust for one user from
    # one address, the way a Cloud SQL Auth Proxy stand-in logs an IAM user in.
    hba: tuple[str, ...] = ()

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*_as_server_user(), *args], check=True, capture_output=True, text=True, **kwargs)

    def init(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockdir, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.sockdir}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_wal_size = '4GB'",
            "shared_buffers = '256MB'",
            "maintenance_work_mem = '256MB'",
            *self.settings,
        ]
        with open(self.datadir / "postgresql.auto.conf", "a") as fh:
            fh.write("\n".join(conf) + "\n")
        if self.hba:
            hba = self.datadir / "pg_hba.conf"
            hba.write_text("\n".join(self.hba) + "\n" + hba.read_text())
        return self

    def start(self) -> Cluster:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "log"), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql; returns unaligned tuples-only output."""
        out = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", self.dsn(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )
        return out.stdout.strip()

    def createdb(self, database: str) -> None:
        self.psql(f'CREATE DATABASE "{database}"')


class ClusterFactory:
    """Creates clusters under one temp dir and stops them all at the end."""

    def __init__(self, base: Path | None = None):
        self._owned = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="sv-backups-pg-"))
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chmod(self.base, 0o755)
        self.clusters: list[Cluster] = []

    def __call__(self, name: str, settings: tuple[str, ...] = (), hba: tuple[str, ...] = ()) -> Cluster:
        cluster = Cluster(name=name, root=self.base / f"{name}-{len(self.clusters)}", settings=settings, hba=hba)
        self.clusters.append(cluster)
        cluster.init().start()
        return cluster

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.stop("immediate")
        if self._owned:
            shutil.rmtree(self.base, ignore_errors=True)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(interval)


# Fixture data shaped like Splice's: ledger-ish tables with party ids, template ids, hashes and JSON/protobuf-like
# payloads (compressible like real ones, not like random bytes), secondary indexes, and a static table whose
# dump must restore byte-for-byte.
_FIXTURE_SQL = """
CREATE TABLE {p}_static_config (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO {p}_static_config
  SELECT 'k' || g, repeat(md5(g::text), 4) FROM generate_series(1, 500) g;
CREATE TABLE {p}_contracts (
  contract_id text PRIMARY KEY,
  template_id text NOT NULL,
  owner_party text NOT NULL,
  create_argument bytea NOT NULL,
  ledger_offset bigint NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE TABLE {p}_events (
  event_sequential_id bigint PRIMARY KEY,
  update_id text NOT NULL,
  party text NOT NULL,
  payload jsonb NOT NULL,
  recorded_at timestamptz NOT NULL
);
CREATE INDEX ON {p}_contracts (owner_party, ledger_offset);
CREATE INDEX ON {p}_events (party, event_sequential_id);
CREATE TABLE {p}_progress (writer text PRIMARY KEY, seq bigint NOT NULL, at timestamptz NOT NULL);
"""

_FIXTURE_BATCH_SQL = """
INSERT INTO {p}_contracts
  SELECT '00' || md5(g::text) || md5((g * 7)::text),
         'Splice.Amulet:Amulet' || (g % 17),
         'party-' || (g % 211) || '::1220' || md5((g % 211)::text),
         convert_to(format('{{"owner":"party-%s::1220%s","amount":{{"initialAmount":"%s.%s","createdAt":{{"number":"%s"}},'
                           '"ratePerRound":{{"rate":"0.00004"}}}},"dso":"DSO::1220%s","lock":%s}}',
                           g % 211, md5((g % 211)::text), g % 100000, g % 9973, g / 50, md5('dso'),
                           CASE WHEN g % 5 = 0 THEN '{{"holders":["h1","h2"],"expiresAt":"2026-01-01"}}'
                                ELSE 'null' END),
                    'UTF8'),
         g,
         timestamptz '2026-01-01' + g * interval '10 ms'
  FROM generate_series({lo}, {hi}) g;
INSERT INTO {p}_events
  SELECT g,
         md5((g / 3)::text),
         'party-' || (g % 211) || '::1220' || md5((g % 211)::text),
         jsonb_build_object('kind', CASE WHEN g % 3 = 0 THEN 'created' ELSE 'exercised' END,
                            'choice', 'Amulet_Transfer' || (g % 11),
                            'contractId', '00' || md5(g::text),
                            'witnesses', jsonb_build_array('party-' || (g % 211), 'DSO'),
                            'round', g / 1000),
         timestamptz '2026-01-01' + g * interval '10 ms'
  FROM generate_series({lo}, {hi}) g;
"""

# Bytes of table+index per fixture row, measured on PostgreSQL 15 (used to hit a target size).
_BYTES_PER_ROW = 1200


def load_fixture(cluster: Cluster, database: str, prefix: str, size_mb: float, batch_rows: int = 200_000) -> int:
    """Create `database` on `cluster` with about `size_mb` of fixture tables; returns the row count."""
    cluster.createdb(database)
    cluster.psql(_FIXTURE_SQL.format(p=prefix), database)
    rows = max(100, int(size_mb * 1024 * 1024 / _BYTES_PER_ROW))
    for lo in range(1, rows + 1, batch_rows):
        hi = min(rows, lo + batch_rows - 1)
        cluster.psql(_FIXTURE_BATCH_SQL.format(p=prefix, lo=lo, hi=hi), database)
    cluster.psql("VACUUM ANALYZE", database)
    return rows
