"""Every rule of the pack on real plans: the shipped stacks pass, and a plan that breaks exactly one rule fails
with that rule's message (and with no other rule)."""

from __future__ import annotations

import json

import pytest

from engines.policy_check import evaluate, run_policy_checks
from policy.catalog import POLICIES
from policy.props import pod_spec
from tests.stackfiles import Example

from . import helpers as h
from .admission_cases import ADMISSION_CASES
from .conftest import STACKS
from .drill_cases import DRILL_CASES, GCP_STACKS
from .hardening_cases import HARDENING_CASES
from .snapshot_cases import SNAPSHOT_CASES

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")


def violated(plan: dict, config: dict | None = None) -> dict[str, list[str]]:
    """Rule name -> messages, for every rule that reported something (pack defaults unless `config`)."""
    return {v.policy.name: [x.message for x in v.violations] for v in evaluate(plan, config or {}) if v.violations}


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stack_passes(plans, stack):
    text, code = run_policy_checks(plans[stack])
    assert code == 0, text
    assert "FAIL " not in text


@pytest.mark.parametrize("stack", STACKS)
def test_pinned_shipped_stack_has_no_violation_at_all(plan_copy, stack):
    """The base of the mutation cases: every rule, advisory ones included, passes."""
    assert violated(h.pin_images(plan_copy(stack))) == {}


# --- one case per way of breaking a rule: (rule, stack, mutation, text the message must contain) -------------


def _set(getter, key, value):
    def mutate(plan):
        getter(plan)[key] = value

    return mutate


def _drop(getter, key):
    def mutate(plan):
        getter(plan).pop(key)

    return mutate


def _cron_spec(kind):
    return lambda plan: h.cron_job(plan, kind)["inputs"]["spec"]


def _job_spec(kind):
    return lambda plan: h.cron_job(plan, kind)["inputs"]["spec"]["jobTemplate"]["spec"]


def _security(kind, name):
    return lambda plan: h.container(plan, kind, name)["securityContext"]


def _bucket(plan):
    return h.bucket(plan)["inputs"]


def _bucket_labels(plan):
    return h.bucket(plan)["inputs"]["labels"]


def _swap_apps_participant(plan):
    init = h.pod(plan, "postgres")["initContainers"]
    names = [c["name"] for c in init]
    a, p = names.index("apps"), names.index("participant")
    init[a], init[p] = init[p], init[a]


def _apps_as_main_container(plan):
    spec = h.pod(plan, "postgres")
    apps = next(c for c in spec["initContainers"] if c["name"] == "apps")
    spec["initContainers"].remove(apps)
    spec["containers"].insert(0, apps)


def _drop_participant(plan):
    spec = h.pod(plan, "postgres")
    spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] != "participant"]


def _pod_runs_as_root(plan):
    spec = h.pod(plan, "identities")
    spec["securityContext"].pop("runAsNonRoot")
    for container in spec["containers"]:
        container["securityContext"].pop("runAsNonRoot")


def _public_viewer(plan):
    h.one(
        plan,
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        lambda r: r["inputs"]["role"] == "roles/storage.objectViewer",
    )["inputs"]["member"] = "allUsers"


def _writer_role(role):
    def mutate(plan):
        h.one(
            plan,
            "gcp:storage/bucketIAMMember:BucketIAMMember",
            lambda r: r["inputs"]["role"] == "roles/storage.objectCreator",
        )["inputs"]["role"] = role

    return mutate


def _project_storage_admin(plan):
    h.add(
        plan,
        "gcp:projects/iAMMember:IAMMember",
        "backup-admin",
        {"project": "p", "role": "roles/storage.admin", "member": "serviceAccount:ops@p.iam.gserviceaccount.com"},
    )


def _secret_role(role):
    def mutate(plan):
        # The writer's grant (the restore identity also reads the secret, for the identities drill).
        h.one(
            plan,
            "gcp:secretmanager/secretIamMember:SecretIamMember",
            lambda r: r["name"].endswith("-version-adder"),
        )["inputs"]["role"] = role

    return mutate


def _secret(plan):
    return h.one(plan, "gcp:secretmanager/secret:Secret")["inputs"]


def _single_replica(plan):
    _secret(plan)["replication"]["userManaged"]["replicas"].pop()


def _replica_without_cmek(plan):
    _secret(plan)["replication"]["userManaged"]["replicas"][1].pop("customerManagedEncryption")


def _cloudsql(plan):
    return h.resources(plan, "gcp:sql/databaseInstance:DatabaseInstance")[0]["inputs"]


def _backup_config(plan):
    return _cloudsql(plan)["settings"]["backupConfiguration"]


def _recent_delete(plan):
    return h.lifecycle_rule(plan, "Delete", "recent/")


def _delete_without_prefix(plan):
    _recent_delete(plan)["condition"].pop("matchesPrefixes")


def _delete_history_after_ten_years(plan):
    prefix = _recent_delete(plan)["condition"]["matchesPrefixes"][0].replace("recent/", "historical/")
    _bucket(plan)["lifecycleRules"].append(
        {"action": {"type": "Delete"}, "condition": {"age": 3650, "matchesPrefixes": [prefix]}}
    )


def _move_recent_to_nearline(plan):
    prefix = _recent_delete(plan)["condition"]["matchesPrefixes"][0]
    _bucket(plan)["lifecycleRules"].append(
        {
            "action": {"type": "SetStorageClass", "storageClass": "NEARLINE"},
            "condition": {"age": 1, "matchesPrefixes": [prefix]},
        }
    )


def _seal_args(plan):
    return h.container(plan, "postgres", "seal")["args"]


def _hourly_pruning(plan):
    args = _seal_args(plan)
    args[args.index("--participant-pruning") + 1] = "1h"


def _relabel_history_and_delete_it(plan):
    """The reviewer's case: the plan moves the historical-prefix label away and deletes the real history."""
    _bucket_labels(plan)["svbackups-historical-prefix"] = "archive_"
    _bucket(plan)["lifecycleRules"].append(
        {"action": {"type": "Delete"}, "condition": {"age": 30, "matchesPrefixes": ["historical/"]}}
    )


def _dest(plan, url):
    for name in ("apps", "participant", "sequencer", "mediator", "seal"):
        args = h.container(plan, "postgres", name)["args"]
        args[args.index("--dest") + 1] = url


def _bucket_url(plan):
    return "gs://" + _bucket(plan)["name"]


def _ignore_changes(path):
    def mutate(plan):
        h.resources(plan, "gcp:sql/databaseInstance:DatabaseInstance")[0]["options"]["ignoreChanges"].append(path)

    return mutate


