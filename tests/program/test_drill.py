"""The restore drills of a primary stack (components/drill.py), through the mock engine, on both clouds."""

from __future__ import annotations

import json

import pytest

CRON_JOB = "kubernetes:batch/v1:CronJob"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"
DRILLS = {"postgres": "sv-1-drill-postgres", "cometbft": "sv-1-drill-cometbft", "identities": "sv-1-drill-identities"}
# stack: (schedule, CSI driver, StorageClass parameters)
CLOUDS = {
    "prod": ("20 6 * * 0", "pd.csi.storage.gke.io", {"type": "pd-balanced"}),
    "aws-prod": ("20 6 * * 0,3", "ebs.csi.aws.com", {"type": "gp3", "encrypted": "true"}),
}
HOUR = 3600
SNAPSHOTS_DRILL = "sv-1-drill-postgres-snapshots"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
# The newest dump set's age the Postgres drill accepts: its schedule's gap + a run's start window and deadline + the
# 1 h slack. Both shipped production stacks run snapshot sets, their dump sets weekly (prod: 7 d + 24 h 15 min + 1 h)
# or twice a week (aws-prod: 4 d + 24 h 15 min + 1 h); a 4-hourly schedule gives 4 h + 3 h 45 min + 1 h = 525m.
MAX_AGE = {"prod": "11595m", "aws-prod": "7275m"}


def jobs(plan) -> dict[str, dict]:
    """name -> inputs of every drill CronJob."""
    return {j["name"]: j["inputs"] for j in plan.of_type(CRON_JOB) if j["name"] in DRILLS.values()}


def pod(job: dict) -> dict:
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def only_container(job: dict) -> dict:
    [container] = pod(job)["containers"]
    return container


@pytest.mark.parametrize("stack", CLOUDS)
def test_one_drill_per_backup_kind_on_the_drill_schedule(shipped_plan, stack):
    plan = shipped_plan(stack)
    schedule, _driver, _parameters = CLOUDS[stack]
    drills = jobs(plan)
    assert set(drills) == set(DRILLS.values())
    for name, job in drills.items():
        assert job["spec"]["schedule"] == schedule and "suspend" not in job["spec"], name
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == name.removeprefix("sv-1-")
    # Weekly (or twice weekly): a start window of 15 min; the Postgres drill's deadline is drill.timeout (4h).
    deadlines = {name: job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] for name, job in drills.items()}
    assert deadlines == {DRILLS["postgres"]: 4 * HOUR, DRILLS["cometbft"]: 35 * 60, DRILLS["identities"]: 10 * 60}
    assert {j["spec"]["startingDeadlineSeconds"] for j in drills.values()} == {15 * 60}
    assert {k: v for k, v in plan.outputs["cronJobs"].items() if k.startswith("drill")} == {
        "drillPostgres": DRILLS["postgres"],
        "drillCometbft": DRILLS["cometbft"],
        "drillIdentities": DRILLS["identities"],
        # Both shipped production stacks take snapshot sets of in-cluster instances: their drill too.
        "drillPostgresSnapshots": SNAPSHOTS_DRILL,
    }
    assert plan.outputs["schedules"]["drill"] == schedule


@pytest.mark.parametrize("stack", CLOUDS)
def test_the_postgres_drill_restores_the_store_into_a_scratch_ephemeral_volume(shipped_plan, stack):
    plan = shipped_plan(stack)
    job = jobs(plan)[DRILLS["postgres"]]
    container = only_container(job)
    # Fresh: at most the audit's bound old (MAX_AGE).
    assert container["args"] == [
        "drill-restore",
        plan.outputs["backupUrl"],
        "--scratch-dir",
        "/scratch",
        "--max-age",
        MAX_AGE[stack],
        "--jobs",
        "2",
        "--json",
    ]
    assert {"name": "scratch", "mountPath": "/scratch"} in container["volumeMounts"]
    [scratch] = [v for v in pod(job)["volumes"] if v["name"] == "scratch"]
    claim = scratch["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "sv-sv-1-drill",
        "resources": {"requests": {"storage": "100Gi"}},
    }
    assert not any("emptyDir" in v for v in pod(job)["volumes"] if v["name"] != "tmp")
    _schedule, driver, parameters = CLOUDS[stack]
    [storage_class] = plan.of_type(STORAGE_CLASS)
    inputs = storage_class["inputs"]
    assert inputs["metadata"]["name"] == "sv-sv-1-drill"
    assert (inputs["provisioner"], inputs["parameters"]) == (driver, parameters)
    assert (inputs["reclaimPolicy"], inputs["volumeBindingMode"]) == ("Delete", "WaitForFirstConsumer")


