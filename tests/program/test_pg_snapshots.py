"""Ordered Postgres snapshot sets through the mock engine (components/pg_snapshots.py, issue 17): the creator and
pruner CronJobs, their ServiceAccounts, RBAC and cloud identities, the class, the alerts, on GCP (in-cluster PD and
Cloud SQL: stack prod) and AWS (EBS and RDS: stack aws-prod), and the variants (paired regions, DR stacks, a stack
without the section)."""

from __future__ import annotations

import json

import pytest

from engines.offline_plan import AWS_ACCOUNT_ID
from tests.program.test_components import container_args, cron_job, password_of, pod_spec
from tests.stackfiles import Example

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")
EXA = Example("aws-prod")

CREATOR, PRUNER = "postgres-snapshot", "postgres-snapshot-prune"
ACCOUNT = AWS_ACCOUNT_ID
FOUR_HOURLY_BY = "sv-backups.canton.network/four-hourly-by"


# The step's password: a mounted Secret file, turned into a private passfile (components/kube_specs.py).
PASSWORD_FLAGS = ["--password-file", "/etc/sv-backups/postgres/password", "--passfile-dir", "/run/sv-backups/pgpass"]


def steps(plan) -> dict[str, list[str]]:
    return {c["name"]: container_args(c) for c in pod_spec(cron_job(plan, CREATOR))["initContainers"]}


def env(plan, role: str) -> dict[str, dict]:
    [step] = [c for c in pod_spec(cron_job(plan, CREATOR))["initContainers"] if c["name"] == role]
    return {e["name"]: e for e in step["env"]}


def rules(plan, name: str, type_: str) -> list[dict]:
    return plan.resource(name, f"kubernetes:rbac.authorization.k8s.io/v1:{type_}")["inputs"]["rules"]


def statements(plan, name: str) -> dict[str, dict]:
    policy = plan.resource(name, "aws:iam/rolePolicy:RolePolicy")["inputs"]["policy"]
    return {s["Sid"]: s for s in json.loads(policy)["Statement"]}


