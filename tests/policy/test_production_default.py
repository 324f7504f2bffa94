"""Production guard-rails on by default: a stack that says `sv-backups:production: true` is held to the production
policy config with no policy/config/<stack>.json; without the key the plan says it is not production (the opt-out).

The stacks are the tests' own, written by `make new-stack` (engines/new_stack.py) into a copy of the repository
layout, so nothing here depends on the shipped examples; the plans are real offline plans of the real program.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines import new_stack
from engines.policy_check import resolve_config
from policy.catalog import CONFIG_DIR
from policy.production import NOT_PRODUCTION, initial_config, layered, production_config
from rules.config_keys import PRODUCTION_KEY, production_flag
from tests.checkout import make_checkout, plan_checkout

from .conftest import REPO

TAG_ONLY = "europe-west3-docker.pkg.dev/my-project-1/sv-backups/jobs:0.1.0"


def _answers(cloud: str, stack: str, **changes) -> new_stack.NewStack:
    if cloud == "gcp":
        base = dict(region="europe-west3", dr_region="europe-west1", project="my-project-1", postgres="managed")
    else:
        base = dict(
            region="eu-central-1",
            dr_region="eu-west-1",
            cluster_name="sv-eks",
            restore_role_arns=("arn:aws:iam::210987654321:role/restore",),
            postgres="in-cluster",
        )
    values = dict(cloud=cloud, stack=stack, node="node-a", namespace="validator", migration_id=2, **base)
    return new_stack.NewStack(**{**values, **changes})


def _edit(path: Path, change) -> None:
    document = yaml.safe_load(path.read_text())
    change(document["config"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's layout with a stacks/ of our own (tests/checkout.py): no example stacks."""
    root = make_checkout(tmp_path_factory.mktemp("checkout") / "repo")
    stacks = root / "stacks"
    new_stack.write(_answers("gcp", "gke-new"), stacks)
    new_stack.write(_answers("aws", "eks-new"), stacks)
    # A production primary with an image tag and no DR stack: what the production config exists to stop.
    new_stack.write(_answers("gcp", "tagged", image=TAG_ONLY), stacks)
    (stacks / "Pulumi.tagged-dr.yaml").unlink()
    # The same stack without the key: the opt-out.
    new_stack.write(_answers("gcp", "tagged-dev", image=TAG_ONLY), stacks)
    (stacks / "Pulumi.tagged-dev-dr.yaml").unlink()
    _edit(stacks / "Pulumi.tagged-dev.yaml", lambda config: config.pop(PRODUCTION_KEY))
    # A value that is not a boolean.
    new_stack.write(_answers("gcp", "maybe"), stacks)
    _edit(stacks / "Pulumi.maybe.yaml", lambda config: config.__setitem__(PRODUCTION_KEY, "yes"))
    return root


@pytest.fixture(scope="module")
def planned(checkout, tmp_path_factory) -> dict[str, str]:
    """Stack -> what the plan command printed for it, all planned by one run over the checkout."""
    names = [p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (checkout / "stacks").iterdir()]
    assert not [s for s in names if (CONFIG_DIR / f"{s}.json").exists()], "these stacks must have no policy config"
    _code, sections = plan_checkout(checkout, tmp_path_factory.mktemp("plans"))
    return sections


def _status(text: str, rule: str) -> str:
    match = re.search(rf"^(PASS|WARN|FAIL|OFF)\s+(\w+)\s+{re.escape(rule)}$", text, re.M)
    assert match, f"no verdict for {rule}:\n{text}"
    return f"{match[1]} {match[2]}"


@pytest.mark.parametrize("stack", ["gke-new", "gke-new-dr", "eks-new", "eks-new-dr"])
def test_a_new_stack_plans_and_passes_as_written(planned, stack):
    text = planned[stack]
    assert "config: production (sv-backups:production: true)" in text, text
    assert "PASSED: no mandatory rule violated." in text, text
    assert _status(text, "job-image-pinned-by-digest") == "PASS mandatory"
    assert _status(text, "kms-key-rotation") == "PASS mandatory"
    # A primary must have a DR stack, its DR stack must not be asked for one of its own.
    assert _status(text, "production-dr") == "PASS mandatory"


def test_the_key_makes_a_stack_without_a_policy_file_production(planned):
    text = planned["tagged"]
    assert "config: production (sv-backups:production: true)" in text
    assert NOT_PRODUCTION not in text
    assert _status(text, "job-image-pinned-by-digest") == "FAIL mandatory"
    assert _status(text, "production-dr") == "FAIL mandatory"
    assert "no stack file in stacks/ is the DR stack of this production stack" in text
    assert "FAILED:" in text