@pytest.mark.parametrize("stack", CLOUDS)
def test_drills_run_as_the_read_only_identity_and_only_the_cometbft_drill_gets_a_token(shipped_plan, stack):
    plan = shipped_plan(stack)
    drills = jobs(plan)
    accounts = {a["inputs"]["metadata"]["name"]: a["inputs"] for a in plan.of_type(SERVICE_ACCOUNT)}
    for kind in ("postgres", "identities"):
        spec = pod(drills[DRILLS[kind]])
        # The audit's ServiceAccount: it acts as the restore identity (sv-1-restore), which only reads.
        assert spec["serviceAccountName"] == "sv-1-history-audit"
        assert spec["automountServiceAccountToken"] is False
        [annotation] = accounts["sv-1-history-audit"]["metadata"]["annotations"].values()
        assert "sv-1-restore" in annotation
    cometbft = pod(drills[DRILLS["cometbft"]])
    assert cometbft["serviceAccountName"] == "sv-1-drill-cometbft"
    assert cometbft["automountServiceAccountToken"] is True
    # No cloud identity: the CometBFT drill touches only the Kubernetes API.
    assert not accounts["sv-1-drill-cometbft"]["metadata"].get("annotations")
    assert only_container(drills[DRILLS["identities"]])["args"] == [
        "drill-identities",
        plan.outputs["identitiesSecretUrl"],
        "--json",
    ]


@pytest.mark.parametrize("stack", CLOUDS)
def test_the_cometbft_drill_has_exactly_its_rbac(shipped_plan, stack):
    plan = shipped_plan(stack)
    [role] = [
        r
        for r in plan.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
        if r["name"] == "sv-1-drill-cometbft-role"
    ]
    rules = {(r["apiGroups"][0], r["resources"][0]): sorted(r["verbs"]) for r in role["inputs"]["rules"]}
    assert rules == {
        ("snapshot.storage.k8s.io", "volumesnapshots"): ["get", "list"],
        ("", "persistentvolumeclaims"): ["create", "delete", "get"],
        ("", "pods"): ["create", "delete", "get"],
    }
    [binding] = [
        r
        for r in plan.of_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
        if r["inputs"]["roleRef"]["name"] == "sv-1-drill-cometbft"
    ]
    assert binding["inputs"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "sv-1-drill-cometbft", "namespace": "sv"}
    ]
    args = only_container(jobs(plan)[DRILLS["cometbft"]])["args"]
    assert args == [
        "drill-cometbft",
        "--namespace",
        "sv",
        "--selector",
        "app.kubernetes.io/managed-by=sv-backups,sv-backups.canton.network/migration-id=4",
        "--storage-class",
        "sv-sv-1-drill",
        "--probe-image",
        plan.outputs["jobImage"],
        "--timeout",
        "30m",
        "--json",
    ]


