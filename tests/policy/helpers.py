"""Finding and changing resources in a plan.json, for the policy tests."""

from __future__ import annotations

import json

from policy.props import backup_kind, pod_spec

DIGEST = "@sha256:" + "0" * 64


def resources(plan: dict, resource_type: str) -> list[dict]:
    return [r for r in plan["resources"] if r["type"] == resource_type]


def one(plan: dict, resource_type: str, predicate=lambda r: True) -> dict:
    found = [r for r in resources(plan, resource_type) if predicate(r)]
    assert len(found) == 1, f"expected one {resource_type}, found {[r['name'] for r in found]}"
    return found[0]


def cron_job(plan: dict, kind: str) -> dict:
    return one(plan, "kubernetes:batch/v1:CronJob", lambda r: backup_kind(r["inputs"]) == kind)


def pod(plan: dict, kind: str) -> dict:
    return pod_spec(cron_job(plan, kind)["inputs"])


def container(plan: dict, kind: str, name: str) -> dict:
    spec = pod(plan, kind)
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"no container {name!r} in the {kind} pod"
    return found[0]


def bucket(plan: dict) -> dict:
    return one(plan, "gcp:storage/bucket:Bucket")


def lifecycle_rule(plan: dict, action: str, prefix_ends: str) -> dict:
    rules = [
        rule
        for rule in bucket(plan)["inputs"]["lifecycleRules"]
        if rule["action"]["type"] == action
        and any(p.endswith(prefix_ends) for p in rule["condition"].get("matchesPrefixes", []))
    ]
    assert len(rules) == 1
    return rules[0]


def alert(plan: dict, kind: str, alert_type: str) -> dict:
    return one(
        plan,
        "gcp:monitoring/alertPolicy:AlertPolicy",
        lambda r: (
            r["inputs"]["userLabels"].get("svbackups-kind") == kind
            and r["inputs"]["userLabels"].get("svbackups-alert") == alert_type
        ),
    )


def remove(plan: dict, resource: dict) -> None:
    plan["resources"] = [r for r in plan["resources"] if r["urn"] != resource["urn"]]


def add(plan: dict, resource_type: str, name: str, inputs: dict) -> None:
    plan["resources"].append(
        {
            "urn": f"urn:pulumi:{plan['stack']}::{plan['project']}::{resource_type}::{name}",
            "type": resource_type,
            "name": name,
            "parent": "",
            "dependsOn": [],
            "inputs": inputs,
            "options": {},
        }
    )


def pin_images(plan: dict) -> dict:
    """The plan with every backup container's image pinned by digest (the advisory rule then passes)."""
    for job in resources(plan, "kubernetes:batch/v1:CronJob"):
        spec = pod_spec(job["inputs"])
        for container_ in spec.get("initContainers", []) + spec.get("containers", []):
            container_["image"] = container_["image"].split("@")[0].rsplit(":", 1)[0] + DIGEST
    return plan


# --- AWS plans ------------------------------------------------------------------------------------------------

S3_BUCKET = "aws:s3/bucket:Bucket"
IAM_ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def s3_bucket(plan: dict, *, dr: bool = False) -> dict:
    """The backup bucket, or its DR copy (the bucket the program tags as a replica)."""
    return one(plan, S3_BUCKET, lambda r: ("svbackups-replica-of" in r["inputs"].get("tags", {})) == dr)


def bucket_side(plan: dict, resource_type: str, *, dr: bool = False) -> dict:
    """The side resource of `resource_type` that configures the backup bucket (or its DR copy)."""
    name = s3_bucket(plan, dr=dr)["inputs"]["bucket"]
    return one(plan, resource_type, lambda r: r["inputs"].get("bucket") == name)


def side_inputs(resource_type: str, *, dr: bool = False):
    return lambda plan: bucket_side(plan, resource_type, dr=dr)["inputs"]


def role(plan: dict, purpose: str) -> dict:
    """An IAM role by its svbackups-purpose tag (pg-backup, identities, cometbft-snapshot, replication)."""
    return one(plan, IAM_ROLE, lambda r: r["inputs"].get("tags", {}).get("svbackups-purpose") == purpose)


def role_policy(plan: dict, purpose: str) -> dict:
    name = role(plan, purpose)["inputs"]["name"]
    return one(plan, ROLE_POLICY, lambda r: r["inputs"]["role"] == name)


def document(resource: dict, key: str = "policy") -> dict:
    return json.loads(resource["inputs"][key])


def edit_document(resource: dict, change, key: str = "policy") -> None:
    """Apply `change(document)` to a JSON policy input, in place."""
    doc = document(resource, key)
    change(doc)
    resource["inputs"][key] = json.dumps(doc)


def statement(doc: dict, sid: str) -> dict:
    (found,) = [s for s in doc["Statement"] if s.get("Sid") == sid]
    return found


def alarm(plan: dict, kind: str, alert_type: str) -> dict:
    return one(
        plan,
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        lambda r: (
            (r["inputs"]["tags"].get("svbackups-kind"), r["inputs"]["tags"].get("svbackups-alert"))
            == (kind, alert_type)
        ),
    )
