"""Disaster recovery end to end, on real PostgreSQL and moto's S3 and Secrets Manager:

the primary takes two sets with the real `backup-set` (apps with two databases, participant, sequencer and
mediator), the test replicates every object to a DR bucket and the identities secret to the DR region as
replication would, check-replica finds the copy in sync, the primary bucket, the primary secret and the source
servers are then gone, and `scripts/failover.py --execute` restores the node from the DR copy alone into fresh
servers. The ordering is checked from the restored data.

Ordering, made deterministic: the node writes a counter into the participant first, then into the apps database
(rows 1..50 before the second set). During that set, a pg_dump wrapper holds the job right after the apps dump
while the test writes rows 51..60. The restored participant must hold them (60) and the restored apps database
must not (50): apps not newer than the participant, and the participant's snapshot taken after the apps dump
finished. With the participant dumped first, its snapshot would precede the hold and end at 50 (and any write
between the two snapshots would leave apps ahead of the participant): the assertion would fail.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from jobs.destinations import open_destination
from testkit.pgcluster import PASSWORD, load_fixture, wait_for
from tests.jobs.conftest import REPO, job_env
from tests.jobs.fakes.sv import make_dump
from tests.jobs.pg_helpers import APPS_DB, WRITES_SQL, static_digests
from tests.jobs.replica_helpers import replicate
from tests.jobs.test_pg_faults import fake_pg_bin

pytestmark = pytest.mark.slow

SCAN_DB, PARTICIPANT_DB, SEQUENCER_DB, MEDIATOR_DB = "cantonnet_scan", "participant_4", "sequencer_4", "mediator_4"
MIGRATION = 4

# The apps pg_dump of cantonnet_sv, once it has written the whole archive: signal, then wait for the test.
HOLD_AFTER_APPS = """
if [[ "$*" == *{database}* ]]; then
  "$REAL" "$@"; code=$?
  touch {held}
  for _ in $(seq 1200); do [ -e {release} ] && exit $code; sleep 0.1; done
  exit 99
