"""Snapshot sets on AWS (components/pg_snapshots.py): the DR copies, the locks, and who may create or delete.

- In-cluster instances: EBS snapshots through the CSI driver (the class tags them as the node's). The creator's
  job copies each one to dr.region under the DR region's EBS key (the key CometBFT's copies use) and locks the
  source and the copy with EBS Snapshot Lock in governance mode for the recent window (`--lock-for`): no one
  without ec2:UnlockSnapshot, which no role of this program has, can delete either before the window ends.
- RDS: a manual DB snapshot per set, tagged as the node's, copied to dr.region under the DR region's RDS key (the
  key of the automated-backup replication). Manual RDS snapshots have no lock (AWS Backup vault lock is another
  product): the creator's role has no rds:DeleteDBSnapshot; the pruner's has it, for the node's tag only.
A DR stack (no second region of its own) makes no copies; its EBS snapshots are still locked.
"""

from __future__ import annotations

from typing import cast

import pulumi
from pulumi_aws import iam

from components.aws import policies
from components.aws.context import AwsContext
from components.cloud import SnapshotJobAccess, WorkloadIdentity
from components.settings import InClusterPostgres, RdsPostgres
from rules import retention

CREATOR_PURPOSE = "pg-snapshot"
PRUNER_PURPOSE = "pg-snapshot-prune"


def _rds(context: AwsContext) -> dict[str, RdsPostgres]:
    settings = context.settings
    return {role: i for role in settings.roles if isinstance(i := settings.postgres[role], RdsPostgres)}


def _volumes(context: AwsContext) -> list[str]:
    settings = context.settings
    return [role for role in settings.roles if isinstance(settings.postgres[role], InClusterPostgres)]


def _regions(context: AwsContext) -> list[str]:
    """Every region a snapshot of the node may be in: the cluster's, the RDS instances', the DR region."""
    regions = [context.region, *((i.region or context.region) for i in _rds(context).values())]
    if context.dr_region is not None:
        regions.append(context.dr_region)
    return list(dict.fromkeys(regions))


def snapshot_creator(context: AwsContext, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> SnapshotJobAccess:
    volumes, instances = _volumes(context), _rds(context)
    dr = context.dr_region
    # The DR keys CometBFT's copies and the RDS backup replication use (declared there first; key() returns them).
    ebs_key = context.key(dr, "ebs", parent) if dr is not None and volumes else None
    rds_key = context.key(dr, "rds", parent) if dr is not None and instances else None
    targets = [(i.region or context.region, i.instance) for i in instances.values()]
    iam.RolePolicy(
        context.names.resource(CREATOR_PURPOSE, "creator"),
        role=cast(iam.Role, identity.resource).name,
        policy=pulumi.Output.all(
            context.account, ebs_key.arn if ebs_key else None, rds_key.arn if rds_key else None
        ).apply(
            lambda args: policies.to_json(
                policies.snapshot_set_creator(
                    context.partition,
                    args[0],
                    context.node,
                    context.region,
                    dr,
                    volumes=bool(volumes),
                    ebs_dr_key_arn=args[1],
                    rds_instances=targets,
                    rds_dr_key_arn=args[2],
                )
            )
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    # The lock lasts the recent window: until then every snapshot set is one a restore may need.
    lock = ["--lock-for", retention.format_duration(context.settings.retention.recent)]
    ebs_args: list[pulumi.Input[str]] = (
        ["--copy-to-region", dr, "--copy-kms-key", ebs_key.arn, *lock] if ebs_key is not None else lock
    )
    role_args: dict[str, list[pulumi.Input[str]]] = {role: list(ebs_args) for role in volumes}
    for role, instance in instances.items():
        role_args[role] = [
            "--method",
            "rds-snapshot",
            "--region",
            instance.region or context.region,
            "--instance",
            instance.instance,
            *(["--copy-to-region", dr, "--copy-kms-key", rds_key.arn] if rds_key is not None else []),
        ]
    return SnapshotJobAccess(identity=identity, role_args=role_args, args=[])


def snapshot_pruner(context: AwsContext, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> SnapshotJobAccess:
    volumes, instances = _volumes(context), _rds(context)
    regions = _regions(context)
    iam.RolePolicy(
        context.names.resource(PRUNER_PURPOSE, "pruner"),
        role=cast(iam.Role, identity.resource).name,
        policy=context.account.apply(
            lambda account: policies.to_json(
                policies.snapshot_set_pruner(
                    context.partition, account, context.node, regions, volumes=bool(volumes), rds=bool(instances)
                )
            )
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    args: list[pulumi.Input[str]] = ["--region", context.region]
    if context.dr_region is not None:
        args += ["--copy-to-region", context.dr_region]
    return SnapshotJobAccess(identity=identity, role_args={}, args=args)
