"""The real policy pack process, spoken to over gRPC exactly as `pulumi preview --policy-pack policy` does.

The CLI starts a Python pack through its `pulumi-analyzer-policy-python` shim: in the pack directory it runs
`python -u -m pulumi.policy <engine address> .`, which runs policy/__main__.py; the pack's gRPC server then
prints the port it listens on as the first line of stdout, and the CLI dials 127.0.0.1:<port> with the
Analyzer service (GetAnalyzerInfo, Configure, Analyze per resource, AnalyzeStack at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from engines.policy_check import _providers, resolve_config
from policy.catalog import CONFIG_DIR, POLICIES
from policy.props import plain

from . import helpers as h
from .conftest import REPO, STACKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_address():
    """A listening address for the engine argument (the pack never dials it; the CLI always passes one)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def analyzer(engine_address):
    env = {
        **os.environ,
        "PULUMI_PROJECT": "sv-backups",
        "PULUMI_STACK": "dev",
        "PULUMI_DRY_RUN": "true",
        "PULUMI_CONFIG": "{}",
    }
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", engine_address, "."],
        cwd=REPO / "policy",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline().strip()
        assert first_line.isdigit(), f"pack did not report a port: {first_line!r}\n{process.stderr.read()}"
        channel = grpc.insecure_channel(f"127.0.0.1:{first_line}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _struct(value: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(value, message)
    return message


def _configure(analyzer, config: dict) -> None:
    """As the CLI does after reconciling --policy-pack-config with the pack's defaults: every policy's level
    and properties."""
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    levels = {
        "advisory": analyzer_pb2.ADVISORY,
        "mandatory": analyzer_pb2.MANDATORY,
        "disabled": analyzer_pb2.DISABLED,
        "remediate": analyzer_pb2.REMEDIATE,
    }
    for name, (level, properties) in resolve_config(config).items():
        entry = request.policyConfig[name]
        entry.enforcementLevel = levels[level.value]
        entry.properties.update(properties)
    analyzer.Configure(request)


def _resource(resource: dict, providers: dict | None = None) -> dict:
    """A resource as the CLI sends it to Analyze: inputs, the options rules read, and its provider."""
    options = resource.get("options") or {}
    found = {
        "urn": resource["urn"],
        "type": resource["type"],
        "name": resource["name"],
        "properties": _struct(json.loads(json.dumps(resource["inputs"]))),
        "options": analyzer_pb2.AnalyzerResourceOptions(
            parent=resource.get("parent") or "",
            protect=bool(options.get("protect")),
            ignoreChanges=options.get("ignoreChanges") or [],
        ),
    }
    provider = (providers or {}).get(resource["urn"])
    if provider is not None:
        found["provider"] = analyzer_pb2.AnalyzerProviderResource(
            type=provider.resource_type, properties=_struct(plain(provider.props)), urn=provider.urn, name=provider.name
        )
    return found


def _stack_request(plan: dict) -> analyzer_pb2.AnalyzeStackRequest:
    """Every resource as the CLI sends it to AnalyzeStack: with parent, dependencies and property dependencies."""
    providers = _providers(plan)
    resources = []
    for resource in plan["resources"]:
        dependencies = (resource.get("options") or {}).get("propertyDependencies") or {}
        resources.append(
            analyzer_pb2.AnalyzerResource(
                **_resource(resource, providers),
                parent=resource.get("parent") or "",
                dependencies=resource.get("dependsOn") or [],
                propertyDependencies={
                    key: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns) for key, urns in dependencies.items()
                },
            )
        )
    return analyzer_pb2.AnalyzeStackRequest(resources=resources)