def test_without_the_key_the_plan_names_the_opt_out(planned):
    text = planned["tagged-dev"]
    assert "config: pack defaults" in text
    assert NOT_PRODUCTION in text
    assert "set sv-backups:production: true" in text
    assert _status(text, "job-image-pinned-by-digest") == "WARN advisory"
    assert "PASSED: no mandatory rule violated." in text


def test_a_production_value_that_is_not_a_boolean_is_refused(planned):
    text = planned["maybe"]
    assert "sv-backups:production: 'yes' is not a boolean; allowed: true, false" in text
    assert "Policy pack" not in text


# --- the config itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("true", True), (False, False), ("false", False), (None, False)]
)
def test_production_flag(value, expected):
    assert production_flag(value) is expected


@pytest.mark.parametrize("value", ["yes", 1, 0, "True ", {}])
def test_production_flag_refuses_what_is_not_a_boolean(value):
    with pytest.raises(ValueError, match=r"sv-backups:production: .* is not a boolean; allowed: true, false"):
        production_flag(value)


def test_the_production_config_is_what_the_shipped_production_files_hold():
    """The production examples' policy files add nothing to the production config (each rule only sees its own
    cloud's resources): the examples are held to the same with or without them."""
    for stack, role in (("prod", "primary"), ("prod-ch", "primary"), ("aws-prod", "primary"), ("prod-dr", "dr")):
        shipped = json.loads((CONFIG_DIR / f"{stack}.json").read_text())
        assert resolve_config(layered(production_config(role), shipped)) == resolve_config(production_config(role))
    assert "production-dr" not in production_config("dr")


def test_a_given_config_is_layered_over_the_production_config_as_the_cli_does():
    merged = resolve_config(layered(production_config(), {"job-image-pinned-by-digest": "advisory", "all": "advisory"}))
    assert merged["job-image-pinned-by-digest"][0].value == "advisory"
    assert merged["kms-key-rotation"][0].value == "advisory"
    assert merged["production-dr"][1]["requireDrStack"] is True
    kept = resolve_config(layered(production_config(), {"bucket-immutability": {"minSoftDeleteDays": 60}}))
    assert kept["bucket-immutability"][1]["minSoftDeleteDays"] == 60
    assert kept["job-image-pinned-by-digest"][0].value == "mandatory"


def test_the_pack_process_initial_config_follows_the_stack_config():
    assert initial_config({}) is None
    assert initial_config({PRODUCTION_KEY: "false"}) is None
    primary = initial_config({PRODUCTION_KEY: "true"})
    assert primary["job-image-pinned-by-digest"].value == "mandatory"
    assert primary["production-dr"] == {"requireDrStack": True}
    assert "production-dr" not in initial_config({PRODUCTION_KEY: "true", "sv-backups:role": "dr"})


@pytest.mark.slow
@pytest.mark.parametrize("config", [{PRODUCTION_KEY: "true"}, {}], ids=["production", "not-production"])
def test_the_real_pack_process_reads_the_stack_config(config):
    """As `pulumi preview --policy-pack policy` starts it, with the stack config in PULUMI_CONFIG: the production
    config reaches the CLI as the pack's initial config (GetAnalyzerInfo), applied before --policy-pack-config."""
    import os
    from concurrent import futures

    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    engine = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = engine.add_insecure_port("127.0.0.1:0")
    engine.start()
    env = {
        **os.environ,
        "PULUMI_PROJECT": "sv-backups",
        "PULUMI_STACK": "my-node",
        "PULUMI_DRY_RUN": "true",
        "PULUMI_CONFIG": json.dumps(config),
    }
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", f"127.0.0.1:{port}", "."],
        cwd=REPO / "policy",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline().strip()
        assert first_line.isdigit(), f"pack did not report a port: {first_line!r}\n{process.stderr.read()}"
        with grpc.insecure_channel(f"127.0.0.1:{first_line}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            info = analyzer_pb2_grpc.AnalyzerStub(channel).GetAnalyzerInfo(empty_pb2.Empty())
    finally:
        process.terminate()
        process.wait(timeout=10)
        engine.stop(0)
    initial = dict(info.initialConfig)
    if not config:
        assert initial == {}
        return
    assert set(initial) == set(production_config())
    assert initial["job-image-pinned-by-digest"].enforcementLevel == analyzer_pb2.MANDATORY
    assert initial["kms-key-rotation"].enforcementLevel == analyzer_pb2.MANDATORY
    assert dict(initial["production-dr"].properties)["requireDrStack"] is True
