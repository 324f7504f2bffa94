"""The stack config schema: every problem reported at once, naming the key, the value and what is allowed."""

from datetime import timedelta

import pytest

from components.settings import load_settings
from tests.stackfiles import dump_only_config, problems_of, raw_config, stack_names


@pytest.mark.parametrize("stack", stack_names())
def test_shipped_stacks_are_valid(stack):
    settings = load_settings(raw_config(stack), stack=stack)
    # A DABFT stack's canton-bft state comes first (as Splice's backup script takes it), then apps, participant.
    roles = settings.roles[1:] if settings.dabft else settings.roles
    assert settings.roles[:1] == ["canton-bft"] if settings.dabft else "canton-bft" not in settings.roles
    assert roles[:2] == ["apps", "participant"]
    # The 4-hourly duty: the dump sets', or the snapshot sets' where a stack has them (the dumps then run sparser).
    duty = "postgres-snapshots" if settings.snapshots is not None else "postgres"
    assert settings.derived.timing[duty].largest_gap <= timedelta(hours=4)


def test_dev_defaults_and_derived_numbers():
    settings = load_settings(raw_config("dev"), stack="dev")
    assert settings.retention.participant_pruning is None
    assert settings.derived.postgres_historical_cadence == timedelta(days=14)
    # 4 h between runs - 15 min start window - 15 min margin
    assert settings.derived.timing["postgres"].deadline == timedelta(hours=3, minutes=30)
    assert settings.storage.prefix == ""
    assert settings.roles == ["apps", "participant", "sequencer", "mediator"]


def test_prod_derived_numbers():
    settings = load_settings(dump_only_config("prod"), stack="prod")
    assert settings.derived.min_pruning_window == timedelta(days=30)
    # 30d - 8h schedule margin - 2d outage budget
    assert settings.derived.postgres_historical_cadence == timedelta(days=27, hours=16)
    assert settings.derived.cometbft_retention_window == timedelta(days=30)
    assert settings.postgres["participant"].kind == "cloudsql"


def test_schedule_with_a_six_hour_gap():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["postgres"] = "0 */6 * * *"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:schedule.postgres: '0 */6 * * *'")
    assert "6 h" in problem and "4 h" in problem


def test_schedule_with_a_night_hole():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["cometbft"] = "0 6-18/2 * * *"
    [problem] = problems_of(raw)
    assert "sv-backups:schedule.cometbft" in problem and "12 h" in problem


def test_participant_missing():
    raw = raw_config("dev")
    del raw["sv-backups:postgres"]["participant"]
    assert problems_of(raw) == ["sv-backups:postgres.participant: is required but missing"]


def test_pruning_too_short_for_a_gapless_history():
    raw = dump_only_config("prod")
    raw["sv-backups:retention"]["sequencerPruning"] = "8h"
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:retention.sequencerPruning: 8h is too short for a gap-less history")
    assert "allowed: a window longer than" in problem


def test_pruning_just_long_enough():
    raw = dump_only_config("prod")
    # 9h: what the 8h schedule margin leaves is split between the cadence (30 min, rounded up to the 1h floor)
    # and the outage budget; 1h + 4h gap + 15 min start window + 3h30 deadline = 8h45 < 9h
    raw["sv-backups:retention"]["participantPruning"] = "9h"
    settings = load_settings(raw, stack="t")
    assert settings.derived.postgres_historical_cadence == timedelta(hours=1)


def test_negative_migration_id():
    raw = raw_config("dev")
    raw["sv-backups:node"]["migrationId"] = -1
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:node.migrationId:") and "greater than or equal to 0" in problem
    assert "-1" in problem


def test_serial_id_instead_of_migration_id_runs_lsu():
    raw = raw_config("dev")
    del raw["sv-backups:node"]["migrationId"]
    raw["sv-backups:node"]["serialId"] = 7
    node = load_settings(raw, stack="t").node
    assert (node.lsu, node.serial_id, node.migration_id) == (True, 7, 7)  # the sets are filed under the serial
    hard = load_settings(raw_config("dev"), stack="t").node
    assert (hard.lsu, hard.serial_id, hard.migration_id) == (False, None, 0)


