"""A reader's grant is made where the resource lives (GCP).

A project IAM binding conditioned on a bucket (`resource.name == "projects/_/buckets/<b>"...`) grants only on
resources of *that* project: a bucket of another project is untouched, so the grant plans, passes every other
rule and reads nothing (a DR stack in its own project, reading the primary's DR copy). Such a condition must name
a bucket this stack declares in the binding's own project; a bucket of another stack is granted on the bucket
itself (a BucketIAMMember, components/gcp/backend.py allow_object_reads).
"""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, StackValidationArgs

from .props import BUCKET, UNKNOWN, get, require_known
from .rule import StackResource, stack_rule

_PROJECT_IAM = ("gcp:projects/iAMMember:", "gcp:projects/iAMBinding:")
_BUCKET_IN_CONDITION = re.compile(r"projects/_/buckets/([a-z0-9][a-z0-9._-]*)")


def _project(resource: StackResource) -> str | None:
    """The project a resource is declared in: its `project` input, else its provider's."""
    value = resource.props.get("project")
    if value is None:
        value = resource.provider.get("project")
    return value


def _check(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
    buckets: dict[str, StackResource] = {}
    for bucket in resources:
        if bucket.type == BUCKET and isinstance(bucket.props.get("name"), str):
            buckets[bucket.props["name"]] = bucket
    for grant in resources:
        if not grant.type.startswith(_PROJECT_IAM):
            continue
        expression = get(grant.props, "condition", "expression")
        if expression is None:
            continue
        expression = require_known(expression, f"{grant.name}.condition.expression")
        project = _project(grant)
        for name in sorted(set(_BUCKET_IN_CONDITION.findall(str(expression)))):
            bucket = buckets.get(name)
            kind = grant.type.rsplit(":", 1)[-1]
            if bucket is None:
                report(
                    f"{kind} '{grant.name}': grants {grant.props.get('role')} in project {project}, conditioned on "
                    f"bucket {name}, which this stack does not declare: a bucket of another project is not "
                    f"granted by this project's IAM policy. Fix: grant on the bucket itself (a BucketIAMMember, "
                    f"components/gcp/backend.py allow_object_reads).",
                    grant.urn,
                )
                continue
            where = _project(bucket)
            if project is UNKNOWN or where is UNKNOWN:
                require_known(UNKNOWN, f"{grant.name}.project")
            if project is not None and where is not None and project != where:
                report(
                    f"{kind} '{grant.name}': grants {grant.props.get('role')} in project {project}, conditioned on "
                    f"bucket {name} of project {where}: it grants nothing there. Fix: grant on the bucket itself "
                    f"(a BucketIAMMember, components/gcp/backend.py allow_object_reads).",
                    grant.urn,
                )


reader_grant_where_resource_lives = stack_rule(
    "gcp-reader-grant-where-resource-lives",
    "A project IAM grant conditioned on a bucket names a bucket this stack declares in that same project; a "
    "bucket of another stack or project is granted on the bucket itself.",
    check=_check,
    remediation="Grant reads of another stack's bucket with a BucketIAMMember on that bucket "
    "(components/gcp/backend.py allow_object_reads).",
)

POLICIES = [reader_grant_where_resource_lives]