def _workload_identity(kind):
    """The Workload Identity grant on a writer's service account (postgres: pg-backup, identities)."""
    return lambda plan: h.one(
        plan,
        "gcp:serviceaccount/iAMMember:IAMMember",
        lambda r: f"-{'pg-backup' if kind == 'postgres' else kind}@" in r["inputs"]["serviceAccountId"],
    )["inputs"]


def _ksa_member(plan, ksa):
    """serviceAccount:<project>.svc.id.goog[sv/<ksa>], in the stack's workload pool."""
    return _workload_identity("postgres")(plan)["member"].split("[")[0] + f"[sv/{ksa}]"


def _set_ksa(kind, ksa):
    def mutate(plan):
        _workload_identity(kind)(plan)["member"] = _ksa_member(plan, ksa)

    return mutate


def _pg_writer_to_identities_ksa(plan):
    identities_ksa = h.cron_job(plan, "identities")["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "serviceAccountName"
    ]
    _workload_identity("postgres")(plan)["member"] = _ksa_member(plan, identities_ksa)


def _token_creator_binding(plan):
    grant = _workload_identity("postgres")(plan)
    h.add(
        plan,
        "gcp:serviceaccount/iAMBinding:IAMBinding",
        "pg-backup-token-creators",
        {
            "serviceAccountId": grant["serviceAccountId"],
            "role": "roles/iam.serviceAccountTokenCreator",
            "members": [grant["member"], "user:ops@example.com"],
        },
    )


def _service_account_user(plan):
    grant = _workload_identity("postgres")(plan)
    h.add(
        plan,
        "gcp:serviceaccount/iAMMember:IAMMember",
        "pg-backup-act-as",
        {"serviceAccountId": grant["serviceAccountId"], "role": "roles/iam.serviceAccountUser",
         "member": "group:deployers@example.com"},
    )  # fmt: skip


def _project_token_creator(plan):
    project = _bucket(plan)["project"]
    h.add(
        plan,
        "gcp:projects/iAMMember:IAMMember",
        "ops-token-creator",
        {"project": project, "role": "roles/iam.serviceAccountTokenCreator", "member": "user:ops@example.com"},
    )


def _snapshot_args(plan):
    return h.container(plan, "cometbft", "snapshot")["args"]


def _snapshot_flag(flag, value):
    def mutate(plan):
        args = _snapshot_args(plan)
        args[args.index(flag) + 1] = value

    return mutate


def _remove_alert(kind, alert_type):
    return lambda plan: h.remove(plan, h.alert(plan, kind, alert_type))


def _remove_cron_job(kind):
    return lambda plan: h.remove(plan, h.cron_job(plan, kind))


def _unpin_one_image(plan):
    h.container(plan, "cometbft", "snapshot")["image"] = "europe-docker.pkg.dev/p/sv-backups/jobs:latest"


# --- Cloud SQL IAM login (prod's sequencer) ----------------------------------------------------------------

PROXY = "cloudsql-proxy-sequencer"
SEQUENCER_INSTANCE = EX.sequencer_instance


def _proxy(plan):
    return h.container(plan, "postgres", PROXY)


def _proxy_args(change):
    def mutate(plan):
        _proxy(plan)["args"] = change(_proxy(plan)["args"])

    return mutate


def _without(flag):
    return _proxy_args(lambda args: [a for a in args if a != flag])


def _replace_arg(prefix, value):
    return _proxy_args(lambda args: [value if a.startswith(prefix) else a for a in args])


def _address_from_env(plan):
    _proxy(plan)["args"] = [a for a in _proxy(plan)["args"] if not a.startswith("--address")]
    _proxy(plan)["env"] = [{"name": "CSQL_PROXY_ADDRESS", "value": "0.0.0.0"}]


def _proxy_after_apps(plan):
    init = h.pod(plan, "postgres")["initContainers"]
    proxy = init.pop(0)
    init.insert(1, proxy)


def _sequencer_instance(plan):
    return h.one(plan, "gcp:sql/databaseInstance:DatabaseInstance", lambda r: r["inputs"]["name"] == SEQUENCER_INSTANCE)


def _sequencer_step_dsn(change):
    def mutate(plan):
        args = h.container(plan, "postgres", "sequencer")["args"]
        index = next(i for i, a in enumerate(args) if a.startswith("sequencer=postgresql://"))
        args[index] = change(args[index])

    return mutate


def _cloudsql_grant(role):
    return lambda plan: h.one(plan, "gcp:projects/iAMMember:IAMMember", lambda r: r["inputs"]["role"] == role)


def _extra_cloudsql_grant(role, condition=None):
    def mutate(plan):
        inputs = {"project": EX.project, "role": role, "member": "group:sv-ops@example.com"}
        if condition:
            inputs["condition"] = {"title": "t", "expression": condition}
        h.add(plan, "gcp:projects/iAMMember:IAMMember", "ops-cloudsql", inputs)

    return mutate


def _participant_in_clear(plan):
    env = h.container(plan, "postgres", "participant")["env"]
    next(e for e in env if e["name"] == "PGSSLMODE")["value"] = "disable"