def test_migration_id_and_serial_id_together_or_a_negative_serial_are_refused():
    raw = raw_config("dev")
    raw["sv-backups:node"]["serialId"] = 3
    assert problems_of(raw) == [
        "sv-backups:node: value has both migrationId and serialId: give one (serialId: the node runs LSU) (got a map)"
    ]
    del raw["sv-backups:node"]["migrationId"]
    raw["sv-backups:node"]["serialId"] = -2
    assert problems_of(raw) == ["sv-backups:node.serialId: Input should be greater than or equal to 0 (got -2)"]


def test_cloudsql_without_instance():
    raw = raw_config("prod")
    del raw["sv-backups:postgres"]["participant"]["instance"]
    assert problems_of(raw) == ["sv-backups:postgres.participant.instance: is required but missing"]


def test_cloudsql_not_adopted_needs_a_host():
    raw = raw_config("prod")
    raw["sv-backups:postgres"]["participant"]["adopt"] = False
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.participant:") and "host is required" in problem


def test_every_problem_is_reported_at_once_and_nothing_else():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["identities"] = "0 0 * * *"
    raw["sv-backups:node"]["name"] = "SV_1"
    raw["sv-backups:postgres"]["apps"]["kind"] = "mysql"
    raw["sv-backups:retention"]["paticipantPruning"] = "30d"
    raw["sv-backups:cloud"] = "azure"
    raw["sv-backups:typo"] = 1
    problems = problems_of(raw)
    keys = sorted(p.split(":", 2)[0] + ":" + p.split(":", 2)[1] for p in problems)
    assert keys == sorted(
        [
            "sv-backups:typo",
            "sv-backups:node.name",
            "sv-backups:postgres.apps",
            "sv-backups:retention.paticipantPruning",
            "sv-backups:cloud",
            "sv-backups:schedule.identities",
        ]
    )
    assert any("'mysql' is not allowed; use 'in-cluster' or 'cloudsql' or 'rds'" in p for p in problems)
    assert any("unknown key" in p and "paticipantPruning" in p for p in problems)


def test_dr_region_must_differ_and_share_a_continent():
    raw = raw_config("dev")
    raw["sv-backups:dr"]["region"] = raw["gcp:region"]
    [problem] = problems_of(raw)
    assert "is the primary region" in problem


@pytest.mark.parametrize(
    ("primary", "dr"),
    [
        ("europe-west3", "europe-west4"),
        ("europe-west6", "europe-west3"),  # Zurich is outside the EU multi-region: two regional buckets
        ("europe-west2", "europe-west1"),  # so is London
        ("us-central1", "northamerica-northeast1"),
        ("us-east1", "europe-west1"),  # another continent
    ],
)
def test_any_pair_of_distinct_regions_is_accepted(primary, dr):
    raw = raw_config("dev")
    raw["gcp:region"], raw["sv-backups:dr"]["region"] = primary, dr
    assert load_settings(raw, stack="t").dr.region == dr


def test_dr_region_must_be_a_region():
    raw = raw_config("dev")
    raw["sv-backups:dr"]["region"] = "Europe West"
    [problem] = problems_of(raw)
    assert problem == (
        "sv-backups:dr.region: 'Europe West' is not a GCP region; did you mean 'europe-west1'? "
        "(allowed: the regions listed in rules/gcp_locations.py)"
    )


def test_client_secret_never_in_messages():
    raw = raw_config("dev")
    raw["sv-backups:identities"]["clientSecret"] = 12345678
    raw["sv-backups:identities"]["endpoint"] = "http://insecure.example.com/dump"
    problems = problems_of(raw)
    assert any(
        p.startswith("sv-backups:identities.endpoint: 'http://insecure.example.com/dump' must be an https://")
        for p in problems
    )
    assert any(p.startswith("sv-backups:identities.clientSecret:") and "[secret]" in p for p in problems)
    assert not any("12345678" in p for p in problems)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("sv-backups:retention", "recent", "12h", "must be at least 1d"),
        ("sv-backups:retention", "recent", "soon", "is not a duration such as 30d"),
        ("sv-backups:storage", "prefix", "/abs", "must be empty or a path ending in '/'"),
        ("sv-backups:storage", "softDelete", "3d", "between 7d and 90d"),
        ("sv-backups:cometbft", "pvc", "Bad_Name", "Kubernetes object name"),
        ("sv-backups:schedule", "postgres", "every 4 hours", "not a 5-field cron expression"),
    ],
)
def test_field_errors_name_key_value_and_rule(section, key, value, expected):
    raw = raw_config("dev")
    raw.setdefault(section, {})[key] = value
    [problem] = problems_of(raw)
    assert problem.startswith(f"{section}.{key}:")
    assert expected in problem


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("sv-backups:retention", "recent", "2 weeks"),
        ("sv-backups:schedule", "postgres", "0 0 31 2 *"),
        ("sv-backups:schedule", "postgres", "0 */4 * * 8"),
    ],
)
def test_each_value_is_shown_once(section, key, value):
    """A message that names the value already is not prefixed with it again ('2 weeks' '2 weeks' is not ...)."""
    raw = raw_config("dev")
    raw.setdefault(section, {})[key] = value
    [problem] = problems_of(raw)
    assert problem.startswith(f"{section}.{key}: {value!r}") and problem.count(repr(value)) == 1


