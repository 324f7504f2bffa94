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

from policy.catalog import POLICIES
from scripts.policy_check import resolve_config

from . import helpers as h
from .conftest import REPO

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


def _resource(resource: dict) -> dict:
    return {
        "urn": resource["urn"],
        "type": resource["type"],
        "name": resource["name"],
        "properties": _struct(json.loads(json.dumps(resource["inputs"]))),
        "options": analyzer_pb2.AnalyzerResourceOptions(
            parent=resource.get("parent") or "",
            ignoreChanges=(resource.get("options") or {}).get("ignoreChanges") or [],
        ),
    }


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
