"""Helpers for the snapshot-set tests against real PostgreSQL: a "snapshot" that copies a running cluster's data
directory (what a volume snapshot gives, but not atomic: only an online backup makes it restorable), and
starting a server on such a copy."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from jobs.pgsnap_volume import Cut
from jobs.snapshot_providers import SnapshotError, Taken
from testkit.pgcluster import Cluster, free_port


class DataDirCopy:
    """A Snapshotter whose snapshot is `cp -a` of the cluster's PGDATA, taken while the server runs and
    writes. Files that vanish mid-copy (temp files) are what a file-level copy of a live server always meets."""

    def __init__(self, cluster: Cluster, base: Path):
        self.cluster = cluster
        self.base = base
        self.copies: dict[str, Path] = {}
        self.taken: list[Taken] = []
        self.fail: str | None = None

    def snapshot(self, *, role: str, set_id: str, migration_id: int) -> Cut:
        if self.fail:
            raise SnapshotError("wait", self.fail)
        root = self.base / f"copy-{role}-{secrets.token_hex(3)}"
        root.mkdir()
        subprocess.run(["cp", "-a", str(self.cluster.datadir), str(root / "data")], capture_output=True, check=False)
        if not (root / "data" / "PG_VERSION").exists():
            raise SnapshotError("wait", f"copy of {self.cluster.datadir} failed")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        handle = str(root)
        self.copies[handle] = root
        at = datetime.now(UTC)
        self.taken.append(Taken(handle, set_id, role, migration_id, at, True))
        return Cut(handle=handle, cut_at=at, provider_times={"copied": at.isoformat()}, details={"copy": handle})

    def discard(self, cut: Cut) -> None:
        self.copies.pop(cut.handle, None)

    def list_taken(self) -> list[Taken]:
        return list(self.taken)

    def delete(self, handle: str) -> None:
        self.copies.pop(handle, None)

    def exists_ready(self, handle: str) -> bool | None:
        return True if handle in self.copies else None


def start_copy(root: Path) -> Cluster:
    """Start a server on a restored copy (root/data), on a port and socket of its own."""
    cluster = Cluster(name=root.name, root=root, port=free_port())
    cluster.sockdir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(cluster.sockdir, user.pw_uid, user.pw_gid)
    with open(cluster.datadir / "postgresql.auto.conf", "a") as fh:
        fh.write(f"port = {cluster.port}\nunix_socket_directories = '{cluster.sockdir}'\n")
    cluster.start()
    return cluster
