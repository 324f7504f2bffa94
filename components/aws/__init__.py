"""The AWS (EKS) implementation of the cloud interface: `backend` (the façade: IRSA roles, the identities secret,
EBS snapshot copies), `context` (what the parts share: settings, names, regions, account, tags, the KMS keys),
`s3` (the backup bucket and its DR replica), `rds` (adopted instances), `alerts` (CloudWatch), and `policies`
(every IAM, bucket, key, secret and topic policy document, pure). The parts depend on `context`, never on
`backend`.

The backend is loaded on first use: `components.aws.policies` stays importable without Pulumi (pure tests, the
policy pack)."""

from __future__ import annotations

from typing import Any

__all__ = ["RDS_IGNORED_FIELDS", "RDS_MANAGED_FIELDS", "AwsBackend"]


def __getattr__(name: str) -> Any:
    if name == "AwsBackend":
        from components.aws.backend import AwsBackend

        return AwsBackend
    if name in ("RDS_IGNORED_FIELDS", "RDS_MANAGED_FIELDS"):
        from components.aws import rds

        return getattr(rds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