def test_the_drills_alert_when_they_fail_or_stop_passing_on_gcp(shipped_plan):
    alerts = {a["name"]: a["inputs"] for a in shipped_plan("prod").of_type("gcp:monitoring/alertPolicy:AlertPolicy")}
    for kind, deadline in (("postgres", 4 * HOUR), ("cometbft", 35 * 60), ("identities", 10 * 60)):
        stale = alerts[f"sv-1-alert-drill-{kind}-stale"]
        # A week between drills + the start window + the run + the 1 h slack.
        expected = 7 * 24 * HOUR + 15 * 60 + deadline + HOUR
        assert stale["conditions"][0]["conditionAbsent"]["duration"] == f"{expected}s"
        assert stale["userLabels"]["svbackups-kind"] == f"drill-{kind}"
        assert alerts[f"sv-1-alert-drill-{kind}-failed"]["userLabels"]["svbackups-alert"] == "failed"
        # Titles say what stopped: a drill, not a backup.
        assert f": no {kind} restore drill for 1" in stale["displayName"]
        assert alerts[f"sv-1-alert-drill-{kind}-failed"]["displayName"].endswith(f"{kind} restore drill failed")
    assert ": no postgres backup for " in alerts["sv-1-alert-postgres-stale"]["displayName"]
    assert ": no history audit for " in alerts["sv-1-alert-history-stale"]["displayName"]


