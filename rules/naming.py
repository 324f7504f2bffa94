"""Every name the program gives to a resource, derived in one place.

Pulumi logical names and cloud names must stay stable across runs: renaming a bucket or a secret replaces it,
which for a backup system means losing backups. Change a name here only together with an `aliases` entry.
"""

from __future__ import annotations

import hashlib

# GCP and S3 limits we must respect.
_SERVICE_ACCOUNT_ID_MAX = 30
_BUCKET_NAME_MAX = 63

LABEL_PREFIX = "sv-backups.canton.network"
COMPONENT_LABEL = "app.kubernetes.io/component"
# On a DR stack's backup CronJobs until failover: they are suspended on purpose (policy checks the pairing).
STANDBY_LABEL = f"{LABEL_PREFIX}/standby"
# On the dump sets' CronJob when snapshot sets (sv-backups:snapshots) carry the 4-hourly duty: the name of the
# snapshot CronJob that does, so the dumps may run sparser (policy snapshot-sets-carry-the-duty checks that one).
FOUR_HOURLY_BY_LABEL = f"{LABEL_PREFIX}/four-hourly-by"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sv-backups"}


class Names:
    """Names for one SV node's backup resources (`node` is the validated, DNS-safe node name)."""

    def __init__(self, node: str):
        self.node = node

    def resource(self, *parts: str) -> str:
        """Pulumi logical names and Kubernetes object names: `<node>-<part>-...`."""
        return "-".join((self.node, *parts))

    def service_account_id(self, purpose: str) -> str:
        """A GCP service-account id (6-30 chars); long ones are shortened with a stable hash suffix."""
        wanted = f"{self.node}-{purpose}"
        if len(wanted) <= _SERVICE_ACCOUNT_ID_MAX:
            return wanted
        digest = hashlib.sha256(wanted.encode()).hexdigest()[:6]
        return f"{wanted[: _SERVICE_ACCOUNT_ID_MAX - 7].rstrip('-')}-{digest}"

    def bucket(self, scope: str, override: str | None) -> str:
        """Bucket names are global (GCS, S3): prefix with the account scope (project id) to avoid collisions."""
        if override:
            return override
        return _shorten_bucket(f"{scope}-{self.node}-backups")

    def dr_bucket(self, primary: str) -> str:
        """The DR copy of a bucket that cannot replicate itself: the primary's name with `-dr`."""
        return _shorten_bucket(f"{primary}-dr")

    @staticmethod
    def replica_bucket(primary: str, region: str) -> str:
        """The DR copy of a bucket (S3 replication needs a bucket per region): `<primary>-<region>`."""
        wanted = f"{primary}-{region}"
        if len(wanted) <= _BUCKET_NAME_MAX:
            return wanted
        digest = hashlib.sha256(wanted.encode()).hexdigest()[:8]
        return f"{primary[: _BUCKET_NAME_MAX - len(region) - 10].rstrip('-')}-{digest}-{region}"

    def log_metric(self, kind: str, outcome: str) -> str:
        return f"sv-backups/{self.node}/{kind}-{outcome}"

    def cluster_scoped(self, namespace: str, *parts: str) -> str:
        """Cluster-scoped objects (ClusterRoles) carry the namespace: several nodes may share a cluster."""
        return "-".join((namespace, self.node, *parts))

    def identities_secret(self) -> str:
        return f"{self.node}-identities-dump"

    def labels(self, component: str) -> dict[str, str]:
        """Kubernetes labels of every object of one backup concern."""
        return {
            "app.kubernetes.io/name": "sv-backups",
            "app.kubernetes.io/instance": self.node,
            COMPONENT_LABEL: component,
            **MANAGED_BY,
        }


def _shorten_bucket(wanted: str) -> str:
    """A bucket name within the GCS/S3 limit; a longer one keeps its start and gets a stable hash suffix."""
    if len(wanted) <= _BUCKET_NAME_MAX:
        return wanted
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:8]
    return f"{wanted[: _BUCKET_NAME_MAX - 9].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """A text as a GCP label value: lowercase letters, digits, '_' and '-' only, at most 63 characters
    (so a prefix label holds `recent_`, not `recent/`; the policy pack compares prefixes in this form)."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text.lower())[:63]