CASES = [
    ("backup-schedule-max-gap", "dev", _set(_cron_spec("postgres"), "schedule", "0 */6 * * *"), "6 h"),
    ("backup-schedule-max-gap", "dev", _set(_cron_spec("cometbft"), "schedule", "0 0-12/4 * * *"), "12 h"),
    ("backup-schedule-max-gap", "dev", _set(_cron_spec("identities"), "schedule", "every 4h"), "5-field"),
    # Not a text at all: reported by this rule, and no other rule trips over it (the gap scans are cached by value).
    ("backup-schedule-max-gap", "dev", _set(_cron_spec("postgres"), "schedule", ["0 */4 * * *"]), "no spec.schedule"),
    ("backup-schedule-max-gap", "dev", _set(_cron_spec("postgres"), "timeZone", "Europe/Zurich"), "daylight"),
    ("backup-schedule-max-gap", "dev", _set(_cron_spec("postgres"), "suspend", True), "suspend"),
    ("postgres-apps-before-participant", "dev", _swap_apps_participant, "'participant' runs before 'apps'"),
    ("postgres-apps-before-participant", "dev", _apps_as_main_container, "a main container"),
    ("postgres-apps-before-participant", "dev", _drop_participant, "'participant' step is missing"),
    (
        "postgres-apps-before-participant",
        "dev",
        lambda p: h.container(p, "postgres", "apps").update(restartPolicy="Always"),
        "sidecar",
    ),
    ("backup-job-no-overlap", "dev", _set(_cron_spec("cometbft"), "concurrencyPolicy", "Allow"), "Forbid"),
    ("backup-job-no-overlap", "dev", _drop(_cron_spec("postgres"), "concurrencyPolicy"), "unset"),
    (
        "backup-job-deadlines",
        "dev",
        _set(_job_spec("identities"), "activeDeadlineSeconds", 14400),
        "not shorter than the 4 h",
    ),
    (
        "backup-job-deadlines",
        "dev",
        _set(_job_spec("postgres"), "activeDeadlineSeconds", 1800),
        "1800 s, shorter than the 45 min a postgres run needs",
    ),
    (
        "backup-job-deadlines",
        "dev",
        _drop(_cron_spec("postgres"), "startingDeadlineSeconds"),
        "startingDeadlineSeconds is not set",
    ),
    (
        "backup-job-deadlines",
        "prod",
        # prod's 4-hourly backups are its snapshot sets (its dump sets run weekly beside them).
        lambda p: (
            _cron_spec("postgres-snapshots")(p).update(startingDeadlineSeconds=1800),
            _job_spec("postgres-snapshots")(p).update(activeDeadlineSeconds=13500),
        ),
        "(1800) + spec.jobTemplate.spec.activeDeadlineSeconds (13500) = 15300 s is not shorter than the 4 h",
    ),
    (
        "backup-pod-hardened",
        "dev",
        _set(_security("postgres", "seal"), "readOnlyRootFilesystem", False),
        "readOnlyRootFilesystem is not true",
    ),
    (
        "backup-pod-hardened",
        "dev",
        _set(_security("postgres", "participant"), "allowPrivilegeEscalation", True),
        "allowPrivilegeEscalation",
    ),
    (
        "backup-pod-hardened",
        "dev",
        lambda p: _security("cometbft", "snapshot")(p)["capabilities"].update(drop=[]),
        "capabilities.drop",
    ),
    ("backup-pod-hardened", "dev", _pod_runs_as_root, "runAsNonRoot is not true"),
    (
        "backup-pod-hardened",
        "dev",
        lambda p: (
            _security("postgres", "apps")(p).pop("seccompProfile"),
            h.pod(p, "postgres")["securityContext"].pop("seccompProfile"),
        ),
        "seccompProfile",
    ),
    ("backup-pod-hardened", "dev", lambda p: h.pod(p, "cometbft").update(hostNetwork=True), "hostNetwork"),
    (
        "backup-pod-resource-limits",
        "dev",
        lambda p: h.container(p, "cometbft", "snapshot")["resources"].pop("limits"),
        "no cpu and memory limit",
    ),
    (
        "snapshot-class-retain",
        "dev",
        _set(
            lambda p: h.one(p, "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")["inputs"],
            "deletionPolicy",
            "Delete",
        ),
        "deletionPolicy is Delete",
    ),
    ("job-image-pinned-by-digest", "dev", _unpin_one_image, "jobs:latest"),
    ("bucket-uniform-access", "dev", _set(_bucket, "uniformBucketLevelAccess", False), "uniformBucketLevelAccess"),
    ("bucket-public-access-prevention", "dev", _set(_bucket, "publicAccessPrevention", "inherited"), "inherited"),
    ("bucket-cmek", "dev", _drop(_bucket, "encryption"), "defaultKmsKeyName"),
    ("bucket-immutability", "dev", _drop(_bucket, "retentionPolicy"), "no retentionPolicy"),
    (
        "bucket-immutability",
        "dev",
        lambda p: _bucket(p)["retentionPolicy"].update(retentionPeriod="86400"),
        "shorter than the recent window",
    ),
    (
        "bucket-immutability",
        "dev",
        lambda p: _bucket(p)["softDeletePolicy"].update(retentionDurationSeconds=0),
        "soft delete",
    ),
    ("bucket-immutability", "dev", _set(_bucket, "versioning", {"enabled": True}), "versioning"),
    ("identities-secret-cmek-replicated", "dev", _single_replica, "a region loss"),
    ("identities-secret-cmek-replicated", "dev", _replica_without_cmek, "no customerManagedEncryption"),
    ("identities-secret-cmek-replicated", "dev", _set(_secret, "replication", {"auto": {}}), "automatic"),
    ("no-public-grants", "dev", _public_viewer, "allUsers"),
    ("bucket-writer-cannot-delete", "dev", _writer_role("roles/storage.objectAdmin"), "objectAdmin"),
    ("bucket-writer-cannot-delete", "dev", _writer_role("roles/storage.legacyBucketWriter"), "legacyBucketWriter"),
    ("bucket-writer-cannot-delete", "dev", _project_storage_admin, "whole project"),
    ("secret-writer-add-only", "dev", _secret_role("roles/secretmanager.secretAccessor"), "secretAccessor"),
    ("secret-writer-add-only", "dev", _secret_role("roles/secretmanager.secretVersionManager"), "versionManager"),
    (
        "cloudsql-backups-protected",
        "prod",
        _set(_backup_config, "pointInTimeRecoveryEnabled", False),
        "point-in-time recovery is off",
    ),
    ("cloudsql-backups-protected", "prod", _set(_backup_config, "enabled", False), "automated backups are off"),
    ("cloudsql-backups-protected", "prod", _set(_cloudsql, "deletionProtection", False), "deletionProtection"),
    (
        "cloudsql-backups-protected",
        "prod",
        _ignore_changes("settings.backupConfiguration.enabled"),
        "'settings.backupConfiguration.enabled', which covers settings.backupConfiguration",
    ),
    (
        "cloudsql-backups-protected",
        "prod",
        _ignore_changes("settings.backupConfiguration.backupRetentionSettings"),
        "covers settings.backupConfiguration",
    ),
    ("cloudsql-backups-protected", "prod", _ignore_changes("settings"), "'settings', which covers"),
    ("cloudsql-backups-protected", "prod", _ignore_changes("deletionProtection"), "which covers deletionProtection"),
    (
        "cloudsql-backups-protected",
        "prod",
        _ignore_changes('settings["deletionProtectionEnabled"]'),
        "covers settings.deletionProtectionEnabled",
    ),
    ("storage-class-transitions", "dev", _move_recent_to_nearline, "NEARLINE"),
    (
        "kms-key-rotation",
        "dev",
        _set(lambda p: h.resources(p, "gcp:kms/cryptoKey:CryptoKey")[0]["inputs"], "rotationPeriod", "31536000s"),
        "longer than 90 days",
    ),
    ("lifecycle-never-deletes-history", "dev", _delete_without_prefix, "(every prefix)"),
    ("lifecycle-never-deletes-history", "prod", _delete_history_after_ten_years, "historical sets"),
    ("lifecycle-never-deletes-history", "prod", _relabel_history_and_delete_it, "historical sets ('historical/')"),
    (
        "lifecycle-never-deletes-history",
        "dev",
        lambda p: _recent_delete(p)["condition"].update(matchesPrefixes=["recent"]),
        "not inside the recent tier 'recent/'",
    ),
    (
        "lifecycle-never-deletes-history",
        "dev",
        lambda p: _recent_delete(p)["condition"].update(matchesPrefixes=["recent/", "historical/"]),
        "'historical/', which is not inside",
    ),
    (
        "lifecycle-never-deletes-history",
        "prod",
        lambda p: _dest(p, _bucket_url(p) + "/sv-1/"),
        "inside the recent tier 'sv-1/recent/'",
    ),
    (
        "lifecycle-never-deletes-history",
        "dev",
        lambda p: _dest(p, "gs://elsewhere"),
        "no Postgres CronJob writes to it",
    ),
    ("lifecycle-keeps-recent-window", "dev", lambda p: _recent_delete(p)["condition"].update(age=1), "after 1 days"),
    (
        "historical-cadence-within-pruning",
        "prod",
        # 29d 20h: below the 30d window, but the next run may take its snapshots up to 8 h later
        _set(_bucket_labels, "svbackups-historical-cadence-seconds", "2577600"),
        "is not strictly less than the smallest pruning window",
    ),
    ("historical-cadence-within-pruning", "prod", _hourly_pruning, "seal step promotes"),
    (
        "historical-cadence-within-pruning",
        "dev",
        _snapshot_flag("--retain-blocks", "7000"),
        "historical snapshot every 1h",
    ),
    ("historical-cadence-within-pruning", "prod", _snapshot_flag("--blocks-per-hour", "0"), "must be given once"),
    (
        "cometbft-snapshots-kept",
        "dev",
        _snapshot_flag("--class", "standard-rwo-snapclass"),
        "--class standard-rwo-snapclass, which is not a VolumeSnapshotClass this stack declares",
    ),
    ("cometbft-snapshots-kept", "prod", _snapshot_flag("--keep-recent", "12h"), "--keep-recent is 12h"),
    ("cometbft-snapshots-kept", "dev", _snapshot_flag("--keep-recent", "P0D"), "--keep-recent is 0s"),
    (
        "cometbft-snapshots-kept",
        "dev",
        lambda p: _snapshot_args(p).__setitem__(0, "snapshot"),
        "no container runs snapshot-cometbft",
    ),
    (
        "workload-identity-backup-ksa",
        "dev",
        lambda p: _workload_identity("postgres")(p).update(
            member="principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/"
            "sv-dev-project.svc.id.goog/namespace/sv"
        ),
        "a whole namespace or pool",
    ),
    ("workload-identity-backup-ksa", "dev", _set_ksa("identities", "default"), "the 'default' Kubernetes"),
    ("workload-identity-backup-ksa", "prod", _set_ksa("postgres", "sv-app"), "which no backup CronJob runs as"),
    ("workload-identity-backup-ksa", "prod", _pg_writer_to_identities_ksa, "annotation names sv-1-identities@"),
    ("workload-identity-backup-ksa", "dev", _token_creator_binding, "to 2 members"),
    ("workload-identity-backup-ksa", "dev", _project_token_creator, "on the whole project"),
    ("workload-identity-backup-ksa", "dev", _service_account_user, "group:deployers@example.com"),
    ("alerts-per-backup-kind", "dev", _remove_alert("cometbft", "stale"), "svbackups-kind=cometbft"),
    (
        "alerts-per-backup-kind",
        "dev",
        lambda p: h.alert(p, "identities", "failed")["inputs"].update(enabled=False),
        "never fires",
    ),
    (
        "alert-notification-channels",
        "dev",
        lambda p: h.alert(p, "postgres", "failed")["inputs"].update(notificationChannels=[]),
        "notificationChannels",
    ),
    ("cloudsql-proxy-sidecar", "prod", lambda p: _proxy(p).pop("restartPolicy"), "without restartPolicy: Always"),
    ("cloudsql-proxy-sidecar", "prod", _proxy_after_apps, "starts after the dump step at initContainers[0]"),
    (
        "cloudsql-proxy-sidecar",
        "prod",
        lambda p: _proxy(p).update(image="gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.25.4"),
        "a tag that can be moved",
    ),
    (
        "cloudsql-proxy-sidecar",
        "prod",
        lambda p: _proxy(p).update(image="gcr.io/cloudsql-docker/gce-proxy:1.37.7" + h.DIGEST),
        "v1 proxy",
    ),
    ("cloudsql-proxy-sidecar", "prod", _replace_arg("--address", "--address=0.0.0.0"), "listens on 0.0.0.0:15434"),
    ("cloudsql-proxy-sidecar", "prod", _address_from_env, "listens on 0.0.0.0:15434"),
    ("cloudsql-proxy-sidecar", "prod", _without("--private-ip"), "without --private-ip"),
    ("cloudsql-proxy-sidecar", "prod", lambda p: _proxy(p).pop("startupProbe"), "no startupProbe"),
    ("cloudsql-proxy-sidecar", "prod", _without("--health-check"), "no startupProbe"),
    ("cloudsql-proxy-sidecar", "prod", _replace_arg("--http-address", "--http-address=localhost"), "kubelet's probe"),
    ("cloudsql-proxy-sidecar", "prod", _replace_arg("--http-port", "--http-port=9999"), "probe never passes"),
    (
        "backup-pod-hardened",
        "prod",
        lambda p: _proxy(p)["securityContext"].update(readOnlyRootFilesystem=False),
        f"initContainer '{PROXY}': readOnlyRootFilesystem is not true",
    ),
    (
        "cloudsql-grants-one-instance",
        "prod",
        _extra_cloudsql_grant("roles/cloudsql.client"),
        "no condition, so it applies to every Cloud SQL instance",
    ),
    (
        "cloudsql-grants-one-instance",
        "prod",
        _extra_cloudsql_grant(
            "roles/cloudsql.instanceUser", f"resource.name == 'projects/{EX.project}/instances/a' || true"
        ),
        "applies to every Cloud SQL instance",
    ),
    (
        "cloudsql-grants-one-instance",
        "prod",
        _extra_cloudsql_grant(
            "roles/cloudsql.client", f"resource.name.startsWith('projects/{EX.project}/instances/sv-1')"
        ),
        "applies to every Cloud SQL instance",
    ),
    ("cloudsql-grants-one-instance", "prod", _extra_cloudsql_grant("roles/cloudsql.admin"), "broader Cloud SQL roles"),
    (
        "cloudsql-iam-login",
        "prod",
        lambda p: h.remove(p, h.one(p, "gcp:sql/user:User")),
        f"has no CLOUD_IAM_SERVICE_ACCOUNT user 'sv-1-pg-backup@{EX.project}.iam'",
    ),
    (
        "cloudsql-iam-login",
        "prod",
        lambda p: _sequencer_instance(p)["inputs"]["settings"]["databaseFlags"][0].update(value="off"),
        "has cloudsql.iam_authentication off",
    ),
    (
        "cloudsql-iam-login",
        "prod",
        lambda p: _sequencer_instance(p)["options"]["ignoreChanges"].append("settings.databaseFlags"),
        "ignores changes to settings.databaseFlags",
    ),
    (
        "cloudsql-iam-login",
        "prod",
        _sequencer_step_dsn(lambda d: d.replace(".iam@", ".iam.gserviceaccount.com@")),
        f"whose IAM database user is 'sv-1-pg-backup@{EX.project}.iam'",
    ),
    (
        "cloudsql-iam-login",
        "prod",
        lambda p: h.remove(p, _cloudsql_grant("roles/cloudsql.instanceUser")(p)),
        f"has no roles/cloudsql.instanceUser limited to projects/{EX.project}/instances/{EX.sequencer_instance}",
    ),
    (
        "cloudsql-iam-login",
        "prod",
        lambda p: _cloudsql_grant("roles/cloudsql.client")(p)["inputs"]["condition"].update(
            expression=f"resource.name == 'projects/{EX.project}/instances/{EX.participant_instance}'"
        ),
        f"has no roles/cloudsql.client limited to projects/{EX.project}/instances/{EX.sequencer_instance}",
    ),
    ("cloudsql-iam-login", "prod", _without("--auto-iam-authn"), "does not log in by IAM"),
    (
        "cloudsql-iam-login",
        "prod",
        _sequencer_step_dsn(lambda d: d.replace(":15434/", ":15999/")),
        "connects to 127.0.0.1:15999, where no Cloud SQL Auth Proxy",
    ),
    ("cloudsql-iam-login", "prod", _participant_in_clear, "with sslmode disable: the dump crosses the network"),
    ("backup-coverage", "dev", _remove_cron_job("identities"), "identities backup never runs"),
    (
        "backup-coverage",
        "dev",
        lambda p: h.remove(p, h.one(p, "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")),
        "No VolumeSnapshotClass",
    ),
]