def test_analyzer_info_lists_every_rule(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "sv-backups"
    assert info.supportsConfig
    policies = {p.name: p for p in info.policies}
    assert set(policies) == {p.name for p in POLICIES}
    assert policies["backup-schedule-max-gap"].enforcementLevel == analyzer_pb2.MANDATORY
    assert policies["kms-key-rotation"].enforcementLevel == analyzer_pb2.ADVISORY
    assert policies["lifecycle-never-deletes-history"].policy_type == analyzer_pb2.POLICY_TYPE_STACK
    assert policies["backup-schedule-max-gap"].configSchema.properties["maxGapHours"]["default"] == 4


def test_analyze_reports_a_bad_cron_job(analyzer, plans):
    _configure(analyzer, {})
    plan = h.pin_images(json.loads(json.dumps(plans["dev"])))
    job = h.cron_job(plan, "postgres")
    job["inputs"]["spec"]["schedule"] = "0 */6 * * *"
    h.pod(plan, "postgres")["initContainers"].reverse()

    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(job)))

    by_policy = {d.policyName: d for d in response.diagnostics}
    assert set(by_policy) == {"backup-schedule-max-gap", "postgres-apps-before-participant"}
    schedule = by_policy["backup-schedule-max-gap"]
    assert schedule.enforcementLevel == analyzer_pb2.MANDATORY
    assert schedule.policyPackName == "sv-backups"
    assert f"CronJob '{job['name']}'" in schedule.message and "6 h" in schedule.message


def test_analyze_passes_a_good_cron_job(analyzer, plans):
    _configure(analyzer, {})
    plan = h.pin_images(json.loads(json.dumps(plans["dev"])))
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(h.cron_job(plan, "cometbft"))))
    assert list(response.diagnostics) == []


def test_analyze_sees_ignore_changes_in_the_resource_options(analyzer, plans):
    """CrossGuard hands the resource options to the rule (args.opts.ignore_changes), as the CLI sends them."""
    _configure(analyzer, {})
    instance = json.loads(json.dumps(h.resources(plans["prod"], "gcp:sql/databaseInstance:DatabaseInstance")[0]))
    assert list(analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(instance))).diagnostics) == []

    instance["options"]["ignoreChanges"].append("settings.backupConfiguration.pointInTimeRecoveryEnabled")
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(instance)))

    (diagnostic,) = response.diagnostics
    assert diagnostic.policyName == "cloudsql-backups-protected"
    assert "'settings.backupConfiguration.pointInTimeRecoveryEnabled'" in diagnostic.message


def test_configured_level_is_what_the_pack_reports(analyzer, plans):
    _configure(analyzer, {"backup-schedule-max-gap": "advisory", "postgres-apps-before-participant": "disabled"})
    plan = json.loads(json.dumps(plans["dev"]))
    job = h.cron_job(plan, "postgres")
    job["inputs"]["spec"]["schedule"] = "0 */6 * * *"
    h.pod(plan, "postgres")["initContainers"].reverse()

    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(job)))

    reported = [(d.policyName, d.enforcementLevel) for d in response.diagnostics]
    assert ("backup-schedule-max-gap", analyzer_pb2.ADVISORY) in reported
    assert "postgres-apps-before-participant" not in {name for name, _level in reported}


def test_analyze_stack_reports_missing_alerts_and_history_deletion(analyzer, plans):
    _configure(analyzer, {})
    plan = h.pin_images(json.loads(json.dumps(plans["dev"])))
    h.remove(plan, h.alert(plan, "postgres", "stale"))
    bucket = h.bucket(plan)
    h.lifecycle_rule(plan, "Delete", "recent/")["condition"].pop("matchesPrefixes")

    request = analyzer_pb2.AnalyzeStackRequest(
        resources=[analyzer_pb2.AnalyzerResource(**_resource(r)) for r in plan["resources"]]
    )
    response = analyzer.AnalyzeStack(request)

    by_policy = {d.policyName: d for d in response.diagnostics}
    assert set(by_policy) == {"alerts-per-backup-kind", "lifecycle-never-deletes-history"}
    assert "svbackups-kind=postgres" in by_policy["alerts-per-backup-kind"].message
    assert by_policy["lifecycle-never-deletes-history"].urn == bucket["urn"]
    assert by_policy["lifecycle-never-deletes-history"].enforcementLevel == analyzer_pb2.MANDATORY


def test_analyze_stack_passes_the_shipped_stack(analyzer, plans):
    _configure(analyzer, json.loads((REPO / "policy" / "config" / "dev.json").read_text()))
    request = analyzer_pb2.AnalyzeStackRequest(
        resources=[analyzer_pb2.AnalyzerResource(**_resource(r)) for r in plans["dev"]["resources"]]
    )
    assert list(analyzer.AnalyzeStack(request).diagnostics) == []


