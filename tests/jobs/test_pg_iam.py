"""Cloud SQL IAM database authentication, end to end against real PostgreSQL: the job logs in as a service
account's IAM database user through a stand-in of the Cloud SQL Auth Proxy, with no password anywhere in its
environment, and the set it takes verifies and restores.

Each source server trusts the IAM user only from the address the proxy stand-in dials from (127.0.0.2) and
asks everyone else for a password (tests/jobs/fakes/cloudsql_proxy.py): a connection that does not go through
the proxy cannot log in. The IAM user holds only what docs/cloudsql-iam.md tells the operator to grant
(`pg_read_all_data`), so these tests also prove that grant is enough for a full dump, and what it is not
enough for (large objects).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from testkit.pgcluster import PASSWORD, PG_BIN, free_port, load_fixture
from tests.jobs.conftest import job_env
from tests.jobs.fakes.cloudsql_proxy import IAM_SOURCE_ADDRESS, RunningProxy
from tests.jobs.pg_helpers import APPS_DB, PARTICIPANT_DB, static_digests

pytestmark = pytest.mark.slow

IAM_USER = "sv-1-pg-backup@sv-test-project.iam"
INSTANCES = {
    "apps": "sv-test-project:us-central1:sv-1-apps-pg",
    "participant": "sv-test-project:us-central1:sv-1-participant-pg",
}
DATABASES = {"apps": (APPS_DB, "app"), "participant": (PARTICIPANT_DB, "par")}
# The documented GRANT (docs/cloudsql-iam.md), as the operator runs it.
GRANT = f'GRANT pg_read_all_data TO "{IAM_USER}";'
# What the IAM user may do besides: nothing. It owns nothing and is no superuser (like a Cloud SQL IAM user).
IAM_ROLE = f'CREATE ROLE "{IAM_USER}" LOGIN'
# Only the proxy's address is trusted for the IAM user; initdb's scram-sha-256 lines follow for everything else.
HBA = (f'host all "{IAM_USER}" {IAM_SOURCE_ADDRESS}/32 trust',)


def iam_server(pg_factory, role: str, *, grant: bool = True):
    cluster = pg_factory(f"iam-{role}", hba=HBA)
    database, prefix = DATABASES[role]
    load_fixture(cluster, database, prefix, size_mb=1)
    # Objects owned by the application user, as on a Splice instance (not by the IAM user or postgres).
    cluster.psql("CREATE ROLE cnadmin LOGIN")
    cluster.psql(
        "CREATE SCHEMA ledger AUTHORIZATION cnadmin; SET ROLE cnadmin; "
        "CREATE SEQUENCE ledger.offsets START 1000; SELECT setval('ledger.offsets', 4242); "
        "CREATE TABLE ledger.entries (id bigint PRIMARY KEY DEFAULT nextval('ledger.offsets'), body jsonb); "
        "INSERT INTO ledger.entries (body) SELECT jsonb_build_object('n', g) FROM generate_series(1, 300) g; "
        "CREATE MATERIALIZED VIEW ledger.summary AS SELECT count(*) AS n FROM ledger.entries",
        database,
    )
    cluster.psql(IAM_ROLE)
    if grant:
        cluster.psql(GRANT)
    return cluster


def iam_dsn(port: int, database: str) -> str:
    """What the program writes: the IAM user (percent-encoded '@'), the proxy's loopback port, no password."""
    return f"postgresql://{quote(IAM_USER, safe='')}@127.0.0.1:{port}/{database}"


