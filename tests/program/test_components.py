"""The program through the mock engine: what each component declares, for each shipped stack and variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.gcp import CLOUDSQL_IGNORED_FIELDS
from components.gcp.cloudsql import CLOUD_SQL_PROXY_IMAGE, CLOUDSQL_IAM_IGNORED_FIELDS
from tests.program.conftest import SHIPPED_STACKS
from tests.stackfiles import Example

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")

GOLDEN = Path(__file__).parent / "golden"
DAY = 86400


@pytest.fixture(scope="module")
def prod_plan_dumps_only(dump_only_plan):
    """prod as it was before snapshot sets: the dump sets' own behaviour (prod itself runs snapshot sets and weekly
    dumps; tests/program/test_pg_snapshots.py covers those)."""
    return dump_only_plan("prod")


def cron_job(plan, component: str) -> dict:
    [job] = [
        r
        for r in plan.of_type("kubernetes:batch/v1:CronJob")
        if r["inputs"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return job


def pod_spec(job: dict) -> dict:
    return job["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def container_args(container: dict) -> list[str]:
    return container["args"]


def password_of(spec: dict, name: str) -> tuple[str, str] | None:
    """(Secret, key) the container `name` of a pod spec reads its database password from (a mounted file)."""
    from tests.contract_support import password_source

    (container,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return password_source(spec, container)


def by_parent(plan, component_type: str) -> list[dict]:
    [component] = plan.of_type(component_type)
    return [r for r in plan.resources if r["parent"] == component["urn"]]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_resource_names_are_stable(shipped_plan, stack):
    """Renaming a bucket, key or secret replaces it (and loses backups): any rename shows up here first.
    Regenerate deliberately with: python scripts/plan.py --stack S --out /tmp/p && jq -r '.resources[].urn'."""
    urns = sorted(r["urn"] for r in shipped_plan(stack).resources)
    golden = (GOLDEN / f"{stack}-urns.txt").read_text().split()
    assert urns == golden


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_resource_hangs_under_a_typed_component(shipped_plan, stack):
    plan = shipped_plan(stack)
    urns = {r["urn"]: r for r in plan.resources}
    for resource in plan.resources:
        if resource["type"] in ("pulumi:pulumi:Stack",):
            continue
        assert resource["parent"], resource["urn"]
        if resource["type"].startswith("svbackups:"):
            assert resource["type"].count(":") == 2
    components = [r for r in plan.resources if r["type"].startswith("svbackups:")]
    # A primary stack declares the store; a DR stack reads the primary's DR copy (components/dr.py).
    dr_stack = plan.outputs["role"] == "dr"
    assert {c["type"] for c in components} == {
        "svbackups:index:SvBackups",
        *(
            ("svbackups:dr:DisasterRecovery",)
            if dr_stack
            else ("svbackups:storage:BackupStorage", "svbackups:audit:HistoryAudit", "svbackups:drill:RestoreDrill")
        ),
        "svbackups:postgres:PostgresBackups",
        "svbackups:identities:IdentityBackups",
        # A DABFT node has no CometBFT node (its state is the Postgres set's canton-bft role).
        *(() if plan.outputs.get("synchronizer") == "dabft" else ("svbackups:cometbft:CometbftSnapshots",)),
        # Ordered Postgres snapshot sets (sv-backups:snapshots): the creator and the pruner.
        *(
            ("svbackups:pgsnapshots:PostgresSnapshots", "svbackups:pgsnapshots:SnapshotPruning")
            if "snapshotSets" in plan.outputs
            else ()
        ),
        "svbackups:monitoring:BackupAlerts",
    }
    # every cloud or Kubernetes resource sits inside one of the concern components
    for resource in plan.resources:
        if resource["type"].startswith(("gcp:", "aws:", "kubernetes:")):
            ancestor = urns[resource["parent"]]
            while not ancestor["type"].startswith("svbackups:"):
                ancestor = urns[ancestor["parent"]]
            assert ancestor["type"] != "svbackups:index:SvBackups", resource["urn"]


def test_postgres_cronjob_orders_apps_before_participant(prod_plan_dumps_only):
    job = cron_job(prod_plan_dumps_only, "postgres-backup")
    spec = job["inputs"]["spec"]
    pod = pod_spec(job)
    # The sequencer's Cloud SQL Auth Proxy (IAM login) is a native sidecar, started before the first dump step.
    assert [c["name"] for c in pod["initContainers"]] == [
        "cloudsql-proxy-sequencer",
        "apps",
        "participant",
        "sequencer",
        "mediator",
    ]
    assert [c.get("restartPolicy") for c in pod["initContainers"]] == ["Always", None, None, None, None]
    assert [c["name"] for c in pod["containers"]] == ["seal"]
    assert spec["schedule"] == "0 */4 * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    job_spec = spec["jobTemplate"]["spec"]
    # start window + run deadline + margin = the 4 h between two runs: a run never overlaps the next
    assert spec["startingDeadlineSeconds"] == 15 * 60
    assert job_spec["activeDeadlineSeconds"] == 4 * 3600 - 30 * 60
    assert job_spec["backoffLimit"] == 1
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False


def test_postgres_steps_dump_every_database_with_the_password_from_the_secret(prod_plan_dumps_only):
    pod = pod_spec(cron_job(prod_plan_dumps_only, "postgres-backup"))
    steps = {c["name"]: c for c in pod["initContainers"]}
    apps_args = container_args(steps["apps"])
    assert apps_args[:4] == ["backup-step", "--role", "apps", "--dest"]
    assert apps_args[4] == f"gs://{EX.project}-sv-1-backups"
    assert "$(SET_ID)" in apps_args
    dbs = [apps_args[i + 1] for i, a in enumerate(apps_args) if a == "--db"]
    assert dbs == [
        "apps=postgresql://cnadmin@apps-pg:5432/cantonnet_sv",
        "apps=postgresql://cnadmin@apps-pg:5432/cantonnet_scan",
        "apps=postgresql://cnadmin@apps-pg:5432/cantonnet_validator",
    ]
    # Cloud SQL: the adopted instance's private IP (computed output), TLS required
    participant = steps["participant"]
    [db] = [container_args(participant)[i + 1] for i, a in enumerate(container_args(participant)) if a == "--db"]
    [instance] = [
        r
        for r in prod_plan_dumps_only.of_type("gcp:sql/databaseInstance:DatabaseInstance")
        if r["inputs"]["name"] == EX.participant_instance
    ]
    assert db.startswith("participant=postgresql://cnadmin@10.") and db.endswith(f":5432/{EX.participant_db}")
    env = {e["name"]: e for e in participant["env"]}
    assert env["PGSSLMODE"]["value"] == "require"
    # The password: the instance's Secret mounted as a read-only file, never an environment variable.
    assert password_of(pod, "participant") == ("participant-pg-secret", "postgresPassword")
    assert "PGPASSWORD" not in env
    assert env["SET_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {e["name"]: e for e in steps["apps"]["env"]}["PGSSLMODE"]["value"] == "prefer"
    assert instance["options"]["import"] == f"projects/{EX.project}/instances/{EX.participant_instance}"
    seal = container_args(pod["containers"][0])
    assert seal == [
        "seal-set",
        "--dest",
        f"gs://{EX.project}-sv-1-backups",
        "--set-id",
        "$(SET_ID)",
        "--migration-id",
        "4",
        "--roles",
        "apps,participant,sequencer,mediator",
        "--participant-pruning",
        "30d",
        "--sequencer-pruning",
        "30d",
    ]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_backup_pods_are_hardened(shipped_plan, stack):
    for job in shipped_plan(stack).of_type("kubernetes:batch/v1:CronJob"):
        pod = pod_spec(job)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True
            assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
            assert set(container["resources"]["requests"]) >= {"cpu", "memory"}
            if container.get("restartPolicy") == "Always":  # a native sidecar: the pinned Cloud SQL Auth Proxy
                assert container["image"] == CLOUD_SQL_PROXY_IMAGE and "command" not in container
            else:
                assert container["command"] == ["python", "-m", "jobs"]


def test_only_configured_roles_get_a_step(offline_plan, dev_config):
    del dev_config["sv-backups:postgres"]["sequencer"]
    del dev_config["sv-backups:postgres"]["mediator"]
    plan = offline_plan(dev_config)
    pod = pod_spec(cron_job(plan, "postgres-backup"))
    assert [c["name"] for c in pod["initContainers"]] == ["apps", "participant"]
    assert "apps,participant" in container_args(pod["containers"][0])


def test_cloudsql_adoption_changes_only_backups_and_protection(prod_plan):
    instances = prod_plan.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert sorted(i["inputs"]["name"] for i in instances) == [EX.participant_instance, EX.sequencer_instance]
    # The sequencer logs in by IAM: its flags are managed too, as the live flags plus cloudsql.iam_authentication
    # (the offline plan's instance has none of its own), and nothing else.
    ignored = {EX.participant_instance: CLOUDSQL_IGNORED_FIELDS, EX.sequencer_instance: CLOUDSQL_IAM_IGNORED_FIELDS}
    flags = {
        EX.participant_instance: None,
        EX.sequencer_instance: [{"name": "cloudsql.iam_authentication", "value": "on"}],
    }
    for instance in instances:
        inputs, options = instance["inputs"], instance["options"]
        backup = inputs["settings"]["backupConfiguration"]
        assert backup["enabled"] is True and backup["pointInTimeRecoveryEnabled"] is True
        assert backup["transactionLogRetentionDays"] == 7
        assert backup["backupRetentionSettings"] == {"retainedBackups": 14, "retentionUnit": "COUNT"}
        assert backup["location"] == "us-east4"  # survives the loss of us-central1
        assert inputs["deletionProtection"] is True
        assert inputs["settings"]["deletionProtectionEnabled"] is True
        assert options["protect"] is True and options["retainOnDelete"] is True
        assert sorted(options["ignoreChanges"]) == sorted(ignored[inputs["name"]])
        assert inputs["settings"].get("databaseFlags") == flags[inputs["name"]]
        # the backup settings we size are managed; only the start time and the backup tier (set by GCP) are not
        managed_elsewhere = {"settings.backupConfiguration.startTime", "settings.backupConfiguration.backupTier"}
        assert not [
            f
            for f in options["ignoreChanges"]
            if f.startswith("settings.backupConfiguration") and f not in managed_elsewhere
        ]
        assert "deletionProtection" not in options["ignoreChanges"]


def test_cloudsql_not_adopted_is_only_dumped(offline_plan, stack_config_map):
    config = stack_config_map("prod")
    participant = config["sv-backups:postgres"]["participant"]
    participant.update(adopt=False, host="10.9.8.7")
    plan = offline_plan(config)
    names = [r["inputs"]["name"] for r in plan.of_type("gcp:sql/databaseInstance:DatabaseInstance")]
    assert names == [EX.sequencer_instance]
    steps = {c["name"]: c for c in pod_spec(cron_job(plan, "postgres-backup"))["initContainers"]}
    assert f"participant=postgresql://cnadmin@10.9.8.7:5432/{EX.participant_db}" in container_args(steps["participant"])


def test_bucket_is_dual_region_private_encrypted_and_sized_from_the_windows(prod_plan_dumps_only):
    [bucket] = prod_plan_dumps_only.of_type("gcp:storage/bucket:Bucket")
    inputs = bucket["inputs"]
    assert inputs["location"] == "US"
    assert inputs["customPlacementConfig"] == {"dataLocations": ["US-CENTRAL1", "US-EAST4"]}
    assert inputs["rpo"] == "ASYNC_TURBO"
    assert inputs["uniformBucketLevelAccess"] is True
    assert inputs["publicAccessPrevention"] == "enforced"
    assert inputs["encryption"]["defaultKmsKeyName"].startswith(f"projects/{EX.project}/locations/us/keyRings/")
    assert inputs["retentionPolicy"] == {"retentionPeriod": str(14 * DAY), "isLocked": False}
    assert inputs["softDeletePolicy"] == {"retentionDurationSeconds": 30 * DAY}
    assert "versioning" not in inputs  # GCS refuses versioning together with a retention policy
    assert inputs["forceDestroy"] is False
    assert bucket["options"]["protect"] is True
    rules = inputs["lifecycleRules"]
    deletes = [r for r in rules if r["action"]["type"] == "Delete"]
    assert deletes == [{"action": {"type": "Delete"}, "condition": {"age": 14, "matchesPrefixes": ["recent/"]}}]
    assert {
        "action": {"type": "SetStorageClass", "storageClass": "COLDLINE"},
        "condition": {"age": 30, "matchesPrefixes": ["historical/"]},
    } in rules
    labels = inputs["labels"]
    assert labels["svbackups-recent-seconds"] == str(14 * DAY)
    assert labels["svbackups-historical-cadence-seconds"] == str(27 * DAY + 16 * 3600)  # 30d - 8h - 2d
    assert labels["svbackups-min-pruning-seconds"] == str(30 * DAY)


def test_bucket_prefix_and_no_pruning_labels(offline_plan, dev_config):
    dev_config["sv-backups:storage"] = {"prefix": "sv-dev/", "historicalStorageClass": "STANDARD"}
    plan = offline_plan(dev_config)
    [bucket] = plan.of_type("gcp:storage/bucket:Bucket")
    rules = bucket["inputs"]["lifecycleRules"]
    assert [r["condition"].get("matchesPrefixes") for r in rules] == [["sv-dev/recent/"], ["sv-dev/"]]
    assert "svbackups-min-pruning-seconds" not in bucket["inputs"]["labels"]
    assert plan.outputs["backupUrl"] == "gs://sv-dev-project-sv-dev-backups/sv-dev"
    assert plan.outputs["recentSetsUrl"] == "gs://sv-dev-project-sv-dev-backups/sv-dev/recent/0/"


def test_writers_can_create_but_not_delete(prod_plan_dumps_only):
    grants = prod_plan_dumps_only.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert sorted(g["inputs"]["role"] for g in grants) == ["roles/storage.objectCreator", "roles/storage.objectViewer"]
    assert {g["inputs"]["member"] for g in grants} == {
        f"serviceAccount:sv-1-pg-backup@{EX.project}.iam.gserviceaccount.com"
    }
    secret_grants = prod_plan_dumps_only.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
    # The writer only adds versions; the restore identity reads them back for the identities drill.
    accounts = {g["inputs"]["role"]: g["inputs"]["member"].split("@")[0] for g in secret_grants}
    assert accounts == {
        "roles/secretmanager.secretVersionAdder": "serviceAccount:sv-1-identities",
        "roles/secretmanager.secretAccessor": "serviceAccount:sv-1-restore",
    }


def test_workload_identity_binds_each_k8s_service_account(prod_plan_dumps_only):
    bindings = prod_plan_dumps_only.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert sorted(b["inputs"]["member"] for b in bindings) == [
        f"serviceAccount:{EX.project}.svc.id.goog[sv/sv-1-history-audit]",
        f"serviceAccount:{EX.project}.svc.id.goog[sv/sv-1-identities-dump]",
        f"serviceAccount:{EX.project}.svc.id.goog[sv/sv-1-postgres-backup]",
    ]
    accounts = {
        r["inputs"]["metadata"]["name"]: r for r in prod_plan_dumps_only.of_type("kubernetes:core/v1:ServiceAccount")
    }
    assert accounts["sv-1-postgres-backup"]["inputs"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": f"sv-1-pg-backup@{EX.project}.iam.gserviceaccount.com"
    }


def test_identities_secret_is_cmek_and_replicated(prod_plan):
    [secret] = prod_plan.of_type("gcp:secretmanager/secret:Secret")
    replicas = secret["inputs"]["replication"]["userManaged"]["replicas"]
    assert [r["location"] for r in replicas] == ["us-central1", "us-east4"]
    for replica in replicas:
        key = replica["customerManagedEncryption"]["kmsKeyName"]
        assert f"/locations/{replica['location']}/" in key
    assert secret["options"]["protect"] is True
    agent_grants = [
        g for g in prod_plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember") if "secrets" in g["name"]
    ]
    assert len(agent_grants) == 2


def test_identities_cronjob_reads_the_client_secret_from_a_mounted_file(prod_plan):
    job = cron_job(prod_plan, "identities-dump")
    pod = pod_spec(job)
    [container] = pod["containers"]
    args = container_args(container)
    assert args[0] == "dump-identities"
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--secret"] == f"gcpsm://projects/{EX.project}/secrets/sv-1-identities-dump"
    assert flags["--client-secret-file"] == "/var/run/secrets/sv-backups/oauth/clientSecret"
    assert flags["--fingerprint-configmap"] == "sv-1-identities-dump-fingerprint"
    assert not any("secret" in e["name"].lower() for e in container["env"])
    [oauth] = [v for v in pod["volumes"] if v["name"] == "oauth"]
    assert oauth["secret"] == {"secretName": "sv-1-identities-dump-oauth", "defaultMode": 0o400}
    [role] = [
        r
        for r in prod_plan.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
        if r["inputs"]["metadata"]["name"] == "sv-1-identities-dump"
    ]
    assert role["inputs"]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["sv-1-identities-dump-fingerprint"],
            "verbs": ["get", "patch"],
        }
    ]
    [fingerprint] = prod_plan.of_type("kubernetes:core/v1:ConfigMap")
    assert fingerprint["options"]["ignoreChanges"] == ["data"]


def test_cometbft_snapshot_class_rbac_and_job(prod_plan_dumps_only):
    [snapshot_class] = prod_plan_dumps_only.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    assert snapshot_class["inputs"]["deletionPolicy"] == "Retain"
    assert snapshot_class["inputs"]["driver"] == "pd.csi.storage.gke.io"
    assert snapshot_class["inputs"]["parameters"] == {"storage-locations": "us"}
    [cluster_role] = prod_plan_dumps_only.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert cluster_role["inputs"]["rules"] == [
        {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotcontents"], "verbs": ["get", "patch"]}
    ]
    [role] = [
        r
        for r in prod_plan_dumps_only.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
        if r["inputs"]["metadata"]["name"] == "sv-1-cometbft-snapshot"
    ]
    assert role["inputs"]["metadata"]["namespace"] == "sv"
    assert {tuple(rule["resources"]) for rule in role["inputs"]["rules"]} == {
        ("volumesnapshots",),
        ("persistentvolumeclaims",),
    }
    args = container_args(pod_spec(cron_job(prod_plan_dumps_only, "cometbft-snapshot"))["containers"][0])
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags == {
        "--namespace": "sv",
        "--pvc": EX.cometbft_pvc,
        "--class": "sv-1-cometbft",
        "--migration-id": "4",
        "--keep-recent": "14d",
        "--retain-blocks": "5040000",
        "--blocks-per-hour": "7000",
        "--ready-timeout": f"{(3 * 3600 + 30 * 60) - 300}s",
    }


def test_alerts_cover_every_kind_stale_and_failed(prod_plan_dumps_only):
    policies = prod_plan_dumps_only.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    kinds = sorted(
        (p["inputs"]["userLabels"]["svbackups-kind"], p["inputs"]["userLabels"]["svbackups-alert"]) for p in policies
    )
    every = ("cometbft", "drill-cometbft", "drill-identities", "drill-postgres", "history", "identities", "postgres")
    per_kind = [(k, a) for k in every for a in ("failed", "stale")]
    # and the dual-region bucket's replication (test_regions.py)
    assert kinds == sorted([*per_kind, ("dr-copy", "behind")])
    [stale] = [p for p in policies if p["name"] == "sv-1-alert-postgres-stale"]
    absent = stale["inputs"]["conditions"][0]["conditionAbsent"]
    # largest gap 4 h + start window 15 min + run deadline 3 h 30 min + slack 1 h
    assert absent["duration"] == f"{4 * 3600 + 15 * 60 + 3 * 3600 + 30 * 60 + 3600}s"
    assert absent["filter"].startswith('metric.type="logging.googleapis.com/user/sv-backups/sv-1/postgres-completed"')
    assert len(stale["inputs"]["notificationChannels"]) == 2
    metrics = {
        m["inputs"]["name"]: m["inputs"]["filter"] for m in prod_plan_dumps_only.of_type("gcp:logging/metric:Metric")
    }
    assert 'jsonPayload.event="backup.completed"' in metrics["sv-backups/sv-1/postgres-completed"]
    failed = metrics["sv-backups/sv-1/postgres-failed"]
    assert 'jsonPayload.event="backup.failed"' in failed and "BackoffLimitExceeded" in failed


def test_outputs_for_restore_and_audit(prod_plan_dumps_only):
    outputs = prod_plan_dumps_only.outputs
    assert outputs["backupBucket"] == f"{EX.project}-sv-1-backups"
    assert outputs["historicalSetsUrl"] == f"gs://{EX.project}-sv-1-backups/historical/4/"
    assert outputs["identitiesSecretUrl"] == f"gcpsm://projects/{EX.project}/secrets/sv-1-identities-dump"
    assert outputs["cronJobs"] == {
        "postgres": "sv-1-postgres-backup",
        "cometbft": "sv-1-cometbft-snapshot",
        "identities": "sv-1-identities-dump",
        "historyAudit": "sv-1-history-audit",
        "drillPostgres": "sv-1-drill-postgres",
        "drillCometbft": "sv-1-drill-cometbft",
        "drillIdentities": "sv-1-drill-identities",
    }
    assert outputs["windows"]["postgresHistoricalCadence"] == "664h"  # 27d16h: 30d - 8h - 2d
    assert outputs["windows"]["participantPruning"] == "30d"
    assert outputs["postgresRoles"] == ["apps", "participant", "sequencer", "mediator"]


def test_keys_are_customer_managed_rotated_and_protected(prod_plan):
    keys = prod_plan.of_type("gcp:kms/cryptoKey:CryptoKey")
    assert sorted(k["name"] for k in keys) == [
        "sv-1-key-bucket-us",
        "sv-1-key-secrets-us-central1",
        "sv-1-key-secrets-us-east4",
    ]
    for key in keys:
        assert key["inputs"]["rotationPeriod"] == f"{90 * DAY}s"
        assert key["options"]["protect"] is True


def test_european_stack_uses_the_kms_and_compute_names_of_the_eu_multi_region(dev_plan):
    [bucket] = dev_plan.of_type("gcp:storage/bucket:Bucket")
    assert bucket["inputs"]["location"] == "EU"
    assert bucket["inputs"]["customPlacementConfig"] == {"dataLocations": ["EUROPE-WEST3", "EUROPE-WEST4"]}
    # Cloud KMS calls the EU multi-region "europe"; Compute Engine snapshots call it "eu"
    assert "/locations/europe/keyRings/" in bucket["inputs"]["encryption"]["defaultKmsKeyName"]
    [snapshot_class] = dev_plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    assert snapshot_class["inputs"]["parameters"] == {"storage-locations": "eu"}


def test_snapshot_class_uses_the_pinned_kubernetes_provider(dev_plan):
    [snapshot_class] = dev_plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    [cron] = dev_plan.of_type("kubernetes:batch/v1:CronJob")[:1]
    assert snapshot_class["options"]["version"] == cron["options"]["version"]
    assert snapshot_class["options"]["version"]


def test_cloudsql_ignored_fields_exist_in_the_provider_schema():
    """Pulumi silently ignores an ignoreChanges path that matches nothing: check each against the SDK."""
    import pulumi_gcp as gcp

    def fields(args_class) -> dict[str, object]:
        import inspect

        return {
            name: getattr(args_class, name)
            for name, member in inspect.getmembers(args_class)
            if isinstance(member, property)
        }

    def engine_names(args_class) -> set[str]:
        import re

        source = __import__("inspect").getsource(args_class)
        return set(re.findall(r'@pulumi\.getter\(name="([A-Za-z0-9]+)"\)', source)) | {
            name for name in fields(args_class) if name.isalpha() and name.islower()
        }

    top = engine_names(gcp.sql.DatabaseInstanceArgs)
    settings = engine_names(gcp.sql.DatabaseInstanceSettingsArgs)
    backup = engine_names(gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs)
    for path in CLOUDSQL_IGNORED_FIELDS:
        parts = path.split(".")
        known = {1: top, 2: settings, 3: backup}[len(parts)]
        assert parts[-1] in known, f"{path} is not a DatabaseInstance field in pulumi-gcp"
        if len(parts) > 1:
            assert parts[0] == "settings"


def test_tighter_schedules_scale_the_cron_job_deadlines_and_alerts(offline_plan, dev_config):
    """CometBFT every 30 min, Postgres every 2 h: each CronJob's deadlines and stale alert follow its schedule."""
    dev_config["sv-backups:schedule"].update(cometbft="*/30 * * * *", postgres="0 */2 * * *")
    plan = offline_plan(dev_config)
    expected = {
        # component: (schedule, startingDeadlineSeconds, activeDeadlineSeconds)
        "cometbft-snapshot": ("*/30 * * * *", 3 * 60, 24 * 60),
        "postgres-backup": ("0 */2 * * *", 15 * 60, 90 * 60),
        "identities-dump": ("40 */4 * * *", 15 * 60, 210 * 60),
    }
    for component, (schedule, starting, active) in expected.items():
        spec = cron_job(plan, component)["inputs"]["spec"]
        assert (spec["schedule"], spec["startingDeadlineSeconds"]) == (schedule, starting)
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == active
    [stale] = [
        p for p in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy") if p["name"].endswith("-alert-cometbft-stale")
    ]
    # largest gap 30 min + start window 3 min + deadline 24 min + slack 1 h
    assert stale["inputs"]["conditions"][0]["conditionAbsent"]["duration"] == f"{(30 + 3 + 24 + 60) * 60}s"
    assert plan.outputs["windows"]["runDeadlines"] == {"postgres": "90m", "cometbft": "24m", "identities": "210m"}


