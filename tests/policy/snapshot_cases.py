"""Ways of breaking the snapshot-set rules (policy/snapshot_rules.py, and snapshot-class-retain for the Postgres
class), on both clouds: (rule, stack, mutation, text the message must contain). prod runs snapshot sets on GCP
(in-cluster apps and mediator, Cloud SQL participant and sequencer), aws-prod on AWS (EBS apps and mediator, RDS
participant and sequencer). test_rules.py runs the GCP ones, test_aws_rules.py the AWS ones; each must break exactly
its rule."""

from __future__ import annotations

import json

from policy.props import pod_spec

from . import helpers as h

CRON_JOB = "kubernetes:batch/v1:CronJob"
SNAPSHOT_CLASS = "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SNAPSHOT_STACKS = ("prod", "aws-prod")


def _named(resource_type: str, name: str):
    return lambda plan: h.one(plan, resource_type, lambda r: r["name"] == name)["inputs"]


def _pod(plan: dict, job: str = "sv-1-postgres-snapshot") -> dict:
    return pod_spec(_named(CRON_JOB, job)(plan))


def _step(plan: dict, role: str) -> dict:
    return next(c for c in _pod(plan)["initContainers"] if c["name"] == role)


def _swap_apps_and_participant(plan):
    init = _pod(plan)["initContainers"]
    a, p = (next(i for i, c in enumerate(init) if c["name"] == r) for r in ("apps", "participant"))
    init[a], init[p] = init[p], init[a]


def _apps_as_main_container(plan):
    pod = _pod(plan)
    apps = _step(plan, "apps")
    pod["initContainers"].remove(apps)
    pod["containers"].insert(0, apps)


def _dump_seal_without_schedule_gap(plan):
    seal = next(c for c in _pod(plan, "sv-1-postgres-backup")["containers"] if c["name"] == "seal")
    at = seal["args"].index("--schedule-gap")
    del seal["args"][at : at + 2]


def _sidecar(role: str):
    def mutate(plan):
        _step(plan, role)["restartPolicy"] = "Always"

    return mutate


def _without_step(role: str):
    def mutate(plan):
        _pod(plan)["initContainers"].remove(_step(plan, role))

    return mutate


def _drop_flag(role: str, flag: str):
    """The step of `role` without `flag` and its value."""

    def mutate(plan):
        args = _step(plan, role)["args"]
        at = args.index(flag)
        del args[at : at + 2]

    return mutate


def _set_flag(role: str, flag: str, value: str):
    def mutate(plan):
        args = _step(plan, role)["args"]
        args[args.index(flag) + 1] = value

    return mutate


def _class(plan):
    return _named(SNAPSHOT_CLASS, "sv-1-postgres-snapshot-class")(plan)


def _class_deletes(plan):
    _class(plan)["deletionPolicy"] = "Delete"


def _class_location(value):
    def mutate(plan):
        if value is None:
            _class(plan)["parameters"].pop("storage-locations")
        else:
            _class(plan)["parameters"]["storage-locations"] = value

    return mutate


def _duty_names(job: str):
    def mutate(plan):
        labels = _named(CRON_JOB, "sv-1-postgres-backup")(plan)["metadata"]["labels"]
        labels["sv-backups.canton.network/four-hourly-by"] = job

    return mutate


def _creator_verbs(resource_type: str, name: str, verb: str):
    def mutate(plan):
        _named(resource_type, name)(plan)["rules"][0]["verbs"].append(verb)

    return mutate


def _creator_permission(permission: str):
    def mutate(plan):
        _named(CUSTOM_ROLE, "sv-1-cloudsql-pgSnapshotCreator")(plan)["permissions"].append(permission)

    return mutate


def _creator_granted(role: str):
    def mutate(plan):
        _named(PROJECT_MEMBER, "sv-1-cloudsql-pgSnapshotCreator-member")(plan)["role"] = role

    return mutate


def _creator_allows(action: str, resource: str):
    def mutate(plan):
        policy = _named(ROLE_POLICY, "sv-1-pg-snapshot-creator")(plan)
        document = json.loads(policy["policy"])
        document["Statement"].append({"Sid": "Oops", "Effect": "Allow", "Action": action, "Resource": resource})
        policy["policy"] = json.dumps(document)

    return mutate


EBS_SNAPSHOTS = "arn:aws:ec2:us-east-1::snapshot/*"
RDS_SNAPSHOTS = "arn:aws:rds:us-east-1:123456789012:snapshot:*"
US_EAST_1_KEY = "arn:aws:kms:us-east-1:123456789012:key/0000"

