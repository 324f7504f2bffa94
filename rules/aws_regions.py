"""The AWS regions a stack may name (aws:region, dr.region, an RDS instance's region): pure, no I/O.

Copied from botocore's partition data (botocore/data/partitions.json, botocore 1.44.18, the dev venv's), the list
botocore itself validates region names against; tests/pure/test_kept_lists.py re-derives it and fails with the
new literal when a botocore bump changes it. Kept: the commercial, China and GovCloud partitions. The isolated
(ISO) and European Sovereign Cloud partitions are separate clouds with their own ARN partitions and endpoints
that this program has never targeted, and each partition's `*-global` entry is an endpoint, not a region.
"""

from __future__ import annotations

PARTITIONS = ("aws", "aws-cn", "aws-us-gov")

AWS_REGIONS = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "cn-north-1",
        "cn-northwest-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "me-west-1",
        "mx-central-1",
        "sa-east-1",
        "sa-west-1",
        "us-east-1",
        "us-east-2",
        "us-gov-east-1",
        "us-gov-west-1",
        "us-west-1",
        "us-west-2",
    }
)