# --- paired regional buckets (prod-ch: Zurich, DR Frankfurt) ---------------------------------------------

TRANSFER_JOB = "gcp:storage/transferJob:TransferJob"


def _named_bucket(dr: bool):
    return lambda plan: h.one(plan, "gcp:storage/bucket:Bucket", lambda r: r["name"].endswith("-dr") == dr)


def _transfer(event: bool):
    return lambda plan: h.one(plan, TRANSFER_JOB, lambda r: ("eventStream" in r["inputs"]) == event)


def _transfer_options(event: bool):
    return lambda plan: _transfer(event)(plan)["inputs"]["transferSpec"]["transferOptions"]


def _remove_type(resource_type, predicate=lambda r: True):
    def mutate(plan):
        for resource in [r for r in h.resources(plan, resource_type) if predicate(r)]:
            h.remove(plan, resource)

    return mutate


def _no_copy_at_all(plan):
    _remove_type(TRANSFER_JOB)(plan)
    h.remove(plan, _named_bucket(dr=True)(plan))


def _make_regional(plan):
    bucket = _bucket(plan)
    bucket.pop("customPlacementConfig")
    bucket.pop("rpo")
    bucket["location"] = "EUROPE-WEST3"


def _dr_bucket_in(location):
    return lambda plan: _named_bucket(dr=True)(plan)["inputs"].update(location=location)


