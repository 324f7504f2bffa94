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
