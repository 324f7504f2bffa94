"""Helpers for the Postgres set tests: source clusters with fixture data and a concurrent writer."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass

import psycopg
import zstandard

from testkit.pgcluster import PASSWORD, PG_BIN, Cluster, load_fixture

APPS_DB = "cantonnet_sv"
PARTICIPANT_DB = "participant_1"

WRITES_SQL = "CREATE TABLE writes (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"


@dataclass
class Sources:
    apps: Cluster
    participant: Cluster

    def dsns(self) -> list[str]:
        return ["--db", f"apps={self.apps.dsn(APPS_DB)}", "--db", f"participant={self.participant.dsn(PARTICIPANT_DB)}"]


def make_sources(pg_factory, size_mb: float = 2) -> Sources:
    apps, participant = pg_factory("apps"), pg_factory("participant")
    load_fixture(apps, APPS_DB, "app", size_mb)
    load_fixture(participant, PARTICIPANT_DB, "par", size_mb)
    apps.psql(WRITES_SQL, APPS_DB)
    participant.psql(WRITES_SQL, PARTICIPANT_DB)
    return Sources(apps, participant)


def _connect(cluster: Cluster, database: str) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(database), password=PASSWORD, autocommit=True)


class Writer:
    """Keeps writing while a backup runs, the way the node does: a participant transaction commits first, then
    the apps state that refers to it. Restored apps state must never be ahead of the restored participant."""

    def __init__(self, sources: Sources, start: int = 1):
        self.sources = sources
        self.seq = start - 1
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with _connect(self.sources.participant, PARTICIPANT_DB) as par, _connect(self.sources.apps, APPS_DB) as app:
                while not self._stop.is_set():
                    seq = self.seq + 1
                    par.execute("INSERT INTO writes (seq) VALUES (%s)", (seq,))
                    par.execute("UPDATE par_static_config SET value = value WHERE key = 'k1'")  # churn, same bytes
                    app.execute("INSERT INTO writes (seq) VALUES (%s)", (seq,))
                    self.seq = seq
                    time.sleep(0.002)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Writer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.seq < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error:
            raise self.error


def max_seq(cluster: Cluster, database: str) -> int:
    return int(cluster.psql("SELECT coalesce(max(seq), 0) FROM writes", database))


def table_digest(cluster: Cluster, database: str, table: str, key: str) -> str:
    """The table's rows, in key order, as text: equal digests mean byte-equal data."""
    return cluster.psql(f"SELECT md5(string_agg(t::text, E'\\n' ORDER BY {key})) FROM {table} t", database)


def static_digests(cluster: Cluster, database: str, prefix: str) -> dict[str, str]:
    return {
        table: table_digest(cluster, database, f"{prefix}_{table}", key)
        for table, key in (("static_config", "key"), ("contracts", "contract_id"), ("events", "event_sequential_id"))
    }


@contextlib.contextmanager
def stopped(cluster: Cluster):
    cluster.stop("immediate")
    try:
        yield
    finally:
        cluster.start()


def assert_whole_archives(objects: dict[str, bytes]) -> None:
    """Each object is a whole dump: a zstd frame that ends (its checksum verified) holding an archive whose table
    of contents pg_restore reads. A database is stored in several objects; when its step fails, the parts that
    finished stay behind (create-only: nothing is deleted), unreferenced, but none of them is ever partial."""
    for key, data in objects.items():
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        archive = decompressor.decompress(data)
        assert decompressor.eof, f"{key} is cut off"
        listed = subprocess.run([str(PG_BIN / "pg_restore"), "--list"], input=archive, capture_output=True)
        assert listed.returncode == 0, f"{key}: {listed.stderr.decode()}"
