"""Region pairs through the mock engine: paired regional buckets with the copy to the DR region where GCS has no
dual-region for the pair, and everything else (secrets, Cloud SQL backups, snapshots) following the pair."""

from __future__ import annotations

import pytest

from engines.offline_plan import PROJECT_NUMBER
from engines.policy_check import run_policy_checks
from tests.program.test_components import password_of
from tests.stackfiles import Example

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")

BUCKET = "gcp:storage/bucket:Bucket"
TRANSFER_JOB = "gcp:storage/transferJob:TransferJob"
TRANSFER_AGENT = f"serviceAccount:project-{PROJECT_NUMBER}@storage-transfer-service.iam.gserviceaccount.com"
GCS_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
DAY = 86400


def _buckets(plan) -> tuple[dict, dict]:
    buckets = {b["inputs"]["name"]: b for b in plan.of_type(BUCKET)}
    [dr] = [b for name, b in buckets.items() if name.endswith("-dr")]
    [primary] = [b for name, b in buckets.items() if not name.endswith("-dr")]
    return primary, dr


def _transfers(plan) -> tuple[dict, dict]:
    [event] = [j for j in plan.of_type(TRANSFER_JOB) if "eventStream" in j["inputs"]]
    [catch_up] = [j for j in plan.of_type(TRANSFER_JOB) if "schedule" in j["inputs"]]
    return event, catch_up


@pytest.fixture
def paired_plan(offline_plan, stack_config_map):
    """paired_plan(primary, dr, **storage) -> the plan of the prod stack (Cloud SQL, pruning) moved to that pair."""

    def plan(primary: str, dr: str, **storage):
        config = stack_config_map("prod")
        config["gcp:region"] = primary
        config["sv-backups:dr"]["region"] = dr
        config["sv-backups:storage"].update(storage)
        return offline_plan(config)

    return plan


PAIRS = [("europe-west6", "europe-west3"), ("us-east1", "europe-west1")]


@pytest.mark.parametrize(("primary_region", "dr_region"), PAIRS)
def test_a_regional_bucket_in_each_region_with_the_same_protections(paired_plan, primary_region, dr_region):
    plan = paired_plan(primary_region, dr_region)
    primary, dr = _buckets(plan)
    assert primary["inputs"]["name"] == f"{EX.project}-sv-1-backups"
    assert dr["inputs"]["name"] == f"{EX.project}-sv-1-backups-dr"
    assert primary["inputs"]["location"] == primary_region.upper()
    assert dr["inputs"]["location"] == dr_region.upper()
    for bucket, region in ((primary, primary_region), (dr, dr_region)):
        inputs = bucket["inputs"]
        assert "customPlacementConfig" not in inputs and "rpo" not in inputs
        # each bucket under a key in its own region (GCS requires the key where the bucket is)
        assert f"/locations/{region}/keyRings/" in inputs["encryption"]["defaultKmsKeyName"]
        assert inputs["retentionPolicy"] == {"retentionPeriod": str(14 * DAY), "isLocked": False}
        assert inputs["softDeletePolicy"] == {"retentionDurationSeconds": 30 * DAY}
        assert inputs["publicAccessPrevention"] == "enforced"
        assert inputs["uniformBucketLevelAccess"] is True
        assert inputs["forceDestroy"] is False
        assert bucket["options"]["protect"] is True
        assert inputs["labels"]["svbackups-dr-region"] == dr_region
    for field in ("lifecycleRules", "labels", "retentionPolicy", "softDeletePolicy", "storageClass"):
        assert primary["inputs"][field] == dr["inputs"][field], field
    keys = {k["name"]: k for k in plan.of_type("gcp:kms/cryptoKey:CryptoKey")}
    assert {f"sv-1-key-bucket-{primary_region}", f"sv-1-key-bucket-{dr_region}"} <= set(keys)
    for key in keys.values():
        assert key["options"]["protect"] is True and key["inputs"]["rotationPeriod"] == f"{90 * DAY}s"
    grants = [
        g for g in plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember") if g["inputs"]["member"] == GCS_AGENT
    ]
    assert sorted(g["name"] for g in grants) == sorted(
        f"sv-1-bucket-key-gcs-agent-{region}" for region in (primary_region, dr_region)
    )