def passwordless_env() -> dict[str, str]:
    env = job_env(PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"):
        env.pop(name, None)
    # libpq's default password file would be a secret too: point it at nothing.
    env["PGPASSFILE"] = "/nonexistent/pgpass"
    return env


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def proxy_for(role: str, cluster) -> Iterator[RunningProxy]:
    """The stand-in on free ports. A port found free can be taken by another process before the stand-in binds
    it: then it starts again on other ports (at most three tries)."""
    for attempt in range(3):
        proxy = RunningProxy(INSTANCES[role], f"127.0.0.1:{cluster.port}", port=free_port(), http_port=free_port())
        try:
            running = proxy.__enter__()
        except RuntimeError as error:
            if "Address already in use" in str(error) and attempt < 2:
                continue
            raise
        try:
            yield running
        finally:
            proxy.__exit__(None, None, None)
        return


@pytest.fixture(scope="module")
def servers(pg_factory):
    return {role: iam_server(pg_factory, role) for role in ("apps", "participant")}


def test_the_iam_user_logs_in_only_through_the_proxy(servers, jobs_cli, tmp_path):
    apps = servers["apps"]
    dest = f"file://{tmp_path}/store"
    direct = jobs_cli("backup-set", "--dest", dest, "--db", f"apps={iam_dsn(apps.port, APPS_DB)}",
                      env=passwordless_env())  # fmt: skip
    assert direct.returncode == 1
    (failed,) = [e for e in events(direct.stdout) if e["event"] == "backup.failed"]
    assert "no password supplied" in failed["error"]
    assert not (tmp_path / "store").exists() or jobs_cli("list-sets", dest).stdout.strip() == ""


def test_backup_set_without_a_password_verifies_and_restores(servers, pg_factory, jobs_cli, tmp_path):
    env = passwordless_env()
    assert not {"PGPASSWORD"} & set(env)
    dest = f"file://{tmp_path}/store"
    with proxy_for("apps", servers["apps"]) as apps_proxy, proxy_for("participant", servers["participant"]) as par:
        result = jobs_cli("backup-set", "--dest", dest, "--migration-id", "2",
                          "--db", f"apps={iam_dsn(apps_proxy.port, APPS_DB)}",
                          "--db", f"participant={iam_dsn(par.port, PARTICIPANT_DB)}", env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # The kubelet's SIGTERM ends the proxy with 0 (--exit-zero-on-sigterm): the pod's phase is not affected.
    assert (apps_proxy.exit_code, par.exit_code) == (0, 0), apps_proxy.output + par.output
    (completed,) = [e for e in events(result.stdout) if e["event"] == "backup.completed"]
    set_url = completed["urls"][0]

    manifest = json.loads((tmp_path / "store" / "recent" / "2" / completed["set_id"] / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert [(d["role"], d["database"]) for d in manifest["databases"]] == [
        ("apps", APPS_DB),
        ("participant", PARTICIPANT_DB),
    ]
    # The ordering facts come from functions any login may call.
    assert all(d["wal_lsn"] and d["txid_snapshot"] for d in manifest["databases"])
    verified = jobs_cli("verify-set", set_url)
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout + verified.stderr

    # Restore is the operator's step, with an admin login of the target (not the job's identity).
    targets = {role: pg_factory(f"iam-restore-{role}") for role in ("apps", "participant")}
    for target in targets.values():
        target.psql("CREATE ROLE cnadmin LOGIN")  # the owner of the restored objects, as on the source
    restored = jobs_cli("restore-set", set_url, "--db", f"apps={targets['apps'].dsn(APPS_DB)}",
                        "--db", f"participant={targets['participant'].dsn(PARTICIPANT_DB)}",
                        env=job_env(PGPASSWORD=PASSWORD))  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    for role, (database, prefix) in DATABASES.items():
        source, target = servers[role], targets[role]
        assert static_digests(target, database, prefix) == static_digests(source, database, prefix)
        for sql in ("SELECT last_value FROM ledger.offsets", "SELECT count(*), sum((body->>'n')::int) FROM "
                    "ledger.entries", "SELECT n FROM ledger.summary"):  # fmt: skip
            assert target.psql(sql, database) == source.psql(sql, database), sql


def test_without_the_grant_the_dump_fails_and_no_set_exists(pg_factory, jobs_cli, tmp_path):
    ungranted = iam_server(pg_factory, "participant", grant=False)
    dest = f"file://{tmp_path}/store"
    with proxy_for("participant", ungranted) as proxy:
        result = jobs_cli("backup-set", "--dest", dest, "--db",
                          f"participant={iam_dsn(proxy.port, PARTICIPANT_DB)}", env=passwordless_env())  # fmt: skip
    assert result.returncode == 1
    (failed,) = [e for e in events(result.stdout) if e["event"] == "backup.failed"]
    assert "permission denied" in failed["error"]
    assert jobs_cli("list-sets", dest).stdout.strip() == ""


def test_large_objects_need_their_own_grant(pg_factory, jobs_cli, tmp_path):
    """pg_read_all_data does not cover large objects; the per-object GRANT of docs/cloudsql-iam.md does."""
    server = iam_server(pg_factory, "apps")
    server.psql("SET ROLE cnadmin; SELECT lo_from_bytea(0, convert_to('large object body', 'UTF8'))", APPS_DB)
    dest = f"file://{tmp_path}/store"
    with proxy_for("apps", server) as proxy:
        dsn = iam_dsn(proxy.port, APPS_DB)
        refused = jobs_cli("backup-set", "--dest", dest, "--db", f"apps={dsn}", env=passwordless_env())
        assert refused.returncode == 1 and "permission denied for large object" in refused.stdout
        # docs/cloudsql-iam.md, "Large objects": run in psql connected to the database, as its owner or an admin.
        subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", server.dsn(APPS_DB)],
            input=f"SELECT format('GRANT SELECT ON LARGE OBJECT %s TO %I;', oid, '{IAM_USER}')\n"
            "  FROM pg_largeobject_metadata \\gexec\n",
            check=True, capture_output=True, text=True, env=job_env(PGPASSWORD=PASSWORD),
        )  # fmt: skip
        taken = jobs_cli("backup-set", "--dest", dest, "--db", f"apps={dsn}", env=passwordless_env())
    assert taken.returncode == 0, taken.stdout + taken.stderr
    (completed,) = [e for e in events(taken.stdout) if e["event"] == "backup.completed"]
    # The per-object grant is part of the dump: a target without the IAM role refuses it, unless the restore
    # skips ownership and privileges (docs/cloudsql-iam.md, "Restoring").
    target = pg_factory("iam-restore-lo")
    target.psql("CREATE ROLE cnadmin LOGIN")
    url, target_db = completed["urls"][0], f"apps={target.dsn(APPS_DB)}"
    refused = jobs_cli("restore-set", url, "--db", target_db, env=job_env(PGPASSWORD=PASSWORD))
    assert refused.returncode == 1 and f'role "{IAM_USER}" does not exist' in refused.stderr
    restored = jobs_cli("restore-set", url, "--db", f"apps={target.dsn('apps_again')}", "--no-owner",
                        env=job_env(PGPASSWORD=PASSWORD))  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert target.psql("SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata", "apps_again") == (
        "large object body"
    )
