"""The database password from a mounted Secret file (jobs/pgpass.py), on real PostgreSQL: the step turns it into
a private libpq passfile that psycopg and pg_dump / pg_receivewal use, and the password reaches no argv, no
environment variable and no log line. Workstations keep PGPASSWORD / PGPASSFILE."""

from __future__ import annotations

import json
import os
import stat

import psycopg
import pytest

from jobs import pgpass
from jobs.pgdump import connect
from testkit.pgcluster import PASSWORD
from tests.jobs.conftest import job_env

# A password with the characters a passfile must escape (':' and '\'), and a space.
ODD_PASSWORD = r"p:w\ with spaces:\:"


def _secret_file(tmp_path, text: str):
    """As the kubelet writes a Secret volume's item: read-only for its owner (defaultMode 0400)."""
    path = tmp_path / "secret" / "password"
    path.parent.mkdir()
    path.write_text(text)
    path.chmod(0o400)
    return path


def _env_without_passwords(**extra: str) -> dict[str, str]:
    env = job_env(**extra)
    for name in ("PGPASSWORD", "PGPASSFILE"):
        env.pop(name, None)
    return env


@pytest.fixture
def odd_login(pg_factory):
    cluster = pg_factory("pgpass")
    escaped = ODD_PASSWORD.replace("'", "''")
    cluster.psql(f"CREATE ROLE odd LOGIN SUPERUSER PASSWORD '{escaped}'")
    cluster.createdb("odd_db")
    return cluster


def test_install_writes_a_private_passfile_that_libpq_uses(odd_login, tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "a-workstation-password-that-must-not-win")
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # restored after the test: install sets it
    runtime = tmp_path / "run"
    runtime.mkdir()
    passfile = pgpass.install(_secret_file(tmp_path, ODD_PASSWORD + "\n"), runtime)

    assert os.environ["PGPASSFILE"] == str(passfile) and "PGPASSWORD" not in os.environ
    assert passfile.parent.parent == runtime
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(passfile.parent.stat().st_mode) == 0o700
    # In-process: psycopg (libpq) logs in with the file's password, the DSN has none.
    with connect(odd_login.dsn("odd_db", user="odd")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("odd",)
    pgpass._remove(passfile)
    assert not passfile.exists() and not passfile.parent.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file (is the Secret mounted?)"),
        ("", "is empty; it must hold the password"),
        ("first\nsecond\n", "holds more than one line"),
    ],
)
def test_an_unusable_password_file_is_named_never_shown(tmp_path, content, expected):
    path = tmp_path / "secret" / "password"
    if content is not None:
        path = _secret_file(tmp_path, content)
    with pytest.raises(pgpass.PasswordFileError) as raised:
        pgpass.install(path, tmp_path, environ={})
    message = str(raised.value)
    assert message == f"--password-file {path}: {expected}" or message.startswith(f"--password-file {path}: {expected}")
    assert "first" not in message and "second" not in message


def test_without_the_flag_a_workstation_keeps_pgpassword(odd_login, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", ODD_PASSWORD)
    assert pgpass.install_from_args(type("Args", (), {"password_file": None})()) is None
    with connect(odd_login.dsn("odd_db", user="odd")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.slow
def test_backup_step_dumps_through_the_mounted_password_file(odd_login, jobs_cli, tmp_path):
    """The command the CronJob runs (psycopg for the snapshot, pg_dump children for the parts), with no password
    in its environment: only the file. The password is in no argv, no output; nothing is left in the dir."""
    odd_login.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g", "odd_db")
    runtime = tmp_path / "run"
    runtime.mkdir()
    args = [
        "backup-step", "--role", "apps", "--dest", f"file://{tmp_path}/store", "--set-id", "pw-file-1",
        "--migration-id", "0", "--db", f"apps={odd_login.dsn('odd_db', user='odd')}",
        "--ignore-databases", "postgres",
        "--password-file", str(_secret_file(tmp_path, ODD_PASSWORD)), "--passfile-dir", str(runtime),
    ]  # fmt: skip
    result = jobs_cli(*args, env=_env_without_passwords())
    assert result.returncode == 0, result.stdout + result.stderr
    (done,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert done["event"] == "backup.step_completed" and done["databases"] == ["odd_db"]
    assert ODD_PASSWORD not in result.stdout + result.stderr + " ".join(args)
    assert list(runtime.iterdir()) == []  # the passfile went with the process

    # The wrong password in the file: the step fails, naming neither password.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    args[args.index("--password-file") + 1] = str(_secret_file(wrong, "not-" + ODD_PASSWORD))
    args[args.index("--set-id") + 1] = "pw-file-2"
    result = jobs_cli(*args, env=_env_without_passwords())
    assert result.returncode == 1
    assert "password authentication failed" in result.stdout
    assert ODD_PASSWORD not in result.stdout + result.stderr


@pytest.mark.slow
def test_snapshot_step_online_logs_in_through_the_mounted_password_file(pg_factory, jobs_cli, tmp_path):
    """--online: pg_backup_start/stop in the step's psycopg session and the WAL by pg_receivewal, a child
    process, both through the passfile built from the mounted file; no PGPASSWORD anywhere."""
    from tests.jobs.fakes.kube import FakeKubeApi

    cluster = pg_factory("pgpass-online")
    runtime = tmp_path / "run"
    runtime.mkdir()
    with FakeKubeApi() as api:
        api.ready_after = 1
        api.add_pvc("sv", "data-apps-pg-0")
        args = [
            "snapshot-step", "--role", "apps", "--dest", f"file://{tmp_path}/store", "--set-id", "pw-online",
            "--migration-id", "0", "--method", "volume-snapshot", "--namespace", "sv", "--pvc", "data-apps-pg-0",
            "--snapshot-class", "c", "--kube-api", api.url, "--poll-interval", "0.02",
            "--online", "--pg", cluster.dsn("postgres"),
            "--password-file", str(_secret_file(tmp_path, PASSWORD)), "--passfile-dir", str(runtime),
        ]  # fmt: skip
        result = jobs_cli(*args, env=_env_without_passwords())
    assert result.returncode == 0, result.stdout + result.stderr
    (done,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert done["consistency"] == "online", done
    assert PASSWORD not in result.stdout + result.stderr + " ".join(args)
    assert list(runtime.iterdir()) == []


def test_password_file_without_online_is_refused(jobs_cli, tmp_path):
    result = jobs_cli(
        "snapshot-step", "--role", "apps", "--dest", f"file://{tmp_path}/store", "--set-id", "x", "--migration-id",
        "0", "--method", "volume-snapshot", "--namespace", "sv", "--pvc", "p", "--snapshot-class", "c",
        "--password-file", str(tmp_path / "pw"),
    )  # fmt: skip
    assert result.returncode == 1 and "--password-file is for --online" in result.stdout + result.stderr


def test_psycopg_sees_no_password_without_a_source(odd_login, monkeypatch):
    """The control: the same login with neither PGPASSWORD nor a passfile fails, so the tests above prove the
    file was used."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(psycopg.OperationalError):
        connect(odd_login.dsn("odd_db", user="odd")).close()
