"""Breaking cases of the admission rule (policy/admission_rules.py) on both clouds, and of the GCP grant-location
rule (policy/grant_location_rules.py): (rule, stack, mutate, expected text of the message)."""

from __future__ import annotations

from . import helpers as h

VAP = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
VAP_BINDING = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"


def _named(resource_type: str, suffix: str):
    return lambda plan: h.one(plan, resource_type, lambda r: r["name"].endswith(suffix))


def _remove(resource_type: str, suffix: str):
    return lambda plan: h.remove(plan, _named(resource_type, suffix)(plan))


def _spec(resource_type: str, suffix: str, **values):
    return lambda plan: _named(resource_type, suffix)(plan)["inputs"]["spec"].update(values)


def _other_user(plan):
    [condition] = _named(VAP, "drill-cometbft-pod-admission")(plan)["inputs"]["spec"]["matchConditions"]
    condition["expression"] = condition["expression"].replace("sv-1-drill-cometbft", "sv-1-restore")


def _wider_role(plan):
    """Another Role of the program that may create pods, for a ServiceAccount no policy names."""
    role = _named("kubernetes:rbac.authorization.k8s.io/v1:Role", "identities-dump-role")(plan)["inputs"]
    role["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]})


def _project_grant_on_the_primarys_bucket(plan):
    """The old DR grant: a project binding in the DR stack's project conditioned on a bucket it does not declare."""
    grant = _named(BUCKET_MEMBER, "reader-dr-copy")(plan)
    h.remove(plan, grant)
    bucket = grant["inputs"]["bucket"]
    h.add(plan, PROJECT_MEMBER, "sv-1-dr-backups-reader-dr-copy", {
        "project": "sv-dr-project", "role": "roles/storage.objectViewer", "member": grant["inputs"]["member"],
        "condition": {"title": "sv-backups dr-copy sets only",
                      "expression": f'resource.name == "projects/_/buckets/{bucket}" || '
                                    f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/")'},
    })  # fmt: skip


def _bucket_in_another_project(plan):
    h.bucket(plan)["inputs"]["project"] = "sv-other-project"


ADMISSION_CASES = [
    ("admission-bounds-rbac", "prod", _remove(VAP_BINDING, "drill-cometbft-pod-admission-binding"), "create pods"),
    ("admission-bounds-rbac", "prod", _spec(VAP, "drill-cometbft-pod-admission", failurePolicy="Ignore"),
     "failurePolicy Fail"),
    ("admission-bounds-rbac", "prod", _other_user, "system:serviceaccount:sv:sv-1-drill-cometbft"),
    ("admission-bounds-rbac", "dev", _spec(VAP_BINDING, "cometbft-snapshot-content-admission-binding",
                                           validationActions=["Warn"]), "patch any VolumeSnapshotContent"),
    ("admission-bounds-rbac", "aws-prod", _remove(VAP, "postgres-snapshot-prune-content-admission"),
     "postgres-snapshot-prune"),
    ("admission-bounds-rbac", "aws-dev", _wider_role, "sv-dev-identities-dump create pods"),
    ("gcp-reader-grant-where-resource-lives", "prod-dr", _project_grant_on_the_primarys_bucket,
     "which this stack does not declare"),
    ("gcp-reader-grant-where-resource-lives", "prod", _bucket_in_another_project, "of project sv-other-project"),
]  # fmt: skip
