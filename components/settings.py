"""The stack configuration: one schema, validated as a whole before any resource is declared.

`load_settings` takes the raw config (full keys such as `sv-backups:node` -> decoded values), checks every
key, then checks the rules that span keys (schedules fire at least every 4 hours, history can be gap-less
under the pruning windows, regions differ...), and either returns a typed, immutable `Settings` or raises
`SettingsError` listing every problem at once, each naming the key, the value and what is allowed.

No Pulumi import here: the schema is tested on its own, in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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

from components import gcp_locations, retention, schedules

PROJECT = "sv-backups"
ROLES = ("apps", "participant", "sequencer", "mediator")
REQUIRED_ROLES = ("apps", "participant")
# The SV docs: every Postgres instance and CometBFT "at least every 4 hours"; we hold the identities dump to
# the same bound so that a rotated key is never more than 4 hours from being backed up.
MAX_SCHEDULE_GAP = timedelta(hours=4)
# A run may start this late (CronJob startingDeadlineSeconds) and must then finish this long before the next
# one is due: start window + run deadline + margin = the smallest gap between two runs.
START_WINDOW = timedelta(minutes=15)
DEADLINE_MARGIN = timedelta(minutes=15)
MIN_SCHEDULE_GAP = timedelta(hours=1)
# GCS lifecycle ages are whole days.
MIN_RECENT = timedelta(days=1)
SUPPORTED_POSTGRES_VERSIONS = ("POSTGRES_14", "POSTGRES_15", "POSTGRES_16", "POSTGRES_17")

# Node names prefix GCP service-account ids (at most 30 characters), so they stay short.
_NODE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_PG_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_GCP_REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[a-f0-9]{64})?$")


class SettingsError(ValueError):
    """The stack config is invalid; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


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
    migration_id: int = Field(alias="migrationId", ge=0, description="current synchronizer serial / migration id")

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

    @field_validator("postgres", "cometbft", "identities")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        schedules.validate_cron(value)
        return value


class _PostgresBase(_Model):
    port: int = Field(5432, ge=1, le=65535)
    user: str = "cnadmin"
    password_secret: str = Field(alias="passwordSecret", description="k8s Secret holding key postgresPassword")
    databases: list[str] = Field(min_length=1)

    @field_validator("password_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        return _check_k8s_name(value)

    @field_validator("databases")
    @classmethod
    def _database_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not _PG_IDENT.match(n)]
        if bad:
            raise ValueError(f"{bad} are not plain PostgreSQL identifiers (letters, digits, _ and $)")
        if len(set(names)) != len(names):
            raise ValueError("lists a database twice")
        return names


class InClusterPostgres(_PostgresBase):
    kind: Literal["in-cluster"]
    host: str = Field(min_length=1, description="Service name or DNS name, e.g. apps-pg")


class CloudSqlPostgres(_PostgresBase):
    kind: Literal["cloudsql"]
    instance: str = Field(min_length=1, description="Cloud SQL instance name")
    database_version: str = Field("POSTGRES_14", alias="databaseVersion")
    tier: str = Field("db-custom-2-7680", min_length=1)
    region: str | None = Field(None, description="defaults to gcp:region")
    host: str | None = Field(None, description="private IP or DNS name; defaults to the instance's private IP")
    adopt: bool = Field(True, description="manage the instance's backup configuration (import it into this stack)")

    @model_validator(mode="after")
    def _host_when_not_adopted(self) -> CloudSqlPostgres:
        if not self.adopt and not self.host:
            raise ValueError("host is required when adopt is false (the job cannot look up the private IP)")
        return self

    @field_validator("database_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in SUPPORTED_POSTGRES_VERSIONS:
            raise ValueError(f"must be one of {', '.join(SUPPORTED_POSTGRES_VERSIONS)}")
        return value


PostgresInstance = Annotated[InClusterPostgres | CloudSqlPostgres, Field(discriminator="kind")]


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


class DrConfig(_Model):
    region: str


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
    soft_delete: Duration = Field(timedelta(days=30), alias="softDelete")
    historical_storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] = Field(
        "COLDLINE", alias="historicalStorageClass", description="class historical sets move to after 30 days"
    )

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


class GcpConfig(_Model):
    project: str
    region: str

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _GCP_REGION.match(value):
            raise ValueError("must be a GCP region such as europe-west6")
        return value


@dataclass(frozen=True)
class Derived:
    """Numbers computed once from the config and used by every component (and exported for audits)."""

    postgres_gaps: tuple[timedelta, timedelta]  # (smallest, largest) time between two runs
    cometbft_gaps: tuple[timedelta, timedelta]
    identities_gaps: tuple[timedelta, timedelta]
    postgres_deadline: timedelta
    cometbft_deadline: timedelta
    identities_deadline: timedelta
    postgres_historical_cadence: timedelta
    cometbft_historical_cadence: timedelta
    min_pruning_window: timedelta | None
    cometbft_retention_window: timedelta


