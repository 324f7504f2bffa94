"""A throwaway PostgreSQL server inside the drill pod: `initdb` + `pg_ctl start` in a scratch directory.

Reachable only through a unix socket in that directory (`listen_addresses = ''`: no TCP at all), with `trust`
for local connections and nothing else in pg_hba.conf; durability is off (the data is thrown away). Always
stopped (`pg_ctl stop -m immediate`, then the process group killed if it lingers) when the context ends.

The server binaries come from the dumped major or the oldest newer one under PG_LIB (`<major>/bin`, the
Debian/PGDG layout of the job image): pg_restore into an older server is not supported by PostgreSQL.
initdb refuses to run as root; the pod runs the job non-root. Run as root (a workstation, CI), the server is run
as `SV_BACKUPS_SCRATCH_USER` (default `postgres`) via runuser, the way the test clusters are.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from jobs.pgdump import PG_LIB

SUPERUSER = "sv_drill"
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT = 120


class ScratchError(Exception):
    pass


def server_bin(major: int, lib: Path = PG_LIB) -> Path:
    """`<lib>/<major>/bin` of the dumped major, else of the oldest newer one that has the server tools."""
    candidates = []
    if lib.is_dir():
        for entry in lib.iterdir():
            if entry.name.isdigit() and all((entry / "bin" / t).exists() for t in SERVER_TOOLS):
                candidates.append(int(entry.name))
    usable = sorted(m for m in candidates if m >= major)
    if not usable:
        have = ", ".join(str(m) for m in sorted(candidates)) or "none"
        raise ScratchError(f"no PostgreSQL server binaries for major {major} or newer under {lib}/<major>/bin "
                           f"(installed: {have}); the scratch server cannot be older than the dump")
    return lib / str(usable[0]) / "bin"


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", os.environ.get("SV_BACKUPS_SCRATCH_USER", "postgres"), "--"]


@dataclass
class ScratchServer:
    root: Path
    bin: Path
    started: bool = False

    @property
    def base(self) -> Path:
        return self.root / "scratch-pg"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        return self.base / "socket"

    def dsn(self, database: str = "postgres") -> str:
        return make_conninfo(host=str(self.sockdir), port="5432", user=SUPERUSER, dbname=database)

    def _run(self, *args: str, what: str) -> None:
        proc = subprocess.run([*_run_as(), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=START_TIMEOUT)
        if proc.returncode != 0:
            raise ScratchError(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")

    def start(self) -> ScratchServer:
        if os.geteuid() != 0:
            try:
                pwd.getpwuid(os.geteuid())
            except KeyError:
                raise ScratchError(f"uid {os.geteuid()} has no passwd entry, and initdb needs one: run the drill as "
                                   "the image's user (65532) or add an entry for this uid") from None
        if self.base.exists():
            raise ScratchError(f"{self.base} already exists: give the drill an empty scratch directory")
        self.base.mkdir(mode=0o700)
        self.sockdir.mkdir(mode=0o700)
        self.datadir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam(os.environ.get("SV_BACKUPS_SCRATCH_USER", "postgres"))
            for path in (self.base, self.sockdir, self.datadir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync", what="initdb")
        conf = [
            "listen_addresses = ''",
            f"unix_socket_directories = '{self.sockdir}'",
            "unix_socket_permissions = 0700",
            "fsync = off", "synchronous_commit = off", "full_page_writes = off",
            "max_wal_size = '256MB'", "shared_buffers = '128MB'", "maintenance_work_mem = '128MB'",
        ]
        with open(self.datadir / "postgresql.auto.conf", "a") as fh:
            fh.write("\n".join(conf) + "\n")
        # Only the socket, only trust: nothing reaches the server but processes of this pod's user.
        (self.datadir / "pg_hba.conf").write_text("local all all trust\n")
        self.started = True  # from here on, stop() must run whatever happens
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.base / "server.log"), "-w",
                  "-t", str(START_TIMEOUT), "start", what="pg_ctl start")
        return self

    def stop(self) -> None:
        if not self.started:
            return
        with contextlib.suppress(Exception):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop",
                      what="pg_ctl stop")
        pid_file = self.datadir / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed to stop it: the postmaster must not outlive the drill
            with contextlib.suppress(Exception):
                os.kill(int(pid_file.read_text().split()[0]), 9)
        self.started = False

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "server.log").read_text(errors="replace")[-chars:]
        return ""

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def scratch_server(root: Path, major: int, lib: Path = PG_LIB):
    server = ScratchServer(root=root, bin=server_bin(major, lib))
    try:
        yield server.start()
    finally:
        server.stop()
        server.remove()
