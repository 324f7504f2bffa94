"""The GCP (GKE) implementation of the cloud interface: `backend` (keys, bucket, identities, secrets),
`cloudsql` (adopted instances, IAM logins through the Cloud SQL Auth Proxy), `alerts` (Cloud Monitoring)."""

from components.gcp.backend import GcpBackend
from components.gcp.cloudsql import CLOUDSQL_IGNORED_FIELDS

__all__ = ["CLOUDSQL_IGNORED_FIELDS", "GcpBackend"]
