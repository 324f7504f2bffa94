"""`python -m jobs drill-snapshots-probe`: what the snapshot sets' drill's scratch pod runs after its init
containers (`prepare-datadir`, one per role) have made each restored data directory start as the backup it is.

Per role it starts a server on `<root>/<role>/<pgdata>` with the binaries of that data directory's major and every
setting that reaches outside the pod overridden (`RestoredServer.start`), waits until it has left recovery and
accepts connections, checks that every database the stack's config names for the role is there, then checks the
apps-before-participant order in the restored data (jobs/drill.py `ordering_from_data`) when both are restored
here, stops every server whatever happened, and writes the findings (`problems` empty when everything holds, else
a `stage`: start, consistency, databases, ordering) as compact JSON to the termination message, which the drill
(jobs/drill_snapshots.py) reads from the pod's status. Exit 0 when everything holds, 3 otherwise, 2 on bad flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from jobs.pgdump import PG_LIB, connect
from rules.manifest import APPS, PARTICIPANT, ROLE_ORDER

PROBE_COMMAND = "drill-snapshots-probe"
RESTORED = "/restored"
TMP = "/tmp"
# The bitnami/postgresql chart Splice's SV examples install keeps PGDATA in `data/` of its volume.
PGDATA_SUBPATH = "data"
# The termination message is capped at 4096 bytes by the kubelet: the probe writes a compact summary there.
MESSAGE_LIMIT = 4000
SERVER_TOOLS = ("pg_ctl", "postgres")


def parse_role_values(values: list[str] | None, what: str) -> dict[str, str]:
    """`ROLE=VALUE` flags (repeated) into a dict; one clear message for a bad one."""
    found: dict[str, str] = {}
    for value in values or []:
        role, sep, rest = value.partition("=")
        if not sep or not rest or role not in ROLE_ORDER:
            raise ValueError(f"{what} {value!r}: expected ROLE=VALUE with ROLE one of {', '.join(ROLE_ORDER)}")
        if role in found:
            raise ValueError(f"{what}: role {role} given twice")
        found[role] = rest
    return found


def parse_databases(values: list[str] | None) -> dict[str, list[str]]:
    return {r: [d for d in v.split(",") if d] for r, v in parse_role_values(values, "--databases").items()}


def server_bin_for(datadir: Path, lib: Path = PG_LIB) -> Path:
    """The binaries of exactly the data directory's major: a server of another major cannot open it."""
    major = (datadir / "PG_VERSION").read_text().strip()
    bin_dir = lib / major / "bin"
    if not all((bin_dir / tool).exists() for tool in SERVER_TOOLS):
        have = sorted(p.name for p in lib.iterdir() if (p / "bin" / "pg_ctl").exists()) if lib.is_dir() else []
        raise ProbeError(
            "start",
            f"no PostgreSQL {major} server binaries under {bin_dir} (installed: "
            f"{', '.join(have) or 'none'}): the data directory is of major {major}",
        )
    return bin_dir


