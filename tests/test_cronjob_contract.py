"""The commands the program schedules are exactly commands the job code accepts, and they work.

Both sides of docs/contracts.md section 2 meet here:
- fast: every container and initContainer of every CronJob of every shipped stack, with `$(VAR)` expanded from
  its own env as the kubelet does, is parsed by the jobs CLI's own parser (`jobs.__main__.build_parser`):
  no error, every flag is exactly an option of the subcommand (no argparse abbreviation), the subcommand's
  handler is the intended one, and the parsed values are what the program meant (roles, set id, DSNs,
  durations, URLs the job's store adapters accept, RBAC and mounts the job needs);
- slow: the pods run as Kubernetes would run them (subprocesses with the container's env, in order, stopping
  at the first failure; native sidecars started first and stopped last): the Postgres pod of dev and prod
  against real PostgreSQL clusters (TLS for the Cloud SQL stand-ins with a password; for the IAM-auth one a
  stand-in of the Cloud SQL Auth Proxy, run with the sidecar's own args, in front of a server that lets the
  IAM user in only through it), the dev CometBFT and identities pods against the fake Kubernetes API, the fake
  SV/OAuth server and the fake Secret Manager. Only addresses, ports and the store are rewritten to the local
  stand-ins; the calls the jobs make to the Kubernetes API are checked against the RBAC the plan grants their
  ServiceAccount.

Run: `.venv/bin/python -m pytest tests/test_cronjob_contract.py` (add `-m "not slow"` for the fast half).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pytest

from tests.contract_support import (
    ROOT,
    SHIPPED_STACKS,
    ArgsRejected,
    Pod,
    access_of,
    base_env,
    containers_in_run_order,
    cron_job_running,
    cron_jobs,
    flag_problems,
    is_sidecar,
    parse_job_args,
    password_source,
    pod_name,
    pod_spec,
    rbac_denials,
    replace_host,
    replace_origin,
    resources_of_type,
    rewrite_flag,
    run_container,
    run_pod,
    shipped_plan,
    shipped_settings,
)

pytestmark = pytest.mark.skipif(
    not (ROOT / "jobs" / "__main__.py").exists() or not (ROOT / "components" / "program.py").exists(),
    reason="needs both the program (components/program.py) and the jobs CLI (jobs/__main__.py)",
)

# Every subcommand a CronJob may run, and the function of the job code that must handle it.
HANDLERS = {
    "backup-step": ("jobs.pgsets_cli", "cmd_backup_step"),
    "seal-set": ("jobs.pgsets_cli", "cmd_seal_set"),
    "dump-identities": ("jobs.identities", "handle"),
    "snapshot-cometbft": ("jobs.cometbft", "handle"),
    "audit-history": ("jobs.history_cli", "cmd_audit_history"),
    # The restore drills (components/drill.py; the job side is docs/jobs-drills.md).
    "drill-restore": ("jobs.drill_cli", "cmd_drill_restore"),
    "drill-cometbft": ("jobs.drill_cometbft", "handle"),
    "drill-identities": ("jobs.drill_identities", "cmd_drill_identities"),
}
# Stacks with sv-backups:snapshots also run the snapshot sets and their pruner (components/pg_snapshots.py).
SNAPSHOT_HANDLERS = {
    "snapshot-step": ("jobs.pgsnap_cli", "cmd_snapshot_step"),
    "snapshot-seal": ("jobs.pgsnap_cli", "cmd_snapshot_seal"),
    "prune-snapshots": ("jobs.pgsnap_cli", "cmd_prune_snapshots"),
    "drill-snapshots": ("jobs.drill_snapshots", "handle"),
}
HANDLERS.update(SNAPSHOT_HANDLERS)


def settings_of(stack: str):
    """The program's own view of the stack (validated settings), to compare what the job parses against."""
    return shipped_settings(stack)


def scheduled(stack: str):
    """(cron job name, kind, container, expanded args) of every container the stack schedules."""
    plan = shipped_plan(stack)
    for name, job in cron_jobs(plan).items():
        pod = Pod(pod_name(name), job["metadata"]["namespace"])
        for kind, container in containers_in_run_order(pod_spec(job)):
            yield name, kind, container, pod.args(container)


# --------------------------------------------------------------------------------------------------- fast


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_scheduled_command_parses_with_the_jobs_cli(stack):
    import importlib

    problems = []
    seen_commands = set()
    for name, kind, container, args in scheduled(stack):
        if kind == "sidecar":
            continue  # another image (test_sidecars_are_the_pinned_proxy_with_flags_it_accepts)
        where = f"{stack}: CronJob {name} {kind} {container['name']}"
        assert container["command"] == ["python", "-m", "jobs"], f"{where}: not the job image's entrypoint"
        problems += [f"{where}: {p}" for p in flag_problems(args)]
        try:
            parsed = parse_job_args(args)
        except ArgsRejected as error:
            problems.append(f"{where}: {error}")
            continue
        seen_commands.add(parsed.command)
        module, function = HANDLERS[parsed.command]
        expected = getattr(importlib.import_module(module), function)
        if parsed.func is not expected:
            problems.append(f"{where}: {parsed.command} is handled by {parsed.func}, expected {module}.{function}")
        if any("$(" in arg for arg in args):
            problems.append(f"{where}: an unexpanded reference is left in {args}")
    assert not problems, "\n".join(problems)
    expected = set(HANDLERS) - (set() if settings_of(stack).snapshots is not None else set(SNAPSHOT_HANDLERS))
    assert seen_commands == expected, f"{stack}: the CronJobs run {sorted(seen_commands)}"


