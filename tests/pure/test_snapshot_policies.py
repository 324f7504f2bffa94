"""The IAM documents of the snapshot-set jobs (components/aws/policies.py), as plain data: the creator copies, locks
and snapshots but never deletes; the pruner deletes the node's snapshots only; a DR stack's creator copies nothing."""

from __future__ import annotations

from components.aws import policies

ACCOUNT, NODE = "123456789012", "sv-1"
EBS_KEY = f"arn:aws:kms:us-west-2:{ACCOUNT}:key/ebs"
RDS_KEY = f"arn:aws:kms:us-west-2:{ACCOUNT}:key/rds"


def actions(document: dict) -> set[str]:
    found = set()
    for statement in document["Statement"]:
        value = statement["Action"]
        found.update([value] if isinstance(value, str) else value)
    return found


def creator(dr: str | None = "us-west-2", *, volumes=True, rds=(("us-east-1", "sv-1-participant-pg-4"),)):
    return policies.snapshot_set_creator(
        "aws",
        ACCOUNT,
        NODE,
        "us-east-1",
        dr,
        volumes=volumes,
        ebs_dr_key_arn=EBS_KEY if dr and volumes else None,
        rds_instances=list(rds),
        rds_dr_key_arn=RDS_KEY if dr and rds else None,
    )


def test_the_creator_never_deletes_unlocks_or_creates_volumes_snapshots_itself():
    held = actions(creator())
    assert not set(policies.SNAPSHOT_DELETE_ACTIONS) & held
    assert (
        not {"ec2:UnlockSnapshot", "ec2:CreateSnapshot", "rds:DeleteDBInstance", "rds:ModifyDBSnapshotAttribute"} & held
    )
    assert {"ec2:CopySnapshot", "ec2:LockSnapshot", "rds:CreateDBSnapshot", "rds:CopyDBSnapshot"} <= held


def test_the_creator_locks_and_tags_only_the_nodes_snapshots():
    by_sid = {s["Sid"]: s for s in creator()["Statement"]}
    assert by_sid["LockTheNodesSnapshots"]["Condition"] == {"StringEquals": {"aws:ResourceTag/svbackups-node": NODE}}
    assert by_sid["TagDbSnapshotsAsTheNodes"]["Condition"] == {"StringEquals": {"aws:RequestTag/svbackups-node": NODE}}
    assert by_sid["EncryptDbCopiesWithTheDrKey"]["Resource"] == RDS_KEY
    assert by_sid["EncryptDbCopiesWithTheDrKey"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "rds.us-west-2.amazonaws.com"}
    }
    assert by_sid["EncryptCopiesWithTheDrKey"]["Resource"] == EBS_KEY


def test_a_dr_stacks_creator_copies_nothing_but_still_locks():
    held = actions(creator(None))
    assert "ec2:LockSnapshot" in held and "rds:CreateDBSnapshot" in held
    assert not {"ec2:CopySnapshot", "rds:CopyDBSnapshot", "kms:CreateGrant"} & held


def test_only_what_the_stack_has_is_granted():
    assert not {a for a in actions(creator(volumes=False)) if a.startswith("ec2:")}
    assert not {a for a in actions(creator(rds=())) if a.startswith("rds:")}


def test_the_pruner_deletes_by_the_nodes_tag_in_every_region():
    document = policies.snapshot_set_pruner("aws", ACCOUNT, NODE, ["us-east-1", "us-west-2"], volumes=True, rds=True)
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    assert actions(document) == {
        "ec2:DescribeSnapshots",
        "ec2:DeleteSnapshot",
        "rds:DescribeDBSnapshots",
        "rds:DeleteDBSnapshot",
    }
    assert by_sid["DeleteOnlyTheNodesDbSnapshots"]["Resource"] == [
        f"arn:aws:rds:us-east-1:{ACCOUNT}:snapshot:*",
        f"arn:aws:rds:us-west-2:{ACCOUNT}:snapshot:*",
    ]
    for sid in ("DeleteOnlyTheNodesSnapshots", "DeleteOnlyTheNodesDbSnapshots"):
        assert by_sid[sid]["Condition"] == {"StringEquals": {"aws:ResourceTag/svbackups-node": NODE}}