def test_ignored_and_shared_server_databases_reach_the_steps(offline_plan, dev_config):
    postgres = dev_config["sv-backups:postgres"]
    postgres["participant"]["ignoreDatabases"] = ["participant_3"]
    # mediator shares the sequencer's server: each step accounts for the other's databases and its ignored ones
    postgres["mediator"]["host"] = postgres["sequencer"]["host"]
    postgres["mediator"]["ignoreDatabases"] = ["scratch"]
    plan = offline_plan(dev_config)
    steps = {c["name"]: container_args(c) for c in pod_spec(cron_job(plan, "postgres-backup"))["initContainers"]}

    def flag(args: list[str], name: str) -> str | None:
        return args[args.index(name) + 1] if name in args else None

    assert flag(steps["participant"], "--ignore-databases") == "participant_3"
    assert flag(steps["participant"], "--server-also-backs-up") is None
    assert "--ignore-databases" not in steps["apps"] and "--server-also-backs-up" not in steps["apps"]
    sequencer_dbs = ",".join(postgres["sequencer"]["databases"])
    mediator_dbs = ",".join(postgres["mediator"]["databases"])
    assert flag(steps["sequencer"], "--server-also-backs-up") == mediator_dbs
    assert flag(steps["mediator"], "--server-also-backs-up") == sequencer_dbs
    assert flag(steps["sequencer"], "--ignore-databases") == flag(steps["mediator"], "--ignore-databases") == "scratch"