def _delete_dr_history(plan):
    _named_bucket(dr=True)(plan)["inputs"]["lifecycleRules"].append(
        {"action": {"type": "Delete"}, "condition": {"age": 400, "matchesPrefixes": ["historical/"]}}
    )


def _event_job(plan):
    return _transfer(event=True)(plan)["inputs"]


def _pubsub_grant(kind):
    return _remove_type(f"gcp:pubsub/{kind}IAMMember:{kind[0].upper() + kind[1:]}IAMMember")


REPLICATION_CASES = [
    ("transfer-copy-only", "prod-ch", _set(_transfer_options(True), "overwriteWhen", "DIFFERENT"), "is DIFFERENT"),
    ("transfer-copy-only", "prod-ch", _drop(_transfer_options(False), "overwriteWhen"), "unset (STS then overwrites"),
    (
        "transfer-copy-only",
        "prod-ch",
        _set(_transfer_options(False), "deleteObjectsUniqueInSink", True),
        "deleteObjectsUniqueInSink is true",
    ),
    (
        "transfer-copy-only",
        "prod-ch",
        _set(_transfer_options(True), "deleteObjectsFromSourceAfterTransfer", True),
        "deletes every backup object from the source",
    ),
    ("backup-bucket-survives-region-loss", "dev", _make_regional, "is regional (europe-west3) and nothing copies"),
    ("backup-bucket-survives-region-loss", "prod-ch", _no_copy_at_all, "is regional (europe-west6) and nothing"),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _remove_type(TRANSFER_JOB, lambda r: "eventStream" in r["inputs"]),
        "no event-driven TransferJob",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _set(_event_job, "status", "DISABLED"),
        "no event-driven TransferJob",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _remove_type(TRANSFER_JOB, lambda r: "schedule" in r["inputs"]),
        "no scheduled TransferJob copies it",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _dr_bucket_in("EUROPE-WEST6"),
        "which is in the primary's region europe-west6",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _dr_bucket_in("EUROPE-WEST1"),
        "in europe-west1, not in the DR region europe-west3",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        lambda p: _named_bucket(dr=True)(p)["inputs"]["labels"].update({"svbackups-recent-seconds": "86400"}),
        "has label svbackups-recent-seconds=86400",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        lambda p: _event_job(p)["transferSpec"]["gcsDataSink"].update(bucketName="elsewhere"),
        "gs://elsewhere, a bucket this stack does not declare",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        lambda p: _event_job(p)["transferSpec"].update(objectConditions={"includePrefixes": ["recent/"]}),
        "copies only part of the objects (objectConditions includePrefixes)",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        lambda p: _event_job(p)["transferSpec"]["transferOptions"]["metadataOptions"].update(kmsKey="KMS_KEY_PRESERVE"),
        "losing the region loses the key",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        lambda p: _event_job(p)["eventStream"].update(eventStreamExpirationTime="2027-01-01T00:00:00Z"),
        "stops listening at 2027-01-01T00:00:00Z",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _remove_type("gcp:pubsub/subscription:Subscription"),
        "a subscription this stack does not declare",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _remove_type("gcp:storage/notification:Notification"),
        "no Notification of bucket sv-ch-project-sv-ch-backups sends its new objects",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _set(lambda p: h.one(p, "gcp:storage/notification:Notification")["inputs"], "eventTypes", ["OBJECT_DELETE"]),
        "no Notification of bucket",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _pubsub_grant("topic"),
        "the Cloud Storage service agent may not publish",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _pubsub_grant("subscription"),
        "the Storage Transfer service agent may not read subscription",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _remove_type(
            "gcp:storage/bucketIAMMember:BucketIAMMember", lambda r: r["name"].endswith("-transfer-objectviewer")
        ),
        "the Storage Transfer service agent may not read bucket 'sv-ch-backups'",
    ),
    (
        "backup-bucket-survives-region-loss",
        "prod-ch",
        _remove_type(
            "gcp:storage/bucketIAMMember:BucketIAMMember", lambda r: r["name"].endswith("-dr-transfer-objectcreator")
        ),
        "the Storage Transfer service agent may not create objects in bucket 'sv-ch-backups-dr'",
    ),
    (
        "lifecycle-never-deletes-history",
        "prod-ch",
        _delete_dr_history,
        "(the transfer job 'sv-ch-backups-to-dr",
    ),
]
CASES += REPLICATION_CASES


