"""Snapshot sets on GCP (components/pg_snapshots.py): where the snapshots are stored, and who may create or delete
them.

- In-cluster instances: PD snapshots through the CSI driver, stored in the multi-region holding both regions (or
  the DR region) by the VolumeSnapshotClass's `storage-locations` (backend.snapshot_class_parameters). PD
  snapshots have no lock: the creator's Kubernetes ServiceAccount cannot delete VolumeSnapshots nor patch their
  contents (components/pg_snapshots.py); the CSI driver, not the job, holds the Compute Engine permissions.
- Cloud SQL: an on-demand backup run per set, stored at the same location (`--location`, Cloud SQL's backup
  location accepts a region or a multi-region). Custom roles, bound on the stack's Cloud SQL instances only: the
  creator's can create, get and list backup runs and never delete one; the pruner's can delete.
"""

from __future__ import annotations

import pulumi
from pulumi_gcp import projects

from components.cloud import SnapshotJobAccess, WorkloadIdentity
from components.gcp.cloudsql import instance_condition
from components.gcp.context import GcpContext
from components.settings import CloudSqlPostgres
from rules import gcp_locations

# The permissions of each job on Cloud SQL (predefined roles such as roles/cloudsql.editor would also let the
# creator delete backup runs, and much else). cloudsql.instances.get: the job reads the instance's state and region.
CREATOR_PERMISSIONS = (
    "cloudsql.backupRuns.create",
    "cloudsql.backupRuns.get",
    "cloudsql.backupRuns.list",
    "cloudsql.instances.get",
)
PRUNER_PERMISSIONS = (
    "cloudsql.backupRuns.delete",
    "cloudsql.backupRuns.get",
    "cloudsql.backupRuns.list",
    "cloudsql.instances.get",
)
CREATOR_PURPOSE = "pg-snapshot"
PRUNER_PURPOSE = "pg-snapshot-prune"


def snapshot_location(context: GcpContext) -> str:
    """Where snapshots and on-demand backups are stored: the multi-region holding both regions, else the DR
    region; on a DR stack (no second region of its own), the multi-region holding its region, else the region."""
    if context.layout is None:
        return gcp_locations.standalone_snapshot_location(context.region)
    return context.layout.snapshot_location


def custom_role_id(context: GcpContext, job: str) -> str:
    """A project custom role's id ([a-zA-Z0-9_.]{3,64}): per stack (a DR stack's carries its `-dr` prefix), so
    that two nodes, or a node and its DR stack, in one project never share one."""
    return "svBackups_" + context.settings.name_prefix.replace("-", "_") + "_" + job


def _cloudsql(context: GcpContext) -> dict[str, CloudSqlPostgres]:
    settings = context.settings
    return {role: i for role in settings.roles if isinstance(i := settings.postgres[role], CloudSqlPostgres)}


def snapshot_creator(context: GcpContext, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> SnapshotJobAccess:
    instances = _cloudsql(context)
    _grant(context, identity, "pgSnapshotCreator", CREATOR_PERMISSIONS, instances, parent)
    location = snapshot_location(context)
    role_args: dict[str, list[pulumi.Input[str]]] = {
        role: [
            "--method",
            "cloudsql-backup",
            "--project",
            context.project,
            "--instance",
            instance.instance,
            "--location",
            location,
        ]
        for role, instance in instances.items()
    }
    return SnapshotJobAccess(identity=identity, role_args=role_args, args=[])


def snapshot_pruner(context: GcpContext, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> SnapshotJobAccess:
    instances = _cloudsql(context)
    _grant(context, identity, "pgSnapshotPruner", PRUNER_PERMISSIONS, instances, parent)
    return SnapshotJobAccess(identity=identity, role_args={}, args=["--project", context.project] if instances else [])


def _grant(
    context: GcpContext,
    identity: WorkloadIdentity,
    job: str,
    permissions: tuple[str, ...],
    instances: dict[str, CloudSqlPostgres],
    parent: pulumi.Resource,
) -> None:
    """A custom role with `permissions`, granted to `identity` on the stack's Cloud SQL instances only (Cloud SQL
    has no instance-level IAM policy: a project grant with a condition naming the instances)."""
    if not instances:
        return
    names = context.names
    role = projects.IAMCustomRole(
        names.resource("cloudsql", job),
        role_id=custom_role_id(context, job),
        project=context.project,
        title=f"sv-backups {context.settings.name_prefix} {job}",
        description=f"sv-backups snapshot sets of node {context.settings.node.name}: {', '.join(permissions)}",
        permissions=list(permissions),
        stage="GA",
        opts=pulumi.ResourceOptions(parent=parent),
    )
    condition = " || ".join(
        f"({instance_condition(context.project, instance.instance)})" for instance in instances.values()
    )
    projects.IAMMember(
        names.resource("cloudsql", job, "member"),
        project=context.project,
        # The custom role's full name, written out (its `name` output is known only after creation): the plan and
        # the policy pack (snapshot-creator-cannot-delete) read which role is granted.
        role=f"projects/{context.project}/roles/{custom_role_id(context, job)}",
        member=identity.member,
        condition=projects.IAMMemberConditionArgs(
            title=f"sv-backups {job}",
            description=f"Backup runs of the Cloud SQL instances {', '.join(i.instance for i in instances.values())}.",
            expression=condition,
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[role]),
    )