fi
exec "$REAL" "$@"
"""


def write_rows(participant, apps, first: int, last: int) -> None:
    """As the node does: the participant commits first, then the apps state that refers to it."""
    participant.psql(f"INSERT INTO writes (seq) SELECT generate_series({first}, {last})", PARTICIPANT_DB)
    apps.psql(f"INSERT INTO writes (seq) SELECT generate_series({first}, {last})", APPS_DB)


def max_seq(cluster, database: str) -> int:
    return int(cluster.psql("SELECT coalesce(max(seq), 0) FROM writes", database))


def small_table(cluster, database: str, rows: int) -> None:
    cluster.createdb(database)
    cluster.psql(
        f"CREATE TABLE state (id int PRIMARY KEY, payload text); INSERT INTO state SELECT g, md5(g::text) "
        f"FROM generate_series(1, {rows}) g",
        database,
    )


def backup(dest: str, dbs: list[str], set_id: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs",
            "backup-set",
            "--dest",
            dest,
            "--migration-id",
            str(MIGRATION),
            "--set-id",
            set_id,
            *dbs,
            *kwargs.get("extra", []),
        ],
        cwd=REPO,
        env=job_env(PGPASSWORD=PASSWORD),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (event,) = [json.loads(line) for line in out.splitlines() if '"backup.completed"' in line]
    return event


def test_failover_restores_the_node_from_the_dr_copy_alone(pg_factory, s3_bucket, tmp_path):
    import boto3

    # --- the primary node ----------------------------------------------------------------------------------
    apps, participant, synchronizer = pg_factory("e2e-apps"), pg_factory("e2e-participant"), pg_factory("e2e-sync")
    load_fixture(apps, APPS_DB, "app", 2)
    small_table(apps, SCAN_DB, 300)
    load_fixture(participant, PARTICIPANT_DB, "par", 3)
    small_table(synchronizer, SEQUENCER_DB, 500)
    small_table(synchronizer, MEDIATOR_DB, 200)
    apps.psql(WRITES_SQL, APPS_DB)
    participant.psql(WRITES_SQL, PARTICIPANT_DB)
    dbs = [
        "--db",
        f"apps={apps.dsn(APPS_DB)}",
        "--db",
        f"apps={apps.dsn(SCAN_DB)}",
        "--db",
        f"participant={participant.dsn(PARTICIPANT_DB)}",
        "--db",
        f"sequencer={synchronizer.dsn(SEQUENCER_DB)}",
        "--db",
        f"mediator={synchronizer.dsn(MEDIATOR_DB)}",
    ]
    primary_url = f"s3://{s3_bucket}/sv-1"

    write_rows(participant, apps, 1, 20)
    first = finished(backup(primary_url, dbs, "sv-backup-postgres-1-aaaaa"))
    write_rows(participant, apps, 21, 50)
    held, release = tmp_path / "held", tmp_path / "release"
    pg_bin = fake_pg_bin(tmp_path, HOLD_AFTER_APPS.format(database=APPS_DB, held=held, release=release))
    second = backup(primary_url, dbs, "sv-backup-postgres-2-bbbbb", extra=["--pg-bin", str(pg_bin)])
    wait_for(held.exists, timeout=120)
    write_rows(participant, apps, 51, 60)  # after the apps snapshot, before the participant's
    release.touch()
    second = finished(second)
    assert first["promoted"] and not second["promoted"]
    expected = {
        "app": static_digests(apps, APPS_DB, "app"),
        "par": static_digests(participant, PARTICIPANT_DB, "par"),
        "small": {
            db: c.psql("SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM state s", db)
            for c, db in ((apps, SCAN_DB), (synchronizer, SEQUENCER_DB), (synchronizer, MEDIATOR_DB))
        },
    }

    # --- replication to the DR region ----------------------------------------------------------------------
    s3 = boto3.client("s3")
    dr_bucket = f"dr-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=dr_bucket)
    dr_url = f"s3://{dr_bucket}/sv-1"
    copied = replicate(open_destination(primary_url), open_destination(dr_url))
    assert len(copied) == len([i for t in ("recent/", "historical/") for i in open_destination(primary_url).list(t)])
    name = f"sv-1/identities-dump-{secrets.token_hex(4)}"
    old_dump, new_dump = json.dumps(make_dump()), json.dumps(make_dump())
    for region in ("us-east-1", "us-west-2"):  # Secrets Manager replication, simulated
        client = boto3.client("secretsmanager", region_name=region)
        client.create_secret(Name=name, SecretString=old_dump)
        client.put_secret_value(SecretId=name, SecretString=new_dump)
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs",
            "check-replica",
            primary_url,
            dr_url,
            "--secret-src",
            f"awssm://us-east-1/{name}",
            "--secret-dst",
            f"awssm://us-west-2/{name}",
        ],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    verdict = json.loads(check.stdout.splitlines()[-1])
    assert verdict["status"] == "in_sync" and verdict["sets"] == {"in_sync": 3} and verdict["secret"] == "in_sync"

    # --- the primary region is gone ------------------------------------------------------------------------
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=s3_bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=s3_bucket)
    boto3.client("secretsmanager", region_name="us-east-1").delete_secret(
        SecretId=name, ForceDeleteWithoutRecovery=True
    )
    for cluster in (apps, participant, synchronizer):
        cluster.stop("immediate")

    # --- failover from the DR side -------------------------------------------------------------------------
    outputs = tmp_path / "dr-outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "node": {"name": "sv-1", "namespace": "sv", "migrationId": MIGRATION},
                "backupUrl": dr_url,
                "cloud": "aws",
                "region": "us-west-2",
                "identitiesSecretUrl": f"awssm://us-west-2/{name}",
                "cometbft": {"storageClass": "ebs-gp3"},
                "stack": "aws-prod-dr",
                "kubeContext": "arn:aws:eks:us-west-2:123456789012:cluster/sv-1-dr",
            }
        )
    )
    fresh = {role: pg_factory(f"e2e-dr-{role}") for role in ("apps", "participant", "synchronizer")}
    server = {role: cluster.dsn().rsplit("/", 1)[0] for role, cluster in fresh.items()}
    identities = tmp_path / "identities.json"
    done = subprocess.run(
        [
            sys.executable,
            "scripts/failover.py",
            "--dr-stack-outputs",
            str(outputs),
            "--execute",
            "--identities-out",
            str(identities),
            "--pg",
            f"apps={server['apps']}",
            "--pg",
            f"participant={server['participant']}",
            "--pg",
            f"sequencer={server['synchronizer']}",
            "--pg",
            f"mediator={server['synchronizer']}",
        ],
        cwd=REPO,
        env=job_env(PGPASSWORD=PASSWORD),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    set_url = f"{dr_url}/recent/{MIGRATION}/{second['set_id']}"
    assert f"python -m jobs restore-set {set_url} " in done.stdout  # the newest set, from the DR copy
    assert "executed steps succeeded" in done.stderr

    # --- the restored node ---------------------------------------------------------------------------------
    restored_apps, restored_participant = max_seq(fresh["apps"], APPS_DB), max_seq(fresh["participant"], PARTICIPANT_DB)
    assert (restored_apps, restored_participant) == (50, 60)
    assert restored_apps <= restored_participant  # apps not newer than the participant
    assert static_digests(fresh["apps"], APPS_DB, "app") == expected["app"]
    assert static_digests(fresh["participant"], PARTICIPANT_DB, "par") == expected["par"]
    for cluster, db in (
        (fresh["apps"], SCAN_DB),
        (fresh["synchronizer"], SEQUENCER_DB),
        (fresh["synchronizer"], MEDIATOR_DB),
    ):
        assert (
            cluster.psql("SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM state s", db) == expected["small"][db]
        )
    assert json.loads(identities.read_text()) == json.loads(new_dump)
    assert oct(identities.stat().st_mode & 0o777) == "0o600"
    key_material = [
        k["keyPair"]
        for n in ("participant", "sequencer", "mediator")
        for k in json.loads(new_dump)["identities"][n]["keys"]
        if "keyPair" in k
    ]
    assert key_material and not any(k in done.stdout + done.stderr for k in key_material)