def test_sidecars_are_the_pinned_proxy_with_flags_it_accepts():
    """Every native sidecar any shipped stack schedules is the pinned Cloud SQL Auth Proxy, and its args are
    ones the proxy's command line accepts (the stand-in parses exactly the real proxy's flag names)."""
    from components.gcp.cloudsql import CLOUD_SQL_PROXY_IMAGE
    from tests.jobs.fakes.cloudsql_proxy import parse_args

    found = []
    for stack in SHIPPED_STACKS:
        for name, kind, container, args in scheduled(stack):
            if kind != "sidecar":
                continue
            found.append(container["name"])
            where = f"{stack}: CronJob {name} sidecar {container['name']}"
            assert container["image"] == CLOUD_SQL_PROXY_IMAGE, where
            assert "command" not in container, f"{where}: must run the image's entrypoint"
            parsed = parse_args(args)
            (connection,) = parsed.instances
            assert connection.count(":") == 2, f"{where}: {connection} is not PROJECT:REGION:INSTANCE"
    assert found, "no shipped stack runs a Cloud SQL Auth Proxy sidecar (prod's sequencer should)"


def iam_user_of(plan, spec) -> str:
    """The IAM database user of the Google service account the pod runs as (its KSA's Workload Identity)."""
    from components.gcp.cloudsql import iam_database_user

    (account,) = [
        a
        for a in resources_of_type(plan, "kubernetes:core/v1:ServiceAccount")
        if a["metadata"]["name"] == spec["serviceAccountName"]
    ]
    return iam_database_user(account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"])


def proxy_serving(spec, port: int) -> tuple[int, dict]:
    """(index among the initContainers, container) of the one sidecar listening on 127.0.0.1:`port`."""
    from tests.jobs.fakes.cloudsql_proxy import parse_args

    found = [
        (index, c)
        for index, c in enumerate(spec["initContainers"])
        if is_sidecar(c) and parse_args(c["args"]).port == port and parse_args(c["args"]).address == "127.0.0.1"
    ]
    assert len(found) == 1, f"{len(found)} sidecars listen on 127.0.0.1:{port}"
    return found[0]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_postgres_pod_means_what_the_program_intends(stack, monkeypatch):
    from jobs.destinations import GcsDestination, open_destination
    from tests.jobs.fakes.cloudsql_proxy import parse_args

    settings = settings_of(stack)
    plan = shipped_plan(stack)
    job = cron_job_running(plan, "seal-set")
    spec = pod_spec(job)
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"])
    steps = [c for c in spec["initContainers"] if not is_sidecar(c)]

    # The kubelet's order is the SV rule: apps alone first, participant next (contracts.md section 2).
    assert [c["name"] for c in steps] == list(settings.roles)
    assert [c["name"] for c in steps][:2] == ["apps", "participant"]
    seal = parse_job_args(pod.args(spec["containers"][0]))
    assert seal.roles == list(settings.roles)
    assert seal.set_id == pod.name and seal.migration_id == settings.node.migration_id
    assert seal.participant_pruning == settings.retention.participant_pruning
    assert seal.sequencer_pruning == settings.retention.sequencer_pruning

    # One set id per pod: every container reads the same pod name, and the job accepts it as a set id.
    dests = {seal.dest}
    for container in steps:
        step = parse_job_args(pod.args(container))
        role = container["name"]
        instance = settings.postgres[role]
        assert (step.role, step.set_id, step.migration_id) == (role, pod.name, settings.node.migration_id)
        assert [r for r, _ in step.db] == [role] * len(instance.databases)
        dsns = [urlsplit(dsn) for _, dsn in step.db]
        assert [PurePosixPath(d.path).name for d in dsns] == list(instance.databases)
        env = {e["name"]: e for e in container["env"]}
        if getattr(instance, "iam_auth", False):
            # No password anywhere: the pod's own Google identity, logged in by the proxy sidecar on loopback.
            assert password_source(spec, container) is None and env["PGSSLMODE"]["value"] == "disable"
            ((user, host, port),) = {(unquote(d.username), d.hostname, d.port) for d in dsns}
            assert (user, host) == (iam_user_of(plan, spec), "127.0.0.1") and dsns[0].password is None
            index, proxy = proxy_serving(spec, port)
            assert index < spec["initContainers"].index(container), f"{role}: its proxy starts after it"
            project, _, name = parse_args(proxy["args"]).instances[0].split(":")
            assert (project, name) == (settings.gcp.project, instance.instance)
        else:
            assert {(d.username, d.password, d.port) for d in dsns} == {(instance.user, None, instance.port)}
            # The password: the instance's Secret as a read-only 0400 file, never an environment variable.
            assert password_source(spec, container) == (instance.password_secret, "postgresPassword")
            assert step.password_file is not None and step.passfile_dir is not None
        assert not any("PASS" in name for name in env), f"{role}: a password variable in {sorted(env)}"
        assert env["SET_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        dests.add(step.dest)
    assert len(dests) == 1, f"steps and seal write to different places: {dests}"

    # The destination is a URL the job's store adapter opens (no network needed to open a GCS bucket).
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    destination = open_destination(dests.pop())
    assert isinstance(destination, GcsDestination)
    assert destination.bucket.name == plan.outputs["backupBucket"]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_cometbft_pod_means_what_the_program_intends(stack):
    from rules import retention

    settings = settings_of(stack)
    plan = shipped_plan(stack)
    job = cron_job_running(plan, "snapshot-cometbft")
    spec = pod_spec(job)
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"])
    (container,) = spec["containers"]
    parsed = parse_job_args(pod.args(container))

    # The class it names is one the stack declares (a stack with snapshot sets declares the Postgres one too).
    classes = resources_of_type(plan, "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    (snapshot_class,) = [c for c in classes if c["metadata"]["name"] == parsed.snapshot_class]
    assert "cometbft" in snapshot_class["metadata"]["name"]
    assert (parsed.namespace, parsed.pvc) == (settings.node.namespace, settings.cometbft.pvc)
    assert parsed.migration_id == settings.node.migration_id
    assert parsed.keep_recent == settings.retention.recent
    assert parsed.retain_blocks == settings.retention.cometbft_retain_blocks
    assert parsed.blocks_per_hour == settings.retention.cometbft_blocks_per_hour
    # The job prunes with the cadence the program exported and sized its alerts from.
    cadence = retention.cometbft_historical_cadence(parsed.retain_blocks, parsed.blocks_per_hour)
    assert cadence == settings.derived.cometbft_historical_cadence
    # It gives up waiting (and cleans up) before the Job's deadline kills it.
    deadline = job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert parsed.ready_timeout < timedelta(seconds=deadline)
    # The set-id label comes from the pod name (env SET_ID), and the pod can reach the API with its token.
    assert pod.env(container)["SET_ID"] == pod.name and parsed.set_id is None
    assert spec["automountServiceAccountToken"] is True and parsed.kube_api is None


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_identities_pod_means_what_the_program_intends(stack):
    from jobs.secret_stores import GcpSecretManagerStore, open_store

    settings = settings_of(stack)
    plan = shipped_plan(stack)
    job = cron_job_running(plan, "dump-identities")
    spec = pod_spec(job)
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"])
    (container,) = spec["containers"]
    parsed = parse_job_args(pod.args(container))
    cfg = settings.identities

    assert (parsed.endpoint, parsed.token_endpoint) == (cfg.endpoint, cfg.token_endpoint)
    assert (parsed.audience, parsed.client_id) == (cfg.audience, cfg.client_id)
    store = open_store(parsed.secret)
    assert isinstance(store, GcpSecretManagerStore)
    assert parsed.secret == plan.outputs["identitiesSecretUrl"]

    # The client secret file is a key of the Secret mounted at that path.
    mount = next(
        m for m in container["volumeMounts"] if parsed.client_secret_file.parent == PurePosixPath(m["mountPath"])
    )
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    secret = next(
        s for s in resources_of_type(plan, "kubernetes:core/v1:Secret")
        if s["metadata"]["name"] == volume["secret"]["secretName"]
    )  # fmt: skip
    assert secret["metadata"]["namespace"] == parsed.namespace == settings.node.namespace
    assert parsed.client_secret_file.name in secret["stringData"]
    assert "items" not in volume["secret"], "items would rename or drop the key the job reads"

    # The fingerprint ConfigMap exists in that namespace, and the pod can reach the API with its token.
    configmaps = {
        (c["metadata"]["namespace"], c["metadata"]["name"])
        for c in resources_of_type(plan, "kubernetes:core/v1:ConfigMap")
    }
    assert (parsed.namespace, parsed.fingerprint_configmap) in configmaps
    assert spec["automountServiceAccountToken"] is True and parsed.kube_api is None


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_drill_pods_mean_what_the_program_intends(stack):
    """The restore drills (components/drill.py): each restores what the stack backs up, within its deadline, and the
    CometBFT drill's calls (jobs/drill_cometbft.py) are exactly what its Role grants."""
    from jobs.cometbft import MIGRATION_ID_LABEL
    from jobs.secret_stores import open_store

    settings = settings_of(stack)
    plan = shipped_plan(stack)
    postgres = settings.derived.timing["postgres"]

    job = cron_job_running(plan, "drill-restore")
    spec = pod_spec(job)
    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"])
    (container,) = spec["containers"]
    parsed = parse_job_args(pod.args(container))
    assert parsed.url == plan.outputs["backupUrl"] and parsed.scratch_dsn is None
    assert parsed.max_age == postgres.largest_gap + postgres.latest_finish + settings.monitoring.slack
    # The scratch directory is the mounted ephemeral volume, sized by drill.scratchSize.
    mount = next(
        m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == PurePosixPath(parsed.scratch_dir)
    )
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    claim = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == settings.drill.scratch_size
    assert spec["automountServiceAccountToken"] is False

    job = cron_job_running(plan, "drill-cometbft")
    spec = pod_spec(job)
    namespace = job["metadata"]["namespace"]
    (container,) = spec["containers"]
    parsed = parse_job_args(Pod(pod_name(job["metadata"]["name"]), namespace).args(container))
    assert parsed.namespace == settings.node.namespace
    assert parsed.selector[MIGRATION_ID_LABEL] == str(settings.node.migration_id)
    classes = {c["metadata"]["name"]: c for c in resources_of_type(plan, "kubernetes:storage.k8s.io/v1:StorageClass")}
    (snapshot_class,) = [
        c
        for c in resources_of_type(plan, "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
        if "cometbft" in c["metadata"]["name"]
    ]
    # A PVC restored from a snapshot needs a class of the snapshot's CSI driver.
    assert classes[parsed.storage_class]["provisioner"] == snapshot_class["driver"]
    assert parsed.probe_image == settings.job_image
    deadline = timedelta(seconds=job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"])
    assert parsed.timeout < deadline and parsed.kube_api is None
    assert spec["automountServiceAccountToken"] is True
    calls = [
        ("GET", f"/apis/snapshot.storage.k8s.io/v1/namespaces/{namespace}/volumesnapshots"),
        *(
            (method, f"/api/v1/namespaces/{namespace}/{resource}{suffix}")
            for resource in ("persistentvolumeclaims", "pods")
            for method, suffix in (("POST", ""), ("GET", "/drill-x"), ("DELETE", "/drill-x"))
        ),
    ]
    accesses = [access_of(method, path) for method, path in calls]
    assert rbac_denials(plan, namespace, spec["serviceAccountName"], accesses) == []
    # ...and nothing more: no secrets, no patching the node's own PVC.
    for method, path in (
        ("GET", f"/api/v1/namespaces/{namespace}/secrets/x"),
        ("PATCH", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{settings.cometbft.pvc}"),
    ):
        assert rbac_denials(plan, namespace, spec["serviceAccountName"], [access_of(method, path)]) != []

    job = cron_job_running(plan, "drill-identities")
    (container,) = pod_spec(job)["containers"]
    parsed = parse_job_args(Pod(pod_name(job["metadata"]["name"]), namespace).args(container))
    assert parsed.url == plan.outputs["identitiesSecretUrl"]
    open_store(parsed.url)  # a URL the reader's store adapters accept
    assert parsed.max_age is None  # a version is added only when the dump changed: its age is no failure


def test_the_checks_catch_a_renamed_flag():
    """The contract checks are not vacuous: an abbreviated flag (`--keep` for `--keep-recent`) and a misspelt
    flag are both refused."""
    args = ["snapshot-cometbft", "--namespace", "sv", "--pvc", "p", "--class", "c", "--migration-id", "0",
            "--keep-recent", "3d", "--retain-blocks", "5040000", "--blocks-per-hour", "7000"]  # fmt: skip
    assert flag_problems(args) == []
    abbreviated = ["--keep" if a == "--keep-recent" else a for a in args]
    # The job's parser refuses abbreviations (jobs/__main__.py), and the contract check names them too.
    with pytest.raises(ArgsRejected, match="--keep-recent"):
        parse_job_args(abbreviated)
    assert flag_problems(abbreviated) == [
        "snapshot-cometbft: --keep is not an option of the job (argparse would take it as an abbreviation of "
        "--keep-recent)"
    ]
    misspelt = [a.replace("--retain-blocks", "--retain-block-count") for a in args]
    with pytest.raises(ArgsRejected, match="--retain-block-count"):
        parse_job_args(misspelt)


# --------------------------------------------------------------------------------------------------- slow


def job_env(**extra: str) -> dict[str, str]:
    return {**base_env(), **extra}


def jobs_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=timeout
    )


def outcome(run) -> dict:
    finals = [e for e in run.events() if e.get("event") in ("backup.completed", "backup.failed")]
    assert finals, run.describe()
    return finals[-1]


# --- Postgres -----------------------------------------------------------------------------------------------

PG_USER_PASSWORDS = {
    "apps": "apps-pw-1",
    "participant": "participant-pw-2",
    "sequencer": "seq-pw-3",
    "mediator": "med-pw-4",
}


def _server_certificate(directory: Path) -> tuple[str, ...]:
    """A self-signed certificate for a stand-in of a Cloud SQL instance (its pods connect with sslmode=require)."""
    import os
    import pwd
    import shutil

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed for the TLS stand-ins of Cloud SQL instances")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    if os.geteuid() == 0:  # the server runs as `postgres` and must own its key
        os.chmod(directory, 0o755)
        user = pwd.getpwnam("postgres")
        for path in (cert, key):
            os.chown(path, user.pw_uid, user.pw_gid)
    return ("ssl = on", f"ssl_cert_file = '{cert}'", f"ssl_key_file = '{key}'")


def iam_roles(stack: str) -> list[str]:
    """The roles whose instances the stack's dumps log in to by IAM (no password secret)."""
    settings = settings_of(stack)
    return [role for role in settings.roles if getattr(settings.postgres[role], "iam_auth", False)]


@pytest.fixture(scope="module")
def stack_postgres():
    """postgres_for(stack) -> role -> a real cluster standing in for that role's instance: the stack's user,
    password and databases, TLS on for Cloud SQL instances with a password. An IAM-auth instance lets the pod's
    IAM database user in without a password, but only through the Cloud SQL Auth Proxy stand-in (trust from
    its address alone), and that user holds exactly what the stack's `postgresSetupSql` output grants.
    Started once per stack for this module."""
    from components.settings import CloudSqlPostgres
    from testkit.pgcluster import PG_BIN, ClusterFactory
    from tests.jobs.fakes.cloudsql_proxy import IAM_SOURCE_ADDRESS

    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    factory = ClusterFactory()
    started: dict[str, dict] = {}

    def postgres_for(stack: str) -> dict:
        if stack in started:
            return started[stack]
        settings = settings_of(stack)
        plan = shipped_plan(stack)
        iam_user = iam_user_of(plan, pod_spec(cron_job_running(plan, "seal-set")))
        clusters = {}
        for role in settings.roles:
            instance = settings.postgres[role]
            tls, hba = (), ()
            if role in iam_roles(stack):
                hba = (f'host all "{iam_user}" {IAM_SOURCE_ADDRESS}/32 trust',)
            elif isinstance(instance, CloudSqlPostgres):
                # Under the factory's directory: the server user must reach it (pytest's tmp dirs are 0700).
                tls = _server_certificate(factory.base / f"{stack}-{role}-tls")
            cluster = factory(f"{stack}-{role}", settings=tls, hba=hba)
            cluster.psql(f"CREATE ROLE {instance.user} LOGIN SUPERUSER PASSWORD '{PG_USER_PASSWORDS[role]}'")
            if hba:
                # What Cloud SQL creates for the gcp.sql.User (a login role, no password, no privileges), then
                # what the operator runs from the stack's output.
                cluster.psql(f'CREATE ROLE "{iam_user}" LOGIN')
                for statement in plan.outputs["postgresSetupSql"][role]:
                    cluster.psql(statement)
            for database in instance.databases:
                cluster.createdb(database)
                cluster.psql(
                    "CREATE TABLE facts (id bigint PRIMARY KEY, body text NOT NULL);"
                    "INSERT INTO facts SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
                    database,
                )
            clusters[role] = cluster
        started[stack] = clusters
        return clusters

    try:
        yield postgres_for
    finally:
        factory.close()


@dataclass
class PostgresPod:
    """One attempt of the stack's Postgres pod against the local servers: `options` are run_pod's keyword
    arguments (the rewrites to local addresses, the proxy stand-in, its ports and instances)."""

    job: dict
    pod: Pod
    store: Path
    options: dict

    @property
    def spec(self) -> dict:
        return pod_spec(self.job)

    def run(self):
        return run_pod(self.pod, self.spec, **self.options)


def _with_option(args: list[str], flag: str, value: str) -> list[str]:
    """`--flag=old` -> `--flag=value` (the proxy's own `--flag=value` form)."""
    assert any(a.startswith(f"{flag}=") for a in args), f"{flag} is not in {args}"
    return [f"{flag}={value}" if a.startswith(f"{flag}=") else a for a in args]


def postgres_pod(
    stack: str,
    clusters: dict,
    tmp_path,
    *,
    passwords: dict[str, str] | None = None,
    proxy_args: Callable[[list[str]], list[str]] = lambda args: args,
) -> PostgresPod:
    """The stack's Postgres pod, its Secrets as the namespace holds them, and the rewrites to local servers.
    `proxy_args` may change the Cloud SQL Auth Proxy sidecars' args (to show what a flag is for)."""
    from components.gcp.cloudsql import CLOUD_SQL_PROXY_IMAGE
    from testkit.pgcluster import free_port
    from tests.jobs.fakes import cloudsql_proxy

    settings = settings_of(stack)
    job = cron_job_running(shipped_plan(stack), "seal-set")
    spec = pod_spec(job)
    passwords = {**PG_USER_PASSWORDS, **(passwords or {})}
    # Secrets by their names in the stack: a container wired to another role's secret cannot log in. An IAM
    # role has none: no password exists for it anywhere.
    pod_secrets = {
        settings.postgres[role].password_secret: {"postgresPassword": passwords[role]}
        for role in settings.roles
        if settings.postgres[role].password_secret
    }
    # Servers by the address the stack gives each instance: a DSN pointing at another role's host would dump
    # the wrong server. A Cloud SQL instance's address is its private IP (or, for IAM login, its proxy's
    # loopback port), known only to the plan: take it from the role's own step, and require the addresses to
    # be distinct.
    addresses = {}
    for role in settings.roles:
        instance = settings.postgres[role]
        if instance.host and role not in iam_roles(stack):
            addresses[role] = f"{instance.host}:{instance.port}"
        else:
            step = next(c for c in spec["initContainers"] if c["name"] == role)
            dsn = next(a for a in step["args"] if a.startswith(f"{role}=postgresql://"))
            addresses[role] = urlsplit(dsn.split("=", 1)[1]).netloc.rpartition("@")[2]
    assert len(set(addresses.values())) == len(addresses), f"two roles share an address: {addresses}"
    hosts = {addresses[role]: f"127.0.0.1:{clusters[role].port}" for role in settings.roles}

    # Each proxy sidecar: its stand-in listens on free local ports (the pod's loopback ports could be taken
    # here), relays to the server of the role whose DSN names its port, and the kubelet probes it there.
    ports, instances, sidecar_ports = {}, {}, {}
    for container in spec["initContainers"]:
        if not is_sidecar(container):
            continue
        parsed = cloudsql_proxy.parse_args(container["args"])
        (role,) = [r for r in iam_roles(stack) if addresses[r] == f"127.0.0.1:{parsed.port}"]
        local, health = free_port(), free_port()
        hosts[addresses[role]] = f"127.0.0.1:{local}"
        ports[parsed.http_port] = health
        sidecar_ports[container["name"]] = (local, health)
        instances[parsed.instances[0]] = f"127.0.0.1:{clusters[role].port}"
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)

    def local_db(value: str) -> str:
        role, _, dsn = value.partition("=")
        return f"{role}={replace_host(dsn, hosts)}"

    def rewrite(name: str, args: list[str]) -> list[str]:
        if name in sidecar_ports:
            local, health = sidecar_ports[name]
            return proxy_args(_with_option(_with_option(args, "--port", str(local)), "--http-port", str(health)))
        args = rewrite_flag(args, "--dest", lambda _: store.as_uri())
        return rewrite_flag(args, "--db", local_db) if "--db" in args else args

    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"], pod_secrets)
    options = {
        "rewrite": rewrite,
        "sidecar_commands": {CLOUD_SQL_PROXY_IMAGE: cloudsql_proxy.command()},
        "ports": ports,
        "extra_env": cloudsql_proxy.registry_env(instances),
    }
    return PostgresPod(job, pod, store, options)


def list_sets(store) -> list[dict]:
    result = jobs_cli("list-sets", store.as_uri(), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_postgres_cronjob_pod_makes_one_complete_ordered_set(stack, stack_postgres, tmp_path):
    """dev: four in-cluster instances; prod: two of them Cloud SQL stand-ins, the participant with TLS
    (PGSSLMODE=require) and its password, the sequencer by IAM through the proxy sidecar with none; pruning
    windows on the seal (the first set of a migration id is promoted to historical)."""
    settings = settings_of(stack)
    attempt = postgres_pod(stack, stack_postgres(stack), tmp_path)
    pod, store = attempt.pod, attempt.store
    runs = attempt.run()

    assert [r.name for r in runs] == [*settings.roles, "seal"], runs[-1].describe()
    assert all(r.ok for r in runs), "\n".join(r.describe() for r in runs if not r.ok)
    assert outcome(runs[-1])["event"] == "backup.completed"
    # Each password-logged step authenticated through its mounted Secret file (the pod's env holds none), and
    # no password reached argv, the pod spec's env, the logs or the plan.
    spec = pod_spec(attempt.job)
    passwords = {PG_USER_PASSWORDS[r] for r in settings.roles if settings.postgres[r].password_secret}
    containers = {c["name"]: c for c in spec["initContainers"] + spec["containers"]}
    for run in runs:
        container = containers[run.name]
        logged = run.result.stdout + run.result.stderr + " ".join(run.args)
        environment = json.dumps(pod.env(container))
        assert not any(p in logged or p in environment for p in passwords), run.describe()
    assert not any(p in json.dumps(shipped_plan(stack).resources, default=str) for p in passwords)
    # The proxy ran through the whole pod and ended with the kubelet's SIGTERM, after the seal, with 0.
    assert [s.name for s in runs.sidecars] == [f"cloudsql-proxy-{role}" for role in iam_roles(stack)]
    for sidecar in runs.sidecars:
        assert sidecar.exit_code == 0 and "SIGTERM signal received" in sidecar.output, sidecar.output

    rows = list_sets(store)
    assert {row["set_id"] for row in rows} == {pod.name}, rows
    # The first set of a migration id is always promoted to historical (gap-less history from genesis).
    assert outcome(runs[-1])["promoted"] is True
    assert sorted(row["tier"] for row in rows) == ["historical", "recent"]
    for row in rows:
        assert row["migration_id"] == settings.node.migration_id
        assert row["roles"] == list(settings.roles)
        verified = jobs_cli("verify-set", row["url"])
        assert verified.returncode == 0, verified.stderr
        assert "ordering holds" in verified.stdout

    # The manifest's own record: every apps database finished before the participant snapshot was requested.
    tier, migration = rows[0]["tier"], rows[0]["migration_id"]
    manifest = json.loads((store / tier / str(migration) / pod.name / "manifest.json").read_text())
    databases = {(d["role"], d["database"]): d for d in manifest["databases"]}
    assert set(databases) == {(r, db) for r in settings.roles for db in settings.postgres[r].databases}
    apps_finished = max(datetime.fromisoformat(d["finished_at"]) for (r, _), d in databases.items() if r == "apps")
    participant_requested = min(
        datetime.fromisoformat(d["snapshot_requested_at"]) for (r, _), d in databases.items() if r == "participant"
    )
    assert apps_finished < participant_requested


@pytest.mark.slow
def test_postgres_pod_failing_at_participant_leaves_no_set(stack_postgres, tmp_path):
    settings = settings_of("dev")
    clusters = stack_postgres("dev")
    attempt = postgres_pod("dev", clusters, tmp_path, passwords={"participant": "wrong-password"})
    job, pod, store = attempt.job, attempt.pod, attempt.store
    runs = attempt.run()

    # The kubelet stops the pod at the failed initContainer: nothing after participant runs.
    assert [(r.name, r.ok) for r in runs] == [("apps", True), ("participant", False)], runs[-1].describe()
    failed = outcome(runs[-1])
    assert failed["event"] == "backup.failed" and failed["role"] == "participant"
    assert "wrong-password" not in runs[-1].result.stdout + runs[-1].result.stderr
    assert list_sets(store) == []

    # Even a seal run by hand on that pod's steps refuses to make the set complete.
    seal = run_container(pod, "container", pod_spec(job)["containers"][0], rewrite=attempt.options["rewrite"])
    assert not seal.ok and outcome(seal)["event"] == "backup.failed", seal.describe()
    assert list_sets(store) == []

    # The Job's retry is a fresh pod (a fresh set id): with the right password it makes one complete set, and
    # the failed attempt's partial steps never show up.
    retry = postgres_pod("dev", clusters, tmp_path)
    assert retry.pod.name != pod.name
    runs = retry.run()
    assert all(r.ok for r in runs) and len(runs) == len(settings.roles) + 1, runs[-1].describe()
    assert {row["set_id"] for row in list_sets(store)} == {retry.pod.name}


@pytest.mark.slow
def test_iam_login_exists_only_through_the_proxy_identity(stack_postgres, tmp_path):
    """prod's sequencer with a proxy that does not log in as the pod's IAM identity (no --auto-iam-authn):
    the step has no password to fall back on, fails, and no set exists; the sidecar still ends cleanly."""
    (role,) = iam_roles("prod")
    attempt = postgres_pod(
        "prod", stack_postgres("prod"), tmp_path, proxy_args=lambda args: [a for a in args if a != "--auto-iam-authn"]
    )
    runs = attempt.run()
    roles = settings_of("prod").roles
    expected = [(r, True) for r in roles[: roles.index(role)]] + [(role, False)]
    assert [(r.name, r.ok) for r in runs] == expected, runs[-1].describe()
    assert "no password supplied" in outcome(runs[-1])["error"]
    assert list_sets(attempt.store) == []
    assert [s.exit_code for s in runs.sidecars] == [0]


@pytest.mark.slow
def test_no_dump_starts_before_the_proxy_is_up(stack_postgres, tmp_path):
    """A proxy that cannot reach its instance (its connection test fails) never passes the startupProbe: the
    kubelet starts no dump step at all, so no set is even begun."""
    attempt = postgres_pod(
        "prod",
        stack_postgres("prod"),
        tmp_path,
        proxy_args=lambda args: [*args[:-1], "sv-prod-project:us-central1:no-such-instance"],
    )
    runs = attempt.run()
    (sidecar,) = runs.sidecars
    assert [(r.name, r.kind, r.ok) for r in runs] == [(sidecar.name, "sidecar", False)]
    assert "no-such-instance" in sidecar.output
    assert list(attempt.store.iterdir()) == []


# --- CometBFT -----------------------------------------------------------------------------------------------


def _recorded_accesses(server) -> list:
    with server.lock:
        return [access_of(r.method, r.path) for r in server.requests]


@pytest.mark.slow
def test_cometbft_cronjob_pod_snapshots_and_prunes_within_its_rbac(tmp_path):
    from jobs.cometbft import MIGRATION_ID_LABEL, SET_ID_LABEL, TAKEN_AT_LABEL
    from tests.jobs.fakes.kube import FakeKubeApi

    plan = shipped_plan("dev")
    settings = settings_of("dev")
    job = cron_job_running(plan, "snapshot-cometbft")
    spec = pod_spec(job)
    namespace = job["metadata"]["namespace"]
    (snapshot_class,) = resources_of_type(plan, "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    pvc = settings.cometbft.pvc

    with FakeKubeApi() as api:
        api.ready_after = 1
        api.class_policies[snapshot_class["metadata"]["name"]] = snapshot_class["deletionPolicy"]
        api.add_pvc(namespace, pvc)
        # Earlier runs, 5 days ago, 4 hours apart: older than keep-recent and closer than the historical
        # cadence, so the run must prune some of them (flip their content to Delete, then delete).
        now = datetime.now(UTC)
        for hours in range(120, 144, 4):
            taken = int((now - timedelta(hours=hours)).timestamp())
            api.add_snapshot(
                namespace, f"{pvc}-{taken}", pvc=pvc, snapshot_class=snapshot_class["metadata"]["name"],
                labels={SET_ID_LABEL: f"old-{taken}", MIGRATION_ID_LABEL: str(settings.node.migration_id),
                        TAKEN_AT_LABEL: str(taken), "app.kubernetes.io/managed-by": "sv-backups"},
            )  # fmt: skip
        before = set(api.names("volumesnapshots", namespace))
        disks_before = len(api.disk_snapshots)

        pod = Pod(pod_name(job["metadata"]["name"]), namespace)
        # In a pod the API is https://$KUBERNETES_SERVICE_HOST with the mounted token; here, the fake's address.
        runs = run_pod(pod, spec, extra_env={"SV_BACKUPS_KUBE_API": api.url})
        accesses = _recorded_accesses(api)
        after = set(api.names("volumesnapshots", namespace))
        created = sorted(after - before)
        pruned = sorted(before - after)
        new = api.get("volumesnapshots", namespace, created[0]) if created else None
        disks_after = len(api.disk_snapshots)

    assert [r.ok for r in runs] == [True], runs[-1].describe()
    assert outcome(runs[-1])["event"] == "backup.completed"
    assert len(created) == 1
    labels = new["metadata"]["labels"]
    assert labels[SET_ID_LABEL] == pod.name
    assert labels[MIGRATION_ID_LABEL] == str(settings.node.migration_id)
    assert new["spec"] == {
        "volumeSnapshotClassName": snapshot_class["metadata"]["name"],
        "source": {"persistentVolumeClaimName": pvc},
    }
    assert pruned, "nothing was pruned"
    assert disks_after == disks_before + 1 - len(pruned), "a pruned snapshot's disk snapshot was left behind"
    denied = rbac_denials(plan, namespace, spec["serviceAccountName"], accesses)
    assert not denied, "the job made calls its RBAC does not allow:\n" + "\n".join(denied)


# --- identities ---------------------------------------------------------------------------------------------


def mount_secret_volume(plan, volume: dict, directory: Path, value: str) -> None:
    """What the kubelet puts in a secret volume: one file per key of the plan's Secret (or per `items` entry).
    The plan redacts the values; `value` is the one the fakes expect."""
    name = volume["secret"]["secretName"]
    (secret,) = [s for s in resources_of_type(plan, "kubernetes:core/v1:Secret") if s["metadata"]["name"] == name]
    keys = [*(secret.get("stringData") or {}), *(secret.get("data") or {})]
    directory.mkdir(parents=True, exist_ok=True)
    for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in keys]:
        assert item["key"] in keys, f"volume {volume['name']}: Secret {name} has no key {item['key']}"
        (directory / item["path"]).write_text(value)


def identities_run(plan, sv, api, tmp_path, *, secret_url=None, extra_env=None):
    """One run of the identities CronJob's pod against the fakes; the OAuth Secret is 'mounted' in tmp_path."""
    job = cron_job_running(plan, "dump-identities")
    spec = pod_spec(job)
    (container,) = spec["containers"]
    mounts = {}
    for mount in container["volumeMounts"]:
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        if "secret" in volume:
            directory = tmp_path / "mounts" / mount["name"]
            mount_secret_volume(plan, volume, directory, sv.client_secret)
            mounts[mount["mountPath"]] = directory

    def local_path(path: str) -> str:
        for mount_path, directory in mounts.items():
            if path.startswith(mount_path + "/"):
                return str(directory / path[len(mount_path) + 1 :])
        raise AssertionError(f"{path} is on no mounted volume")

    def rewrite(_name, args):
        args = rewrite_flag(args, "--endpoint", lambda u: replace_origin(u, sv.url))
        args = rewrite_flag(args, "--token-endpoint", lambda u: replace_origin(u, sv.url))
        args = rewrite_flag(args, "--client-secret-file", local_path)
        if secret_url:
            args = rewrite_flag(args, "--secret", lambda _: secret_url)
        return args

    pod = Pod(pod_name(job["metadata"]["name"]), job["metadata"]["namespace"])
    return run_pod(pod, spec, rewrite=rewrite, extra_env={"SV_BACKUPS_KUBE_API": api.url, **(extra_env or {})})


@pytest.fixture
def identity_fakes():
    """The fake SV app + IdP (with the dev stack's client id and audience) and the fake Kubernetes API holding
    the fingerprint ConfigMap the program creates."""
    import secrets

    from tests.jobs.fakes.kube import FakeKubeApi
    from tests.jobs.fakes.sv import FakeSvServer

    settings = settings_of("dev")
    plan = shipped_plan("dev")
    cfg = settings.identities
    with (
        FakeSvServer(client_id=cfg.client_id, client_secret=secrets.token_hex(16), audience=cfg.audience) as sv,
        FakeKubeApi() as api,
    ):
        for configmap in resources_of_type(plan, "kubernetes:core/v1:ConfigMap"):
            api.add_configmap(configmap["metadata"]["namespace"], configmap["metadata"]["name"], configmap.get("data"))
        # The fake serves the SV's paths; the stack's URLs must use them (only the origin is rewritten).
        assert urlsplit(cfg.endpoint).path == urlsplit(sv.dump_url).path
        yield plan, sv, api


@pytest.mark.slow
def test_identities_cronjob_pod_stores_once_then_skips_within_its_rbac(identity_fakes, tmp_path):
    plan, sv, api = identity_fakes
    store = tmp_path / "versions"
    first = identities_run(plan, sv, api, tmp_path, secret_url=store.as_uri())
    second = identities_run(plan, sv, api, tmp_path, secret_url=store.as_uri())

    for runs in (first, second):
        assert [r.ok for r in runs] == [True], runs[-1].describe()
    assert [outcome(runs[-1])["changed"] for runs in (first, second)] == [True, False]
    versions = sorted(store.glob("*.json"))
    assert len(versions) == 1
    assert json.loads(versions[0].read_text()) == sv.dump
    output = "".join(r.result.stdout + r.result.stderr for r in first + second)
    assert sv.client_secret not in output

    job = cron_job_running(plan, "dump-identities")
    denied = rbac_denials(plan, job["metadata"]["namespace"], pod_spec(job)["serviceAccountName"],
                          _recorded_accesses(api))  # fmt: skip
    assert not denied, "the job made calls its RBAC does not allow:\n" + "\n".join(denied)


@pytest.mark.slow
def test_identities_cronjob_pod_adds_a_version_to_the_stacks_own_secret(identity_fakes, tmp_path):
    """--secret as the program wrote it (gcpsm://projects/P/secrets/S), against the fake Secret Manager."""
    from jobs.secret_stores import open_store
    from tests.jobs.fakes.secret_manager import FakeSecretManager

    plan, sv, api = identity_fakes
    store = open_store(plan.outputs["identitiesSecretUrl"])
    with FakeSecretManager() as manager:
        name = manager.create_secret(store.project, store.secret)
        runs = identities_run(plan, sv, api, tmp_path, extra_env={"SECRET_MANAGER_EMULATOR_HOST": manager.url})
        stored = list(manager.versions[name])
    assert [r.ok for r in runs] == [True], runs[-1].describe()
    assert [json.loads(v) for v in stored] == [sv.dump]