def _turbo_alert(plan):
    return h.one(plan, "gcp:monitoring/alertPolicy:AlertPolicy", lambda r: r["name"].endswith("-turbo-behind"))


def _turbo_threshold(plan):
    return _turbo_alert(plan)["inputs"]["conditions"][0]["conditionThreshold"]


TURBO_CASES = [
    (
        "dual-region-replication-alert",
        "prod",
        lambda p: h.remove(p, _turbo_alert(p)),
        "no AlertPolicy watches its replication (storage.googleapis.com/replication/turbo_max_delay",
    ),
    (
        "dual-region-replication-alert",
        "prod",
        lambda p: _turbo_threshold(p).update(filter=_turbo_threshold(p)["filter"].replace("sv-prod", "other")),
        "no AlertPolicy watches its replication",
    ),
    ("dual-region-replication-alert", "prod", _set(_turbo_threshold, "thresholdValue", 86400), "above 86400"),
    ("dual-region-replication-alert", "prod", _set(_turbo_threshold, "comparison", "COMPARISON_LT"), "COMPARISON_LT"),
    ("dual-region-replication-alert", "prod", _drop(lambda p: h.bucket(p)["inputs"], "rpo"), "rpo is unset"),
]
CASES += TURBO_CASES


# --- DR stacks (prod-dr, aws-prod-dr): standby CronJobs, the replica check, the read-only restore identity -----


def _replica_check(plan):
    return h.one(plan, "kubernetes:batch/v1:CronJob", lambda r: r["name"].endswith("-replica-check"))


def _restore_grant(label, resource_type="gcp:projects/iAMMember:IAMMember"):
    return lambda plan: h.one(plan, resource_type, lambda r: r["name"].endswith(f"reader-{label}"))


# A DR stack grants its reads on the primary's buckets themselves (components/gcp/backend.py allow_object_reads).
_DR_GRANT = "gcp:storage/bucketIAMMember:BucketIAMMember"


def _label_standby(kind):
    def mutate(plan):
        job = h.cron_job(plan, kind)["inputs"]
        job["metadata"]["labels"]["sv-backups.canton.network/standby"] = "true"
        job["spec"]["suspend"] = True

    return mutate


def _aws_restore_policy(plan):
    return h.one(plan, "aws:iam/rolePolicy:RolePolicy", lambda r: r["name"] == "sv-1-dr-backups-reader-dr-copy")


def _allow_put(plan):
    policy = _aws_restore_policy(plan)["inputs"]
    document = json.loads(policy["policy"])
    document["Statement"][0]["Action"] = ["s3:GetObject", "s3:PutObject"]
    policy["policy"] = json.dumps(document)


DR_CASES = [
    (
        "backup-schedule-max-gap",
        "prod-dr",
        _drop(_cron_spec("postgres"), "suspend"),
        "labelled sv-backups.canton.network/standby (a DR stack's CronJob before failover) but not suspended",
    ),
    ("dr-standby", "prod-dr", lambda p: _replica_check(p)["inputs"]["spec"].update(suspend=True), "is suspended"),
    (
        "dr-standby",
        "prod-dr",
        lambda p: pod_spec(_replica_check(p)["inputs"])["containers"][0]["args"].__setitem__(0, "list-sets"),
        "not check-replica",
    ),
    ("dr-standby", "prod", _label_standby("postgres"), "this is not a DR stack"),
    (
        "dr-restore-read-only",
        "prod-dr",
        lambda p: _restore_grant("dr-copy", _DR_GRANT)(p)["inputs"].update(role="roles/storage.objectCreator"),
        "may only read the backups",
    ),
    (
        "dr-restore-read-only",
        "prod",
        _drop(lambda p: _restore_grant("audit")(p)["inputs"], "condition"),
        "on the whole project",
    ),
    ("dr-restore-read-only", "aws-prod-dr", _allow_put, "allows s3:PutObject"),
]
# The aws-prod-dr cases run with the AWS cases (test_aws_rules.py), the GCP ones here.
CASES += [case for case in DR_CASES if case[1] != "aws-prod-dr"]
# The restore drills' rules on GCP (the AWS cases run with test_aws_rules.py).
CASES += [case for case in DRILL_CASES if case[1] in GCP_STACKS]
# Admission policies and where grants are made, on GCP (the AWS cases run with test_aws_rules.py).
CASES += [case for case in ADMISSION_CASES if not case[1].startswith("aws-")]
# Ordered Postgres snapshot sets on GCP (the AWS cases run with test_aws_rules.py).
CASES += [case for case in SNAPSHOT_CASES if not case[1].startswith("aws-")]
# Every workload hardened and labelled, no password in an env var, on GCP (the AWS cases run with test_aws_rules.py).
CASES += [case for case in HARDENING_CASES if not case[1].startswith("aws-")]


