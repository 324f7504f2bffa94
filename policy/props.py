"""Reading resource properties the way the engine hands them to a policy.

CrossGuard gives a rule the resource's inputs (engine camelCase names) wrapped in a proxy that raises on
values the engine cannot know yet during `pulumi preview` (the id of a key that does not exist yet, a
service account's email). Rules here first turn the props into plain dicts and lists, with such values
replaced by `UNKNOWN`, then decide explicitly: a KMS key name that is UNKNOWN is still a configured key; a
schedule that is UNKNOWN cannot be checked and says so (`require_known`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
    _DictProxy,
    _ListProxy,
)

from rules.manifest import CANTON_BFT

_SENTINELS = {
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
}

# The Kubernetes label that tells which backup a CronJob runs (rules/naming.py COMPONENT_LABEL), and the
# backup kind each value stands for (the kinds the alerts and log events use, docs/contracts.md section 3).
COMPONENT_LABEL = "app.kubernetes.io/component"
BACKUP_COMPONENTS = {
    "postgres-backup": "postgres",
    "cometbft-snapshot": "cometbft",
    "identities-dump": "identities",
    # Ordered Postgres snapshot sets (sv-backups:snapshots, components/pg_snapshots.py) and their pruner: backup
    # jobs as far as pods, identities and alerts go; neither is required on every stack (BACKUP_KINDS).
    "postgres-snapshot": "postgres-snapshots",
    "postgres-snapshot-prune": "snapshot-prune",
}
BACKUP_KINDS = ("postgres", "cometbft", "identities")
SNAPSHOT_KINDS = ("postgres-snapshots", "snapshot-prune")
# On the dump sets' CronJob when snapshot sets carry the 4-hourly duty (rules/naming.py FOUR_HOURLY_BY_LABEL).
FOUR_HOURLY_BY_LABEL = "sv-backups.canton.network/four-hourly-by"
# The jobs that check the backups rather than take them, and run as the read-only restore identity: a DR stack's
# replica check (components/dr.py) and every primary's daily history audit (components/audit.py).
CHECK_COMPONENTS = {"replica-check": "replica", "history-audit": "history"}
# The restore drills of a primary stack (components/drill.py), per backup kind; their events' kind is the label.
DRILL_COMPONENTS = {
    "drill-postgres": "postgres",
    "drill-cometbft": "cometbft",
    "drill-identities": "identities",
    # The snapshot sets' drill (jobs/drill_snapshots.py): required where snapshot sets of in-cluster instances are.
    "drill-postgres-snapshots": "postgres-snapshots",
}
# On a DR stack's backup CronJobs until failover (rules/naming.py STANDBY_LABEL): suspended on purpose.
STANDBY_LABEL = "sv-backups.canton.network/standby"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
# The restore identity's account id / role name ends so (components/dr.py RESTORE_COMPONENT).
RESTORE_SUFFIX = "-restore"

CRON_JOB = "kubernetes:batch/v1:CronJob"
SNAPSHOT_CLASS = "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass"
BUCKET = "gcp:storage/bucket:Bucket"
TRANSFER_JOB = "gcp:storage/transferJob:TransferJob"
SECRET = "gcp:secretmanager/secret:Secret"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"
SERVICE_ACCOUNT = "gcp:serviceaccount/account:Account"
K8S_SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
# The annotation that ties a Kubernetes ServiceAccount to the GCP service account it acts as (Workload Identity).
GKE_SA_ANNOTATION = "iam.gke.io/gcp-service-account"

# Labels the program puts on the backup bucket (components/gcp/backend.py): the windows its lifecycle rules were
# sized from. CrossGuard stack policies see resources, not stack outputs, so the windows travel as labels.
RECENT_SECONDS = "svbackups-recent-seconds"
CADENCE_SECONDS = "svbackups-historical-cadence-seconds"
MIN_PRUNING_SECONDS = "svbackups-min-pruning-seconds"
RECENT_PREFIX = "svbackups-recent-prefix"
HISTORICAL_PREFIX = "svbackups-historical-prefix"
SECRET_PURPOSE = "svbackups-purpose"


class _Unknown:
    """A value the engine cannot know during preview."""

    def __repr__(self) -> str:
        return "<unknown during preview>"


UNKNOWN = _Unknown()


def plain(value: Any) -> Any:
    """Props (possibly wrapped in CrossGuard's unknown-checking proxies) as plain dicts and lists."""
    kind = type(value)
    # The common shapes first, by exact type: every rule copies every resource's props, on every run.
    if kind is _DictProxy or kind is dict:
        inner = value._DictProxy__target if kind is _DictProxy else value
        return {key: plain(item) for key, item in inner.items()}
    if kind is _ListProxy or kind is list:
        inner = value._ListProxy__target if kind is _ListProxy else value
        return [plain(item) for item in inner]
    if kind is str:
        return UNKNOWN if value in _SENTINELS else value
    if value is None or kind in (bool, int, float):
        return value
    if isinstance(value, Mapping):
        inner = getattr(value, "_DictProxy__target", value)
        return {key: plain(item) for key, item in inner.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        inner = getattr(value, "_ListProxy__target", value)
        return [plain(item) for item in inner]
    if isinstance(value, str) and value in _SENTINELS:
        return UNKNOWN
    return value


def get(data: Any, *path: str | int, default: Any = None) -> Any:
    """`data[path[0]][path[1]]...`, `default` when a step is missing, UNKNOWN when a step is unknown."""
    current = data
    for step in path:
        if current is UNKNOWN:
            return UNKNOWN
        if isinstance(step, int):
            if not isinstance(current, list) or not -len(current) <= step < len(current):
                return default
            current = current[step]
        else:
            if not isinstance(current, dict) or step not in current:
                return default
            current = current[step]
    return current


def require_known(value: Any, where: str) -> Any:
    """Stop a rule that cannot decide without `value`: CrossGuard reports "can't run policy during preview"
    as an advisory note instead of a pass or a failure."""
    if value is UNKNOWN:
        raise UnknownValueError(UNKNOWN_STRING_VALUE, where.split("."))
    return value


def as_number(value: Any) -> float | None:
    """Numbers arrive as floats (protobuf Struct), some provider fields as strings ("2592000")."""
    if isinstance(value, bool) or value is None or value is UNKNOWN:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("s"))
        except ValueError:
            return None
    return None


def labels(props: dict, *path: str) -> dict:
    found = get(props, *path, default={})
    return found if isinstance(found, dict) else {}


def backup_kind(props: dict) -> str | None:
    """The backup a CronJob runs (postgres, cometbft, identities), from its component label; None otherwise."""
    return BACKUP_COMPONENTS.get(labels(props, "metadata", "labels").get(COMPONENT_LABEL))


def check_kind(props: dict) -> str | None:
    """The check a CronJob runs (replica, history), from its component label; None otherwise."""
    return CHECK_COMPONENTS.get(labels(props, "metadata", "labels").get(COMPONENT_LABEL))


def drill_kind(props: dict) -> str | None:
    """The backup kind a drill CronJob restores (postgres, cometbft, identities), from its component label."""
    return DRILL_COMPONENTS.get(labels(props, "metadata", "labels").get(COMPONENT_LABEL))


def drill_component(props: dict) -> str | None:
    """A drill CronJob's component label (drill-postgres...), which is also its outcome events' kind."""
    component = labels(props, "metadata", "labels").get(COMPONENT_LABEL)
    return component if component in DRILL_COMPONENTS else None


def standby(props: dict) -> bool:
    """A DR stack's backup CronJob before failover (labelled so by the program)."""
    return labels(props, "metadata", "labels").get(STANDBY_LABEL) == "true"


def is_dr_stack(resources) -> bool:
    """A DR stack (components/dr.py): it reads a primary through a StackReference and runs the replica check."""
    return any(r.type == STACK_REFERENCE for r in resources) and any(
        r.type == CRON_JOB and check_kind(r.props) == "replica" for r in resources
    )


def pod_spec(cron_job_props: dict) -> dict:
    spec = get(cron_job_props, "spec", "jobTemplate", "spec", "template", "spec", default={})
    return spec if isinstance(spec, dict) else {}


def containers(spec: dict) -> list[tuple[str, dict]]:
    """(kind, container) for every initContainer then every container of a pod spec."""
    found = []
    for kind in ("initContainers", "containers"):
        for container in get(spec, kind, default=[]) or []:
            if isinstance(container, dict):
                found.append((kind, container))
    return found


def describe_seconds(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def flag_values(container: dict, flag: str) -> list:
    """Every value given to `flag` in a container's command and args (`--flag value` or `--flag=value`)."""
    words = [*(get(container, "command", default=[]) or []), *(get(container, "args", default=[]) or [])]
    found = []
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            found.append(words[index + 1])
        elif isinstance(word, str) and word.startswith(flag + "="):
            found.append(word.split("=", 1)[1])
    return found


def is_dabft_stack(resources) -> bool:
    """A DABFT node (no CometBFT node to snapshot): its Postgres backup CronJob dumps the DABFT ordering state,
    a `backup-step --role canton-bft` step (rules/manifest.py CANTON_BFT). Read from what the job runs, not from
    a label or the stack's name: a CometBFT stack that merely lost its snapshot job is no DABFT stack."""
    for resource in resources:
        if resource.type != CRON_JOB or backup_kind(resource.props) != "postgres":
            continue
        for _kind, container in containers(pod_spec(resource.props)):
            words = [*(get(container, "command", default=[]) or []), *(get(container, "args", default=[]) or [])]
            if "backup-step" in words and flag_values(container, "--role") == [CANTON_BFT]:
                return True
    return False


def required_backup_kinds(resources) -> tuple[str, ...]:
    """The backup kinds the stack must run: every kind, but cometbft on a DABFT stack (`is_dabft_stack`)."""
    return tuple(k for k in BACKUP_KINDS if not (k == "cometbft" and is_dabft_stack(resources)))


def iam_grants(props: dict) -> list[tuple[Any, list]]:
    """(role, members) of any GCP IAM member, binding or policy resource."""
    if "policyData" in props:
        data = props["policyData"]
        try:
            policy = json.loads(data) if isinstance(data, str) else {}
        except json.JSONDecodeError:
            return []
        return [(b.get("role"), list(b.get("members") or [])) for b in policy.get("bindings") or []]
    members = props.get("members") if isinstance(props.get("members"), list) else [props.get("member")]
    return [(props.get("role"), members)]


def gcs_copies(props: dict) -> list[tuple[Any, Any, Any, Any]]:
    """(source bucket, source path, sink bucket, sink path) of a Storage Transfer job from a GCS bucket to a GCS
    bucket (`transferSpec` or `replicationSpec`); a path is '' (the whole bucket) or ends with '/'."""
    found = []
    for spec_key in ("transferSpec", "replicationSpec"):
        spec = get(props, spec_key)
        source, sink = get(spec, "gcsDataSource", "bucketName"), get(spec, "gcsDataSink", "bucketName")
        if source is not None and sink is not None:
            paths = [get(spec, side, "path") or "" for side in ("gcsDataSource", "gcsDataSink")]
            found.append((source, paths[0], sink, paths[1]))
    return found


def namespace_of(props: dict) -> str:
    """The namespace of a Kubernetes object (`default` when unset)."""
    namespace = get(props, "metadata", "namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


def cloudsql_proxy_version(container: dict) -> str | None:
    """'v2' for a Cloud SQL Auth Proxy v2 container (an image named cloud-sql-proxy, in any registry), 'v1'
    for the retired v1 image (gce-proxy), None for any other container."""
    image = container.get("image")
    if not isinstance(image, str):
        return None
    repository = image.split("@", 1)[0]
    name = repository.rsplit("/", 1)[-1].split(":", 1)[0]
    return {"cloud-sql-proxy": "v2", "gce-proxy": "v1"}.get(name)


_PATH_SEGMENT = re.compile(r'\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*([^\]]*?)\s*\]|([^.\[\]]+)')


def path_segments(path: str) -> list[str]:
    """`settings.backupConfiguration["enabled"]` -> ['settings', 'backupConfiguration', 'enabled'] (Pulumi
    property paths: dots, [index], ["key"], * wildcards)."""
    return [next(g for g in match.groups() if g is not None) for match in _PATH_SEGMENT.finditer(path)]
