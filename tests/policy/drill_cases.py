"""Ways of breaking the restore-drill rules (policy/drill_rules.py, coverage_rules.py), on both clouds:
(rule, stack, mutation, text the message must contain). test_rules.py runs the GCP ones, test_aws_rules.py the
AWS ones; each must break exactly its rule."""

from __future__ import annotations

from policy.props import drill_component, pod_spec
from tests.stackfiles import Example

from . import helpers as h

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")

CRON_JOB = "kubernetes:batch/v1:CronJob"
K8S_SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"


def drill(plan: dict, component: str) -> dict:
    return h.one(plan, CRON_JOB, lambda r: drill_component(r["inputs"]) == component)


def drill_pod(plan: dict, component: str) -> dict:
    return pod_spec(drill(plan, component)["inputs"])


def _runs_as(component: str, service_account: str):
    def mutate(plan):
        drill_pod(plan, component)["serviceAccountName"] = service_account

    return mutate


def _runs_as_new_account(annotation: str, identity: str):
    """The identities drill runs as a new ServiceAccount acting as another (writer) identity."""

    def mutate(plan):
        h.add(
            plan,
            K8S_SERVICE_ACCOUNT,
            "sv-1-drill-other-sa",
            {
                "metadata": {"name": "sv-1-drill-other", "namespace": "sv", "annotations": {annotation: identity}},
                "automountServiceAccountToken": False,
            },
        )
        drill_pod(plan, "drill-identities")["serviceAccountName"] = "sv-1-drill-other"

    return mutate


def _scratch_volume(plan: dict) -> dict:
    [volume] = [v for v in drill_pod(plan, "drill-postgres")["volumes"] if v["name"] == "scratch"]
    return volume


def _scratch_on_node_disk(plan):
    volume = _scratch_volume(plan)
    volume.pop("ephemeral")
    volume["emptyDir"] = {}


def _scratch_without_size(plan):
    _scratch_volume(plan)["ephemeral"]["volumeClaimTemplate"]["spec"].pop("resources")


def _scratch_not_mounted(plan):
    [container] = drill_pod(plan, "drill-postgres")["containers"]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "scratch"]


def _token_for(component: str):
    def mutate(plan):
        drill_pod(plan, component)["automountServiceAccountToken"] = True

    return mutate


def _snapshots_role_lists(plan):
    """The snapshot sets' drill may get VolumeSnapshots, never list them (or anything beyond its job's calls)."""
    role = h.one(plan, ROLE, lambda r: r["name"].endswith("-drill-postgres-snapshots-role"))
    role["inputs"]["rules"][0]["verbs"].append("list")
    # delete, not patch: a patch on contents is admission-bounds-rbac's to catch as well (one rule per case)
    role["inputs"]["rules"].append({"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotcontents"],
                                    "verbs": ["delete"]})  # fmt: skip


def _snapshots_pods_as(account: str):
    """The pods the snapshot sets' drill creates run as another account than the restore identity's."""

    def mutate(plan):
        [container] = drill_pod(plan, "drill-postgres-snapshots")["containers"]
        args = container["args"]
        args[args.index("--service-account") + 1] = account

    return mutate


def _snapshots_account_with_identity(annotation: str, identity: str):
    def mutate(plan):
        account = h.one(plan, K8S_SERVICE_ACCOUNT, lambda r: r["name"] == "sv-1-drill-postgres-snapshots-sa")
        account["inputs"]["metadata"]["annotations"] = {annotation: identity}

    return mutate