@pytest.mark.parametrize(
    ("rule", "stack", "mutate", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_breaking_one_rule_fails_that_rule_only(plan_copy, rule, stack, mutate, expected):
    plan = h.pin_images(plan_copy(stack))
    mutate(plan)
    found = violated(plan)
    assert set(found) == {rule}, found
    assert any(expected in message for message in found[rule]), found[rule]
    assert all("Fix:" in message for message in found[rule]), found[rule]


def test_every_rule_has_a_breaking_case():
    """GCP stacks here, AWS stacks in test_aws_rules.py (each AWS-applicable rule has an AWS case there)."""
    from .test_aws_rules import CASES as AWS_CASES
    from .test_aws_rules import GCP_ONLY
    from .test_repo_rules import CONFIGURED_CASES  # rules that act only with a policy config property

    assert {p.name for p in POLICIES} == {case[0] for case in CASES + AWS_CASES + CONFIGURED_CASES}
    assert {case[0] for case in CASES} >= GCP_ONLY


def test_resource_messages_name_the_resource(plan_copy):
    plan = h.pin_images(plan_copy("dev"))
    job = h.cron_job(plan, "postgres")
    job["inputs"]["spec"]["schedule"] = "0 */8 * * *"
    (message,) = violated(plan)["backup-schedule-max-gap"]
    assert f"CronJob '{job['name']}'" in message
    assert "sv-backups:schedule.postgres" in message


def test_mandatory_failure_exits_3_and_names_the_rule(plan_copy):
    plan = plan_copy("dev")
    h.one(plan, "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")["inputs"]["deletionPolicy"] = "Delete"
    text, code = run_policy_checks(plan)
    assert code == 3
    assert "FAIL mandatory snapshot-class-retain" in text
    assert "FAILED: 1 mandatory rule(s) violated" in text


def test_advisory_violation_does_not_fail(plan_copy):
    plan = plan_copy("prod")
    h.resources(plan, "gcp:kms/cryptoKey:CryptoKey")[0]["inputs"]["rotationPeriod"] = "31536000s"
    # Not production: the production config would make kms-key-rotation mandatory (test_production_default.py).
    text, code = run_policy_checks(plan, {}, production=False)
    assert code == 0
    assert "WARN advisory  kms-key-rotation" in text


# --- rules that must NOT fire ------------------------------------------------------------------------------


def test_noncurrent_only_delete_rules_keep_history(plan_copy):
    plan = h.pin_images(plan_copy("dev"))
    h.bucket(plan)["inputs"]["lifecycleRules"] += [
        {"action": {"type": "Delete"}, "condition": {"withState": "ARCHIVED", "age": 1}},
        {"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 7}},
        {"action": {"type": "Delete"}, "condition": {"numNewerVersions": 3}},
    ]
    assert violated(plan) == {}


def test_every_4_hours_at_any_minute_passes(plan_copy):
    plan = h.pin_images(plan_copy("dev"))
    schedules = {"postgres": "15 1-23/4 * * *", "cometbft": "0 2-22/4 * * *", "identities": "59 3,7,11,15,19,23 * * *"}
    for kind, schedule in schedules.items():
        h.cron_job(plan, kind)["inputs"]["spec"]["schedule"] = schedule
    assert violated(plan) == {}


def test_values_unknown_during_preview(plan_copy):
    """A key or member created in the same update is unknown during preview: still a configured key, never a
    public member; a schedule that is unknown cannot be judged and becomes a note."""
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    plan = h.pin_images(plan_copy("dev"))
    h.bucket(plan)["inputs"]["encryption"]["defaultKmsKeyName"] = UNKNOWN_STRING_VALUE  # as the engine sends it
    for member in h.resources(plan, "gcp:storage/bucketIAMMember:BucketIAMMember"):
        member["inputs"]["member"] = "[unknown]"  # as plan.json shows it
    h.cron_job(plan, "postgres")["inputs"]["spec"]["schedule"] = UNKNOWN_STRING_VALUE
    verdicts = {v.policy.name: v for v in evaluate(plan, {})}
    assert all(not v.violations for v in verdicts.values()), {k: v.violations for k, v in verdicts.items()}
    assert any("spec.schedule" in note for note in verdicts["backup-schedule-max-gap"].notes)


def test_policy_config_defaults_come_from_the_schemas():
    from engines.policy_check import resolve_config

    resolved = resolve_config(None)
    assert resolved["backup-schedule-max-gap"][1] == {"maxGapHours": 4}
    assert resolved["bucket-immutability"][1] == {"minSoftDeleteDays": 7}


def test_lifecycle_rules_as_provider_outputs(plan_copy):
    """Stack policies also see outputs, where every unset condition reads 0, "" or []: still a live rule."""
    plan = h.pin_images(plan_copy("dev"))
    condition = h.lifecycle_rule(plan, "Delete", "recent/")["condition"]
    condition.update(
        withState="ANY",
        numNewerVersions=0,
        daysSinceNoncurrentTime=0,
        noncurrentTimeBefore="",
        createdBefore="",
        customTimeBefore="",
        daysSinceCustomTime=0,
        matchesSuffixes=[],
        matchesStorageClasses=[],
    )
    assert violated(plan) == {}
    condition["matchesPrefixes"] = []
    assert set(violated(plan)) == {"lifecycle-never-deletes-history"}


def test_delete_rules_below_the_recent_tier_pass_whatever_the_labels_say(plan_copy):
    """The allowlist reads the prefix from the Postgres CronJob's --dest, not from the bucket's labels."""
    plan = h.pin_images(plan_copy("prod"))
    _dest(plan, _bucket_url(plan) + "/sv-1/")
    for rule in _bucket(plan)["lifecycleRules"]:
        if "matchesPrefixes" in rule["condition"]:
            rule["condition"]["matchesPrefixes"] = ["sv-1/" + p for p in rule["condition"]["matchesPrefixes"]]
    _recent_delete(plan)["condition"]["matchesPrefixes"] = ["sv-1/recent/4/", "sv-1/recent/5/"]
    _bucket_labels(plan).update({"svbackups-recent-prefix": "x", "svbackups-historical-prefix": "sv-1_recent_"})
    assert violated(plan) == {}


def test_recent_window_follows_the_derived_prefix(plan_copy):
    """lifecycle-keeps-recent-window finds the recent tier from --dest too: relabelling does not hide a short age."""
    plan = h.pin_images(plan_copy("dev"))
    _bucket_labels(plan)["svbackups-recent-prefix"] = "elsewhere_"
    _recent_delete(plan)["condition"]["age"] = 1
    assert set(violated(plan)) == {"lifecycle-keeps-recent-window"}


def test_cloudsql_may_ignore_only_the_backup_start_time(plan_copy):
    plan = h.pin_images(plan_copy("prod"))
    for instance in h.resources(plan, "gcp:sql/databaseInstance:DatabaseInstance"):
        assert "settings.backupConfiguration.startTime" in instance["options"]["ignoreChanges"]
        instance["options"]["ignoreChanges"] += ["settings.tier"]
        if instance["inputs"]["name"] != SEQUENCER_INSTANCE:
            instance["options"]["ignoreChanges"] += ["settings.databaseFlags[0].name"]
    assert violated(plan) == {}
    # On the IAM-auth instance the flags are what keeps its IAM login working: ignoring any of them is not fine.
    _sequencer_instance(plan)["options"]["ignoreChanges"] += ["settings.databaseFlags[0].name"]
    assert set(violated(plan)) == {"cloudsql-iam-login"}


def test_cloudsql_iam_values_unknown_during_preview(plan_copy):
    """A first deployment knows neither the job's service account email nor the instance's connection name
    during preview: the IAM chain cannot be judged, and nothing is reported as broken."""
    plan = h.pin_images(plan_copy("prod"))
    _proxy(plan)["args"][-1] = "[unknown]"
    account = h.one(
        plan, "kubernetes:core/v1:ServiceAccount", lambda r: r["inputs"]["metadata"]["name"] == "sv-1-postgres-backup"
    )
    account["inputs"]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] = "[unknown]"
    for grant in h.resources(plan, "gcp:projects/iAMMember:IAMMember"):
        grant["inputs"]["member"] = "[unknown]"
    h.one(plan, "gcp:sql/user:User")["inputs"]["name"] = "[unknown]"
    assert violated(plan) == {}


def test_a_proxy_on_its_own_flags_and_query_parameters_passes(plan_copy):
    """The proxy's other spellings of the same settings: short flags, a separate value, per-instance query."""
    plan = h.pin_images(plan_copy("prod"))
    args = _proxy(plan)["args"]
    connection = args[-1]
    rest = [a for a in args[:-1] if not a.startswith(("--port", "--address", "--private-ip", "--auto-iam-authn"))]
    _proxy(plan)["args"] = [*rest, "-i", "-a", "127.0.0.1", f"{connection}?port=15434&private-ip=true"]
    assert violated(plan) == {}


def test_deadlines_whose_sum_fits_the_interval_pass(plan_copy):
    plan = h.pin_images(plan_copy("prod"))
    _cron_spec("postgres")(plan)["startingDeadlineSeconds"] = 1800
    _job_spec("postgres")(plan)["activeDeadlineSeconds"] = 14400 - 1800 - 1
    assert violated(plan) == {}


def test_workload_identity_is_checked_when_the_writer_is_unknown_during_preview(plan_copy):
    """On a first deployment the writer's id is only known after apply: the grant is checked all the same."""
    plan = h.pin_images(plan_copy("dev"))
    grant = _workload_identity("postgres")(plan)
    default_ksa = _ksa_member(plan, "default")
    grant["serviceAccountId"] = "[unknown]"
    assert violated(plan) == {}
    grant["member"] = default_ksa
    assert set(violated(plan)) == {"workload-identity-backup-ksa"}


def test_workload_identity_ignores_accounts_that_are_not_backup_writers(plan_copy):
    plan = h.pin_images(plan_copy("dev"))
    h.add(
        plan,
        "gcp:serviceaccount/iAMMember:IAMMember",
        "monitoring-wi",
        {
            "serviceAccountId": "projects/p/serviceAccounts/monitoring@p.iam.gserviceaccount.com",
            "role": "roles/iam.workloadIdentityUser",
            "member": "serviceAccount:p.svc.id.goog[monitoring/default]",
        },
    )
    assert violated(plan) == {}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: (b.pop("customPlacementConfig"), b.pop("rpo")),  # the EU multi-region itself
        # a predefined dual-region: turbo replication applies to it too (dual-region-replication-alert)
        lambda b: (b.pop("customPlacementConfig"), b.update(location="EUR4")),
    ],
    ids=["multi-region", "predefined-dual-region"],
)
def test_buckets_that_replicate_themselves_need_no_copy(plan_copy, mutate):
    plan = h.pin_images(plan_copy("dev"))
    mutate(_bucket(plan))
    assert violated(plan) == {}