def test_missing_required_sections():
    problems = problems_of({"gcp:project": "p", "gcp:region": "europe-west6"})
    for key in ("cloud", "node", "postgres", "identities", "cometbft", "dr", "jobImage"):
        assert f"sv-backups:{key}: is required but missing" in problems


def test_cometbft_retention_too_short():
    raw = raw_config("dev")
    raw["sv-backups:retention"]["cometbftRetainBlocks"] = 7000 * 6
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:retention.cometbftRetainBlocks: 42000 blocks")


# --- schedules tighter than the 4-hour duty (deadlines scale with the schedule) -----------------------------


@pytest.mark.parametrize(
    ("kind", "expression", "start_window", "deadline"),
    [
        ("cometbft", "*/30 * * * *", timedelta(minutes=3), timedelta(minutes=24)),
        ("postgres", "0 */2 * * *", timedelta(minutes=15), timedelta(hours=1, minutes=30)),
        ("postgres", "0 * * * *", timedelta(minutes=7), timedelta(minutes=46)),
        ("identities", "*/15 * * * *", timedelta(minutes=1), timedelta(minutes=13)),
    ],
)
def test_tighter_schedules_get_deadlines_scaled_to_their_gap(kind, expression, start_window, deadline):
    raw = raw_config("dev")
    raw["sv-backups:schedule"][kind] = expression
    timing = load_settings(raw, stack="t").derived.timing[kind]
    assert (timing.start_window, timing.deadline) == (start_window, deadline)
    # start window + deadline + an equal margin = the gap: a late run never overlaps the next one
    assert timing.start_window * 2 + timing.deadline == timing.smallest_gap


@pytest.mark.parametrize(
    ("kind", "expression", "needs", "apart"),
    [
        ("postgres", "*/30 * * * *", "45 min", "59 min"),
        ("cometbft", "*/10 * * * *", "10 min", "12 min"),
        ("identities", "*/5 * * * *", "5 min", "7 min"),
    ],
)
def test_schedules_too_tight_for_a_run_are_refused_with_the_reason(kind, expression, needs, apart):
    raw = raw_config("dev")
    raw["sv-backups:schedule"][kind] = expression
    [problem] = problems_of(raw)
    assert problem.startswith(f"sv-backups:schedule.{kind}: {expression!r} runs only")
    assert f"a {kind} run needs at least {needs}, so runs must be at least {apart} apart" in problem


def test_the_shortest_allowed_gap_is_accepted():
    raw = raw_config("dev")
    raw["sv-backups:schedule"]["cometbft"] = "*/12 * * * *"
    assert load_settings(raw, stack="t").derived.timing["cometbft"].deadline == timedelta(minutes=10)


# --- password secrets: the runbook default, Cloud SQL IAM authentication -------------------------------------


def test_in_cluster_password_secret_defaults_to_the_runbook_name():
    raw = raw_config("dev")
    raw["sv-backups:postgres"]["apps"].pop("passwordSecret")
    raw["sv-backups:postgres"]["mediator"] = {"kind": "in-cluster", "host": "mediator-pg.sv.svc", "databases": ["m"]}
    settings = load_settings(raw, stack="t")
    assert settings.postgres["apps"].password_secret == "apps-pg-secret"
    assert settings.postgres["mediator"].password_secret == "mediator-pg-secret"


def test_cloudsql_without_a_password_secret_uses_iam_authentication():
    settings = load_settings(raw_config("prod"), stack="prod")
    # prod: the sequencer logs in by IAM, the participant with its password secret
    assert settings.postgres["sequencer"].iam_auth
    assert not settings.postgres["participant"].iam_auth
    raw = raw_config("prod")
    raw["sv-backups:postgres"]["participant"].pop("passwordSecret")
    assert load_settings(raw, stack="t").postgres["participant"].iam_auth