SNAPSHOT_CASES = [
    # --- order, both clouds
    ("snapshot-steps-in-order", "prod", _swap_apps_and_participant, "not in the order"),
    ("snapshot-steps-in-order", "aws-prod", _swap_apps_and_participant, "not in the order"),
    ("snapshot-steps-in-order", "prod", _apps_as_main_container, "runs a snapshot step as a main container"),
    ("snapshot-steps-in-order", "aws-prod", _sidecar("apps"), "has restartPolicy Always"),
    # --- a Postgres class that deletes
    ("snapshot-class-retain", "prod", _class_deletes, "destroys the Postgres snapshot-set disk snapshot"),
    ("snapshot-class-retain", "aws-prod", _class_deletes, "destroys the Postgres snapshot-set disk snapshot"),
    # --- the dumps may be sparse only beside the snapshot CronJob that carries the duty
    ("snapshot-sets-carry-the-duty", "prod", _duty_names("sv-1-other"), "no postgres snapshot CronJob 'sv-1-other'"),
    ("snapshot-sets-carry-the-duty", "aws-prod", _without_step("mediator"), "takes no snapshot of ['mediator']"),
    # --- weekly dumps: the seal must count their gap into the historical cadence
    ("historical-cadence-within-pruning", "prod", _dump_seal_without_schedule_gap, "(--schedule-gap)"),
    ("historical-cadence-within-pruning", "aws-prod", _dump_seal_without_schedule_gap, "(--schedule-gap)"),
    # --- no DR copy
    ("snapshot-dr-copy", "prod", _class_location(None), "has storage-locations no location"),
    ("snapshot-dr-copy", "prod", _class_location("us-central1"), "'us-central1' is the primary region"),
    ("snapshot-dr-copy", "prod", _drop_flag("participant", "--location"), "its --location: no location"),
    ("snapshot-dr-copy", "prod", _set_flag("sequencer", "--location", "us-central1"), "is the primary region"),
    ("snapshot-dr-copy", "aws-prod", _drop_flag("apps", "--copy-to-region"), "no --copy-to-region"),
    ("snapshot-dr-copy", "aws-prod", _set_flag("mediator", "--copy-kms-key", US_EAST_1_KEY), "is a key of us-east-1"),
    ("snapshot-dr-copy", "aws-prod", _drop_flag("participant", "--copy-to-region"), "every RDS snapshot stays"),
    (
        "snapshot-dr-copy",
        "aws-prod",
        _set_flag("sequencer", "--copy-to-region", "us-east-1"),
        "us-east-1 is the snapshot's own region",
    ),
    # --- no lock where the cloud has one
    ("snapshot-lock", "aws-prod", _drop_flag("apps", "--lock-for"), "no --lock-for"),
    ("snapshot-lock", "aws-prod", _set_flag("mediator", "--lock-for", "1d"), "shorter than the recent window"),
    # --- a creator that can delete
    (
        "snapshot-creator-cannot-delete",
        "prod",
        _creator_verbs(ROLE, "sv-1-postgres-snapshot-role", "delete"),
        "lets it ['delete'] volumesnapshots",
    ),
    (
        "snapshot-creator-cannot-delete",
        "aws-prod",
        # delete, not patch: a patch of contents is also held by admission-bounds-rbac (policy/admission_rules.py).
        _creator_verbs(CLUSTER_ROLE, "sv-1-postgres-snapshot-contents", "delete"),
        "lets it ['delete'] volumesnapshotcontents",
    ),
    (
        "snapshot-creator-cannot-delete",
        "prod",
        _creator_permission("cloudsql.backupRuns.delete"),
        "with ['cloudsql.backupRuns.delete']",
    ),
    (
        "snapshot-creator-cannot-delete",
        "prod",
        _creator_granted("roles/compute.storageAdmin"),
        "grants it roles/compute.storageAdmin",
    ),
    (
        "snapshot-creator-cannot-delete",
        "aws-prod",
        _creator_allows("ec2:DeleteSnapshot", EBS_SNAPSHOTS),
        "allows ['ec2:DeleteSnapshot']",
    ),
    (
        "snapshot-creator-cannot-delete",
        "aws-prod",
        _creator_allows("rds:Delete*", RDS_SNAPSHOTS),
        "allows ['rds:DeleteDBSnapshot']",
    ),
]