def test_a_disabled_replication_alert_does_not_count(plan_copy):
    plan = h.pin_images(plan_copy("prod"))
    _turbo_alert(plan)["inputs"].update(enabled=False)
    (message,) = violated(plan)["dual-region-replication-alert"]
    assert "is disabled (enabled: false)" in message and "Fix:" in message
    # a tighter bound in the policy config: the 1 h alert no longer fits 30 min
    plan = h.pin_images(plan_copy("prod"))
    found = violated(plan, {"dual-region-replication-alert": {"maxLagSeconds": 1800}})
    assert set(found) == {"dual-region-replication-alert"}
    assert "at most 1800 s (maxLagSeconds)" in found["dual-region-replication-alert"][0]


@pytest.mark.parametrize(("stack", "mandatory"), [("prod", True), ("prod-ch", True), ("dev", False)])
def test_a_silent_alert_is_one_rule_mandatory_on_production_stacks_only(plan_copy, stack, mandatory):
    """The dual-region replication alert (prod) or a backup alert (dev) that notifies nobody: only
    alert-notification-channels reports it, with the fix that applies; the stack's policy config makes it
    mandatory on production stacks, advisory elsewhere."""
    plan = h.pin_images(plan_copy(stack))
    alert = _turbo_alert(plan) if stack == "prod" else h.alert(plan, "postgres", "failed")
    alert["inputs"]["notificationChannels"] = []
    found = violated(plan)
    assert set(found) == {"alert-notification-channels"}, found
    (message,) = found["alert-notification-channels"]
    assert f"AlertPolicy '{alert['name']}'" in message
    assert "Fix: set sv-backups:monitoring.notificationChannels or notificationEmails" in message
    text, code = run_policy_checks(plan)  # the stack's own policy/config/<stack>.json
    if mandatory:
        assert code == 3 and "FAIL mandatory alert-notification-channels" in text, text
    else:
        assert code == 0 and "WARN advisory  alert-notification-channels" in text, text


def test_a_second_event_driven_copy_into_an_undeclared_bucket_fails_even_beside_a_good_one(plan_copy):
    import copy

    plan = h.pin_images(plan_copy("prod-ch"))
    extra = copy.deepcopy(_transfer(event=True)(plan))
    extra["urn"] += "-second"
    extra["name"] += "-second"
    extra["inputs"]["transferSpec"]["gcsDataSink"]["bucketName"] = "elsewhere"
    plan["resources"].append(extra)
    found = violated(plan)
    assert set(found) == {"backup-bucket-survives-region-loss"}
    assert "sv-ch-backups-to-dr-second" in found["backup-bucket-survives-region-loss"][0]


def test_a_passfile_path_is_no_password_and_a_literal_password_is_never_printed(plan_copy):
    plan = h.pin_images(plan_copy("dev"))
    h.container(plan, "postgres", "apps")["env"].append({"name": "PGPASSFILE", "value": "/run/pgpass/file"})
    assert violated(plan) == {}
    h.container(plan, "postgres", "apps")["env"].append({"name": "PGPASSWORD", "value": "hunter2"})
    (message,) = violated(plan)["no-password-env"]
    assert "PGPASSWORD to a literal value" in message and "hunter2" not in message