# --- AWS ---------------------------------------------------------------------------------------------------


def aws_raw() -> dict:
    """The dev stack moved to AWS: aws:region, the IRSA section, an RDS participant."""
    raw = raw_config("dev")
    del raw["gcp:project"], raw["gcp:region"]
    raw["aws:region"] = "us-east-1"
    raw["sv-backups:cloud"] = "aws"
    raw["sv-backups:dr"]["region"] = "us-west-2"
    raw["sv-backups:cometbft"].pop("driver", None)
    raw["sv-backups:aws"] = {
        "clusterName": "sv-eks",
        "restoreRoleArns": ["arn:aws:iam::123456789012:role/sv-restore"],
    }
    raw["sv-backups:postgres"]["participant"] = {
        "kind": "rds",
        "instance": "sv-1-participant",
        "passwordSecret": "participant-pg-secret",
        "databases": ["participant_0"],
    }
    raw.pop("sv-backups:storage", None)
    raw.pop("sv-backups:monitoring", None)
    return raw


def test_an_aws_stack_is_valid():
    settings = load_settings(aws_raw(), stack="t")
    assert (settings.cloud, settings.region, settings.gcp) == ("aws", "us-east-1", None)
    assert settings.aws.irsa.cluster_name == "sv-eks"
    assert settings.postgres["participant"].backup_window == "02:00-02:30"
    assert settings.storage.historical_class("aws") == "GLACIER_IR"


def test_aws_problems_each_get_one_message():
    raw = aws_raw()
    raw["sv-backups:postgres"]["participant"].pop("instance")
    raw["sv-backups:postgres"]["sequencer"] = {
        "kind": "cloudsql",
        "instance": "seq",
        "passwordSecret": "s",
        "databases": ["s"],
    }
    raw["sv-backups:dr"]["region"] = "us-east-1"
    assert sorted(problems_of(raw)) == sorted(
        [
            "sv-backups:postgres.participant.instance: is required but missing",
            "sv-backups:postgres.sequencer.kind: 'cloudsql' is not available on aws; allowed: 'in-cluster' or 'rds'",
            "sv-backups:dr.region: 'us-east-1' is the primary region (aws:region); allowed: any other AWS region, "
            "e.g. us-west-2",
        ]
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.pop("aws:region"), "aws:region: is required but missing"),
        (lambda r: r.pop("sv-backups:aws"), "sv-backups:aws: is required but missing when cloud is aws"),
        (lambda r: r.update({"gcp:project": "p"}), "gcp:project: is gcp configuration, but sv-backups:cloud is aws"),
        (lambda r: r["sv-backups:aws"].pop("clusterName"), "sv-backups:aws.clusterName: is required but missing"),
        (lambda r: r["sv-backups:aws"].update(restoreRoleArns=["sv-restore"]), "are not IAM role ARNs"),
        (
            lambda r: r["sv-backups:postgres"]["participant"].pop("passwordSecret"),
            "passwordSecret is required for rds instances",
        ),
        (
            lambda r: r["sv-backups:postgres"]["participant"].update(backupWindow="02:00-02:10"),
            "at least 30 minutes",
        ),
        (lambda r: r["sv-backups:postgres"]["participant"].update(instance="1bad--name"), "DB instance identifier"),
        (lambda r: r.update({"sv-backups:storage": {"historicalStorageClass": "COLDLINE"}}), "GLACIER_IR"),
        (
            lambda r: r.update(
                {"sv-backups:monitoring": {"notificationChannels": ["projects/p/notificationChannels/1"]}}
            ),
            "are not an SNS topic ARN",
        ),
        (lambda r: r.update({"aws:region": "US East"}), "'US East' is not an AWS region; did you mean 'us-east-1'?"),
    ],
)
def test_invalid_aws_configs(mutate, expected):
    raw = aws_raw()
    mutate(raw)
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_rds_kind_is_refused_on_gcp():
    raw = raw_config("dev")
    raw["sv-backups:postgres"]["participant"] = aws_raw()["sv-backups:postgres"]["participant"]
    assert problems_of(raw) == [
        "sv-backups:postgres.participant.kind: 'rds' is not available on gcp; allowed: 'in-cluster' or 'cloudsql'"
    ]