def _stack_config(stack: str) -> dict:
    path = CONFIG_DIR / f"{stack}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_passes_the_pack_process(analyzer, plans, stack):
    """Each resource through Analyze and the whole stack through AnalyzeStack, as `pulumi preview` sends them."""
    _configure(analyzer, _stack_config(stack))
    plan = plans[stack]
    providers = _providers(plan)
    for resource in plan["resources"]:
        response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(resource, providers)))
        assert [d.message for d in response.diagnostics if d.enforcementLevel == analyzer_pb2.MANDATORY] == []
    assert list(analyzer.AnalyzeStack(_stack_request(plan)).diagnostics) == []


def test_analyze_stack_reports_an_aws_bucket_that_deletes_history(analyzer, plans):
    _configure(analyzer, _stack_config("aws-prod"))
    plan = h.pin_images(json.loads(json.dumps(plans["aws-prod"])))
    lifecycle = h.bucket_side(plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    lifecycle["inputs"]["rules"].append(
        {"id": "x", "status": "Enabled", "filter": {"prefix": "historical/"}, "expiration": {"days": 3650}}
    )
    replication = h.bucket_side(plan, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    replication["inputs"]["rules"][0]["deleteMarkerReplication"] = {"status": "Enabled"}

    by_policy = {d.policyName: d for d in analyzer.AnalyzeStack(_stack_request(plan)).diagnostics}

    assert set(by_policy) == {"s3-lifecycle-never-deletes-history", "s3-replication-to-dr"}
    assert by_policy["s3-lifecycle-never-deletes-history"].urn == lifecycle["urn"]
    assert "historical sets" in by_policy["s3-lifecycle-never-deletes-history"].message
    assert by_policy["s3-replication-to-dr"].urn == h.s3_bucket(plan)["urn"]
    assert by_policy["s3-replication-to-dr"].enforcementLevel == analyzer_pb2.MANDATORY


def test_analyze_sees_protect_and_ignore_changes_of_an_rds_instance(analyzer, plans):
    _configure(analyzer, _stack_config("aws-prod"))
    instance = json.loads(json.dumps(h.resources(plans["aws-prod"], "aws:rds/instance:Instance")[0]))
    assert list(analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(instance))).diagnostics) == []

    instance["options"]["protect"] = False
    instance["options"]["ignoreChanges"].append("deletionProtection")
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(**_resource(instance)))

    messages = [d.message for d in response.diagnostics if d.policyName == "rds-backups-protected"]
    assert len(messages) == 2
    assert any("protect is off" in m for m in messages)
    assert any("'deletionProtection', which covers deletionProtection" in m for m in messages)


@pytest.mark.parametrize(
    ("stack", "rule", "case"),
    [
        ("prod", "snapshot-creator-cannot-delete", "grants it roles/compute.storageAdmin"),
        ("aws-prod", "snapshot-creator-cannot-delete", "allows ['ec2:DeleteSnapshot']"),
        ("aws-prod", "snapshot-lock", "no --lock-for"),
        ("prod", "snapshot-dr-copy", "its --location: no location"),
    ],
)
def test_the_pack_process_reports_snapshot_set_rules(analyzer, plans, stack, rule, case):
    """The snapshot-set rules through AnalyzeStack, as `pulumi preview` sends a stack (one breaking case each from
    tests/policy/snapshot_cases.py)."""
    from .snapshot_cases import SNAPSHOT_CASES

    [mutate] = [m for r, s, m, expected in SNAPSHOT_CASES if (r, s) == (rule, stack) and expected == case]
    _configure(analyzer, _stack_config(stack))
    plan = h.pin_images(json.loads(json.dumps(plans[stack])))
    mutate(plan)
    by_policy = {d.policyName: d for d in analyzer.AnalyzeStack(_stack_request(plan)).diagnostics}
    assert set(by_policy) == {rule}
    assert case in by_policy[rule].message
    assert by_policy[rule].enforcementLevel == analyzer_pb2.MANDATORY