def actions(document: dict[str, dict]) -> set[str]:
    return {a for s in document.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


SET = ["--set-id", "$(SET_ID)", "--migration-id", "4"]


# --- GCP: prod (apps and mediator in-cluster, participant and sequencer on Cloud SQL) --------------------------


@pytest.fixture(scope="module")
def prod(shipped_plan):
    return shipped_plan("prod")


def test_one_step_per_role_in_role_order_then_the_seal(prod):
    job = cron_job(prod, CREATOR)
    assert job["name"] == job["inputs"]["metadata"]["name"] == "sv-1-postgres-snapshot"
    spec = job["inputs"]["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == ("0 */4 * * *", "Etc/UTC", "Forbid")
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 12600
    assert list(steps(prod)) == ["apps", "participant", "sequencer", "mediator"]
    [seal] = pod_spec(job)["containers"]
    assert container_args(seal) == [
        "snapshot-seal",
        "--dest",
        f"gs://{EX.project}-sv-1-backups",
        *SET,
        "--roles",
        "apps,participant,sequencer,mediator",
    ]


def test_in_cluster_steps_take_online_volume_snapshots_with_the_password_from_the_secret(prod):
    assert steps(prod)["apps"] == [
        "snapshot-step",
        "--role",
        "apps",
        "--dest",
        f"gs://{EX.project}-sv-1-backups",
        *SET,
        "--method",
        "volume-snapshot",
        "--namespace",
        "sv",
        "--pvc",
        "data-apps-pg-0",
        "--snapshot-class",
        "sv-1-postgres-snapshot-class",
        "--online",
        "--pg",
        "postgresql://cnadmin@apps-pg:5432/postgres",
        *PASSWORD_FLAGS,
    ]
    variables = env(prod, "mediator")
    assert password_of(pod_spec(cron_job(prod, CREATOR)), "mediator") == ("mediator-pg-secret", "postgresPassword")
    assert "PGPASSWORD" not in variables
    assert variables["PGSSLMODE"]["value"] == "prefer"
    assert not any("secret" in str(a).lower() for a in steps(prod)["mediator"])


def test_cloudsql_steps_take_on_demand_backups_stored_in_the_multi_region(prod):
    assert steps(prod)["participant"][-8:] == [
        "--method",
        "cloudsql-backup",
        "--project",
        EX.project,
        "--instance",
        EX.participant_instance,
        "--location",
        "us",
    ]
    # no database connection (an Admin API call): no password at all
    assert password_of(pod_spec(cron_job(prod, CREATOR)), "participant") is None


def test_the_class_retains_and_stores_in_the_multi_region(prod):
    cls = prod.resource("sv-1-postgres-snapshot-class")["inputs"]
    assert cls["metadata"]["name"] == "sv-1-postgres-snapshot-class"
    assert cls["metadata"]["labels"]["app.kubernetes.io/component"] == CREATOR
    assert (cls["driver"], cls["deletionPolicy"], cls["parameters"]) == (
        "pd.csi.storage.gke.io",
        "Retain",
        {"storage-locations": "us"},
    )


def test_the_creator_can_create_and_read_snapshots_never_delete(prod):
    assert rules(prod, "sv-1-postgres-snapshot-role", "Role") == [
        {
            "apiGroups": ["snapshot.storage.k8s.io"],
            "resources": ["volumesnapshots"],
            "verbs": ["create", "get", "list", "watch"],
        },
        {
            "apiGroups": [""],
            "resourceNames": ["data-apps-pg-0", "data-mediator-pg-0"],
            "resources": ["persistentvolumeclaims"],
            "verbs": ["get"],
        },
    ]
    assert rules(prod, "sv-1-postgres-snapshot-contents", "ClusterRole") == [
        {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotcontents"], "verbs": ["get"]}
    ]
    creator = prod.resource("sv-1-cloudsql-pgSnapshotCreator")["inputs"]
    assert creator["roleId"] == "svBackups_sv_1_pgSnapshotCreator"
    assert sorted(creator["permissions"]) == [
        "cloudsql.backupRuns.create",
        "cloudsql.backupRuns.get",
        "cloudsql.backupRuns.list",
        "cloudsql.instances.get",
    ]
    member = prod.resource("sv-1-cloudsql-pgSnapshotCreator-member")["inputs"]
    assert member["role"] == f"projects/{EX.project}/roles/svBackups_sv_1_pgSnapshotCreator"
    assert member["member"] == f"serviceAccount:sv-1-pg-snapshot@{EX.project}.iam.gserviceaccount.com"
    assert EX.participant_instance in member["condition"]["expression"]
    assert EX.sequencer_instance in member["condition"]["expression"]


def test_only_the_pruner_deletes(prod):
    job = cron_job(prod, PRUNER)
    assert job["name"] == "sv-1-postgres-snapshot-prune"
    assert job["inputs"]["spec"]["schedule"] == "10 3 * * *"
    assert pod_spec(job)["serviceAccountName"] == "sv-1-postgres-snapshot-prune"
    [prune] = pod_spec(job)["containers"]
    assert container_args(prune) == [
        "prune-snapshots",
        "--dest",
        f"gs://{EX.project}-sv-1-backups",
        "--migration-id",
        "4",
        "--keep-recent",
        "14d",
        "--namespace",
        "sv",
        "--project",
        EX.project,
    ]
    assert rules(prod, "sv-1-postgres-snapshot-prune-role", "Role") == [
        {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["get", "list", "delete"]}
    ]
    assert rules(prod, "sv-1-postgres-snapshot-prune-contents", "ClusterRole")[0]["verbs"] == ["get", "patch"]
    assert "cloudsql.backupRuns.delete" in prod.resource("sv-1-cloudsql-pgSnapshotPruner")["inputs"]["permissions"]


def test_each_job_has_its_own_service_account_and_workload_identity(prod):
    for ksa, gsa in (
        ("sv-1-postgres-snapshot", "sv-1-pg-snapshot"),
        ("sv-1-postgres-snapshot-prune", "sv-1-pg-snapshot-prune"),
    ):
        account = prod.resource(f"{ksa}-sa")["inputs"]
        assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == (
            f"{gsa}@{EX.project}.iam.gserviceaccount.com"
        )
        binding = prod.resource(f"{gsa}-workload-identity")["inputs"]
        assert binding["member"] == f"serviceAccount:{EX.project}.svc.id.goog[sv/{ksa}]"


def test_weekly_dumps_beside_snapshot_sets(prod):
    dumps = cron_job(prod, "postgres-backup")
    assert dumps["inputs"]["spec"]["schedule"] == "0 1 * * 0"
    assert dumps["inputs"]["metadata"]["labels"][FOUR_HOURLY_BY] == "sv-1-postgres-snapshot"
    assert dumps["inputs"]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 86400
    [seal] = pod_spec(dumps)["containers"]
    assert container_args(seal)[-6:] == [
        "--participant-pruning",
        "30d",
        "--sequencer-pruning",
        "30d",
        "--schedule-gap",
        "7d",
    ]
    windows = prod.outputs["windows"]
    # 30d - (7d + 24h 15m, the latest a weekly dump run finishes) - the 2-day outage budget, down to the hour
    assert windows["postgresHistoricalCadence"] == "479h"
    assert windows["largestScheduleGaps"]["postgres-snapshots"] == "4h"
    assert prod.outputs["cronJobs"]["postgres-snapshots"] == "sv-1-postgres-snapshot"
    assert prod.outputs["cronJobs"]["snapshot-prune"] == "sv-1-postgres-snapshot-prune"
    assert prod.outputs["snapshotSets"] == {
        "snapshotClass": "sv-1-postgres-snapshot-class",
        "historical": False,
        "onlineBackup": True,
    }


def test_both_jobs_are_alerted_on(prod):
    kinds = {
        (r["inputs"]["userLabels"]["svbackups-kind"], r["inputs"]["userLabels"]["svbackups-alert"])
        for r in prod.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    }
    assert {("postgres-snapshots", "stale"), ("postgres-snapshots", "failed")} <= kinds
    assert {("snapshot-prune", "stale"), ("snapshot-prune", "failed")} <= kinds
    stale = prod.resource("sv-1-alert-postgres-snapshots-stale")["inputs"]
    assert stale["conditions"][0]["conditionAbsent"]["duration"] == "31500s"  # 4h + 15min + 3h30 + 1h slack


# --- GCP variants --------------------------------------------------------------------------------------------


def test_a_stack_without_the_section_declares_none_and_keeps_its_dumps(shipped_plan):
    dev = shipped_plan("dev")
    components = {
        r["inputs"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for r in dev.of_type("kubernetes:batch/v1:CronJob")
    }
    assert not components & {CREATOR, PRUNER}
    dumps = cron_job(dev, "postgres-backup")
    assert FOUR_HOURLY_BY not in dumps["inputs"]["metadata"]["labels"]
    assert "--schedule-gap" not in container_args(pod_spec(dumps)["containers"][0])


def test_paired_regions_store_in_the_dr_region(offline_plan, stack_config_map):
    config = stack_config_map("prod-ch")
    config["sv-backups:snapshots"] = {"historical": True}
    plan = offline_plan(config)
    cls = plan.resource("sv-ch-postgres-snapshot-class")["inputs"]  # prod-ch's node is sv-ch
    assert cls["parameters"] == {"storage-locations": "europe-west3"}
    cloudsql = [args for role, args in steps(plan).items() if "cloudsql-backup" in args]
    assert cloudsql and all(args[-2:] == ["--location", "europe-west3"] for args in cloudsql)
    [prune] = pod_spec(cron_job(plan, PRUNER))["containers"]
    assert "--historical-cadence" in container_args(prune)


def test_a_dr_stack_stands_by_with_suspended_snapshot_jobs(offline_plan, stack_config_map, shipped_plan):
    config = stack_config_map("prod-dr")
    config["sv-backups:snapshots"] = {}
    primary = shipped_plan("prod")
    plan = offline_plan(config, stack="prod-dr", stack_references={"sv-operator/sv-backups/prod": primary.outputs})
    for component in (CREATOR, PRUNER):
        job = cron_job(plan, component)["inputs"]
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["sv-backups.canton.network/standby"] == "true"
        assert job["metadata"]["name"].startswith("sv-1-dr-")
    kinds = {
        r["inputs"]["userLabels"]["svbackups-kind"] for r in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    }
    assert not kinds & {"postgres-snapshots", "snapshot-prune"}


def test_a_configured_class_is_used_and_none_declared(offline_plan, stack_config_map):
    config = stack_config_map("prod")
    config["sv-backups:snapshots"] = {"volumeSnapshotClass": "site-pd-snapshots", "onlineBackup": False}
    config["sv-backups:postgres"]["apps"]["pvc"] = "pg-data-apps-pg-0"
    plan = offline_plan(config)
    assert not [
        r for r in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass") if "postgres" in r["name"]
    ]
    apps = steps(plan)["apps"]
    assert apps[apps.index("--snapshot-class") + 1] == "site-pd-snapshots"
    assert apps[apps.index("--pvc") + 1] == "pg-data-apps-pg-0"
    assert "--online" not in apps and password_of(pod_spec(cron_job(plan, CREATOR)), "apps") is None


# --- AWS: aws-prod (apps and mediator on EBS, participant and sequencer on RDS) ---------------------------------


@pytest.fixture(scope="module")
def aws(shipped_plan):
    return shipped_plan("aws-prod")


def test_ebs_steps_copy_to_the_dr_region_and_lock_for_the_recent_window(aws):
    apps = steps(aws)["apps"]
    assert apps[apps.index("--method") : apps.index("--copy-kms-key")] == [
        "--method",
        "volume-snapshot",
        "--namespace",
        "sv",
        "--pvc",
        "data-apps-pg-0",
        "--snapshot-class",
        "sv-1-postgres-snapshot-class",
        "--online",
        "--pg",
        "postgresql://cnadmin@apps-pg:5432/postgres",
        *PASSWORD_FLAGS,
        "--copy-to-region",
        "us-west-2",
    ]
    key = apps[apps.index("--copy-kms-key") + 1]
    assert key.startswith(f"arn:aws:kms:us-west-2:{ACCOUNT}:key/")
    assert apps[-2:] == ["--lock-for", "14d"]
    cls = aws.resource("sv-1-postgres-snapshot-class")["inputs"]
    assert (cls["driver"], cls["deletionPolicy"]) == ("ebs.csi.aws.com", "Retain")
    assert cls["parameters"] == {
        "tagSpecification_1": "svbackups-node=sv-1",
        "tagSpecification_2": "svbackups-purpose=postgres-snapshot",
    }


def test_rds_steps_snapshot_and_copy_under_the_dr_rds_key(aws):
    participant = steps(aws)["participant"]
    at = participant.index("--method")
    assert participant[at : at + 8] == [
        "--method",
        "rds-snapshot",
        "--region",
        "us-east-1",
        "--instance",
        EXA.participant_instance,
        "--copy-to-region",
        "us-west-2",
    ]
    assert participant[-1].startswith(f"arn:aws:kms:us-west-2:{ACCOUNT}:key/")
    assert participant[-1] != steps(aws)["apps"][steps(aws)["apps"].index("--copy-kms-key") + 1]  # RDS key, not EBS


def test_the_creator_role_copies_and_locks_and_cannot_delete(aws):
    creator = statements(aws, "sv-1-pg-snapshot-creator")
    held = actions(creator)
    assert {"ec2:CopySnapshot", "ec2:LockSnapshot", "rds:CreateDBSnapshot", "rds:CopyDBSnapshot"} <= held
    assert not {"ec2:DeleteSnapshot", "rds:DeleteDBSnapshot", "ec2:UnlockSnapshot", "ec2:CreateSnapshot"} & held
    assert creator["LockTheNodesSnapshots"]["Condition"] == {"StringEquals": {"aws:ResourceTag/svbackups-node": "sv-1"}}
    assert creator["SnapshotTheNodesInstances"]["Resource"] == [
        f"arn:aws:rds:us-east-1:{ACCOUNT}:db:{EXA.participant_instance}",
        f"arn:aws:rds:us-east-1:{ACCOUNT}:db:{EXA.sequencer_instance}",
        f"arn:aws:rds:us-east-1:{ACCOUNT}:snapshot:*",
    ]
    role = aws.resource("sv-1-pg-snapshot-role", "aws:iam/role:Role")["inputs"]
    assert (role["name"], role["path"]) == ("sv-1-pg-snapshot", "/sv-backups/sv-1/jobs/")


def test_the_pruner_role_deletes_only_the_nodes_snapshots(aws):
    pruner = statements(aws, "sv-1-pg-snapshot-prune-pruner")
    assert actions(pruner) == {
        "ec2:DescribeSnapshots",
        "ec2:DeleteSnapshot",
        "rds:DescribeDBSnapshots",
        "rds:DeleteDBSnapshot",
    }
    for sid in ("DeleteOnlyTheNodesSnapshots", "DeleteOnlyTheNodesDbSnapshots"):
        assert pruner[sid]["Condition"] == {"StringEquals": {"aws:ResourceTag/svbackups-node": "sv-1"}}
    [prune] = pod_spec(cron_job(aws, PRUNER))["containers"]
    assert container_args(prune)[-6:] == ["--namespace", "sv", "--region", "us-east-1", "--copy-to-region", "us-west-2"]


def test_twice_weekly_dumps_on_aws(aws):
    dumps = cron_job(aws, "postgres-backup")
    assert dumps["inputs"]["spec"]["schedule"] == "0 1 * * 0,3"
    [seal] = pod_spec(dumps)["containers"]
    assert container_args(seal)[-2:] == ["--schedule-gap", "4d"]
    alarms = {r["name"] for r in aws.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert {"sv-1-alarm-postgres-snapshots-stale", "sv-1-alarm-snapshot-prune-failed"} <= alarms


# --- DABFT, and a refused layout through the operator's command --------------------------------------------------


def test_a_dabft_node_snapshots_its_ordering_state_first(offline_plan, stack_config_map):
    config = stack_config_map("dabft-dev")
    config["sv-backups:snapshots"] = {}
    plan = offline_plan(config)
    assert list(steps(plan))[:3] == ["canton-bft", "apps", "participant"]
    [seal] = pod_spec(cron_job(plan, CREATOR))["containers"]
    roles = container_args(seal)[container_args(seal).index("--roles") + 1]
    assert roles.split(",")[:2] == ["canton-bft", "apps"]


def test_plan_refuses_wal_on_its_own_volume_without_an_online_backup(tmp_path, stack_config_map):
    from tests.program.conftest import plan_config_file

    config = stack_config_map("prod")
    config["sv-backups:snapshots"]["onlineBackup"] = False
    config["sv-backups:postgres"]["apps"]["walPvc"] = "wal-apps-pg-0"
    done = plan_config_file(tmp_path, "prod", config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sv-backups:postgres.apps.walPvc: pg_wal is on its own volume ('wal-apps-pg-0')" in done.stdout + done.stderr
