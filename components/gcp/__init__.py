"""The GCP (GKE) implementation of the cloud interface: `backend` (the façade: identities, secrets, snapshots),
`context` (what the parts share: settings, names, project, regions, the KMS keys), `buckets` (the backup buckets
and their copy to the DR region), `cloudsql` (adopted instances, IAM logins through the Cloud SQL Auth Proxy),
`alerts` (Cloud Monitoring). The parts depend on `context`, never on `backend`."""

from components.gcp.backend import GcpBackend
from components.gcp.cloudsql import CLOUDSQL_IGNORED_FIELDS

__all__ = ["CLOUDSQL_IGNORED_FIELDS", "GcpBackend"]