# --- DR stacks -----------------------------------------------------------------------------------------------


def dr_raw() -> dict:
    raw = raw_config("prod")
    raw["gcp:region"] = "us-east4"
    raw["sv-backups:role"] = "dr"
    raw["sv-backups:dr"] = {"primaryStack": "acme/sv-backups/prod"}
    return raw


def test_a_dr_stack_names_its_primary_and_is_suspended_by_default():
    settings = load_settings(dr_raw(), stack="prod-dr")
    assert (settings.role, settings.region, settings.dr.region) == ("dr", "us-east4", None)
    assert settings.dr.primary_stack == "acme/sv-backups/prod"
    assert settings.dr.failover is False and settings.dr.max_replication_lag == timedelta(hours=1)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["sv-backups:dr"].pop("primaryStack"), "sv-backups:dr.primaryStack: is required on a DR stack"),
        (lambda r: r["sv-backups:dr"].update(primaryStack="prod"), "must be a fully qualified stack name"),
        (lambda r: r["sv-backups:dr"].update(region="us-central1"), "sv-backups:dr.region: is for primary stacks"),
        (lambda r: r["sv-backups:dr"].update(maxReplicationLag="5m"), "must be at least 15m"),
        (lambda r: r.update({"sv-backups:role": "standby"}), "sv-backups:role: 'standby' is not a stack role"),
    ],
)
def test_invalid_dr_configs(mutate, expected):
    raw = dr_raw()
    mutate(raw)
    [problem] = problems_of(raw)
    assert expected in problem


def test_primary_stacks_refuse_dr_stack_keys():
    raw = raw_config("prod")
    raw["sv-backups:dr"]["failover"] = True
    assert problems_of(raw) == [
        "sv-backups:dr.failover: is for DR stacks (sv-backups:role: dr); remove it from a primary stack"
    ]


# --- ignoreDatabases: databases on a server that hold nothing to keep ---------------------------------------------


def test_ignore_databases_defaults_to_none_and_is_read():
    assert all(not i.ignore_databases for i in load_settings(raw_config("dev"), stack="dev").postgres.values())
    raw = raw_config("dev")
    raw["sv-backups:postgres"]["participant"]["ignoreDatabases"] = ["participant_3", "old$db"]
    settings = load_settings(raw, stack="t")
    assert settings.postgres["participant"].ignore_databases == ["participant_3", "old$db"]


@pytest.mark.parametrize(
    ("ignored", "expected"),
    [
        (["bad-name"], "['bad-name'] are not plain PostgreSQL identifiers (letters, digits, _ and $)"),
        (["x", "x"], "lists a database twice"),
        ("x", "list"),
    ],
)
def test_ignore_databases_are_plain_distinct_identifiers(ignored, expected):
    raw = raw_config("dev")
    raw["sv-backups:postgres"]["apps"]["ignoreDatabases"] = ignored
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.apps.ignoreDatabases") and expected in problem, problem


def test_a_database_is_backed_up_or_ignored_not_both():
    raw = raw_config("dev")
    backed_up = raw["sv-backups:postgres"]["apps"]["databases"][0]
    raw["sv-backups:postgres"]["apps"]["ignoreDatabases"] = [backed_up]
    [problem] = problems_of(raw)
    assert problem.startswith("sv-backups:postgres.apps") and f"{backed_up} also in databases" in problem, problem


def test_a_role_must_not_ignore_what_another_role_on_its_server_backs_up():
    raw = raw_config("dev")
    postgres = raw["sv-backups:postgres"]
    postgres["mediator"]["host"] = postgres["sequencer"]["host"]
    sequencer_db = postgres["sequencer"]["databases"][0]
    postgres["mediator"]["ignoreDatabases"] = [sequencer_db]
    [problem] = problems_of(raw)
    assert problem == (
        f"sv-backups:postgres.mediator.ignoreDatabases: {sequencer_db} backed up by role sequencer on the same "
        "server; remove it from ignoreDatabases (a database is either backed up or ignored)"
    )
    settings_raw = raw_config("dev")
    settings_raw["sv-backups:postgres"]["mediator"]["host"] = settings_raw["sv-backups:postgres"]["sequencer"]["host"]
    settings = load_settings(settings_raw, stack="t")
    assert settings.server_roles("mediator") == ["sequencer", "mediator"]
    assert settings.server_roles("apps") == ["apps"]
