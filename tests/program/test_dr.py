"""The DR stack through the mock engine, its StackReference answered from the primary's own offline plan."""

from __future__ import annotations

import copy
import json

import pytest

from components.dr import PRIMARY_OUTPUTS
from rules.naming import STANDBY_LABEL
from tests.program.conftest import plan_config_file
from tests.stackfiles import Example

# The example stack these tests plan: its values are read from its file, not copied here, so that editing the
# example keeps the suite passing (README "The stacks in stacks/ are examples").
EX = Example("prod")

BACKUP_COMPONENTS = ("postgres-backup", "cometbft-snapshot", "identities-dump")


def cron_jobs(plan) -> dict[str, dict]:
    return {r["inputs"]["metadata"]["labels"]["app.kubernetes.io/component"]: r for r in plan.of_type(CRON_JOB)}


CRON_JOB = "kubernetes:batch/v1:CronJob"


@pytest.fixture
def dr_config(stack_config_map):
    return stack_config_map("prod-dr")


@pytest.fixture
def references(prod_plan):
    return {"sv-operator/sv-backups/prod": prod_plan.outputs}


def test_the_primary_exports_everything_a_dr_stack_reads(prod_plan, dev_plan):
    for plan in (prod_plan, dev_plan):
        assert set(PRIMARY_OUTPUTS) <= set(plan.outputs)
    # A dual-region bucket and a replicated Secret Manager secret are their own DR copies.
    assert prod_plan.outputs["drBackupUrl"] == prod_plan.outputs["backupUrl"]
    assert prod_plan.outputs["drIdentitiesSecretUrl"] == prod_plan.outputs["identitiesSecretUrl"]