@pytest.mark.parametrize(("primary_region", "dr_region"), PAIRS)
def test_every_new_object_is_copied_to_the_dr_bucket_never_overwritten_or_deleted(
    paired_plan, primary_region, dr_region
):
    plan = paired_plan(primary_region, dr_region)
    primary, dr = _buckets(plan)
    event, catch_up = _transfers(plan)
    [notification] = plan.of_type("gcp:storage/notification:Notification")
    [topic] = plan.of_type("gcp:pubsub/topic:Topic")
    [subscription] = plan.of_type("gcp:pubsub/subscription:Subscription")
    topic_id = f"projects/{EX.project}/topics/{topic['inputs']['name']}"
    # primary bucket -> notification of each new object -> topic -> subscription -> event-driven job
    assert notification["inputs"] == {
        "bucket": primary["inputs"]["name"],
        "topic": topic_id,
        "payloadFormat": "JSON_API_V1",
        "eventTypes": ["OBJECT_FINALIZE"],
    }
    assert subscription["inputs"]["topic"] == topic_id
    assert subscription["inputs"]["expirationPolicy"] == {"ttl": ""}
    assert subscription["inputs"]["messageRetentionDuration"] == "604800s"
    assert event["inputs"]["eventStream"] == {
        "name": f"projects/{EX.project}/subscriptions/{subscription['inputs']['name']}"
    }
    # events stay in the primary region, under the operator's key in that region
    assert topic["inputs"]["messageStoragePolicy"] == {"allowedPersistenceRegions": [primary_region]}
    assert f"/locations/{primary_region}/keyRings/" in topic["inputs"]["kmsKeyName"]
    for job in (event, catch_up):
        spec = job["inputs"]["transferSpec"]
        assert spec["gcsDataSource"] == {"bucketName": primary["inputs"]["name"]}
        assert spec["gcsDataSink"] == {"bucketName": dr["inputs"]["name"]}
        assert spec["transferOptions"] == {
            "overwriteWhen": "NEVER",
            "overwriteObjectsAlreadyExistingInSink": False,
            "deleteObjectsUniqueInSink": False,
            "deleteObjectsFromSourceAfterTransfer": False,
            "metadataOptions": {
                "kmsKey": "KMS_KEY_DESTINATION_BUCKET_DEFAULT",
                "storageClass": "STORAGE_CLASS_DESTINATION_BUCKET_DEFAULT",
                "timeCreated": "TIME_CREATED_PRESERVE_AS_CUSTOM_TIME",
            },
        }
        assert job["inputs"]["loggingConfig"] == {"logActions": ["FIND", "COPY"], "logActionStates": ["FAILED"]}
        assert "status" not in job["inputs"]  # ENABLED
    assert catch_up["inputs"]["schedule"]["repeatInterval"] == "86400s"
    assert catch_up["inputs"]["transferSpec"]["objectConditions"] == {"minTimeElapsedSinceLastModification": "3600s"}
    assert "objectConditions" not in event["inputs"]["transferSpec"]
    # STS validates its access when a job is created: the grants and the notification exist first
    urns = {r["name"] + "/" + r["type"]: r["urn"] for r in plan.resources}
    assert urns[f"{notification['name']}/{notification['type']}"] in event["dependsOn"]
    granted = {r["urn"] for r in plan.resources if r["inputs"].get("member") == TRANSFER_AGENT}
    assert granted <= set(event["dependsOn"])
    assert plan.outputs["drBackupUrl"] == f"gs://{dr['inputs']['name']}"
    assert plan.outputs["drBackupBucket"] == dr["inputs"]["name"]
    assert plan.outputs["backupUrl"] == f"gs://{primary['inputs']['name']}"