@dataclass(frozen=True)
class Settings:
    stack: str
    cloud: str
    node: NodeConfig
    schedule: ScheduleConfig
    postgres: dict[str, InClusterPostgres | CloudSqlPostgres]
    retention: RetentionConfig
    identities: IdentitiesConfig
    cometbft: CometbftConfig
    dr: DrConfig
    job_image: str
    monitoring: MonitoringConfig
    storage: StorageConfig
    gcp: GcpConfig
    derived: Derived

    @property
    def roles(self) -> list[str]:
        """Configured roles in backup order: apps, then participant (the SV rule), then the others."""
        return [role for role in ROLES if role in self.postgres]


class _PostgresMap(_Model):
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
    "cometbft": (CometbftConfig, True),
    "dr": (DrConfig, True),
    "jobImage": (None, True),
    "monitoring": (MonitoringConfig, False),
    "storage": (StorageConfig, False),
}
SUPPORTED_CLOUDS = ("gcp",)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _pydantic_problems(key: str, error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        # Drop pydantic's union-branch markers ("cloudsql", "function-after[...]") from the key path.
        path = ".".join(str(p) for p in item["loc"] if str(p) not in ("in-cluster", "cloudsql") and "[" not in str(p))
        where = f"{key}.{path}" if path else key
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            problems.append(f"{where}: is required but missing")
        elif item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key (check its spelling; see README 'Configuration')")
        elif item["type"] == "union_tag_invalid":
            kind = _show(item["input"].get("kind"))
            problems.append(f"{where}: kind {kind} is not allowed; use 'in-cluster' or 'cloudsql'")
        elif item["type"] == "union_tag_not_found":
            problems.append(f"{where}: needs a 'kind': 'in-cluster' or 'cloudsql'")
        else:
            shown = "[secret]" if "secret" in where.lower() else _show(item.get("input"))
            problems.append(
                f"{where}: {shown} {message}"
                if not message.startswith(("Input", "value"))
                else f"{where}: {message} (got {shown})"
            )
    return problems


def load_settings(raw: Mapping[str, Any], *, stack: str) -> Settings:
    """Validate the whole stack config; raise SettingsError listing every problem."""
    problems: list[str] = []
    prefix = f"{PROJECT}:"
    for full_key in sorted(raw):
        if full_key.startswith(prefix) and full_key[len(prefix) :] not in _SECTIONS:
            problems.append(f"{full_key}: unknown key; allowed keys are " + ", ".join(prefix + k for k in _SECTIONS))

    parsed: dict[str, Any] = {}
    for key, (model, required) in _SECTIONS.items():
        full_key = prefix + key
        value = raw.get(full_key)
        if value is None:
            if required:
                problems.append(f"{full_key}: is required but missing")
                continue
            value = {}
        if model is None:
            if not isinstance(value, str) or not value:
                problems.append(f"{full_key}: {_show(value)} must be a non-empty string")
                continue
            parsed[key] = value
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{full_key}: {_show(value)} must be an object (a YAML map)")
            continue
        try:
            parsed[key] = model.model_validate(value)
        except ValidationError as error:
            problems.extend(_pydantic_problems(full_key, error))

    if "cloud" in parsed and parsed["cloud"] not in SUPPORTED_CLOUDS:
        problems.append(f"{prefix}cloud: {parsed['cloud']!r} is not supported; allowed: {', '.join(SUPPORTED_CLOUDS)}")
    if "jobImage" in parsed and not _IMAGE.match(parsed["jobImage"]):
        problems.append(
            f"{prefix}jobImage: {parsed['jobImage']!r} is not an image reference (registry/name:tag[@sha256:...])"
        )

    gcp = None
    try:
        gcp = GcpConfig.model_validate({"project": raw.get("gcp:project"), "region": raw.get("gcp:region")})
    except ValidationError as error:
        for item in error.errors():
            field = item["loc"][0]
            if item["type"] in ("missing", "string_type") and item.get("input") is None:
                problems.append(f"gcp:{field}: is required but missing (pulumi config set gcp:{field} ...)")
            else:
                problems.append(f"gcp:{field}: {_show(item.get('input'))} {item['msg'].removeprefix('Value error, ')}")

    derived = _derive(parsed, gcp, problems)
    if problems:
        raise SettingsError(problems)

    postgres_map: _PostgresMap = parsed["postgres"]
    return Settings(
        stack=stack,
        cloud=parsed["cloud"],
        node=parsed["node"],
        schedule=parsed.get("schedule") or ScheduleConfig(),
        postgres={role: getattr(postgres_map, role) for role in ROLES if getattr(postgres_map, role)},
        retention=parsed.get("retention") or RetentionConfig(),
        identities=parsed["identities"],
        cometbft=parsed["cometbft"],
        dr=parsed["dr"],
        job_image=parsed["jobImage"],
        monitoring=parsed.get("monitoring") or MonitoringConfig(),
        storage=parsed.get("storage") or StorageConfig(),
        gcp=gcp,
        derived=derived,
    )


def _derive(parsed: dict[str, Any], gcp: GcpConfig | None, problems: list[str]) -> Derived | None:
    """Cross-key rules. Appends problems; returns the derived numbers when they could be computed."""
    # Sections that failed their own validation are absent from `parsed`; rules that need them are skipped
    # (their problems are already reported).
    _check_regions(parsed.get("dr"), gcp, problems)
    schedule: ScheduleConfig | None = parsed.get("schedule")
    if schedule is None:
        return None

    gaps: dict[str, tuple[timedelta, timedelta]] = {}
    deadlines: dict[str, timedelta] = {}
    for kind in ("postgres", "cometbft", "identities"):
        expression = getattr(schedule, kind)
        largest = schedules.largest_gap(expression, stop_above=MAX_SCHEDULE_GAP)
        smallest = schedules.smallest_gap(expression)
        gaps[kind] = (smallest, largest)
        deadlines[kind] = smallest - START_WINDOW - DEADLINE_MARGIN
        key = f"{PROJECT}:schedule.{kind}"
        if largest > MAX_SCHEDULE_GAP:
            problems.append(
                f"{key}: {expression!r} leaves a gap of {schedules.describe(largest)} between two runs; "
                f"the SV docs require a backup at least every {schedules.describe(MAX_SCHEDULE_GAP)} "
                f"at every point of the day and week (e.g. '0 */4 * * *')"
            )
        if smallest < MIN_SCHEDULE_GAP:
            problems.append(
                f"{key}: {expression!r} runs only {schedules.describe(smallest)} apart at its closest; allowed: "
                f"at least {schedules.describe(MIN_SCHEDULE_GAP)} so that a run can finish before the next"
            )

    retention_cfg: RetentionConfig | None = parsed.get("retention")
    if retention_cfg is None:
        return None
    windows = [w for w in (retention_cfg.participant_pruning, retention_cfg.sequencer_pruning) if w]
    min_window = min(windows) if windows else None
    pg_cadence = retention.postgres_historical_cadence(
        retention_cfg.participant_pruning, retention_cfg.sequencer_pruning
    )
    if min_window is not None:
        worst = retention.worst_case_history_gap(pg_cadence, gaps["postgres"][1], START_WINDOW + deadlines["postgres"])
        if worst >= min_window:
            which = "participantPruning" if min_window == retention_cfg.participant_pruning else "sequencerPruning"
            problems.append(
                f"{PROJECT}:retention.{which}: {retention.format_duration(min_window)} is too short for a gap-less "
                f"history: historical sets every {retention.format_duration(pg_cadence)} with the postgres "
                f"schedule's largest gap of {schedules.describe(gaps['postgres'][1])} and a run that may start and "
                f"finish {schedules.describe(START_WINDOW + deadlines['postgres'])} after its time can be "
                f"{schedules.describe(worst)} apart; "
                f"allowed: a window longer than {schedules.describe(worst)} (Splice recommends 30d)"
            )

    cometbft_window = retention.cometbft_retention_window(
        retention_cfg.cometbft_retain_blocks, retention_cfg.cometbft_blocks_per_hour
    )
    cometbft_cadence = retention.cometbft_historical_cadence(
        retention_cfg.cometbft_retain_blocks, retention_cfg.cometbft_blocks_per_hour
    )
    cometbft_worst = retention.worst_case_history_gap(
        cometbft_cadence, gaps["cometbft"][1], START_WINDOW + deadlines["cometbft"]
    )
    if cometbft_worst >= cometbft_window:
        problems.append(
            f"{PROJECT}:retention.cometbftRetainBlocks: {retention_cfg.cometbft_retain_blocks} blocks at "
            f"{retention_cfg.cometbft_blocks_per_hour:g} blocks/hour keep only "
            f"{retention.format_duration(cometbft_window)} of history; kept snapshots could be "
            f"{retention.format_duration(cometbft_worst)} apart; allowed: a retention window longer than that "
            "(Splice default: 5040000 blocks, about 30 days)"
        )

    return Derived(
        postgres_gaps=gaps["postgres"],
        cometbft_gaps=gaps["cometbft"],
        identities_gaps=gaps["identities"],
        postgres_deadline=deadlines["postgres"],
        cometbft_deadline=deadlines["cometbft"],
        identities_deadline=deadlines["identities"],
        postgres_historical_cadence=pg_cadence,
        cometbft_historical_cadence=cometbft_cadence,
        min_pruning_window=min_window,
        cometbft_retention_window=cometbft_window,
    )


def _check_regions(dr: DrConfig | None, gcp: GcpConfig | None, problems: list[str]) -> None:
    if dr is None or gcp is None:
        return
    if dr.region == gcp.region:
        problems.append(
            f"{PROJECT}:dr.region: {dr.region!r} is the primary region (gcp:region); allowed: another region "
            "of the same continent, e.g. europe-west3 for europe-west6"
        )
    elif not _GCP_REGION.match(dr.region):
        problems.append(f"{PROJECT}:dr.region: {dr.region!r} must be a GCP region such as europe-west3")
    elif gcp_locations.dual_region(gcp.region, dr.region) is None:
        problems.append(
            f"{PROJECT}:dr.region: {dr.region!r} cannot pair with gcp:region {gcp.region!r}: the backup bucket is "
            f"a dual-region over both, which GCS allows for {gcp_locations.describe_allowed()}"
        )
