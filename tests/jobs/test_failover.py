"""scripts/failover.py: the DR facts, the choice of the set, and the printed commands, several of them run for
real: the AWS snapshot lookup and secret fetch with the AWS CLI against moto, the passfile lines with bash, the
manifests against the official schemas. (The end-to-end restore is tests/jobs/test_failover_e2e.py.)"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from jobs.destinations import open_destination
from jobs.failover import choose_set
from jobs.failover_plan import build_plan, resolve_facts, snapshot_query
from scripts import failover
from tests.jobs.replica_helpers import write_set

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
CRD_SCHEMAS = {
    "VolumeSnapshot": SCHEMAS / "volumesnapshot.v1.json",
    "VolumeSnapshotContent": SCHEMAS / "volumesnapshotcontent.v1.json",
}
AWS_CLI = shutil.which("aws")
NOW = datetime.now(UTC)


@pytest.fixture
def dr(tmp_path):
    """A DR copy with two complete sets of migration id 4 (and one of id 3), and the DR stack's outputs."""
    url = f"file://{tmp_path}/dr"
    dest = open_destination(url)
    write_set(dest, "s-older", NOW - timedelta(hours=8), migration_id=4)
    write_set(dest, "s-newest", NOW - timedelta(hours=4), migration_id=4)
    write_set(dest, "s-other-migration", NOW - timedelta(hours=1), migration_id=3)
    outputs = {
        "node": {"name": "sv-1", "namespace": "sv", "migrationId": 4},
        "backupUrl": url,
        "cloud": "aws",
        "region": "us-west-2",
        "identitiesSecretUrl": "awssm://us-west-2/sv-1/identities-dump",
        "cometbft": {"storageClass": "ebs-gp3"},
        "stack": "org/sv-backups/prod-dr",
        "kubeContext": "gke_sv-dr_us-west2_sv",
        "restoreServiceAccount": "sv-1-restore",
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return url, dest, outputs, path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = failover.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def plan_for(outputs: dict, **flags):
    facts = resolve_facts(outputs, flags)
    chosen = choose_set(facts, flags.get("set_id"))
    return facts, chosen, build_plan(facts, chosen)


def test_plan_picks_the_newest_verified_set_of_the_migration_and_orders_the_steps(dr, capsys):
    url, _, _, outputs_file = dr
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file))
    assert code == 0, err
    headers = [line for line in out.splitlines() if line.startswith("# ") and line[2].isdigit()]
    assert [h.split(". ", 1)[1].split(" (")[0].split(" from")[0] for h in headers] == [
        "Check the set",
        "Scale every SV component to 0 and wait until their pods are gone",
        "Restore every database",
        "Restore the CometBFT volume",
        "Fetch the newest identities dump",
        "Scale every SV component back to 1",
        "Turn the DR stack's backup CronJobs on",
    ]
    assert f"python -m jobs verify-set {url}/recent/4/s-newest" in out
    assert (
        "kubectl --context gke_sv-dr_us-west2_sv -n sv scale deployment --replicas=0 global-domain-4-cometbft "
        "global-domain-4-mediator "
        "global-domain-4-sequencer participant scan-app sv-app validator-app"
    ) in out
    assert (
        f"python -m jobs restore-set {url}/recent/4/s-newest --db apps=postgresql://cnadmin@apps-pg:5432/cantonnet_sv "
        "--db participant=postgresql://cnadmin@participant-pg:5432/participant_0"
    ) in out
    assert "pulumi config set --stack org/sv-backups/prod-dr --path sv-backups:dr.failover true" in out
    assert "verifying" in err and "s-other-migration" not in out
    assert "(run as ServiceAccount sv-1-restore)" in out