def test_dr_stack_reads_the_primary_through_a_stack_reference(shipped_plan, prod_plan):
    plan = shipped_plan("prod-dr")
    [reference] = plan.of_type("pulumi:pulumi:StackReference")
    assert reference["inputs"]["name"] == "sv-operator/sv-backups/prod"
    [check] = [job for job in plan.of_type(CRON_JOB) if job["name"] == "sv-1-dr-replica-check"]
    args = check["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    primary = prod_plan.outputs
    assert args == [
        "check-replica",
        primary["backupUrl"],
        primary["drBackupUrl"],
        "--max-lag",
        "1h",
        "--secret-src",
        primary["identitiesSecretUrl"],
        "--secret-dst",
        primary["drIdentitiesSecretUrl"],
        "--recent-retention",
        "14d",
    ]
    assert plan.outputs["standby"] is True and plan.outputs["primaryStack"] == "sv-operator/sv-backups/prod"


def test_dr_stack_declares_nothing_in_the_primary_region(shipped_plan):
    """It must deploy while the primary region is down: no resource of it names the primary region."""
    plan = shipped_plan("prod-dr")
    text = json.dumps(plan.resources)
    assert "us-central1" not in text
    assert not plan.of_type("gcp:storage/bucket:Bucket") and not plan.of_type("gcp:secretmanager/secret:Secret")


def test_standby_cron_jobs_are_suspended_and_labelled_the_check_runs(shipped_plan):
    jobs = cron_jobs(shipped_plan("prod-dr"))
    for component in BACKUP_COMPONENTS:
        job = jobs[component]["inputs"]
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"][STANDBY_LABEL] == "true"
    check = jobs["replica-check"]["inputs"]
    assert "suspend" not in check["spec"] and STANDBY_LABEL not in check["metadata"]["labels"]


def test_failover_starts_the_backups_and_their_alerts(offline_plan, dr_config, references):
    dr_config["sv-backups:dr"]["failover"] = True
    plan = offline_plan(dr_config, stack="prod-dr", stack_references=references)
    jobs = cron_jobs(plan)
    for component in BACKUP_COMPONENTS:
        job = jobs[component]["inputs"]
        assert "suspend" not in job["spec"] and STANDBY_LABEL not in job["metadata"]["labels"]
    kinds = {
        p["inputs"]["userLabels"]["svbackups-kind"] for p in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    }
    # After failover the DR stack is the primary: it audits and drills its store as the primary did.
    assert kinds == {
        "postgres", "cometbft", "identities", "replica", "history", "drill-postgres", "drill-cometbft",
        "drill-identities",
    }  # fmt: skip
    assert {"history-audit", "drill-postgres", "drill-cometbft", "drill-identities"} <= set(jobs)
    audit = jobs["history-audit"]["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert audit["args"][1] == plan.outputs["backupUrl"]  # the DR copy, which now takes the sets
    assert plan.outputs["standby"] is False


def test_a_standby_dr_stack_neither_audits_nor_drills(shipped_plan):
    jobs = cron_jobs(shipped_plan("prod-dr"))
    assert not {"history-audit", "drill-postgres", "drill-cometbft", "drill-identities"} & set(jobs)


def test_standby_alerts_on_replication_only(shipped_plan):
    policies = shipped_plan("prod-dr").of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    labels = sorted(
        (p["inputs"]["userLabels"]["svbackups-kind"], p["inputs"]["userLabels"]["svbackups-alert"]) for p in policies
    )
    assert labels == [("replica", "failed"), ("replica", "stale")]
    [stale] = [p for p in policies if p["inputs"]["userLabels"]["svbackups-alert"] == "stale"]
    # check every 30 min: largest gap 30 min + start window 3 min + deadline 24 min + the 1 h lag bound
    assert stale["inputs"]["conditions"][0]["conditionAbsent"]["duration"] == f"{(30 + 3 + 24 + 60) * 60}s"


def test_the_restore_identity_reads_and_never_writes(shipped_plan, prod_plan):
    """Granted where each resource lives: on the primary's buckets (by the names it exports) and on its secret (by
    its full id), never in the DR stack's project IAM policy, which grants nothing on another project's bucket."""
    plan = shipped_plan("prod-dr")
    reader = f"serviceAccount:sv-1-dr-restore@{EX.project}.iam.gserviceaccount.com"
    grants = [
        (
            r["type"],
            r["inputs"]["role"],
            r["inputs"].get("bucket") or r["inputs"].get("secretId"),
            r["inputs"].get("project"),
        )
        for r in plan.resources
        if r["inputs"].get("member") == reader
    ]
    primary = prod_plan.outputs
    bucket_member = "gcp:storage/bucketIAMMember:BucketIAMMember"
    secret_member = "gcp:secretmanager/secretIamMember:SecretIamMember"
    assert sorted(grants, key=repr) == sorted(
        [
            (bucket_member, "roles/storage.objectViewer", primary["drBackupBucket"], None),
            (bucket_member, "roles/storage.objectViewer", primary["backupBucket"], None),
            (secret_member, "roles/secretmanager.secretAccessor", primary["drIdentitiesSecret"], None),
            (secret_member, "roles/secretmanager.secretAccessor", primary["identitiesSecret"], None),
        ],
        key=repr,
    )


def test_a_dr_stack_in_its_own_project_is_granted_on_the_primarys_resources(tmp_path, dr_config, prod_plan):
    """A separate DR project, as an operator writes it: its reads still name the primary's bucket and secret, and
    the plan passes every mandatory rule (gcp-reader-grant-where-resource-lives among them)."""
    dr_config["gcp:project"] = "sv-dr-project"
    dr_config["kubernetes:context"] = "gke_sv-dr-project_us-east4_sv-1-dr"
    done = plan_config_file(tmp_path, "prod-dr", dr_config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS mandatory gcp-reader-grant-where-resource-lives" in done.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    reader = "serviceAccount:sv-1-dr-restore@sv-dr-project.iam.gserviceaccount.com"
    grants = {
        (r["type"].rsplit(":", 1)[-1], r["inputs"].get("bucket") or r["inputs"].get("secretId"))
        for r in plan["resources"]
        if r["inputs"].get("member") == reader
    }
    primary = prod_plan.outputs
    assert grants == {
        ("BucketIAMMember", primary["drBackupBucket"]),
        ("BucketIAMMember", primary["backupBucket"]),
        ("SecretIamMember", primary["drIdentitiesSecret"]),
        ("SecretIamMember", primary["identitiesSecret"]),
    }
    assert primary["identitiesSecret"].startswith("projects/sv-prod-project/secrets/")
    assert not [r for r in plan["resources"] if r["type"] == "gcp:projects/iAMMember:IAMMember"
                and r["inputs"].get("member") == reader]  # fmt: skip


def test_standby_writers_write_to_the_dr_copy(shipped_plan, prod_plan):
    jobs = cron_jobs(shipped_plan("prod-dr"))
    seal = jobs["postgres-backup"]["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert seal["args"][seal["args"].index("--dest") + 1] == prod_plan.outputs["drBackupUrl"]
    identities = jobs["identities-dump"]["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert identities["args"][identities["args"].index("--secret") + 1] == prod_plan.outputs["drIdentitiesSecretUrl"]


def test_a_dr_stack_without_its_primary_outputs_is_refused_with_the_way_out(tmp_path, dr_config):
    dr_config["sv-backups:dr"]["primaryStack"] = "sv-operator/sv-backups/nowhere"
    done = plan_config_file(tmp_path, "nowhere-dr", dr_config)
    assert done.returncode == 2, done.stderr
    assert "primary 'sv-operator/sv-backups/nowhere' has no stack file" in done.stderr
    assert "pass --primary-plan DIR" in done.stderr


@pytest.mark.parametrize(("key", "value"), [("name", "sv-2"), ("namespace", "sv-other"), ("migrationId", 5)], ids=str)
def test_a_dr_stack_of_another_node_is_refused_before_anything_is_declared(tmp_path, dr_config, key, value):
    """Planned against the shipped primary: one message naming the key, both values and the fix; exit 2."""
    dr_config["sv-backups:node"][key] = value
    done = plan_config_file(tmp_path, "prod-dr", dr_config)
    assert done.returncode == 2, done.stderr
    header, *problems = done.stderr.splitlines()
    assert header == "plan: DR stack 'prod-dr' does not match its primary; nothing was declared:"
    primary_value = {"name": "sv-1", "namespace": "sv", "migrationId": 4}[key]
    assert problems == [
        f"sv-backups:node.{key}: {value!r} differs from the primary stack sv-operator/sv-backups/prod's "
        f"{primary_value!r}; a DR stack restores its primary's node: set {key}: {primary_value!r}"
    ]


def test_the_program_refuses_a_dr_stack_of_another_node_on_pulumi_up(offline_plan, dr_config, references):
    """`pulumi up` has no offline pre-check: the program itself fails on the StackReference's `node`."""
    dr_config["sv-backups:node"]["migrationId"] = 5
    with pytest.raises(Exception, match=r"sv-backups:node.migrationId: 5 differs from the primary stack"):
        offline_plan(dr_config, stack="prod-dr", stack_references=references)


# --- AWS ---------------------------------------------------------------------------------------------------

READ_ACTIONS = {
    "s3:GetObject",
    "s3:ListBucket",
    "kms:Decrypt",
    "secretsmanager:GetSecretValue",
    "secretsmanager:ListSecretVersionIds",
}


def test_aws_dr_stack_restores_from_the_replica_bucket_and_secret(shipped_plan):
    primary, plan = shipped_plan("aws-prod").outputs, shipped_plan("aws-prod-dr")
    assert primary["drBackupUrl"] == "s3://123456789012-sv-1-backups-us-west-2"
    assert primary["drIdentitiesSecretUrl"] == "awssm://us-west-2/sv-1-identities-dump"
    assert primary["drIdentitiesSecret"].startswith("arn:aws:secretsmanager:us-west-2:")
    jobs = cron_jobs(plan)
    seal = jobs["postgres-backup"]["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert seal["args"][seal["args"].index("--dest") + 1] == primary["drBackupUrl"]
    for component in BACKUP_COMPONENTS:
        assert jobs[component]["inputs"]["spec"]["suspend"] is True
    # The DR stack's snapshots stay in its own region: no copy flags.
    snapshot = jobs["cometbft-snapshot"]["inputs"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "--copy-to-region" not in snapshot["args"]


def test_aws_restore_role_only_reads(shipped_plan):
    plan = shipped_plan("aws-prod-dr")
    policies = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r["inputs"]["role"] == "sv-1-dr-restore"]
    assert sorted(p["name"] for p in policies) == [
        "sv-1-dr-backups-reader-dr-copy",
        "sv-1-dr-backups-reader-primary",
        "sv-1-dr-identities-dump-reader-dr-copy",
        "sv-1-dr-identities-dump-reader-primary",
    ]
    granted = set()
    for policy in policies:
        for statement in json.loads(policy["inputs"]["policy"])["Statement"]:
            assert statement["Effect"] == "Allow"
            granted |= {statement["Action"]} if isinstance(statement["Action"], str) else set(statement["Action"])
    assert granted == READ_ACTIONS
    [role] = [r for r in plan.of_type("aws:iam/role:Role") if r["inputs"]["name"] == "sv-1-dr-restore"]
    # Under the node's job path: the primary's bucket policy (deny destructive actions to the node's job roles)
    # and its secret policy (read only by the restore roles, this one included by name) both cover it.
    assert role["inputs"]["path"] == "/sv-backups/sv-1/jobs/"


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ("prod-dr", f"gcloud compute snapshots list --project={EX.project}"),
        ("aws-prod-dr", "aws ec2 describe-snapshots --region us-west-2"),
    ],
)
def test_failover_needs_no_flag_beyond_the_dr_stacks_outputs(shipped_plan, tmp_path, capsys, stack, expected):
    """scripts/failover.py on the DR stack's own (planned) outputs: where the CometBFT snapshot copies are comes
    from the stack, so neither --snapshot-project nor --region is needed; the flags still win."""
    from datetime import UTC, datetime, timedelta

    from jobs.destinations import open_destination
    from scripts import failover
    from tests.jobs.replica_helpers import write_set

    outputs = copy.deepcopy(shipped_plan(stack).outputs)  # the cached plan is shared: never mutate it
    assert outputs["cloud"] == ("gcp" if stack == "prod-dr" else "aws")
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    dr_copy = f"file://{tmp_path}/dr"
    write_set(open_destination(dr_copy), "s-1", datetime.now(UTC) - timedelta(hours=1), migration_id=4)
    flags = ["--dr-stack-outputs", str(tmp_path / "outputs.json"), "--dr-url", dr_copy]
    if stack == "aws-prod-dr":
        flags += ["--cometbft-storage-class", "gp3"]  # EKS has no standard class name: the one fact not exported
    capsys.readouterr()
    assert failover.main(flags) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert expected in out
    assert '"driver": "' + ("pd.csi.storage.gke.io" if stack == "prod-dr" else "ebs.csi.aws.com") + '"' in out
    assert EX.cometbft_pvc in out
    override = ["--snapshot-project", "other-project"] if stack == "prod-dr" else ["--region", "eu-west-1"]
    assert failover.main(flags + override) == 0
    out = capsys.readouterr().out
    assert expected not in out and override[1] in out
    # Without the exported fact (an older DR stack) the script names the output and the flag.
    del outputs["cometbft"]["snapshotProject" if stack == "prod-dr" else "snapshotRegion"]
    if stack == "aws-prod-dr":
        del outputs["region"]
    else:
        outputs.pop("project", None)
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    assert failover.main(flags) == 2
    assert f"--{override[0].lstrip('-')}" in capsys.readouterr().err


def test_failover_reads_the_dr_stacks_offline_plan_json(shipped_plan, tmp_path):
    from jobs.failover import load_outputs

    plan = {"project": "sv-backups", "stack": "prod-dr", "resources": [], "outputs": shipped_plan("prod-dr").outputs}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    outputs = load_outputs(dr_stack_outputs=tmp_path / "plan.json", dr_stack=None)
    assert outputs["cometbft"]["snapshotProject"] == EX.project