class ProbeError(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def _run_as() -> list[str]:
    # The pod runs as the data's owner; run as root (tests, a workstation) the server runs as its owner.
    return ["runuser", "-u", os.environ.get("SV_BACKUPS_SCRATCH_USER", "postgres"), "--"] if os.geteuid() == 0 else []


@dataclass
class RestoredServer:
    role: str
    datadir: Path
    sockdir: Path
    bin: Path
    started: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def log_file(self) -> Path:
        return self.sockdir / "server.log"

    def dsn(self, user: str, database: str = "postgres") -> str:
        return make_conninfo(host=str(self.sockdir), port="5432", user=user, dbname=database)

    def start(self, timeout: int) -> None:
        """Start on the restored data with everything that reaches outside the pod switched off: no TCP, no WAL
        archiving (the source's archive_command would push into the production archive), no replication
        connections, no preloaded libraries (the image may lack the source's), no SSL (its files are not here);
        our own empty config file and a pg_hba with trust on the socket only. Command-line settings override both
        the data directory's postgresql.conf and postgresql.auto.conf."""
        self.sockdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        conf, hba, ident = (
            self.sockdir / "postgresql.conf",
            self.sockdir / "pg_hba.conf",
            self.sockdir / "pg_ident.conf",
        )
        conf.write_text("")
        hba.write_text("local all all trust\n")
        ident.write_text("")
        if os.geteuid() == 0:
            owner = self.datadir.stat()
            for path in (self.sockdir, conf, hba, ident):
                os.chown(path, owner.st_uid, owner.st_gid)
        settings = {
            "config_file": str(conf),
            "hba_file": str(hba),
            "ident_file": str(ident),
            "listen_addresses": "",
            "port": "5432",
            "unix_socket_directories": str(self.sockdir),
            "unix_socket_permissions": "0700",
            "archive_mode": "off",
            "max_wal_senders": "0",
            "wal_level": "replica",
            "shared_preload_libraries": "",
            "ssl": "off",
            "shared_buffers": "128MB",
            "max_connections": "20",
            "logging_collector": "off",
            "log_destination": "stderr",
            "restore_command": "",
            "primary_conninfo": "",
        }
        options = " ".join(f"-c {k}='{v}'" for k, v in settings.items())
        self.started = True  # from here on, stop() must run
        begun = time.monotonic()
        proc = subprocess.run(
            [
                *_run_as(),
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(timeout),
                "-o",
                options,
                "start",
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout + 30,
            check=False,
        )
        self.facts["ready_seconds"] = round(time.monotonic() - begun, 1)
        if proc.returncode != 0:
            raise ProbeError(
                "start",
                f"{self.role}: the server did not start on the restored data "
                f"(pg_ctl exit {proc.returncode}): {self.log_tail(600)}",
            )

    def await_ready(self, user: str, timeout: int, poll: float = 0.5) -> tuple[str, set[str]]:
        """Wait until the server has replayed the WAL it has (to the end of the online backup, or the crash
        recovery of a crash-consistent snapshot), left recovery and accepts connections. pg_ctl's own wait is not
        enough: a server in archive recovery (a backup label starts one) is reported "started" by pg_ctl before
        it is consistent. Returns (server version, the databases that accept connections)."""
        begun = time.monotonic()
        last = "no answer"
        while True:
            try:
                with connect(self.dsn(user), autocommit=True) as conn:
                    recovering, version = conn.execute(
                        "SELECT pg_is_in_recovery(), current_setting('server_version')"
                    ).fetchone()
                    if not recovering:
                        present = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn")}
                        self.facts["ready_seconds"] = round(
                            self.facts.get("ready_seconds", 0) + time.monotonic() - begun, 1
                        )
                        return version, present
                    last = "still in recovery"
            except Exception as error:  # starting up, not yet consistent, or gone
                last = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            if not (self.datadir / "postmaster.pid").exists():
                raise ProbeError(
                    "start", f"{self.role}: the server stopped during recovery ({last}): {self.log_tail(600)}"
                )
            if time.monotonic() - begun >= timeout:
                raise ProbeError(
                    "consistency",
                    f"{self.role}: not consistent and accepting connections after "
                    f"{timeout}s ({last}): {self.log_tail(400)}",
                )
            time.sleep(poll)

    def log_tail(self, chars: int) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_file.read_text(errors="replace")[-chars:].splitlines())
        return "(no server log)"

    def stop(self) -> None:
        if not self.started:
            return
        with contextlib.suppress(Exception):
            subprocess.run(
                [
                    *_run_as(),
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "120",
                    "stop",
                ],
                capture_output=True,
                timeout=150,
                check=False,
            )
        pid_file = self.datadir / "postmaster.pid"
        if pid_file.exists():  # the postmaster must not outlive the probe
            with contextlib.suppress(Exception):
                os.kill(int(pid_file.read_text().split()[0]), 9)
        self.started = False


def probe(
    roots: dict[str, Path],
    databases: dict[str, list[str]],
    users: dict[str, str],
    socket_root: Path,
    *,
    lib: Path = PG_LIB,
    timeout: int = 3600,
) -> dict[str, Any]:
    """Start a server per role on its restored data directory, check it and the ordering, stop them all.
    Returns the findings (`problems` empty when everything holds)."""
    from jobs.drill import ordering_from_data

    servers: list[RestoredServer] = []
    roles: dict[str, Any] = {}
    problems: list[str] = []
    stage = "probe"
    findings: dict[str, Any] = {"roles": roles}
    try:
        for role, datadir in roots.items():
            entry: dict[str, Any] = {"started": False}
            roles[role] = entry
            try:
                server = RestoredServer(role, datadir, socket_root / f"pg-{role}", server_bin_for(datadir, lib))
                servers.append(server)
                server.start(timeout)
                entry.update(started=True)
                version, present = server.await_ready(users[role], timeout)
                entry.update(server.facts, version=version, consistent=True)
                missing = [db for db in databases.get(role, []) if db not in present]
                entry.update(databases=sorted(db for db in databases.get(role, []) if db in present))
                if missing:
                    entry["missing"] = missing
                    problems.append(
                        f"{role}: database(s) {', '.join(missing)} of the stack's config missing in the "
                        f"restored data (present: {', '.join(sorted(present)) or 'none'})"
                    )
                    stage = "databases" if stage == "probe" else stage
            except ProbeError as error:
                problems.append(str(error))
                stage = error.stage if stage == "probe" else stage
            except Exception as error:  # a server that started but refuses our login, etc.
                problems.append(f"{role}: {type(error).__name__}: {error}"[:600])
                stage = "start" if stage == "probe" else stage
        by_role = {s.role: s for s in servers if roles[s.role].get("started")}
        if APPS in by_role and PARTICIPANT in by_role:

            def labelled(role: str) -> list[tuple[str, str]]:
                return [(f"{role}/{db}", by_role[role].dsn(users[role], db)) for db in roles[role].get("databases", [])]

            try:
                ordering = ordering_from_data(labelled(APPS), labelled(PARTICIPANT))
            except Exception as error:
                ordering = {"checked": False, "detail": f"{type(error).__name__}: {error}"[:400]}
            findings["ordering"] = ordering
            if ordering.get("checked") and not ordering.get("holds"):
                problems += ordering["problems"]
                stage = "ordering" if stage == "probe" else stage
        else:
            findings["ordering"] = {"checked": False, "detail": "apps and participant are not both restored here"}
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.sockdir, ignore_errors=True)
    findings.update(problems=problems, ok=not problems)
    if problems:
        findings["stage"] = stage
    return findings


