"""The stack configuration: one schema, validated as a whole before any resource is declared.

`load_settings` takes the raw config (full keys such as `sv-backups:node` -> decoded values), checks every
key, then checks the rules that span keys (schedules fire at least every 4 hours, history can be gap-less
under the pruning windows, regions differ...), and either returns a typed, immutable `Settings` or raises
`SettingsError` listing every problem at once, each naming the key, the value and what is allowed.

No Pulumi import here: the schema is tested on its own, in milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rules import retention, schedules
from rules.aws_regions import AWS_REGIONS
from rules.config_keys import OPEN_NAMESPACES, PROVIDER_KEYS, production_flag
from rules.databases import PLAIN_IDENTIFIER
from rules.gcp_locations import GCP_REGIONS
from rules.manifest import role_key
from rules.schedules import (
    BACKUP_KINDS,
    MAX_RUN_DEADLINE,
    MAX_SCHEDULE_GAP,
    MIN_RUN_DEADLINE,
    SNAPSHOT_KIND,
    Timing,
    schedule_timing,
    shortest_gap_for,
)

PROJECT = "sv-backups"
# In backup order (rules/manifest.py ROLE_ORDER): a DABFT synchronizer's `canton-bft` state first, as Splice's own
# backup script takes it, then apps strictly before participant (the SV rule), then the others.
ROLES = ("canton-bft", "apps", "participant", "sequencer", "mediator")
REQUIRED_ROLES = ("apps", "participant")
# sv-backups:synchronizer: the node's synchronizer, CometBFT (a cometbft PVC snapshotted) or DABFT (no CometBFT
# node: the BFT ordering state is the sequencer's `cantonBft` database, in the Postgres set).
SYNCHRONIZERS = ("cometbft", "dabft")
# Schedule timing (start windows, run deadlines, the 4-hour bound) is pure schedule logic: rules/schedules.py.
# GCS lifecycle ages are whole days.
MIN_RECENT = timedelta(days=1)
SUPPORTED_POSTGRES_VERSIONS = ("POSTGRES_14", "POSTGRES_15", "POSTGRES_16", "POSTGRES_17")
# Classes historical sets move to after 30 days, per cloud (the first is the default).
HISTORICAL_STORAGE_CLASSES = {
    "gcp": ("COLDLINE", "STANDARD", "NEARLINE", "ARCHIVE"),
    # Glacier Instant Retrieval: a restore reads it at once (Glacier Flexible / Deep Archive need a restore
    # request of hours first: allowed, but not the default for backups one may need during an incident).
    "aws": ("GLACIER_IR", "STANDARD", "STANDARD_IA", "GLACIER", "DEEP_ARCHIVE"),
}
# The default drill schedule per cloud: weekly (Sunday 06:20 UTC). CloudWatch evaluates at most 7 days of data
# for an alarm, and a weekly drill's stale window is a week plus its run and the slack, so on AWS the drills run
# twice a week (Sunday and Wednesday) by default; MAX_STALE_WINDOW refuses a sparser schedule there.
DRILL_SCHEDULES = {"gcp": "20 6 * * 0", "aws": "20 6 * * 0,3"}
MAX_STALE_WINDOW: dict[str, timedelta | None] = {"gcp": None, "aws": timedelta(days=7)}
# Which managed Postgres kind each cloud has.
MANAGED_POSTGRES_KIND = {"gcp": "cloudsql", "aws": "rds"}
# How messages name each cloud's regions and storage classes.
CLOUD_NAMES = {"gcp": "a GCP", "aws": "an AWS"}
# The regions each cloud's provider knows: kept lists (rules/), so that a typo fails the plan, not `pulumi up`.
KNOWN_REGIONS = {"gcp": GCP_REGIONS, "aws": AWS_REGIONS}
_REGION_LISTS = {"gcp": "rules/gcp_locations.py", "aws": "rules/aws_regions.py"}
# A DR region to suggest, per cloud: the first that is not the primary region.
_DR_EXAMPLES = {"gcp": ("europe-west3", "europe-west4"), "aws": ("us-west-2", "us-east-1")}
# What follows a region in a zone's name: GCP europe-west3-a; AWS ap-northeast-1a, or a Local Zone us-east-1-bos-1a.
_ZONE_SUFFIX = {"gcp": re.compile(r"-[a-z]"), "aws": re.compile(r"[a-z]|-[a-z]+-\d+[a-z]")}
# difflib's similarity ratio a suggestion needs: below it the nearest name is no likelier than any other.
_SUGGESTION_CUTOFF = 0.6

# Node names prefix GCP service-account ids (at most 30 characters), so they stay short.
_NODE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_AWS_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_GCP_CHANNEL = re.compile(r"^projects/[^/\s]+/notificationChannels/[^/\s]+$")
_RDS_IDENTIFIER = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,62}(?<!-)$")
_OIDC_ISSUER = re.compile(r"^oidc\.eks\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/id/[A-Za-z0-9]+$")
_BACKUP_WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[a-f0-9]{64})?$")


class SettingsError(ValueError):
    """The stack config is invalid; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like `word` (difflib's ratio), the alphabetically first on a tie; None when none is close."""
    scored = [(difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates]
    best = max((score for score, _ in scored), default=0.0)
    return min(c for score, c in scored if score == best) if best >= _SUGGESTION_CUTOFF else None


def _region_problem(cloud: str, value: Any) -> str | None:
    """What is wrong with `value` as a region of `cloud` (the message after the key), or None when it is one."""
    known = KNOWN_REGIONS[cloud]
    if isinstance(value, str) and value in known:
        return None
    allowed = f"allowed: the regions listed in {_REGION_LISTS[cloud]}"
    if not isinstance(value, str):
        return f"must be {CLOUD_NAMES[cloud]} region, not {_show(value)}; {allowed}"
    zone_of = [r for r in known if value.startswith(r) and _ZONE_SUFFIX[cloud].fullmatch(value[len(r) :])]
    if zone_of:
        return f"{value!r} is a zone; its region is {max(zone_of, key=len)!r}"
    near = _nearest(value.lower(), known)
    if near:
        return f"{value!r} is not {CLOUD_NAMES[cloud]} region; did you mean {near!r}? ({allowed})"
    return f"{value!r} is not {CLOUD_NAMES[cloud]} region; {allowed}"


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return retention.parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(retention.format_duration, return_type=str),
]


class _Model(BaseModel):
    # Unknown keys are errors: a typo such as `paticipantPruning` must not silently disable a rule.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


def _check_node_name(value: str) -> str:
    if not _NODE_NAME.match(value):
        raise ValueError("must be lowercase letters, digits and '-', starting with a letter, at most 20 characters")
    return value


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63 characters")
    return value


def _check_k8s_name(value: str) -> str:
    if not _K8S_NAME.match(value):
        raise ValueError("must be a Kubernetes object name: lowercase letters, digits, '-' and '.'")
    return value


class NodeConfig(_Model):
    name: str = Field(description="DNS-safe node name; prefixes every resource name")
    namespace: str = Field(description="Kubernetes namespace of the SV node and its backup jobs")
    migration_id: int = Field(
        alias="migrationId", ge=0, description="the id sets are filed under: the migration id, or the serial id (LSU)"
    )
    # Logical synchronizer upgrades (docs/synchronizer-upgrade.md): give serialId instead of migrationId. The
    # sets are filed under the serial id (migration_id repeats it); the participant's history runs across serials.
    serial_id: int | None = Field(None, alias="serialId", ge=0, description="current synchronizer serial (LSU)")

    @model_validator(mode="before")
    @classmethod
    def _one_scheme(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("serialId") is not None:
            if data.get("migrationId") is not None:
                raise ValueError("value has both migrationId and serialId: give one (serialId: the node runs LSU)")
            serial = data["serialId"]  # an invalid one is reported once, as serialId's
            data = {**data, "migrationId": serial if isinstance(serial, int) and serial >= 0 else 0}
        return data

    @property
    def lsu(self) -> bool:
        """The node runs logical synchronizer upgrades (a serial id), not hard migrations (a migration id)."""
        return self.serial_id is not None

    def identity(self) -> dict[str, Any]:
        """What the stack exports as `node` and a DR stack must match (rules/dr_pairing.py), by config key; the
        failover plan reads the id the sets are filed under from it (jobs/failover_plan.py)."""
        scheme = {"serialId": self.serial_id} if self.lsu else {"migrationId": self.migration_id}
        return {"name": self.name, "namespace": self.namespace, **scheme}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_node_name(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_dns_label(value)


class ScheduleConfig(_Model):
    # Staggered so that the three jobs do not compete for the node's CPU at the same minute.
    postgres: str = "0 */4 * * *"
    cometbft: str = "20 */4 * * *"
    identities: str = "40 */4 * * *"
    # The daily history audit (python -m jobs audit-history): reads manifests only, after the night's sets.
    audit: str = "50 5 * * *"
    # The restore drills (components/drill.py), after the night's sets and the audit; unset: DRILL_SCHEDULES.
    drill: str | None = None

    @field_validator("postgres", "cometbft", "identities", "audit", "drill")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            schedules.validate_cron(value)
        return value


class _PostgresBase(_Model):
    port: int = Field(5432, ge=1, le=65535)
    user: str = "cnadmin"
    password_secret: str | None = Field(
        None, alias="passwordSecret", description="k8s Secret holding key postgresPassword"
    )
    databases: list[str] = Field(min_length=1)
    # Databases on this server that hold nothing to keep. Every run lists the server's databases and fails when
    # one is neither backed up nor ignored (rules/databases.py): a synchronizer upgrade's new database is noticed.
    ignore_databases: list[str] = Field(
        default_factory=list, alias="ignoreDatabases", description="databases on the server not to back up"
    )

    @field_validator("password_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else _check_k8s_name(value)

    @field_validator("databases", "ignore_databases")
    @classmethod
    def _database_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not PLAIN_IDENTIFIER.match(n)]
        if bad:
            raise ValueError(f"{bad} are not plain PostgreSQL identifiers (letters, digits, _ and $)")
        if len(set(names)) != len(names):
            raise ValueError("lists a database twice")
        return names

    @property
    def server(self) -> tuple[str, ...]:
        """What tells two roles' instances apart: roles with the same value share one server."""
        return (type(self).__name__, getattr(self, "instance", None) or getattr(self, "host", None), str(self.port))

    @model_validator(mode="after")
    def _ignored_not_backed_up(self) -> _PostgresBase:
        both = sorted(set(self.databases) & set(self.ignore_databases))
        if both:
            raise ValueError(
                f"ignoreDatabases: {', '.join(both)} also in databases; a database is either backed up (databases) "
                "or ignored (ignoreDatabases), not both"
            )
        return self


def default_pvc(host: str) -> str:
    """The PVC holding the data directory of the in-cluster PostgreSQL behind Service `host` (its first DNS label),
    as the chart Splice's SV runbook installs it names it.

    Splice's SV examples deploy each instance with the upstream bitnami/postgresql chart, `fullnameOverride` = the
    Service name (canton-network/splice apps/app/src/pack/examples/sv-helm/postgres-values-apps.yaml:
    `fullnameOverride: apps-pg`). That chart's primary StatefulSet is named the fullname (architecture standalone)
    and claims its volume through `volumeClaimTemplates: [{metadata: {name: data}}]`
    (bitnami/charts bitnami/postgresql/templates/primary/statefulset.yaml), so the PVC of pod 0 is
    `data-<service>-0`, e.g. data-apps-pg-0. The deprecated splice-postgres chart (hyperledger-labs/splice
    cluster/helm/splice-postgres/templates/postgres.yaml: StatefulSet `{{ .Release.Name }}`, claim template
    `{{ .Values.db.pvcTemplateName }}`, default `pg-data` in values-template.yaml) gives `pg-data-<release>-0`:
    nodes still on it set `pvc` explicitly."""
    return f"data-{host.split('.', 1)[0]}-0"


class InClusterPostgres(_PostgresBase):
    kind: Literal["in-cluster"]
    host: str = Field(min_length=1, description="Service name or DNS name, e.g. apps-pg")
    # Read through `pvc` (the default applies when unset); kept apart so that the checks can tell a given name from
    # the default (an instance outside the node's namespace needs the given one).
    pvc_name: str | None = Field(
        None, alias="pvc", description="PVC of the data directory (snapshot sets); default data-<service>-0"
    )
    wal_pvc: str | None = Field(
        None, alias="walPvc", description="PVC of pg_wal when it is on its own volume (needs snapshots.onlineBackup)"
    )

    @property
    def pvc(self) -> str:
        """The PVC of the data directory: `pvc` from config, else the chart's (default_pvc)."""
        return self.pvc_name or default_pvc(self.host)

    @field_validator("pvc_name", "wal_pvc")
    @classmethod
    def _pvc(cls, value: str | None) -> str | None:
        return None if value is None else _check_k8s_name(value)

    @model_validator(mode="before")
    @classmethod
    def _runbook_secret(cls, data: Any) -> Any:
        # The Splice runbook names each instance's password secret `<name>-secret` (e.g. apps-pg-secret).
        if isinstance(data, Mapping) and data.get("passwordSecret") is None and isinstance(data.get("host"), str):
            data = {**data, "passwordSecret": data["host"].split(".", 1)[0] + "-secret"}
        return data


class CloudSqlPostgres(_PostgresBase):
    kind: Literal["cloudsql"]
    instance: str = Field(min_length=1, description="Cloud SQL instance name")
    database_version: str = Field("POSTGRES_14", alias="databaseVersion")
    tier: str = Field("db-custom-2-7680", min_length=1)
    region: str | None = Field(None, description="defaults to gcp:region")
    host: str | None = Field(None, description="private IP or DNS name; defaults to the instance's private IP")
    adopt: bool = Field(True, description="manage the instance's backup configuration (import it into this stack)")

    @property
    def iam_auth(self) -> bool:
        """No password secret: the job logs in as its Google service account (IAM database authentication)."""
        return self.password_secret is None

    @model_validator(mode="after")
    def _host_when_not_adopted(self) -> CloudSqlPostgres:
        # With IAM authentication the job reaches the instance through the Cloud SQL Auth Proxy (by connection
        # name), so it needs no host; with a password it connects to the host directly.
        if not self.adopt and not self.host and not self.iam_auth:
            raise ValueError("host is required when adopt is false (the job cannot look up the private IP)")
        return self

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        problem = None if value is None else _region_problem("gcp", value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("database_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in SUPPORTED_POSTGRES_VERSIONS:
            raise ValueError(f"must be one of {', '.join(SUPPORTED_POSTGRES_VERSIONS)}")
        return value


class RdsPostgres(_PostgresBase):
    kind: Literal["rds"]
    instance: str = Field(description="RDS DB instance identifier")
    instance_class: str = Field("db.m6g.large", alias="instanceClass", description="only used on first import")
    region: str | None = Field(None, description="defaults to aws:region")
    host: str | None = Field(None, description="endpoint address; defaults to the instance's endpoint")
    adopt: bool = Field(True, description="manage the instance's backup settings (import it into this stack)")
    backup_window: str = Field(
        "02:00-02:30", alias="backupWindow", description="daily automated backup window, UTC, hh:mm-hh:mm"
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        problem = None if value is None else _region_problem("aws", value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("instance")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _RDS_IDENTIFIER.match(value):
            raise ValueError(
                "must be an RDS DB instance identifier: 1-63 letters, digits and '-', starting with a letter, "
                "no '--', not ending in '-'"
            )
        return value

    @field_validator("backup_window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not _BACKUP_WINDOW.match(value):
            raise ValueError("must be a UTC window hh:mm-hh:mm, e.g. 02:00-02:30")
        start, end = (int(t[:2]) * 60 + int(t[3:]) for t in value.split("-"))
        if (end - start) % (24 * 60) < 30:
            raise ValueError("must be at least 30 minutes long (an RDS rule)")
        return value

    @model_validator(mode="after")
    def _checks(self) -> RdsPostgres:
        if self.password_secret is None:
            raise ValueError(
                "passwordSecret is required for rds instances (a k8s Secret with key postgresPassword); "
                "IAM database authentication is supported for cloudsql instances"
            )
        if not self.adopt and not self.host:
            raise ValueError("host is required when adopt is false (the job cannot look up the endpoint)")
        return self


ManagedPostgres = CloudSqlPostgres | RdsPostgres
_POSTGRES_MODELS: dict[str, type[BaseModel]] = {
    "in-cluster": InClusterPostgres,
    "cloudsql": CloudSqlPostgres,
    "rds": RdsPostgres,
}
PostgresInstance = Annotated[InClusterPostgres | CloudSqlPostgres | RdsPostgres, Field(discriminator="kind")]
POSTGRES_KINDS = ("in-cluster", "cloudsql", "rds")


class RetentionConfig(_Model):
    recent: Duration = Field(timedelta(days=7), description="every 4-hourly set is kept this long")
    participant_pruning: Duration | None = Field(None, alias="participantPruning")
    sequencer_pruning: Duration | None = Field(None, alias="sequencerPruning")
    # Splice default retainBlocks; ~7000 blocks/hour makes it about 30 days.
    cometbft_retain_blocks: int = Field(5_040_000, alias="cometbftRetainBlocks", gt=0)
    cometbft_blocks_per_hour: float = Field(7000, alias="cometbftBlocksPerHour", gt=0)

    @field_validator("recent")
    @classmethod
    def _recent(cls, value: timedelta) -> timedelta:
        if value < MIN_RECENT:
            raise ValueError("must be at least 1d (bucket lifecycle ages are counted in days)")
        return value

    @field_validator("participant_pruning", "sequencer_pruning")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be a positive duration (omit it when pruning is off)")
        return value


# sv-backups:schedule.postgres when sv-backups:snapshots is present and the key is unset, per cloud: the dump sets
# then carry the portable, row-verified layer and the historical tier, not the 4-hourly duty. Weekly on GCP
# (Sunday 01:00 UTC); on AWS twice a week (Sunday and Wednesday), as the drills: CloudWatch evaluates at most 7 days
# of data, and a weekly run's stale alert would wait a week plus its run and the slack (MAX_STALE_WINDOW).
DUMP_SCHEDULES_WITH_SNAPSHOTS = {"gcp": "0 1 * * 0", "aws": "0 1 * * 0,3"}


class SnapshotsConfig(_Model):
    """`sv-backups:snapshots`: ordered Postgres snapshot sets (components/pg_snapshots.py). Present (even `{}`):
    the 4-hourly duty is met by storage snapshots (CSI VolumeSnapshots of in-cluster volumes, Cloud SQL backup
    runs, RDS snapshots) and the dump sets run on a sparser schedule of their own."""

    schedule: str = Field("0 */4 * * *", description="when snapshot sets are taken; at most 4 h apart")
    historical: bool = Field(
        False,
        description="also keep snapshot sets older than retention.recent at the postgres historical cadence "
        "(default: the dump sets carry the historical tier)",
    )
    online_backup: bool = Field(
        True, alias="onlineBackup", description="in-cluster: pg_backup_start/stop around the volume snapshot"
    )
    volume_snapshot_class: str | None = Field(
        None,
        alias="volumeSnapshotClass",
        description="in-cluster: default the class the program declares, <node>-postgres-snapshot-class (Retain)",
    )
    driver: str | None = Field(None, description="in-cluster: CSI driver; default per cloud, as for CometBFT")

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        schedules.validate_cron(value)
        return value

    @field_validator("volume_snapshot_class")
    @classmethod
    def _class(cls, value: str | None) -> str | None:
        return None if value is None else _check_k8s_name(value)


# The name the shared design (and the components) use for the validated section.
SnapshotsSettings = SnapshotsConfig
# The keys of sv-backups:snapshots that only volume snapshots (in-cluster instances) read.
_IN_CLUSTER_SNAPSHOT_KEYS = {
    "online_backup": "onlineBackup",
    "volume_snapshot_class": "volumeSnapshotClass",
    "driver": "driver",
}


class IdentitiesConfig(_Model):
    endpoint: str = Field(description="https://sv.sv.<host>/api/sv/v0/admin/domain/identities-dump")
    token_endpoint: str = Field(alias="tokenEndpoint")
    audience: str = Field(min_length=1)
    client_id: str = Field(alias="clientId", min_length=1)
    client_secret: SecretStr = Field(alias="clientSecret")

    @field_validator("endpoint", "token_endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/]+(/\S*)?$", value):
            raise ValueError("must be an https:// URL (the token and the dump must not cross the network in clear)")
        return value

    @field_validator("client_secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty; set it with `pulumi config set --secret`")
        return value


class CometbftConfig(_Model):
    pvc: str = Field(description="e.g. global-domain-<serial>-cometbft-cometbft-data")
    driver: str | None = Field(None, description="CSI driver; defaults per cloud (pd.csi.storage.gke.io on GCP)")

    @field_validator("pvc")
    @classmethod
    def _pvc(cls, value: str) -> str:
        return _check_k8s_name(value)


_QUANTITY = re.compile(r"^([1-9][0-9]*)(Gi|Ti)$")
_QUANTITY_GIB = {"Gi": 1, "Ti": 1024}
# The scratch PostgreSQL needs room for its own files plus the restored databases; below this it is no drill.
MIN_SCRATCH_GIB = 1
# A drill run needs this at least: initdb, a restore of the newest set and the checks of every database.
MIN_DRILL_TIMEOUT = timedelta(minutes=15)


class DrillConfig(_Model):
    """`sv-backups:drill`: the weekly restore drills (components/drill.py), on primary stacks."""

    enabled: bool = Field(True, description="declare the drills (policy restore-drill-coverage requires them)")
    # The scratch PostgreSQL lives on a generic ephemeral volume: a disk of this size created for the drill pod
    # and deleted with it. Size it above the restored size of the largest set (databases, indexes, WAL).
    scratch_size: str = Field("100Gi", alias="scratchSize", description="Kubernetes quantity in Gi or Ti")
    storage_class: str | None = Field(
        None, alias="storageClass", description="class of the scratch volume; default: the class the program declares"
    )
    cometbft_storage_class: str | None = Field(
        None,
        alias="cometbftStorageClass",
        description="class of the PVC restored from a snapshot; default: the class the program declares (the "
        "snapshot class's CSI driver)",
    )
    # How long a Postgres drill may run (Job activeDeadlineSeconds); the CometBFT and identities drills are short.
    timeout: Duration = Field(timedelta(hours=4))

    @field_validator("scratch_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError(f"must be a Kubernetes quantity in Gi or Ti of at least {MIN_SCRATCH_GIB}Gi, e.g. 200Gi")
        return value

    @field_validator("storage_class", "cometbft_storage_class")
    @classmethod
    def _class(cls, value: str | None) -> str | None:
        return None if value is None else _check_k8s_name(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if value < MIN_DRILL_TIMEOUT:
            least = retention.format_duration(MIN_DRILL_TIMEOUT)
            raise ValueError(f"must be at least {least} (a restore of the newest set and its checks)")
        return value

    @property
    def scratch_gib(self) -> int:
        number, unit = _QUANTITY.match(self.scratch_size).groups()
        return int(number) * _QUANTITY_GIB[unit]


class DrConfig(_Model):
    """`sv-backups:dr`. On a primary stack: the second region every artifact is copied to. On a DR stack
    (`sv-backups:role: dr`, its provider region being the DR region): the primary stack it stands in for."""

    region: str | None = Field(None, description="primary stacks: the DR region (required)")
    primary_stack: str | None = Field(None, alias="primaryStack", description="DR stacks: org/project/stack")
    # DR stacks: the backup CronJobs of the DR cluster exist but stay suspended until this is true.
    failover: bool = False
    # A complete set must reach the DR copy within this bound, or the replication alert fires: the DR stack's
    # replica check, and on a primary with a dual-region bucket its turbo replication alert.
    max_replication_lag: Duration = Field(timedelta(hours=1), alias="maxReplicationLag")
    check_schedule: str = Field("*/30 * * * *", alias="checkSchedule", description="DR stacks: replica check")

    @field_validator("primary_stack")
    @classmethod
    def _stack_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", value):
            raise ValueError("must be a fully qualified stack name, <organization>/<project>/<stack>")
        return value

    @field_validator("max_replication_lag")
    @classmethod
    def _lag(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=15):
            raise ValueError("must be at least 15m (S3 replication time control promises 15 minutes at best)")
        return value

    @field_validator("check_schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        schedules.validate_cron(value)
        return value


class MonitoringConfig(_Model):
    notification_channels: list[str] = Field(default_factory=list, alias="notificationChannels")
    notification_emails: list[str] = Field(default_factory=list, alias="notificationEmails")
    slack: Duration = Field(timedelta(hours=1), description="grace added to a schedule's gap before 'stale'")

    @field_validator("notification_emails")
    @classmethod
    def _emails(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", v)]
        if bad:
            raise ValueError(f"{bad} are not e-mail addresses")
        return values


class StorageConfig(_Model):
    bucket_name: str | None = Field(None, alias="bucketName", description="default: <project>-<node>-backups")
    prefix: str = Field("", description="object prefix inside the bucket, e.g. 'sv-1/'; '' for the bucket root")
    # GCS: soft delete keeps deleted objects restorable this long. S3: noncurrent versions are kept this long.
    soft_delete: Duration = Field(timedelta(days=30), alias="softDelete")
    historical_storage_class: str | None = Field(
        None,
        alias="historicalStorageClass",
        description="class historical sets move to after 30 days; default COLDLINE (GCS), GLACIER_IR (S3)",
    )
    # S3 Object Lock mode (AWS only). COMPLIANCE: no one, not even the account root, can delete or overwrite an
    # object version before its retention ends. GOVERNANCE: principals with s3:BypassGovernanceRetention can.
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] | None = Field(None, alias="objectLockMode")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and (not value.endswith("/") or value.startswith("/") or "//" in value):
            raise ValueError("must be empty or a path ending in '/', without a leading '/', e.g. 'sv-1/'")
        return value

    @field_validator("soft_delete")
    @classmethod
    def _soft_delete(cls, value: timedelta) -> timedelta:
        if not timedelta(days=7) <= value <= timedelta(days=90):
            raise ValueError("must be between 7d and 90d (the range GCS soft delete allows)")
        return value

    def historical_class(self, cloud: str) -> str:
        return self.historical_storage_class or HISTORICAL_STORAGE_CLASSES[cloud][0]


_IAM_MEMBER = re.compile(r"^(user|group|serviceAccount|domain):[^\s:]+$")


class RestoreConfig(_Model):
    """`sv-backups:restore`: who may restore by hand. On GCP the restore identity (a Google service account the
    restore pods act as) has no key; the people listed here may impersonate it (roles/iam.serviceAccountTokenCreator
    on that account only): `gcloud ... --impersonate-service-account`, and the restore tools through
    `gcloud auth application-default login --impersonate-service-account` (docs/runbook.md). On AWS people restore by
    assuming one of sv-backups:aws.restoreRoleArns."""

    impersonators: list[str] = Field(
        default_factory=list, description="IAM members, e.g. group:sv-oncall@example.com (GCP)"
    )

    @field_validator("impersonators")
    @classmethod
    def _members(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not _IAM_MEMBER.match(v)]
        if bad:
            raise ValueError(
                f"{bad} are not IAM members; allowed: user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN"
            )
        if len(set(values)) != len(values):
            raise ValueError("lists a member twice")
        return values


class GcpConfig(_Model):
    project: str
    region: str  # checked against the known regions by _gcp_config


class AwsSection(_Model):
    """`sv-backups:aws`: the EKS cluster, how the backup jobs get AWS credentials (IRSA) and who may restore."""

    # The cluster names the Container Insights log group the alarms read
    # (/aws/containerinsights/<clusterName>/application) and, without oidcProvider, the OIDC issuer IRSA trusts.
    cluster_name: str = Field(alias="clusterName")
    # The cluster's OIDC issuer (without https://): set it to skip the eks:DescribeCluster lookup.
    oidc_provider: str | None = Field(None, alias="oidcProvider")
    restore_role_arns: list[str] = Field(
        alias="restoreRoleArns",
        min_length=1,
        description="break-glass / restore roles: the only principals that may read the identities secret",
    )
    # S3 Replication Time Control: 99.99% of objects replicated within 15 minutes, for a per-GB fee.
    replication_time_control: bool = Field(False, alias="replicationTimeControl")

    @field_validator("oidc_provider")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.removeprefix("https://")
            if not _OIDC_ISSUER.match(value):
                raise ValueError(
                    "must be an EKS OIDC issuer such as oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71"
                )
        return value

    @field_validator("cluster_name")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not re.match(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", value):
            raise ValueError("must be an EKS cluster name (letters, digits, '-' and '_', at most 100 characters)")
        return value

    @field_validator("restore_role_arns")
    @classmethod
    def _roles(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not _AWS_ROLE_ARN.match(v)]
        if bad:
            raise ValueError(f"{bad} are not IAM role ARNs (arn:aws:iam::<12-digit account>:role/<name>)")
        return values


@dataclass(frozen=True)
class AwsConfig:
    region: str  # aws:region, the primary region (the cluster's)
    irsa: AwsSection


@dataclass(frozen=True)
class Derived:
    """Numbers computed once from the config and used by every component (and exported for audits)."""

    timing: dict[str, Timing]  # per backup kind: postgres, cometbft, identities
    postgres_historical_cadence: timedelta
    cometbft_historical_cadence: timedelta
    min_pruning_window: timedelta | None
    cometbft_retention_window: timedelta
    # The checks' schedules, scanned over a full period (they may be irregular): the history audit's, and the
    # DR stack's replica check's (sv-backups:dr.checkSchedule; None when the dr section is invalid).
    audit: Timing
    dr_check: Timing | None
    # The Postgres drill's schedule and run bound (sv-backups:schedule.drill, sv-backups:drill.timeout).
    drill: Timing | None = None
    # The largest gap of the dump schedule as the historical cadence counts it: 4 h for every schedule at most that
    # sparse, the real gap of a sparser one (allowed with snapshot sets); the dump seal gets it (--schedule-gap).
    postgres_schedule_gap: timedelta = retention.SV_SCHEDULE_GAP
    # With sv-backups:snapshots.historical: the spacing of snapshot sets kept past retention.recent (their schedule
    # is at most 4 h apart, so the cadence is the one of a 4-hourly schedule); None otherwise.
    snapshot_historical_cadence: timedelta | None = None


@dataclass(frozen=True)
class Settings:
    stack: str
    cloud: str
    role: str  # primary | dr
    node: NodeConfig
    schedule: ScheduleConfig
    postgres: dict[str, InClusterPostgres | CloudSqlPostgres]
    retention: RetentionConfig
    identities: IdentitiesConfig
    cometbft: CometbftConfig | None  # None on a DABFT stack
    dr: DrConfig
    job_image: str
    monitoring: MonitoringConfig
    storage: StorageConfig
    drill: DrillConfig
    gcp: GcpConfig | None  # set when cloud is gcp
    aws: AwsConfig | None  # set when cloud is aws
    derived: Derived
    synchronizer: str = "cometbft"  # cometbft | dabft (then `cometbft` is None and `canton-bft` a Postgres role)
    snapshots: SnapshotsConfig | None = None  # sv-backups:snapshots present: ordered Postgres snapshot sets
    restore: RestoreConfig = dataclasses.field(default_factory=RestoreConfig)
    # sv-backups:production: true: the stack is held to the production policy config (policy/production.py)
    production: bool = False

    @property
    def dabft(self) -> bool:
        """A DABFT synchronizer: no CometBFT node to snapshot; its state is the `canton-bft` Postgres role."""
        return self.synchronizer == "dabft"

    @property
    def name_prefix(self) -> str:
        """Prefixes every resource name: the node name, with `-dr` on a DR stack (a DR stack may share the
        primary's project or account, where service-account and role names must not collide)."""
        return f"{self.node.name}-dr" if self.role == "dr" else self.node.name

    @property
    def standby(self) -> bool:
        """A DR stack before failover: its backup CronJobs exist, suspended."""
        return self.role == "dr" and not self.dr.failover

    @property
    def region(self) -> str:
        """The primary region (gcp:region or aws:region)."""
        return self.gcp.region if self.gcp else self.aws.region

    @property
    def roles(self) -> list[str]:
        """Configured roles in backup order: canton-bft (DABFT), apps, then participant (the SV rule), the others."""
        return [role for role in ROLES if role in self.postgres]

    def server_roles(self, role: str) -> list[str]:
        """The roles whose instance is the server of `role` (itself included), in backup order."""
        server = self.postgres[role].server
        return [r for r in self.roles if self.postgres[r].server == server]


class _PostgresMap(_Model):
    # A DABFT synchronizer's state (sv-backups:synchronizer dabft), usually on the sequencer's server.
    canton_bft: PostgresInstance | None = Field(None, alias="cantonBft")
    apps: PostgresInstance
    participant: PostgresInstance
    sequencer: PostgresInstance | None = None
    mediator: PostgresInstance | None = None


# key -> (model or None for a scalar handled below, required)
_SECTIONS: dict[str, tuple[type[BaseModel] | None, bool]] = {
    "cloud": (None, True),
    "node": (NodeConfig, True),
    "schedule": (ScheduleConfig, False),
    "postgres": (_PostgresMap, True),
    "retention": (RetentionConfig, False),
    "identities": (IdentitiesConfig, True),
    "cometbft": (CometbftConfig, True),  # not with synchronizer dabft (checked below)
    "dr": (DrConfig, True),
    "jobImage": (None, True),
    "role": (None, False),  # primary (default) | dr
    "monitoring": (MonitoringConfig, False),
    "storage": (StorageConfig, False),
    "drill": (DrillConfig, False),
    "aws": (AwsSection, False),  # required when cloud is aws (checked below)
    "synchronizer": (None, False),  # cometbft (default) | dabft
    "snapshots": (SnapshotsConfig, False),  # absent: no snapshot sets (None); present, even {}: declared
    "restore": (RestoreConfig, False),  # who may act as the restore identity by hand (GCP)
    "production": (None, False),  # a boolean: the production policy config applies (rules/config_keys.py)
}
SUPPORTED_CLOUDS = ("gcp", "aws")
ROLES_OF_STACK = ("primary", "dr")


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a map"  # its repr would print the whole section, and the key already says which it is
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model a pydantic error location inside `model` points into (None past a non-model field)."""
    current: type[BaseModel] | None = model
    for part in path:
        if isinstance(part, int) or "[" in str(part):
            continue  # a list index or a validator marker
        if part in POSTGRES_KINDS:
            current = _POSTGRES_MODELS[part]  # a union branch, named by its tag
            continue
        fields = current.model_fields.items() if current is not None else ()
        annotation = next((f.annotation for name, f in fields if part in (name, f.alias)), None)
        current = next(
            (
                a
                for a in typing.get_args(annotation) or (annotation,)
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return current


def _unknown_field(where: str, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    inner = _model_at(model, loc[:-1])
    names = [field.alias or name for name, field in inner.model_fields.items()] if inner is not None else []
    near = _nearest(str(loc[-1]), names)
    if near:
        return f"{where}: unknown key; did you mean {near}?"
    return f"{where}: unknown key; allowed: {', '.join(names)}" if names else f"{where}: unknown key"


def _pydantic_problems(key: str, model: type[BaseModel], error: ValidationError) -> list[str]:
    problems = []
    kinds = " or ".join(repr(k) for k in POSTGRES_KINDS)
    for item in error.errors():
        # Drop pydantic's union-branch markers ("cloudsql", "function-after[...]") from the key path.
        path = ".".join(str(p) for p in item["loc"] if str(p) not in POSTGRES_KINDS and "[" not in str(p))
        where = f"{key}.{path}" if path else key
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            problems.append(f"{where}: is required but missing")
        elif item["type"] == "extra_forbidden":
            problems.append(_unknown_field(where, model, item["loc"]))
        elif item["type"] == "union_tag_invalid":
            kind = _show(item["input"].get("kind"))
            problems.append(f"{where}: kind {kind} is not allowed; use {kinds}")
        elif item["type"] == "union_tag_not_found":
            problems.append(f"{where}: needs a 'kind': {kinds}")
        else:
            shown = "[secret]" if "secret" in where.lower() else _show(item.get("input"))
            if shown != "[secret]" and repr(item.get("input")) in message:
                problems.append(f"{where}: {message}")  # the message names the value already: say it once
            elif isinstance(item.get("input"), list) and message.startswith("["):
                problems.append(f"{where}: {message}")  # the message names the list's offending items
            elif message.startswith(("Input", "value")):
                problems.append(f"{where}: {message} (got {shown})")
            else:
                problems.append(f"{where}: {shown} {message}")
    return problems


# Every key a stack may set, by namespace: the program's sections and what each provider reads (rules/config_keys.py);
# OPEN_NAMESPACES (the engine's) accept any key.
_KEYS_BY_NAMESPACE: dict[str, tuple[str, ...]] = {
    PROJECT: tuple(_SECTIONS),
    **{namespace: tuple(sorted(keys)) for namespace, keys in PROVIDER_KEYS.items()},
}
_ALL_KEYS = tuple(f"{namespace}:{key}" for namespace, keys in _KEYS_BY_NAMESPACE.items() for key in keys)


def _check_keys(raw: Mapping[str, Any], problems: list[str]) -> set[str]:
    """Refuse every key nothing reads, suggesting the nearest one that is read. Returns the suggested keys: a
    misspelt required key must not also be reported missing (fixing the spelling fixes both)."""
    cloud = raw.get(f"{PROJECT}:cloud")
    # The other cloud's keys are refused whole by _check_cloud_specific ("is aws configuration ...; remove it").
    other_cloud = {"gcp": "aws", "aws": "gcp"}.get(cloud) if isinstance(cloud, str) else None
    suggested: set[str] = set()
    for key in sorted(raw):
        namespace, _, name = key.partition(":")
        if namespace in OPEN_NAMESPACES or namespace == other_cloud or name in _KEYS_BY_NAMESPACE.get(namespace, ()):
            continue
        if namespace in _KEYS_BY_NAMESPACE:
            # A known namespace: compare the name alone (a shared prefix would make every key look alike).
            near = _nearest(name, _KEYS_BY_NAMESPACE[namespace])
            near = f"{namespace}:{near}" if near else None
        else:
            near = _nearest(key, _ALL_KEYS)
        if near:
            suggested.add(near)
            problems.append(f"{key}: unknown key; did you mean {near}?")
        elif namespace == PROJECT:
            problems.append(f"{key}: unknown key; allowed: " + ", ".join(f"{PROJECT}:{k}" for k in _SECTIONS))
        elif namespace in _KEYS_BY_NAMESPACE:
            problems.append(
                f"{key}: unknown key; the {namespace} provider reads no such key (see rules/config_keys.py)"
            )
        else:
            read = ", ".join(f"{n}:" for n in (*_KEYS_BY_NAMESPACE, *sorted(OPEN_NAMESPACES)))
            problems.append(f"{key}: unknown key; nothing reads the namespace {namespace!r}; allowed: keys of {read}")
    return suggested


def load_settings(raw: Mapping[str, Any], *, stack: str) -> Settings:
    """Validate the whole stack config; raise SettingsError listing every problem."""
    problems: list[str] = []
    prefix = f"{PROJECT}:"
    suggested = _check_keys(raw, problems)

    parsed: dict[str, Any] = {}
    synchronizer_raw = raw.get(f"{prefix}synchronizer", "cometbft")
    dabft = synchronizer_raw == "dabft"
    for key, (model, required) in _SECTIONS.items():
        full_key = prefix + key
        value = raw.get(full_key)
        if key == "cometbft" and synchronizer_raw not in SYNCHRONIZERS and value is None:
            continue  # needed or refused depends on the synchronizer, whose own problem says so, once
        if key == "cometbft" and dabft:
            if value is not None:
                problems.append(
                    f"{full_key}: a DABFT synchronizer ({prefix}synchronizer: dabft) has no CometBFT node to "
                    f"snapshot; remove this section (its state is backed up as {prefix}postgres.cantonBft)"
                )
            continue
        if value is None:
            if required:
                problems.append(f"{full_key}: is required but missing")
                continue
            if key in ("aws", "snapshots") or model is None:
                continue  # absent optional scalars keep their default; `aws` is checked with the cloud
            value = {}
        if key == "production":
            try:
                parsed[key] = production_flag(value)
            except ValueError as error:
                problems.append(str(error))
            continue
        if model is None:
            if not isinstance(value, str) or not value:
                problems.append(f"{full_key}: must be a non-empty string, not {_show(value)}")
                continue
            parsed[key] = value
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{full_key}: must be a map of keys (YAML key: value lines), not {_show(value)}")
            continue
        try:
            parsed[key] = model.model_validate(value)
        except ValidationError as error:
            problems.extend(_pydantic_problems(full_key, model, error))

    cloud = parsed.get("cloud")
    if cloud is not None and cloud not in SUPPORTED_CLOUDS:
        problems.append(f"{prefix}cloud: {cloud!r} is not supported; allowed: {', '.join(SUPPORTED_CLOUDS)}")
        cloud = None
    synchronizer = parsed.get("synchronizer", "cometbft")
    if synchronizer not in SYNCHRONIZERS:
        problems.append(
            f"{prefix}synchronizer: {synchronizer!r} is not a synchronizer; allowed: {', '.join(SYNCHRONIZERS)}"
        )
    _check_synchronizer(synchronizer, parsed, problems)
    role = parsed.get("role", "primary")
    if role not in ROLES_OF_STACK:
        problems.append(f"{prefix}role: {role!r} is not a stack role; allowed: {', '.join(ROLES_OF_STACK)}")
        role = None
    if "jobImage" in parsed and not _IMAGE.match(parsed["jobImage"]):
        problems.append(
            f"{prefix}jobImage: {parsed['jobImage']!r} is not an image reference (registry/name:tag[@sha256:...])"
        )

    gcp = _gcp_config(raw, problems) if cloud == "gcp" else None
    aws = _aws_config(raw, parsed, problems) if cloud == "aws" else None
    if cloud is not None:
        _check_cloud_specific(cloud, raw, parsed, problems)
        region = gcp.region if gcp else aws.region if aws else None
        if role is not None:
            _check_dr(cloud, role, parsed.get("dr"), region, problems)
    if aws is not None:
        _check_aws_regions(parsed, aws.region, problems)

    schedule_cfg: ScheduleConfig | None = parsed.get("schedule")
    if schedule_cfg is not None and schedule_cfg.drill is None:
        # Resolved once here: every component reads settings.schedule.drill as a cron expression.
        parsed["schedule"] = schedule_cfg = schedule_cfg.model_copy(update={"drill": DRILL_SCHEDULES[cloud or "gcp"]})
    if schedule_cfg is not None and "snapshots" in parsed and "postgres" not in schedule_cfg.model_fields_set:
        # Snapshot sets carry the 4-hourly duty; the dump sets default to their own, sparser schedule.
        update = {"postgres": DUMP_SCHEDULES_WITH_SNAPSHOTS[cloud or "gcp"]}
        parsed["schedule"] = schedule_cfg.model_copy(update=update)
    if "snapshots" in parsed:
        _check_snapshots(parsed, problems)
    derived = _derive(parsed, problems)
    if cloud is not None and derived is not None:
        _check_alert_windows(cloud, role, parsed, derived, problems)
    if problems:
        raise SettingsError(
            [p for p in problems if not any(p.startswith(f"{k}: is required but missing") for k in suggested)]
        )

    postgres_map: _PostgresMap = parsed["postgres"]
    _check_shared_servers(postgres_map, problems)
    if problems:
        raise SettingsError(problems)
    return Settings(
        stack=stack,
        cloud=cloud,
        role=role,
        node=parsed["node"],
        schedule=parsed["schedule"],
        postgres={role: instance for role in ROLES if (instance := getattr(postgres_map, _role_field(role)))},
        retention=parsed.get("retention") or RetentionConfig(),
        identities=parsed["identities"],
        cometbft=parsed.get("cometbft"),
        dr=parsed["dr"],
        job_image=parsed["jobImage"],
        monitoring=parsed.get("monitoring") or MonitoringConfig(),
        storage=parsed.get("storage") or StorageConfig(),
        drill=parsed.get("drill") or DrillConfig(),
        gcp=gcp,
        aws=aws,
        derived=derived,
        synchronizer=synchronizer,
        snapshots=parsed.get("snapshots"),
        restore=parsed.get("restore") or RestoreConfig(),
        production=parsed.get("production", False),
    )


def _role_field(role: str) -> str:
    """The `_PostgresMap` field of a role (canton-bft -> canton_bft)."""
    return role.replace("-", "_")


def _check_synchronizer(synchronizer: str, parsed: dict[str, Any], problems: list[str]) -> None:
    """A DABFT node backs its BFT state up as postgres.cantonBft; a CometBFT node has no such database."""
    postgres: _PostgresMap | None = parsed.get("postgres")
    key = f"{PROJECT}:postgres.cantonBft"
    if synchronizer == "dabft":
        if postgres is not None and postgres.canton_bft is None:
            problems.append(
                f"{key}: is required with {PROJECT}:synchronizer dabft (the DABFT ordering state, the sequencer "
                f"pod's cantonBft database, usually on the sequencer's server)"
            )
        drill: DrillConfig | None = parsed.get("drill")
        if drill is not None and drill.cometbft_storage_class:
            problems.append(
                f"{PROJECT}:drill.cometbftStorageClass: a DABFT stack has no CometBFT drill; remove the key"
            )
    elif synchronizer == "cometbft" and postgres is not None and postgres.canton_bft is not None:
        problems.append(
            f"{key}: only a DABFT synchronizer has a cantonBft database; set {PROJECT}:synchronizer: dabft, or "
            f"remove the key"
        )


def _check_shared_servers(postgres_map: _PostgresMap, problems: list[str]) -> None:
    """Roles sharing a server are checked as one: the run accounts for the union of their databases, so one role
    must not ignore what another backs up."""
    instances = {role: instance for role in ROLES if (instance := getattr(postgres_map, _role_field(role)))}
    for role, instance in instances.items():
        backed_up = {
            db: other
            for other, o in instances.items()
            if other != role and o.server == instance.server
            for db in o.databases
        }
        both = sorted(db for db in instance.ignore_databases if db in backed_up)
        if both:
            problems.append(
                f"{PROJECT}:postgres.{role_key(role)}.ignoreDatabases: {', '.join(both)} backed up by role "
                f"{', '.join(sorted({backed_up[db] for db in both}))} on the same server; remove it from "
                "ignoreDatabases (a database is either backed up or ignored)"
            )


def _gcp_config(raw: Mapping[str, Any], problems: list[str]) -> GcpConfig | None:
    ok = True
    for field in ("project", "region"):
        value = raw.get(f"gcp:{field}")
        if value is None or value == "":
            problems.append(f"gcp:{field}: is required but missing (pulumi config set gcp:{field} ...)")
            ok = False
        elif not isinstance(value, str):
            problems.append(f"gcp:{field}: must be a string, not {_show(value)}")
            ok = False
        elif field == "region" and (problem := _region_problem("gcp", value)):
            problems.append(f"gcp:region: {problem}")
            ok = False
    return GcpConfig(project=raw["gcp:project"], region=raw["gcp:region"]) if ok else None


def _aws_config(raw: Mapping[str, Any], parsed: dict[str, Any], problems: list[str]) -> AwsConfig | None:
    region = raw.get("aws:region")
    ok = True
    if region is None or region == "":
        problems.append("aws:region: is required but missing (pulumi config set aws:region ...)")
        ok = False
    elif not isinstance(region, str):
        problems.append(f"aws:region: must be a string, not {_show(region)}")
        ok = False
    elif problem := _region_problem("aws", region):
        problems.append(f"aws:region: {problem}")
        ok = False
    if f"{PROJECT}:aws" not in raw:
        problems.append(f"{PROJECT}:aws: is required but missing when cloud is aws (clusterName, restoreRoleArns)")
        ok = False
    restore = parsed.get("restore")
    if restore is not None and restore.impersonators:
        problems.append(
            f"{PROJECT}:restore.impersonators: is for GCP (who may impersonate the restore service account); on AWS "
            f"people restore by assuming one of {PROJECT}:aws.restoreRoleArns"
        )
    section = parsed.get("aws")
    return AwsConfig(region=region, irsa=section) if ok and section is not None else None


def _check_cloud_specific(cloud: str, raw: Mapping[str, Any], parsed: dict[str, Any], problems: list[str]) -> None:
    """Keys and values that only one cloud understands."""
    other = "aws" if cloud == "gcp" else "gcp"
    for key in sorted(raw):
        if key.startswith(f"{other}:") or (cloud == "gcp" and key == f"{PROJECT}:aws"):
            problems.append(f"{key}: is {other} configuration, but {PROJECT}:cloud is {cloud}; remove it")
    # From the raw map: a wrong kind is reported even when another instance failed its own validation.
    postgres = raw.get(f"{PROJECT}:postgres")
    managed = MANAGED_POSTGRES_KIND[cloud]
    for role, instance in sorted(postgres.items()) if isinstance(postgres, Mapping) else ():
        kind = instance.get("kind") if isinstance(instance, Mapping) else None
        if kind in POSTGRES_KINDS and kind not in ("in-cluster", managed):
            problems.append(
                f"{PROJECT}:postgres.{role}.kind: {kind!r} is not available on {cloud}; "
                f"allowed: 'in-cluster' or {managed!r}"
            )
    storage: StorageConfig | None = parsed.get("storage")
    if storage is not None:
        allowed = HISTORICAL_STORAGE_CLASSES[cloud]
        if storage.historical_storage_class is not None and storage.historical_storage_class not in allowed:
            problems.append(
                f"{PROJECT}:storage.historicalStorageClass: {storage.historical_storage_class!r} is not "
                f"{CLOUD_NAMES[cloud]} storage class; allowed: {', '.join(allowed)}"
            )
        if cloud == "gcp" and storage.object_lock_mode is not None:
            problems.append(
                f"{PROJECT}:storage.objectLockMode: is an S3 setting; on gcp the bucket's retention policy does this"
            )
    monitoring: MonitoringConfig | None = parsed.get("monitoring")
    if monitoring is not None:
        pattern, example = (
            (_GCP_CHANNEL, "projects/<project>/notificationChannels/<id>")
            if cloud == "gcp"
            else (_SNS_TOPIC_ARN, "an SNS topic ARN, arn:aws:sns:<region>:<account>:<name>")
        )
        bad = [c for c in monitoring.notification_channels if not pattern.match(c)]
        if bad:
            problems.append(f"{PROJECT}:monitoring.notificationChannels: {bad} are not {example}")


def _derive(parsed: dict[str, Any], problems: list[str]) -> Derived | None:
    """Cross-key rules. Appends problems; returns the derived numbers when they could be computed."""
    # Sections that failed their own validation are absent from `parsed`; rules that need them are skipped
    # (their problems are already reported).
    schedule: ScheduleConfig | None = parsed.get("schedule")
    if schedule is None:
        return None

    snapshots: SnapshotsConfig | None = parsed.get("snapshots")
    timing: dict[str, Timing] = {}
    kinds = [(kind, getattr(schedule, kind), f"{PROJECT}:schedule.{kind}") for kind in BACKUP_KINDS]
    if snapshots is not None:
        kinds.append((SNAPSHOT_KIND, snapshots.schedule, f"{PROJECT}:snapshots.schedule"))
    for kind, expression, key in kinds:
        # With snapshot sets the dump sets may be sparser than 4 h: their whole period is scanned (their largest gap
        # enters the historical cadence) and their runs are bounded by MAX_RUN_DEADLINE, not by the schedule alone.
        sparse_dumps = kind == "postgres" and snapshots is not None
        timing[kind] = t = schedule_timing(
            expression, max_gap=None if sparse_dumps else MAX_SCHEDULE_GAP, max_run=MAX_RUN_DEADLINE.get(kind)
        )
        if t.largest_gap > MAX_SCHEDULE_GAP and not sparse_dumps:
            problems.append(
                f"{key}: {expression!r} leaves a gap of {schedules.describe(t.largest_gap)} between two runs; "
                f"the SV docs require a backup at least every {schedules.describe(MAX_SCHEDULE_GAP)} "
                f"at every point of the day and week (e.g. '0 */4 * * *')"
                + (
                    f"; with {PROJECT}:snapshots the snapshot sets meet it and the dump sets may be sparser"
                    if kind == "postgres"
                    else ""
                )
            )
        floor = MIN_RUN_DEADLINE[kind]
        if t.deadline < floor:
            problems.append(
                f"{key}: {expression!r} runs only {schedules.describe(t.smallest_gap)} apart at its closest, which "
                f"leaves a run {schedules.describe(t.deadline)} after its start window and margin; a {kind} run "
                f"needs at least {schedules.describe(floor)}, so runs must be at least "
                f"{schedules.describe(shortest_gap_for(kind))} apart"
            )

    drill_timing = _drill_timing(schedule, parsed.get("drill"), problems)
    dr_cfg: DrConfig | None = parsed.get("dr")
    audit_timing = schedules.check_timing(schedule.audit, schedules.MAX_CHECK_RUN)
    dr_check_timing = (
        schedules.check_timing(dr_cfg.check_schedule, schedules.MAX_CHECK_RUN) if dr_cfg is not None else None
    )

    retention_cfg: RetentionConfig | None = parsed.get("retention")
    if retention_cfg is None:
        return None
    windows = [w for w in (retention_cfg.participant_pruning, retention_cfg.sequencer_pruning) if w]
    min_window = min(windows) if windows else None
    pg = timing["postgres"]
    # Only a schedule sparser than 4 h (dump sets beside snapshot sets) changes the cadence (schedule_margin).
    pg_gap = max(pg.largest_gap, retention.SV_SCHEDULE_GAP)
    pg_cadence = retention.postgres_historical_cadence(
        retention_cfg.participant_pruning, retention_cfg.sequencer_pruning, schedule_gap=pg_gap
    )
    sparse_problem = False
    if min_window is not None and snapshots is not None and pg_gap > retention.SV_SCHEDULE_GAP:
        worst = retention.worst_case_history_gap(pg_cadence, pg.largest_gap, pg.latest_finish)
        if worst >= min_window:
            sparse_problem = True
            which = "participantPruning" if min_window == retention_cfg.participant_pruning else "sequencerPruning"
            problems.append(
                f"{PROJECT}:schedule.postgres: {schedule.postgres!r} leaves {schedules.describe(pg.largest_gap)} "
                f"between two dump sets, too sparse for a gap-less history under retention.{which} "
                f"{retention.format_duration(min_window)}: historical dump sets every "
                f"{retention.format_duration(pg_cadence)} with that gap and a run that may finish "
                f"{schedules.describe(pg.latest_finish)} after its time can be {schedules.describe(worst)} apart; "
                f"allowed: dump sets at most about a third of the window apart, e.g. daily '0 1 * * *'"
            )
    if snapshots is not None and not sparse_problem and pg.largest_gap > pg_cadence:
        sparse_problem = True
        problems.append(
            f"{PROJECT}:schedule.postgres: {schedule.postgres!r} leaves {schedules.describe(pg.largest_gap)} between "
            f"two dump sets, more than the historical cadence of {retention.format_duration(pg_cadence)}: a "
            f"historical interval would have no verified dump set; allowed: dump sets at most "
            f"{retention.format_duration(pg_cadence)} apart, e.g. weekly '0 1 * * 0'"
        )
    if min_window is not None and not sparse_problem:
        worst = retention.worst_case_history_gap(pg_cadence, pg.largest_gap, pg.latest_finish)
        if worst >= min_window:
            which = "participantPruning" if min_window == retention_cfg.participant_pruning else "sequencerPruning"
            problems.append(
                f"{PROJECT}:retention.{which}: {retention.format_duration(min_window)} is too short for a gap-less "
                f"history: historical sets every {retention.format_duration(pg_cadence)} with the postgres "
                f"schedule's largest gap of {schedules.describe(pg.largest_gap)} and a run that may start and "
                f"finish {schedules.describe(pg.latest_finish)} after its time can be "
                f"{schedules.describe(worst)} apart; "
                f"allowed: a window longer than {schedules.describe(worst)} (Splice recommends 30d)"
            )

    cometbft_window = retention.cometbft_retention_window(
        retention_cfg.cometbft_retain_blocks, retention_cfg.cometbft_blocks_per_hour
    )
    cometbft_cadence = retention.cometbft_historical_cadence(
        retention_cfg.cometbft_retain_blocks, retention_cfg.cometbft_blocks_per_hour
    )
    cb = timing["cometbft"]
    cometbft_worst = retention.worst_case_history_gap(cometbft_cadence, cb.largest_gap, cb.latest_finish)
    if cometbft_worst >= cometbft_window:
        problems.append(
            f"{PROJECT}:retention.cometbftRetainBlocks: {retention_cfg.cometbft_retain_blocks} blocks at "
            f"{retention_cfg.cometbft_blocks_per_hour:g} blocks/hour keep only "
            f"{retention.format_duration(cometbft_window)} of history; kept snapshots could be "
            f"{retention.format_duration(cometbft_worst)} apart; allowed: a retention window longer than that "
            "(Splice default: 5040000 blocks, about 30 days)"
        )

    return Derived(
        timing=timing,
        postgres_historical_cadence=pg_cadence,
        cometbft_historical_cadence=cometbft_cadence,
        min_pruning_window=min_window,
        cometbft_retention_window=cometbft_window,
        drill=drill_timing,
        audit=audit_timing,
        dr_check=dr_check_timing,
        postgres_schedule_gap=pg_gap,
        snapshot_historical_cadence=(
            retention.postgres_historical_cadence(retention_cfg.participant_pruning, retention_cfg.sequencer_pruning)
            if snapshots is not None and snapshots.historical
            else None
        ),
    )


def _check_alert_windows(cloud: str, role: str, parsed: dict[str, Any], derived: Derived, problems: list[str]) -> None:
    """A check's stale alert waits the check's largest gap plus a run and a slack: the cloud must be able to watch
    that long (CloudWatch alarms evaluate at most 7 days)."""
    limit = MAX_STALE_WINDOW[cloud]
    if limit is None:
        return
    schedule: ScheduleConfig = parsed["schedule"]
    slack = (parsed.get("monitoring") or MonitoringConfig()).slack

    def check(key: str, expression: str, what: str, timing: Timing, grace: timedelta, grace_name: str, fix: str):
        stale = timing.stale_after(grace)
        if stale > limit:
            problems.append(
                f"{PROJECT}:{key}: {expression!r} leaves {schedules.describe(timing.largest_gap)} between two "
                f"{what}s; with a run of up to {schedules.describe(timing.latest_finish)} and the "
                f"{schedules.describe(grace)} {grace_name} its stale alert would wait {schedules.describe(stale)}, "
                f"longer than the {schedules.describe(limit)} an alarm on {cloud} can evaluate; allowed: {what}s at "
                f"most ~6 days apart, e.g. {fix}"
            )

    if parsed.get("snapshots") is not None and derived.timing["postgres"].largest_gap > MAX_SCHEDULE_GAP:
        fix = f"{DUMP_SCHEDULES_WITH_SNAPSHOTS[cloud]!r} (the {cloud} default with snapshots)"
        check("schedule.postgres", schedule.postgres, "dump set", derived.timing["postgres"], slack, "slack", fix)
    failed_over = role == "dr" and bool(getattr(parsed.get("dr"), "failover", False))
    if role == "primary" or failed_over:  # a DR stack after failover audits and drills as the primary did
        check("schedule.audit", schedule.audit, "audit", derived.audit, slack, "slack", "'50 5 * * *' (the default)")
        if derived.drill is not None:
            fix = f"{DRILL_SCHEDULES[cloud]!r} (the {cloud} default)"
            check("schedule.drill", schedule.drill, "drill", derived.drill, slack, "slack", fix)
    if role == "dr" and derived.dr_check is not None:
        dr: DrConfig = parsed["dr"]
        lag, fix = dr.max_replication_lag, "'*/30 * * * *' (the default)"
        check("dr.checkSchedule", dr.check_schedule, "check", derived.dr_check, lag, "replication lag bound", fix)


def _drill_timing(schedule: ScheduleConfig, drill: DrillConfig | None, problems: list[str]) -> Timing | None:
    """A drill must be able to run its whole timeout between two of its starts (no overlap, like the backups)."""
    drill = drill or DrillConfig()  # an invalid section is reported already; its defaults stand in
    timing = schedules.check_timing(schedule.drill, drill.timeout)
    if timing.deadline < drill.timeout:
        problems.append(
            f"{PROJECT}:drill.timeout: {retention.format_duration(drill.timeout)} does not fit between two drills: "
            f"schedule.drill {schedule.drill!r} runs {schedules.describe(timing.smallest_gap)} apart at its closest, "
            f"which leaves a run {schedules.describe(timing.deadline)} after its start window and margin; allowed: "
            f"a timeout of at most that, or a sparser schedule.drill"
        )
    return timing


def _check_dr(cloud: str, role: str, dr: DrConfig | None, primary: str | None, problems: list[str]) -> None:
    if dr is None:
        return
    key = f"{PROJECT}:dr"
    if role == "dr":
        if dr.primary_stack is None:
            problems.append(f"{key}.primaryStack: is required on a DR stack (the primary's <org>/<project>/<stack>)")
        if dr.region is not None:
            problems.append(
                f"{key}.region: is for primary stacks; a DR stack's region is its provider region ({cloud}:region)"
            )
        return
    for field, alias in (("primary_stack", "primaryStack"), ("failover", "failover")):
        if field in dr.model_fields_set:
            problems.append(f"{key}.{alias}: is for DR stacks (sv-backups:role: dr); remove it from a primary stack")
    if dr.region is None:
        problems.append(f"{key}.region: is required but missing (the region every backup is copied to)")
    elif problem := _region_problem(cloud, dr.region):
        problems.append(f"{key}.region: {problem}")
    elif dr.region == primary:
        example = next(r for r in _DR_EXAMPLES[cloud] if r != primary)
        problems.append(
            f"{key}.region: {dr.region!r} is the primary region ({cloud}:region); allowed: any other "
            f"{cloud.upper()} region, e.g. {example}"
        )


def _check_aws_regions(parsed: dict[str, Any], primary: str, problems: list[str]) -> None:
    """AWS resources that must be in (or out of) a given region."""
    dr: DrConfig | None = parsed.get("dr")
    if dr is not None and dr.region == primary:
        dr = None  # reported once, by _check_dr
    postgres: _PostgresMap | None = parsed.get("postgres")
    for role in ROLES:
        instance = getattr(postgres, _role_field(role), None) if postgres else None
        if isinstance(instance, RdsPostgres) and instance.adopt and dr and (instance.region or primary) == dr.region:
            problems.append(
                f"{PROJECT}:postgres.{role_key(role)}.region: {dr.region!r} is dr.region, where the instance's "
                f"automated backups are replicated to; allowed: the region the instance is in, any but dr.region"
            )
    monitoring: MonitoringConfig | None = parsed.get("monitoring")
    if monitoring is not None:
        # CloudWatch alarms notify SNS topics of their own region only; the alarms live in aws:region.
        elsewhere = [
            c for c in monitoring.notification_channels if _SNS_TOPIC_ARN.match(c) and c.split(":")[3] != primary
        ]
        if elsewhere:
            problems.append(
                f"{PROJECT}:monitoring.notificationChannels: {elsewhere} are not in aws:region {primary!r}; "
                f"CloudWatch alarms can only notify SNS topics of their own region"
            )


def _service_namespace(host: str) -> str | None:
    """The namespace of the Service `host` names (`svc`, `svc.ns`, `svc.ns.svc[.cluster.local]`); None for a name
    outside the cluster's Service DNS (an IP address or an external DNS name)."""
    labels = host.split(".")
    if len(labels) == 1:
        return ""  # the pod's own namespace: the node's
    if len(labels) == 2 or labels[2] == "svc":
        return labels[1] if not labels[1].isdigit() else None
    return None


def _check_snapshots(parsed: dict[str, Any], problems: list[str]) -> None:
    """sv-backups:snapshots against the instances it snapshots: one message per layout the snapshot job cannot
    take, each saying why."""
    snapshots: SnapshotsConfig = parsed["snapshots"]
    postgres: _PostgresMap | None = parsed.get("postgres")
    node: NodeConfig | None = parsed.get("node")
    instances = {role: getattr(postgres, _role_field(role)) for role in ROLES} if postgres is not None else {}
    in_cluster = {role: i for role, i in instances.items() if isinstance(i, InClusterPostgres)}
    if postgres is not None and not in_cluster:
        for field, alias in _IN_CLUSTER_SNAPSHOT_KEYS.items():
            if field in snapshots.model_fields_set:
                problems.append(
                    f"{PROJECT}:snapshots.{alias}: applies to volume snapshots of in-cluster instances, and no role "
                    "is in-cluster (managed instances are snapshotted by their cloud: Cloud SQL backup runs, RDS "
                    "snapshots); remove the key"
                )
    for role, instance in in_cluster.items():
        key = f"{PROJECT}:postgres.{role_key(role)}"
        if instance.wal_pvc is not None and instance.wal_pvc == instance.pvc:
            problems.append(
                f"{key}.walPvc: {instance.wal_pvc!r} is the data directory's PVC (pvc); set walPvc only when pg_wal "
                "is on a volume of its own"
            )
        elif instance.wal_pvc is not None and not snapshots.online_backup:
            problems.append(
                f"{key}.walPvc: pg_wal is on its own volume ({instance.wal_pvc!r}); two volume snapshots taken one "
                f"after the other are not one consistent state unless an online backup (pg_backup_start/stop) "
                f"spans both; allowed: {PROJECT}:snapshots.onlineBackup true (the default), or pg_wal on the data "
                "volume (remove walPvc)"
            )
        namespace = _service_namespace(instance.host)
        if instance.pvc_name is None and node is not None and namespace not in ("", node.namespace):
            where = "outside the cluster's Services" if namespace is None else f"in namespace {namespace!r}"
            problems.append(
                f"{key}.host: {instance.host!r} is {where}, not a Service of the node's namespace "
                f"{node.namespace!r}: the snapshot job snapshots PVCs in that namespace and cannot name this "
                f"instance's volume; allowed: set {key}.pvc to the data volume's PVC in {node.namespace!r}, or take "
                f"this node's backups as dump sets only (remove {PROJECT}:snapshots)"
            )