def test_the_drills_alert_when_they_fail_or_stop_passing_on_aws(shipped_plan):
    alarms = {
        a["name"]: a["inputs"] for a in shipped_plan("aws-prod").of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    stale = alarms["sv-1-alarm-drill-postgres-stale"]
    # Sunday to Wednesday is the larger gap (4 days), + 15 min start window + 4 h run + 1 h slack: within the 7
    # days a CloudWatch alarm can evaluate.
    assert stale["period"] == 4 * 24 * HOUR + 15 * 60 + 4 * HOUR + HOUR
    assert stale["treatMissingData"] == "breaching"
    assert alarms["sv-1-alarm-drill-identities-failed"]["tags"]["svbackups-kind"] == "drill-identities"
    assert stale["alarmDescription"].startswith("No postgres restore drill (drill-postgres) of SV node sv-1 completed")


def test_the_restore_identity_reads_the_secret_on_aws(shipped_plan):
    plan = shipped_plan("aws-prod")
    [policy] = [
        r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r["name"] == "sv-1-identities-dump-reader-drill"
    ]
    assert policy["inputs"]["role"] == "sv-1-restore"
    actions = set()
    for statement in json.loads(policy["inputs"]["policy"])["Statement"]:
        assert statement["Effect"] == "Allow"
        actions |= {statement["Action"]} if isinstance(statement["Action"], str) else set(statement["Action"])
    assert not {a for a in actions if not a.startswith(("secretsmanager:Get", "secretsmanager:List", "kms:Decrypt"))}


def test_configured_classes_and_size_replace_the_declared_class(offline_plan, dev_config):
    dev_config["sv-backups:node"]["name"] = "sv-1"
    dev_config["sv-backups:drill"] = {"scratchSize": "2Ti", "storageClass": "fast-ssd", "cometbftStorageClass": "pd"}
    plan = offline_plan(dev_config)
    assert plan.of_type(STORAGE_CLASS) == []
    drills = jobs(plan)
    [scratch] = [v for v in pod(drills[DRILLS["postgres"]])["volumes"] if v["name"] == "scratch"]
    claim = scratch["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert (claim["storageClassName"], claim["resources"]["requests"]["storage"]) == ("fast-ssd", "2Ti")
    args = only_container(drills[DRILLS["cometbft"]])["args"]
    assert args[args.index("--storage-class") + 1] == "pd"


def test_drills_can_be_turned_off(offline_plan, dev_config):
    dev_config["sv-backups:node"]["name"] = "sv-1"
    dev_config["sv-backups:drill"] = {"enabled": False}
    plan = offline_plan(dev_config)
    assert jobs(plan) == {} and plan.of_type(STORAGE_CLASS) == []
    assert not [k for k in plan.outputs["cronJobs"] if k.startswith("drill")]
    assert "drill" not in plan.outputs["schedules"]
    assert not plan.of_type("svbackups:drill:RestoreDrill")


@pytest.mark.parametrize("stack", ["prod-dr", "aws-prod-dr"])
def test_dr_stacks_declare_no_drills(shipped_plan, stack):
    plan = shipped_plan(stack)
    assert jobs(plan) == {} and plan.of_type(STORAGE_CLASS) == []


# The in-cluster roles of each shipped production stack (the others are Cloud SQL / RDS, not drilled in scratch).
IN_CLUSTER = {
    "prod": [("apps", "cantonnet_sv,cantonnet_scan,cantonnet_validator"), ("mediator", "mediator_4")],
    "aws-prod": None,  # read from the plan's snapshot CronJob below
}


def snapshots_drill(plan) -> dict:
    [job] = [j["inputs"] for j in plan.of_type(CRON_JOB) if j["name"] == SNAPSHOTS_DRILL]
    return job


@pytest.mark.parametrize("stack", CLOUDS)
def test_the_snapshot_sets_drill_restores_the_in_cluster_roles_as_its_own_account(shipped_plan, stack):
    plan = shipped_plan(stack)
    job = snapshots_drill(plan)
    schedule, _driver, _parameters = CLOUDS[stack]
    assert job["spec"]["schedule"] == schedule and job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "drill-postgres-snapshots"
    # two pods of up to 90 min each (the pick pod, the scratch pod) and 10 min to delete what it made
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3 * HOUR + 10 * 60
    spec = pod(job)
    accounts = {a["inputs"]["metadata"]["name"]: a["inputs"] for a in plan.of_type(SERVICE_ACCOUNT)}
    # The API token, and no cloud identity: the store is read by the pods it creates, as the restore identity.
    assert spec["serviceAccountName"] == SNAPSHOTS_DRILL and spec["automountServiceAccountToken"] is True
    assert not accounts[SNAPSHOTS_DRILL]["metadata"].get("annotations")
    container = only_container(job)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    args = container["args"]
    assert args[:7] == ["drill-snapshots", "--dest", plan.outputs["backupUrl"], "--namespace", "sv", "--migration-id",
                        args[6]]  # fmt: skip
    flags = list(zip(args[7::2], args[8::2], strict=False))
    databases = [v for k, v in flags if k == "--databases"]
    # Exactly the in-cluster roles of the snapshot CronJob's volume-snapshot steps, each with its config's databases.
    [snapshot_job] = [j["inputs"] for j in plan.of_type(CRON_JOB) if j["name"] == "sv-1-postgres-snapshot"]
    volume_roles = [c["name"] for c in pod(snapshot_job)["initContainers"] if "volume-snapshot" in c["args"]]
    assert [d.split("=")[0] for d in databases] == volume_roles and volume_roles
    if IN_CLUSTER[stack]:
        assert databases == [f"{role}={dbs}" for role, dbs in IN_CLUSTER[stack]]
    assert dict(flags)["--service-account"] == "sv-1-history-audit"
    assert dict(flags)["--image"] == plan.outputs["jobImage"] and dict(flags)["--storage-class"] == "sv-sv-1-drill"
    assert dict(flags)["--max-age"] == "525m" and dict(flags)["--timeout"] == "90m"
    [role] = [r for r in plan.of_type(ROLE) if r["name"] == f"{SNAPSHOTS_DRILL}-role"]
    rules = {(r["apiGroups"][0], r["resources"][0]): sorted(r["verbs"]) for r in role["inputs"]["rules"]}
    assert rules == {
        ("snapshot.storage.k8s.io", "volumesnapshots"): ["get"],
        ("", "persistentvolumeclaims"): ["create", "delete", "get"],
        ("", "pods"): ["create", "delete", "get"],
    }


def test_no_snapshot_sets_no_snapshot_sets_drill(shipped_plan, dump_only_plan):
    assert not [j for j in shipped_plan("dev").of_type(CRON_JOB) if j["name"] == SNAPSHOTS_DRILL]
    assert not [j for j in dump_only_plan("prod").of_type(CRON_JOB) if j["name"] == SNAPSHOTS_DRILL]
    assert "drillPostgresSnapshots" not in dump_only_plan("prod").outputs["cronJobs"]