def test_manifests_are_valid_against_the_official_schemas(dr):
    _, _, outputs, _ = dr
    _, _, steps = plan_for(outputs)
    (cometbft,) = [s for s in steps if s.manifests]
    kinds = [m["kind"] for m in cometbft.manifests]
    assert kinds == ["VolumeSnapshotContent", "VolumeSnapshot", "PersistentVolumeClaim"]
    content, snapshot, claim = json.loads(
        json.dumps(cometbft.manifests).replace("$HANDLE", "snap-0123456789abcdef0").replace("$SIZE", "2000Gi")
    )
    for manifest in (content, snapshot):
        jsonschema.validate(manifest, json.loads(CRD_SCHEMAS[manifest["kind"]].read_text()))
    kubernetes_validate.validate(claim, kubernetes_validate.latest_version(), strict=True)
    # The import binds both ways, keeps the disk snapshot, and the claim comes from it under the release's name.
    assert content["spec"]["volumeSnapshotRef"] == {"name": snapshot["metadata"]["name"], "namespace": "sv"}
    assert snapshot["spec"]["source"] == {"volumeSnapshotContentName": content["metadata"]["name"]}
    assert content["spec"]["deletionPolicy"] == "Retain" and content["spec"]["driver"] == "ebs.csi.aws.com"
    assert claim["metadata"]["name"] == "global-domain-4-cometbft-cometbft-data"
    assert claim["spec"]["dataSource"]["name"] == snapshot["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == "ebs-gp3"
    assert claim["metadata"]["annotations"]["meta.helm.sh/release-name"] == "global-domain-4-cometbft"
    broken = {**content, "spec": {**content["spec"], "source": {}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(CRD_SCHEMAS["VolumeSnapshotContent"].read_text()))


def test_a_set_that_does_not_verify_is_skipped_and_a_named_one_fails(dr, capsys):
    url, dest, _, outputs_file = dr
    dump = next(i.key for i in dest.list("recent/4/s-newest/data/"))
    path = Path(url.removeprefix("file://")) / dump
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))  # bit rot in the DR copy, same size
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file))
    assert code == 0
    assert "recent/4/s-newest does not verify: " in err and "sha256 differs" in err
    assert f"{url}/recent/4/s-older" in out and "s-newest" not in out
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--set-id", "s-newest")
    assert code == 1 and out == "" and "none of the 1 complete set(s)" in err
    code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--migration-id", "7")
    assert code == 1 and "no complete set in" in err and "(migration id 7, dump and snapshot sets)" in err