def _role_grants(plan):
    role = h.one(plan, ROLE, lambda r: r["name"].endswith("-drill-cometbft-role"))
    role["inputs"]["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    role["inputs"]["rules"][2]["verbs"].append("patch")


def _cometbft_account_with_identity(annotation: str, identity: str):
    def mutate(plan):
        account = h.one(plan, K8S_SERVICE_ACCOUNT, lambda r: r["name"] == "sv-1-drill-cometbft-sa")
        account["inputs"]["metadata"]["annotations"] = {annotation: identity}

    return mutate


def _remove_drill(component: str):
    return lambda plan: h.remove(plan, drill(plan, component))


def _remove_gcp_alert(kind: str, alert_type: str):
    return lambda plan: h.remove(plan, h.alert(plan, kind, alert_type))


GKE = "iam.gke.io/gcp-service-account"
IRSA = "eks.amazonaws.com/role-arn"
AWS_WRITER = "arn:aws:iam::123456789012:role/sv-backups/sv-1/jobs/sv-1-pg-backup"
AWS_RESTORE = "arn:aws:iam::123456789012:role/sv-backups/sv-1/jobs/sv-1-restore"

DRILL_CASES = [
    # drill-read-only
    ("drill-read-only", "prod", _runs_as("drill-postgres", "sv-1-postgres-backup"), "which a backup CronJob runs as"),
    (
        "drill-read-only",
        "prod",
        _runs_as_new_account(GKE, f"sv-1-pg-backup@{EX.project}.iam.gserviceaccount.com"),
        "acts as 'sv-1-pg-backup'",
    ),
    ("drill-read-only", "aws-prod", _runs_as("drill-identities", "sv-1-identities-dump"), "which a backup CronJob"),
    ("drill-read-only", "aws-prod", _runs_as_new_account(IRSA, AWS_WRITER), "not a restore identity"),
    # drill-scratch-ephemeral
    ("drill-scratch-ephemeral", "prod", _scratch_on_node_disk, "(emptyDir), not a generic ephemeral volume"),
    ("drill-scratch-ephemeral", "dev", _scratch_without_size, "not a generic ephemeral volume with a size"),
    ("drill-scratch-ephemeral", "aws-prod", _scratch_not_mounted, "on the container's read-only root filesystem"),
    # drill-least-privilege
    ("drill-least-privilege", "prod", _token_for("drill-identities"), "automountServiceAccountToken is True"),
    ("drill-least-privilege", "dev", _role_grants, "patch on pods; get on secrets"),
    (
        "drill-least-privilege",
        "prod",
        _cometbft_account_with_identity(GKE, f"sv-1-restore@{EX.project}.iam.gserviceaccount.com"),
        "acts as cloud identity 'sv-1-restore' too",
    ),
    ("drill-least-privilege", "aws-prod", _token_for("drill-postgres"), "automountServiceAccountToken is True"),
    ("drill-least-privilege", "aws-prod", _role_grants, "patch on pods; get on secrets"),
    ("drill-least-privilege", "prod", _snapshots_role_lists, "list on snapshot.storage.k8s.io/volumesnapshots"),
    ("drill-least-privilege", "aws-prod", _snapshots_role_lists, "delete on snapshot.storage.k8s.io/volumesnapshotc"),
    (
        "drill-least-privilege",
        "aws-prod",
        _snapshots_account_with_identity(IRSA, AWS_RESTORE),
        "acts as cloud identity",
    ),
    # the snapshot sets' drill creates pods that read the store: as the restore identity, never a writer
    ("drill-read-only", "prod", _snapshots_pods_as("sv-1-postgres-snapshot"), "which a backup CronJob runs as"),
    ("drill-read-only", "aws-prod", _snapshots_pods_as("sv-1-postgres-backup"), "the pods it creates (pick, scratch)"),
    # restore-drill-coverage, and the drills' alerts
    ("restore-drill-coverage", "prod", _remove_drill("drill-cometbft"), "nothing restores the cometbft backups"),
    ("restore-drill-coverage", "aws-dev", _remove_drill("drill-postgres"), "nothing restores the postgres backups"),
    (
        "restore-drill-coverage",
        "prod",
        _remove_drill("drill-postgres-snapshots"),
        "nothing restores the postgres-snapshots backups",
    ),
    (
        "restore-drill-coverage",
        "aws-prod",
        _remove_drill("drill-postgres-snapshots"),
        "drill-postgres-snapshots",
    ),
    (
        "alerts-per-backup-kind",
        "prod",
        _remove_gcp_alert("drill-postgres", "stale"),
        "svbackups-kind=drill-postgres, svbackups-alert=stale",
    ),
    (
        "alerts-per-backup-kind",
        "prod",
        _remove_gcp_alert("drill-postgres-snapshots", "failed"),
        "svbackups-kind=drill-postgres-snapshots, svbackups-alert=failed",
    ),
]
GCP_STACKS = ("dev", "prod", "prod-ch")
