"""The AWS (EKS) implementation of the cloud interface: `backend` (keys, IRSA roles, the identities secret,
EBS snapshot copies), `s3` (the backup bucket and its DR replica), `rds` (adopted instances), `alerts`
(CloudWatch), and `policies` (every IAM, bucket, key, secret and topic policy document, pure)."""

from components.aws.backend import AwsBackend
from components.aws.rds import RDS_IGNORED_FIELDS, RDS_MANAGED_FIELDS

__all__ = ["RDS_IGNORED_FIELDS", "RDS_MANAGED_FIELDS", "AwsBackend"]