def test_bad_facts_and_flags_get_one_line_each(dr, capsys, tmp_path):
    _, _, outputs, outputs_file = dr
    broken = {**outputs, "node": {"name": "sv-1", "migrationId": "four"}, "cloud": "azure"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    code, out, err = run(
        capsys,
        "--dr-stack-outputs",
        str(tmp_path / "broken.json"),
        "--pg",
        "apps=postgresql://cnadmin:hunter2@apps-pg:5432",
        "--pg",
        "participant=postgresql://cnadmin@participant-pg:5432/participant_4",
    )
    assert code == 2 and out == ""
    assert "failover: node.namespace: missing (pass --namespace or export it from the DR stack)" in err
    assert "DR stack output node.migrationId: expected an integer, got 'four'" in err
    assert "cloud: 'azure' is not one of gcp, aws" in err
    assert "apps: the server URL carries a password" in err and "hunter2" not in err.split("carries")[1]
    assert "participant: give the server only" in err
    code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--execute")
    assert code == 2 and "pass --pg ROLE=URL for apps, participant" in err
    code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--identities-out", "x")
    assert code == 2 and "--identities-out needs --execute" in err
    code, _, err = run(capsys, "--dr-stack", "org/sv-backups/prod-dr", "--dr-stack-outputs", str(outputs_file))
    assert code == 2 and "not allowed with argument" in err


def test_gcp_plan_looks_snapshots_up_in_the_project(dr, capsys, tmp_path):
    _, _, outputs, _ = dr
    gcp = {
        **outputs,
        "cloud": "gcp",
        "project": "sv-prod",
        "identitiesSecretUrl": "gcpsm://projects/sv-prod/secrets/sv-1-identities-dump",
        "cometbft": {},
    }
    (tmp_path / "gcp.json").write_text(json.dumps(gcp))
    code, out, err = run(capsys, "--dr-stack-outputs", str(tmp_path / "gcp.json"))
    assert code == 0, err
    assert "gcloud compute snapshots list --project=sv-prod" in out
    assert 'HANDLE="projects/sv-prod/global/snapshots/$NAME"' in out
    assert '"driver": "pd.csi.storage.gke.io"' in out and '"storageClassName": "premium-rwo"' in out
    assert (
        "gcloud secrets versions access latest --secret=sv-1-identities-dump --project=sv-prod "
        "--out-file=identities-dump.json"
    ) in out
    del gcp["project"]
    (tmp_path / "gcp.json").write_text(json.dumps(gcp))
    code, out, err = run(capsys, "--dr-stack-outputs", str(tmp_path / "gcp.json"))
    assert code == 2 and "cometbft.snapshotProject: missing" in err and "--snapshot-project" in err


def test_passfile_lines_escape_the_password_and_stay_private(dr, tmp_path):
    """The restore step's shell lines, run by bash with a kubectl that serves the secret as the API would."""
    _, _, outputs, _ = dr
    _, _, steps = plan_for(outputs)
    (restore,) = [s for s in steps if s.run]
    password = "p:a\\ss*w"
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/bash\necho -n {base64.b64encode(password.encode()).decode()}\n")
    fake.chmod(0o755)
    script = "\n".join([*restore.commands[:-2], 'stat -c %a "$PGPASSFILE"; cat "$PGPASSFILE"; rm -f "$PGPASSFILE"'])
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    mode, *lines = done.stdout.splitlines()
    assert mode == "600"
    assert lines == ["apps-pg:5432:*:cnadmin:p\\:a\\\\ss*w", "participant-pg:5432:*:cnadmin:p\\:a\\\\ss*w"]
    assert password not in restore.commands[-2]  # the restore-set line itself carries no password


def test_snapshot_queries_pick_the_first_copy_after_the_set_else_the_newest():
    import jmespath

    taken = 'to_number(Tags[?Key==`"sv-backups.canton.network/taken-at"`] | [0].Value)'

    def snap(sid: str, at: int) -> dict:
        return {"SnapshotId": sid, "Tags": [{"Key": "sv-backups.canton.network/taken-at", "Value": str(at)}]}

    response = {"Snapshots": [snap("snap-c", 300), snap("snap-a", 100), snap("snap-b", 200)]}
    assert jmespath.search(snapshot_query(taken, 150), response) == "snap-b"
    assert jmespath.search(snapshot_query(taken, 400), response) is None
    assert jmespath.search(snapshot_query(taken, None), response) == "snap-c"


@pytest.mark.slow
@pytest.mark.skipif(AWS_CLI is None, reason="no AWS CLI")
def test_aws_lookup_and_secret_fetch_run_against_moto(dr, moto_url, monkeypatch, tmp_path):
    """The printed AWS CLI lines, run by bash: the snapshot copy of this node and migration id taken first after
    the set; other nodes' copies ignored; the newest copy when none is later; the secret fetched to a file."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    node = f"sv-{os.urandom(3).hex()}"
    _, _, outputs, _ = dr
    outputs = {
        **outputs,
        "node": {**outputs["node"], "name": node},
        "identitiesSecretUrl": f"awssm://us-west-2/{node}/identities-dump",
    }
    facts, chosen, steps = plan_for(outputs)
    set_time = int(chosen.created_at.timestamp())
    ec2 = boto3.client("ec2", region_name="us-west-2")
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)["VolumeId"]

    def copy(owner: str, migration: int, taken_at: int) -> str:
        tags = {
            "app.kubernetes.io/managed-by": "sv-backups",
            "sv-backups.canton.network/node": owner,
            "sv-backups.canton.network/migration-id": str(migration),
            "sv-backups.canton.network/taken-at": str(taken_at),
        }
        spec = [{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return ec2.create_snapshot(VolumeId=volume, TagSpecifications=spec)["SnapshotId"]

    copy(node, 4, set_time - 3600)
    newest = copy(node, 4, set_time + 7200)
    first_after = copy(node, 4, set_time + 1200)
    copy("sv-2", 4, set_time + 60)  # another SV's volume
    copy(node, 3, set_time + 30)  # an earlier migration id
    (cometbft,) = [s for s in steps if s.manifests]
    lookup = cometbft.commands[:3]

    def handle() -> str:
        done = subprocess.run(["bash", "-c", "\n".join([*lookup, 'echo "$HANDLE"'])], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert handle() == first_after
    later = dataclasses.replace(chosen, created_at=chosen.created_at + timedelta(days=1))
    lookup = next(s for s in build_plan(facts, later) if s.manifests).commands[:3]
    assert handle() == newest  # no copy is later than that set: the newest one
    secrets = boto3.client("secretsmanager", region_name="us-west-2")
    secrets.create_secret(Name=f"{node}/identities-dump", SecretString='{"identities": {"old": 1}}')
    secrets.put_secret_value(SecretId=f"{node}/identities-dump", SecretString='{"identities": {"new": 2}}')
    (identities,) = [s for s in steps if "identities" in s.title]
    done = subprocess.run(
        ["bash", "-euc", "\n".join(identities.commands)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert json.loads((tmp_path / "identities-dump.json").read_text()) == {"identities": {"new": 2}}
    assert oct((tmp_path / "identities-dump.json").stat().st_mode & 0o777) == "0o600"


def test_a_node_on_logical_upgrades_restores_a_set_of_its_current_serial(dr, capsys):
    """The DR stack of an LSU node exports node.serialId (no migrationId): the sets are filed under the serial, so
    the newest set of that serial is chosen (not the newer one of serial 3), and the deployments are the serial's."""
    _, _, outputs, _ = dr
    lsu = {**outputs, "node": {"name": "sv-1", "namespace": "sv", "serialId": 4}}
    facts, chosen, _ = plan_for(lsu)
    assert (facts.migration_id, facts.serial_id) == (4, 4)
    assert chosen.set_id == "s-newest" and chosen.migration_id == 4
    assert "global-domain-4-sequencer" in facts.deployments
    # a hard-migration DR stack with a --serial-id flag still picks sets by its migration id
    assert resolve_facts(outputs, {"serial_id": 7}).migration_id == 4


def test_a_set_older_than_the_sequencer_pruning_window_is_refused_unless_accepted(dr, capsys):
    url, dest, _, outputs_file = dr
    # The only sets of migration id 5: taken 31 days ago while the sequencer pruned after 30.
    write_set(dest, "s-stale", NOW - timedelta(days=31), migration_id=5, sequencer_pruning=timedelta(days=30))
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--migration-id", "5")
    assert code == 1 and out == ""
    assert "refusing to fail over: set s-stale is 31d 0h old" in err
    assert "sequencer pruning window of 30d" in err and "--accept-stale-set" in err

    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--migration-id", "5", "--accept-stale-set")
    assert code == 0, err
    assert "WARNING (--accept-stale-set): set s-stale" in err
    # the restore step runs restore-set, which refuses the set too unless told
    assert f"python -m jobs restore-set {url}/recent/5/s-stale --db apps=" in out
    [restore] = [line for line in out.splitlines() if "jobs restore-set" in line]
    assert restore.endswith(" --accept-stale-set")

    # a set within the window (the fixture's, pruning off) goes through without the flag
    code, out, _ = run(capsys, "--dr-stack-outputs", str(outputs_file))
    assert code == 0 and "--accept-stale-set" not in out


def test_a_dabft_dr_stack_restores_canton_bft_first_and_has_no_cometbft_step(tmp_path, capsys):
    """A DABFT node (the DR stack exports `synchronizer: dabft` and no cometbft facts, components/dr.py): every
    database of the set, canton-bft first (the set's role order), and neither a CometBFT volume nor deployment."""
    url = f"file://{tmp_path}/dr"
    roles = (("canton-bft", "cantonbft_0"), ("apps", "cantonnet_sv"), ("participant", "participant_0"))
    write_set(open_destination(url), "s-dabft", NOW - timedelta(hours=2), migration_id=0, roles=roles)
    outputs = {
        "node": {"name": "sv-dabft", "namespace": "sv", "migrationId": 0},
        "backupUrl": url,
        "cloud": "gcp",
        "region": "europe-west4",
        "synchronizer": "dabft",
        "identitiesSecretUrl": "gcpsm://projects/p/secrets/sv-dabft-identities-dump",
        "stack": "sv-dabft-dr",
        "kubeContext": "gke_sv-dabft-dr",
    }
    facts, chosen, steps = plan_for(outputs)
    assert facts.synchronizer == "dabft"
    assert [role for role, _ in chosen.databases] == ["canton-bft", "apps", "participant"]
    assert not [step.title for step in steps if "CometBFT" in step.title]
    assert not [d for d in facts.deployments if "cometbft" in d]
    [restore] = [step for step in steps if step.title.startswith("Restore every database")]
    assert (
        restore.run[restore.run.index("--db") + 1] == "canton-bft=postgresql://cnadmin@canton-bft-pg:5432/cantonbft_0"
    )
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    code, out, err = run(capsys, "--dr-stack-outputs", str(path))
    assert code == 0, err
    assert "CometBFT volume" not in out and "cometbft" not in out.lower()
    assert (
        "kubectl --context gke_sv-dabft-dr -n sv scale deployment --replicas=0 global-domain-0-mediator "
        "global-domain-0-sequencer"
    ) in out


def test_failover_refuses_to_run_without_a_kube_context_or_a_stack(dr, tmp_path, capsys):
    """kubectl without --context acts on whatever cluster is current; pulumi without --stack on the selected stack:
    neither is guessed. A flag gives what the outputs lack, and then every printed command carries it."""
    _, _, outputs, _ = dr
    bare = {k: v for k, v in outputs.items() if k not in ("kubeContext", "stack")}
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(bare))
    code, out, err = run(capsys, "--dr-stack-outputs", str(path))
    assert code == 2 and out == ""
    assert "kubeContext: missing; pass --context CONTEXT" in err
    assert "stack: missing; pass --stack NAME" in err
    code, out, err = run(capsys, "--dr-stack-outputs", str(path), "--context", "dr-ctx", "--stack", "sv-1-dr")
    assert code == 0, err
    kubectl = [line for line in out.splitlines() if "kubectl" in line and not line.startswith("#")]
    pulumi = [line for line in out.splitlines() if line.startswith("pulumi ")]
    assert kubectl and all("kubectl --context dr-ctx " in line for line in kubectl)
    assert len(pulumi) == 2 and all("--stack sv-1-dr" in line for line in pulumi)


def test_before_picks_the_newest_set_read_entirely_before_the_damage(dr, capsys):
    """--before T: a set whose newest database was read at T exactly holds nothing of T; one read 1 µs later may
    hold the damage. At the boundary the newest set is taken only when it was read strictly before T."""
    from rules.manifest import data_taken_by, format_time

    url, dest, _, outputs_file = dr
    newest = json.loads(dest.read_bytes("recent/4/s-newest/manifest.json"))
    read_by = data_taken_by(newest)
    facts = resolve_facts(json.loads(outputs_file.read_text()), {})
    assert choose_set(facts, None, before=read_by + timedelta(microseconds=1)).set_id == "s-newest"
    assert choose_set(facts, None, before=read_by).set_id == "s-older"
    assert choose_set(facts, None, before=read_by - timedelta(hours=5)) is None
    at = format_time(read_by)
    code, out, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--before", at)
    assert code == 0, err
    assert f"{url}/recent/4/s-older" in out and "s-newest" not in out
    code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--before", at.rstrip("Z"))
    assert code == 2 and "has no time zone" in err
    code, _, err = run(capsys, "--dr-stack-outputs", str(outputs_file), "--before", at, "--set-id", "s-newest")
    assert code == 2 and "not allowed with argument" in err
