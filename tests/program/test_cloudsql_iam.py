"""Cloud SQL instances without a password secret: IAM database authentication through the Cloud SQL Auth Proxy
(components/gcp/cloudsql.py), through the mock engine, next to instances that keep the password path."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import kubernetes_validate
import pytest
import yaml

from components.gcp.cloudsql import (
    CLOUD_SQL_PROXY_IMAGE,
    CLOUDSQL_IAM_IGNORED_FIELDS,
    CLOUDSQL_IGNORED_FIELDS,
    IAM_AUTH_FLAG,
    iam_database_user,
    instance_condition,
    with_iam_authentication,
)
from engines.offline_plan import PlanMocks, main_program, plan_program, stack_config
from tests.program.conftest import PROJECT, ROOT
from tests.program.test_components import cron_job, password_of, pod_spec
from tests.program.test_manifests import KUBERNETES_VERSIONS
from tests.stackfiles import Example

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")

GSA = f"sv-1-pg-backup@{EX.project}.iam.gserviceaccount.com"
IAM_USER = f"sv-1-pg-backup@{EX.project}.iam"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
# What an operator's instance already has: the program must keep all of it and turn on only the IAM flag.
LIVE_FLAGS = [
    {"name": "max_connections", "value": "400"},
    {"name": IAM_AUTH_FLAG, "value": "off"},
    {"name": "log_min_duration_statement", "value": "1000"},
]


def cloudsql_grants(plan) -> list[dict]:
    """The project IAM members granting Cloud SQL roles (the history audit's storage reader is another one)."""
    return [
        g for g in plan.of_type("gcp:projects/iAMMember:IAMMember") if g["inputs"]["role"].startswith("roles/cloudsql.")
    ]


def iam_config(stack_config_map, *roles: str, **changes) -> dict:
    """The prod stack with the given Cloud SQL roles on IAM authentication (no passwordSecret)."""
    config = stack_config_map("prod")
    for role in roles:
        instance = config["sv-backups:postgres"][role]
        instance.pop("passwordSecret", None)
        instance.update(changes)
    for role in {"participant", "sequencer"} - set(roles):
        config["sv-backups:postgres"][role].setdefault("passwordSecret", f"{role}-pg-secret")
    return config


def plan_with_live_flags(config: dict, flags: dict[str, list[dict[str, str]]] | None = None):
    mocks = PlanMocks(project=EX.project, region="us-central1", cloudsql_flags=flags)
    return plan_program(main_program(ROOT), stack_config(config, project="sv-backups", stack="test"), mocks=mocks)


def containers(plan) -> dict[str, dict]:
    spec = pod_spec(cron_job(plan, "postgres-backup"))
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def flag_value(args: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    return value


def instance_named(plan, name: str) -> dict:
    (found,) = [r for r in plan.of_type(SQL_INSTANCE) if r["inputs"]["name"] == name]
    return found


# --- pure rules -----------------------------------------------------------------------------------------


def test_iam_database_user_drops_the_service_account_domain():
    assert iam_database_user(GSA) == IAM_USER
    with pytest.raises(ValueError, match="not a Google service account email"):
        iam_database_user("someone@example.com")


def test_live_flags_are_kept_and_only_iam_authentication_is_turned_on():
    merged = with_iam_authentication(LIVE_FLAGS)
    assert merged == [
        {"name": IAM_AUTH_FLAG, "value": "on"},
        {"name": "log_min_duration_statement", "value": "1000"},
        {"name": "max_connections", "value": "400"},
    ]
    assert with_iam_authentication([]) == [{"name": IAM_AUTH_FLAG, "value": "on"}]
    assert with_iam_authentication(merged) == merged  # idempotent: the next run changes nothing


def test_the_condition_names_exactly_one_instance():
    assert instance_condition("p", EX.sequencer_instance) == (
        f"resource.name == 'projects/p/instances/{EX.sequencer_instance}' "
        "&& resource.type == 'sqladmin.googleapis.com/Instance'"
    )


# --- an adopted instance --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adopted_iam_plan():
    """prod with the sequencer on IAM authentication and the participant on its password, planned once."""
    document = yaml.safe_load(PROJECT.stack_file("prod").read_text())
    config = {**document["config"]}
    config["sv-backups:postgres"]["sequencer"].pop("passwordSecret", None)
    config["sv-backups:postgres"]["participant"]["passwordSecret"] = "participant-pg-secret"
    return plan_with_live_flags(config, {EX.sequencer_instance: LIVE_FLAGS})


def test_adopted_instance_gets_the_flag_with_its_other_flags_kept(adopted_iam_plan):
    sequencer = instance_named(adopted_iam_plan, EX.sequencer_instance)
    assert sequencer["inputs"]["settings"]["databaseFlags"] == with_iam_authentication(LIVE_FLAGS)
    # Flags are managed (to keep the IAM flag on), every other field stays ignored as for any adopted instance.
    assert sorted(sequencer["options"]["ignoreChanges"]) == sorted(CLOUDSQL_IAM_IGNORED_FIELDS)
    assert set(CLOUDSQL_IGNORED_FIELDS) - set(CLOUDSQL_IAM_IGNORED_FIELDS) == {"settings.databaseFlags"}
    assert sequencer["options"]["protect"] is True and sequencer["options"]["retainOnDelete"] is True
    assert sequencer["inputs"]["settings"]["backupConfiguration"]["enabled"] is True
    # The password instance is exactly as before: no flags declared, flags ignored.
    participant = instance_named(adopted_iam_plan, EX.participant_instance)
    assert "databaseFlags" not in participant["inputs"]["settings"]
    assert sorted(participant["options"]["ignoreChanges"]) == sorted(CLOUDSQL_IGNORED_FIELDS)


def test_adopted_instance_gets_the_iam_user_of_the_job_service_account(adopted_iam_plan):
    (user,) = adopted_iam_plan.of_type("gcp:sql/user:User")
    assert user["inputs"] == {
        "instance": EX.sequencer_instance,
        "name": IAM_USER,
        "project": EX.project,
        "type": "CLOUD_IAM_SERVICE_ACCOUNT",
    }
    assert "password" not in user["inputs"]


def test_cloudsql_roles_are_granted_on_that_instance_only(adopted_iam_plan):
    grants = cloudsql_grants(adopted_iam_plan)
    assert sorted(g["inputs"]["role"] for g in grants) == ["roles/cloudsql.client", "roles/cloudsql.instanceUser"]
    for grant in grants:
        inputs = grant["inputs"]
        assert inputs["member"] == f"serviceAccount:{GSA}"
        assert inputs["project"] == EX.project
        assert inputs["condition"]["expression"] == instance_condition(EX.project, EX.sequencer_instance)
        assert inputs["condition"]["title"]


def test_the_proxy_is_a_hardened_pinned_native_sidecar_before_the_dumps(adopted_iam_plan):
    spec = pod_spec(cron_job(adopted_iam_plan, "postgres-backup"))
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["cloudsql-proxy-sequencer", "apps", "participant", "sequencer", "mediator"]
    proxy = spec["initContainers"][0]
    assert proxy["image"] == CLOUD_SQL_PROXY_IMAGE and "@sha256:" in proxy["image"]
    assert proxy["restartPolicy"] == "Always"
    assert "command" not in proxy  # the image's own entrypoint, /cloud-sql-proxy
    args = proxy["args"]
    assert args[-1] == f"{EX.project}:us-central1:{EX.sequencer_instance}"
    for flag in ("--auto-iam-authn", "--private-ip", "--health-check", "--run-connection-test",
                 "--exit-zero-on-sigterm", "--structured-logs"):  # fmt: skip
        assert flag in args
    assert flag_value(args, "--address") == "127.0.0.1"
    assert flag_value(args, "--port") == "15434"
    probe = proxy["startupProbe"]
    assert probe["httpGet"] == {"path": "/startup", "port": int(flag_value(args, "--http-port"))}
    assert probe["periodSeconds"] * probe["failureThreshold"] == 120
    context = proxy["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 65532
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]} and context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(proxy["resources"]["limits"]) >= {"cpu", "memory"}


def test_the_step_connects_to_the_proxy_as_the_iam_user_without_a_password(adopted_iam_plan):
    found = containers(adopted_iam_plan)
    step = found["sequencer"]
    [db] = [step["args"][i + 1] for i, a in enumerate(step["args"]) if a == "--db"]
    role, _, dsn = db.partition("=")
    parts = urlsplit(dsn)
    assert (role, parts.hostname, parts.port, parts.path) == ("sequencer", "127.0.0.1", 15434, f"/{EX.sequencer_db}")
    assert unquote(parts.username) == IAM_USER and parts.password is None
    env = {e["name"]: e for e in step["env"]}
    spec = pod_spec(cron_job(adopted_iam_plan, "postgres-backup"))
    assert "PGPASSWORD" not in env and password_of(spec, "sequencer") is None
    assert not any("pgpass" in v["name"] or "password" in v["name"] for v in step.get("volumeMounts", []))
    assert env["PGSSLMODE"]["value"] == "disable"
    # The password instances keep their secret (a mounted file) and TLS.
    participant_env = {e["name"]: e for e in found["participant"]["env"]}
    assert password_of(spec, "participant") == ("participant-pg-secret", "postgresPassword")
    assert participant_env["PGSSLMODE"]["value"] == "require"


def test_the_grant_to_run_is_a_stack_output(adopted_iam_plan):
    assert adopted_iam_plan.outputs["postgresSetupSql"] == {"sequencer": [f'GRANT pg_read_all_data TO "{IAM_USER}";']}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_sidecar_layout_is_valid_kubernetes(adopted_iam_plan, version):
    (manifest,) = [
        m
        for m in adopted_iam_plan.manifests.values()
        if m["kind"] == "CronJob" and m["metadata"]["name"] == "sv-1-postgres-backup"
    ]
    kubernetes_validate.validate(manifest, version, strict=True)


# --- variants -------------------------------------------------------------------------------------------


def test_instance_not_adopted_gets_grants_and_a_proxy_but_no_instance_or_user(stack_config_map):
    config = iam_config(stack_config_map, "participant", adopt=False, region="us-east4")
    plan = plan_with_live_flags(config)
    assert [r["inputs"]["name"] for r in plan.of_type(SQL_INSTANCE)] == [EX.sequencer_instance]
    assert plan.of_type("gcp:sql/user:User") == []
    grants = cloudsql_grants(plan)
    assert {g["inputs"]["condition"]["expression"] for g in grants} == {
        instance_condition(EX.project, EX.participant_instance)
    }
    proxy = containers(plan)["cloudsql-proxy-participant"]
    # Not adopted: the connection name comes from the config (the instance's own region).
    assert proxy["args"][-1] == f"{EX.project}:us-east4:{EX.participant_instance}"
    assert flag_value(proxy["args"], "--port") == "15433"


def test_every_iam_instance_has_its_own_proxy_and_port(stack_config_map):
    plan = plan_with_live_flags(iam_config(stack_config_map, "participant", "sequencer"))
    found = containers(plan)
    ports = {}
    for role in ("participant", "sequencer"):
        proxy = found[f"cloudsql-proxy-{role}"]
        ports[role] = (flag_value(proxy["args"], "--port"), flag_value(proxy["args"], "--http-port"))
        [db] = [a for a in found[role]["args"] if a.startswith(f"{role}=")]
        assert urlsplit(db.split("=", 1)[1]).port == int(ports[role][0])
    assert ports == {"participant": ("15433", "9802"), "sequencer": ("15434", "9803")}
    assert len(plan.of_type("gcp:sql/user:User")) == 2
    assert len(cloudsql_grants(plan)) == 4
    init = [c["name"] for c in pod_spec(cron_job(plan, "postgres-backup"))["initContainers"]]
    assert init[:2] == ["cloudsql-proxy-participant", "cloudsql-proxy-sequencer"]


def test_password_instances_declare_no_iam_access(stack_config_map):
    config = iam_config(stack_config_map)  # both Cloud SQL instances with their password secrets
    plan = plan_with_live_flags(config)
    assert plan.of_type("gcp:sql/user:User") == []
    assert cloudsql_grants(plan) == []
    assert not [c for c in containers(plan).values() if c.get("restartPolicy") == "Always"]
    assert "postgresSetupSql" not in plan.outputs
