"""A DABFT stack (sv-backups:synchronizer: dabft, stacks/Pulumi.dabft-dev.yaml): no CometBFT resources; the
cantonBft state is backed up first in the Postgres set, apps before participant."""

from __future__ import annotations

from tests.program.test_components import container_args, cron_job, pod_spec

STACK = "dabft-dev"


def _components(plan) -> set[str]:
    return {
        r["inputs"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for r in plan.of_type("kubernetes:batch/v1:CronJob")
    }


def test_dabft_plan_declares_no_cometbft_resource(shipped_plan):
    plan = shipped_plan(STACK)
    assert not [r["urn"] for r in plan.resources if "cometbft" in r["urn"].lower()]
    assert not plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    assert _components(plan) == {
        "postgres-backup",
        "identities-dump",
        "history-audit",
        "drill-postgres",
        "drill-identities",
    }
    outputs = plan.outputs
    assert outputs["synchronizer"] == "dabft"
    assert "snapshotClass" not in outputs
    assert set(outputs["cronJobs"]) == {"postgres", "identities", "historyAudit", "drillPostgres", "drillIdentities"}
    assert "cometbft" not in outputs["schedules"]
    assert not [key for key in outputs["windows"] if "cometbft" in key]
    assert set(outputs["windows"]["runDeadlines"]) == {"postgres", "identities"}
    # The alerts: stale and failed for postgres and identities (and the checks), none for cometbft.
    alerts = plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    kinds = {r["inputs"]["userLabels"]["svbackups-kind"] for r in alerts}
    assert "cometbft" not in kinds and {"postgres", "identities"} <= kinds


def test_dabft_postgres_set_takes_canton_bft_first_then_apps_before_participant(shipped_plan):
    plan = shipped_plan(STACK)
    spec = pod_spec(cron_job(plan, "postgres-backup"))
    steps = [c["name"] for c in spec["initContainers"]]
    assert steps == ["canton-bft", "apps", "participant", "sequencer", "mediator"]
    assert [c["name"] for c in spec["containers"]] == ["seal"]
    canton_bft = container_args(spec["initContainers"][0])
    assert canton_bft[:3] == ["backup-step", "--role", "canton-bft"]
    dsns = [canton_bft[i + 1] for i, arg in enumerate(canton_bft) if arg == "--db"]
    assert dsns == ["canton-bft=postgresql://cnadmin@sequencer-pg:5432/cantonbft_0"]
    seal = container_args(spec["containers"][0])
    assert seal[seal.index("--roles") + 1] == "canton-bft,apps,participant,sequencer,mediator"
    assert plan.outputs["postgresRoles"] == ["canton-bft", "apps", "participant", "sequencer", "mediator"]


def test_cometbft_stack_keeps_its_cometbft_resources(dev_plan):
    assert {"cometbft-snapshot", "drill-cometbft"} <= _components(dev_plan)
    assert dev_plan.of_type("kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass")
    assert "synchronizer" not in dev_plan.outputs


def test_canton_bft_on_cloudsql_gets_its_own_proxy_port(offline_plan, stack_config_map):
    """A Cloud SQL canton-bft instance (IAM login, so through the proxy): its proxy port comes after mediator's, so
    no other role's port moves."""
    config = stack_config_map(STACK)
    config["sv-backups:postgres"]["cantonBft"] = {
        "kind": "cloudsql",
        "instance": "sv-dabft-dev-sequencer-pg",
        "databaseVersion": "POSTGRES_14",
        "tier": "db-custom-4-15360",
        "databases": ["cantonbft_0"],
    }
    plan = offline_plan(config)
    spec = pod_spec(cron_job(plan, "postgres-backup"))
    step = next(c for c in spec["initContainers"] if c["name"] == "canton-bft")
    dsn = next(a for a in container_args(step) if isinstance(a, str) and a.startswith("canton-bft="))
    assert ":15436/cantonbft_0" in dsn, dsn