def test_each_agent_gets_only_what_its_step_needs(paired_plan):
    plan = paired_plan("europe-west6", "europe-west3")
    primary, dr = _buckets(plan)

    def grants_to(member):
        return sorted(
            (r["type"].rsplit(":", 1)[-1], r["inputs"].get("bucket") or r["inputs"].get("subscription") or
             r["inputs"].get("topic") or r["inputs"].get("cryptoKeyId"), r["inputs"]["role"])
            for r in plan.resources
            if r["inputs"].get("member") == member
        )  # fmt: skip

    assert grants_to(TRANSFER_AGENT) == sorted(
        [
            ("BucketIAMMember", primary["inputs"]["name"], "roles/storage.legacyBucketReader"),
            ("BucketIAMMember", primary["inputs"]["name"], "roles/storage.objectViewer"),
            ("BucketIAMMember", dr["inputs"]["name"], "roles/storage.legacyBucketReader"),
            ("BucketIAMMember", dr["inputs"]["name"], "roles/storage.objectCreator"),
            ("SubscriptionIAMMember", "sv-1-backups-to-dr", "roles/pubsub.subscriber"),
        ]
    )
    assert [(kind, role) for kind, _target, role in grants_to(GCS_AGENT)] == [
        ("CryptoKeyIAMMember", "roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        ("CryptoKeyIAMMember", "roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        ("TopicIAMMember", "roles/pubsub.publisher"),
    ]
    # The backup writers are untouched: create and read on the primary bucket only, nothing on the DR bucket.
    writer = f"serviceAccount:sv-1-pg-backup@{EX.project}.iam.gserviceaccount.com"
    storage_grants = [g for g in grants_to(writer) if g[0] == "BucketIAMMember" or g[2].startswith("roles/storage.")]
    assert storage_grants == [
        ("BucketIAMMember", primary["inputs"]["name"], "roles/storage.objectCreator"),
        ("BucketIAMMember", primary["inputs"]["name"], "roles/storage.objectViewer"),
    ]


@pytest.mark.parametrize(("primary_region", "dr_region"), PAIRS)
def test_secrets_cloudsql_backups_and_snapshots_follow_the_pair(paired_plan, primary_region, dr_region):
    plan = paired_plan(primary_region, dr_region)
    [secret] = plan.of_type("gcp:secretmanager/secret:Secret")
    replicas = secret["inputs"]["replication"]["userManaged"]["replicas"]
    assert [r["location"] for r in replicas] == [primary_region, dr_region]
    for replica in replicas:
        assert f"/locations/{replica['location']}/" in replica["customerManagedEncryption"]["kmsKeyName"]
    instances = plan.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert len(instances) == 2
    for instance in instances:
        assert instance["inputs"]["region"] == primary_region
        assert instance["inputs"]["settings"]["backupConfiguration"]["location"] == dr_region
    # Every class, CometBFT's and the Postgres snapshot sets' (where declared), stores there.
    for snapshot_class in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"):
        assert snapshot_class["inputs"]["parameters"] == {"storage-locations": dr_region}


@pytest.mark.parametrize(("primary_region", "dr_region"), PAIRS)
def test_the_policy_pack_passes_the_paired_layout(paired_plan, primary_region, dr_region):
    text, code = run_policy_checks(paired_plan(primary_region, dr_region).plan)
    assert code == 0, text
    assert "PASS mandatory backup-bucket-survives-region-loss" in text
    assert "PASS mandatory transfer-copy-only" in text


def test_a_prefix_is_copied_under_the_same_prefix(paired_plan):
    plan = paired_plan("europe-west6", "europe-west3", prefix="sv-1/")
    primary, dr = _buckets(plan)
    for job in _transfers(plan):
        spec = job["inputs"]["transferSpec"]
        assert spec["gcsDataSource"] == {"bucketName": primary["inputs"]["name"], "path": "sv-1/"}
        assert spec["gcsDataSink"] == {"bucketName": dr["inputs"]["name"], "path": "sv-1/"}
    [notification] = plan.of_type("gcp:storage/notification:Notification")
    assert notification["inputs"]["objectNamePrefix"] == "sv-1/"
    assert plan.outputs["drBackupUrl"] == f"gs://{dr['inputs']['name']}/sv-1"
    assert [r["condition"].get("matchesPrefixes") for r in dr["inputs"]["lifecycleRules"]] == [
        ["sv-1/recent/"],
        ["sv-1/"],
        ["sv-1/historical/"],
    ]
    text, code = run_policy_checks(plan.plan)
    assert code == 0, text


def test_a_chosen_bucket_name_names_the_dr_bucket_too(paired_plan):
    plan = paired_plan("europe-west2", "europe-west1", bucketName="acme-sv-backups")
    primary, dr = _buckets(plan)
    assert (primary["inputs"]["name"], dr["inputs"]["name"]) == ("acme-sv-backups", "acme-sv-backups-dr")


def test_dual_region_stacks_need_no_copy(prod_plan):
    assert prod_plan.of_type(TRANSFER_JOB) == []
    assert prod_plan.of_type("gcp:pubsub/topic:Topic") == []
    assert prod_plan.outputs["drBackupUrl"] == prod_plan.outputs["backupUrl"]  # the same bucket holds both copies
    assert prod_plan.outputs["drBackupBucket"] == prod_plan.outputs["backupBucket"]
    [bucket] = prod_plan.of_type(BUCKET)
    # both regions hold the data; the label says which one is the declared DR region (policy: production-dr)
    assert bucket["inputs"]["labels"]["svbackups-dr-region"] == "us-east4"
    assert "US-EAST4" in bucket["inputs"]["customPlacementConfig"]["dataLocations"]


def test_the_zurich_example_stack(shipped_plan):
    plan = shipped_plan("prod-ch")
    primary, dr = _buckets(plan)
    assert (primary["inputs"]["location"], dr["inputs"]["location"]) == ("EUROPE-WEST6", "EUROPE-WEST3")
    assert plan.outputs["drBackupUrl"] == "gs://sv-ch-project-sv-ch-backups-dr"
    # in-cluster instances without passwordSecret use the Splice runbook's <host>-secret
    job = next(j for j in plan.of_type("kubernetes:batch/v1:CronJob") if j["name"] == "sv-ch-postgres-backup")
    spec = job["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert password_of(spec, "apps") == ("apps-pg-secret", "postgresPassword")


def test_the_zurich_plan_is_deterministic(shipped_plan, offline_plan):
    from tests.program.conftest import PROJECT

    again = offline_plan(PROJECT.stack_file("prod-ch"), stack="prod-ch")
    assert again.to_json() == shipped_plan("prod-ch").to_json()


def test_an_alert_fires_when_the_dr_copy_falls_behind_a_backup_interval(paired_plan, prod_plan):
    plan = paired_plan("europe-west6", "europe-west3")
    [alert] = [
        a for a in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy") if a["name"] == "sv-1-alert-dr-copy-behind"
    ]
    [subscription] = plan.of_type("gcp:pubsub/subscription:Subscription")
    threshold = alert["inputs"]["conditions"][0]["conditionThreshold"]
    assert threshold["filter"] == (
        'metric.type="pubsub.googleapis.com/subscription/oldest_unacked_message_age" AND '
        f'resource.type="pubsub_subscription" AND resource.labels.subscription_id="{subscription["inputs"]["name"]}"'
    )
    assert threshold["thresholdValue"] == 4 * 3600  # the largest gap between two Postgres sets
    assert threshold["comparison"] == "COMPARISON_GT"
    stale = next(a for a in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy") if a["name"].endswith("stale"))
    assert alert["inputs"]["notificationChannels"] == stale["inputs"]["notificationChannels"]
    assert alert["inputs"]["userLabels"]["svbackups-kind"] == "dr-copy"
    # the dual-region layout has no copy to fall behind: its turbo replication is watched instead
    dual = [a["name"] for a in prod_plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy") if "dr-copy" in a["name"]]
    assert dual == ["sv-1-alert-dr-copy-turbo-behind"]
    assert not [a for a in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy") if "turbo" in a["name"]]


def _turbo_alert(plan) -> dict:
    [alert] = [
        a
        for a in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
        if a["name"] == "sv-1-alert-dr-copy-turbo-behind"
    ]
    return alert


def test_an_alert_fires_when_dual_region_replication_falls_behind_the_lag_bound(
    prod_plan, offline_plan, stack_config_map
):
    alert = _turbo_alert(prod_plan)
    [bucket] = prod_plan.of_type(BUCKET)
    assert bucket["inputs"]["rpo"] == "ASYNC_TURBO"
    [condition] = alert["inputs"]["conditions"]
    threshold = condition["conditionThreshold"]
    assert threshold["filter"] == (
        'metric.type="storage.googleapis.com/replication/turbo_max_delay" AND resource.type="gcs_bucket" '
        f'AND resource.labels.bucket_name="{bucket["inputs"]["name"]}"'
    )
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["thresholdValue"] == 3600  # dr.maxReplicationLag's default
    assert threshold["aggregations"] == [{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_MAX"}]
    stale = next(a for a in prod_plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy") if a["name"].endswith("stale"))
    assert alert["inputs"]["notificationChannels"] == stale["inputs"]["notificationChannels"]
    assert alert["inputs"]["userLabels"] == {
        "svbackups-kind": "dr-copy",
        "svbackups-alert": "behind",
        "svbackups-node": "sv-1",
    }
    assert alert["inputs"]["severity"] == "CRITICAL"
    config = stack_config_map("prod")
    config["sv-backups:dr"]["maxReplicationLag"] = "30m"
    tighter = _turbo_alert(offline_plan(config))
    assert tighter["inputs"]["conditions"][0]["conditionThreshold"]["thresholdValue"] == 1800
    assert tighter["inputs"]["displayName"].endswith("behind by more than 30 min")


@pytest.fixture
def zurich_dr_config(stack_config_map):
    """The DR stack of prod-ch: prod-dr's layout moved to the Zurich node, deployed in Frankfurt."""
    config = stack_config_map("prod-dr")
    config["gcp:project"] = "sv-ch-project"
    config["gcp:region"] = "europe-west3"
    config["sv-backups:node"]["name"] = "sv-ch"
    config["sv-backups:dr"]["primaryStack"] = "sv-operator/sv-backups/prod-ch"
    return config


def test_a_dr_stack_restores_from_and_checks_the_paired_dr_bucket(offline_plan, shipped_plan, zurich_dr_config):
    primary = shipped_plan("prod-ch").outputs
    plan = offline_plan(
        zurich_dr_config, stack="prod-ch-dr", stack_references={"sv-operator/sv-backups/prod-ch": primary}
    )
    [check] = [job for job in plan.of_type("kubernetes:batch/v1:CronJob") if job["name"] == "sv-ch-dr-replica-check"]
    args = check["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["check-replica", "gs://sv-ch-project-sv-ch-backups", "gs://sv-ch-project-sv-ch-backups-dr"]
    # Granted on the DR bucket itself, where it lives (components/gcp/backend.py allow_object_reads).
    readers = {
        r["name"]: r["inputs"]["bucket"]
        for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r["inputs"]["role"] == "roles/storage.objectViewer"
    }
    assert readers["sv-ch-dr-backups-reader-dr-copy"] == "sv-ch-project-sv-ch-backups-dr"
    # after failover the DR cluster's sets go to the DR bucket
    postgres = next(j for j in plan.of_type("kubernetes:batch/v1:CronJob") if j["name"] == "sv-ch-dr-postgres-backup")
    seal = postgres["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert seal[seal.index("--dest") + 1] == "gs://sv-ch-project-sv-ch-backups-dr"
    # Every class, CometBFT's and the Postgres snapshot sets' (where declared), stores there.
    for snapshot_class in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"):
        assert snapshot_class["inputs"]["parameters"] == {"storage-locations": "eu"}  # Frankfurt is in the EU


def test_a_dr_stack_outside_every_multi_region_keeps_snapshots_in_its_region(
    offline_plan, shipped_plan, zurich_dr_config
):
    zurich_dr_config["gcp:region"] = "europe-west6"  # e.g. the DR stack of a Frankfurt primary
    primary = shipped_plan("prod-ch").outputs
    plan = offline_plan(
        zurich_dr_config, stack="prod-ch-dr", stack_references={"sv-operator/sv-backups/prod-ch": primary}
    )
    # Every class, CometBFT's and the Postgres snapshot sets' (where declared), stores there.
    for snapshot_class in plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"):
        assert snapshot_class["inputs"]["parameters"] == {"storage-locations": "europe-west6"}