def _compact(findings: dict[str, Any]) -> str:
    """The findings as JSON within the termination message's limit: long problem texts are cut first."""
    text = json.dumps(findings, sort_keys=True, default=str, separators=(",", ":"))
    if len(text) <= MESSAGE_LIMIT:
        return text
    cut = {**findings, "problems": [p[:300] for p in findings.get("problems", [])][:6]}
    text = json.dumps(cut, sort_keys=True, default=str, separators=(",", ":"))
    if len(text) <= MESSAGE_LIMIT:
        return text
    return json.dumps(
        {
            "ok": findings.get("ok"),
            "stage": findings.get("stage"),
            "problems": [p[:200] for p in findings.get("problems", [])][:4],
            "roles": {r: {"started": v.get("started")} for r, v in findings.get("roles", {}).items()},
        },
        separators=(",", ":"),
    )[:MESSAGE_LIMIT]


def handle_probe(args: argparse.Namespace) -> int:
    try:
        databases = parse_databases(args.databases)
        users = parse_role_values(args.user, "--user")
    except ValueError as error:
        print(f"{PROBE_COMMAND}: {error}", file=sys.stderr)
        return 2
    roots = {role: Path(args.root) / role / args.pgdata for role in users}
    findings = probe(roots, databases, users, Path(args.socket_root), lib=Path(args.pg_lib), timeout=args.start_timeout)
    text = _compact(findings)
    print(text, flush=True)
    with contextlib.suppress(OSError):
        Path(args.termination_log).write_text(text)
    return 0 if findings["ok"] else 3


def register(subparsers) -> None:
    q = subparsers.add_parser(
        PROBE_COMMAND,
        help="(in the scratch pod) start a server on each restored data "
        "directory, check consistency, databases and ordering; findings to the termination log",
    )
    q.add_argument("--root", default=RESTORED)
    q.add_argument("--pgdata", default=PGDATA_SUBPATH)
    q.add_argument("--socket-root", default=TMP)
    q.add_argument("--databases", action="append", metavar="ROLE=DB[,DB...]")
    q.add_argument("--user", action="append", required=True, metavar="ROLE=USER")
    q.add_argument("--pg-lib", default=str(PG_LIB))
    q.add_argument("--start-timeout", type=int, default=3600, help="seconds for recovery and start, per server")
    q.add_argument("--termination-log", default="/dev/termination-log")
    q.set_defaults(func=handle_probe)
