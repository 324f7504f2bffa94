"""The offline plan: the engine on a tiny program, then the CLI and the shipped stacks through the real one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines import offline_plan as engine
from engines import plan_stacks, policy_check
from scripts import plan as cli
from tests.program.conftest import PROJECT, ROOT, SHIPPED_STACKS, program_ready

CIPHERTEXT = "v1:AAAAAAAAAAAAAAAA/cipher"
CLEAR_CLIENT_SECRET = "s3cr3t-oauth-client-value"

needs_program = pytest.mark.skipif(not program_ready(), reason="the program (components/program.py) is not written")


# --- a tiny program, independent of the real one ----------------------------------------------------------


def tiny_program() -> None:
    import pulumi
    import pulumi_gcp as gcp
    from pulumi_kubernetes.core import v1 as core
    from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

    config = pulumi.Config("tiny")

    class Box(pulumi.ComponentResource):
        def __init__(self, name: str):
            super().__init__("tiny:index:Box", name, None, None)
            bucket = gcp.storage.Bucket(
                "bucket",
                name=f"{config.require('name')}-bucket",
                location="EU",
                uniform_bucket_level_access=True,
                lifecycle_rules=[
                    gcp.storage.BucketLifecycleRuleArgs(
                        action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                        condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=3, matches_prefixes=["recent/"]),
                    )
                ],
                opts=pulumi.ResourceOptions(parent=self, protect=True, ignore_changes=["labels"]),
            )
            core.ConfigMap(
                "settings",
                metadata=ObjectMetaArgs(name="box-settings", namespace="ns"),
                data={"bucket": bucket.url, "retries": "3"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[bucket]),
            )
            core.Secret(
                "token",
                metadata=ObjectMetaArgs(name="box-token", namespace="ns"),
                string_data={"token": config.require_secret("token")},
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.url = bucket.url
            self.register_outputs({"url": bucket.url})

    box = Box("box")
    project = gcp.organizations.get_project()
    pulumi.export("url", box.url)
    pulumi.export("projectNumber", project.number)
    pulumi.export("token", config.require_secret("token"))
    pulumi.export("settings", {"name": config.require("name"), "nested": config.require_object("nested")})


TINY_CONFIG = {
    "name": "tiny",
    "token": {"secure": CIPHERTEXT},
    "nested": {"size": 3, "password": {"secure": CIPHERTEXT}},
    "gcp:project": "tiny-project",
}


@pytest.fixture
def tiny(offline_plan):
    return lambda config=TINY_CONFIG, program=tiny_program: offline_plan(config, project="tiny", program=program)


def test_stack_config_reads_secure_values_without_a_passphrase():
    config = engine.stack_config(TINY_CONFIG, project="tiny", stack="s")
    assert config.values["tiny:token"] == "[secret]"
    assert config.values["tiny:nested"] == {"size": 3, "password": "[secret]"}
    assert config.secret_keys == {"tiny:token", "tiny:nested"}
    engine_config = config.engine_config()
    assert engine_config["tiny:name"] == "tiny"
    assert json.loads(engine_config["tiny:nested"]) == {"size": 3, "password": "[secret]"}
    assert config.raw_config()["tiny:nested"] == {"size": 3, "password": "[secret]"}
    assert all(isinstance(v, str) for v in engine_config.values())


def test_scalars_reach_the_program_as_strings_like_the_cli_passes_them():
    config = engine.stack_config({"count": 3, "flag": True, "list": [1, 2]}, project="p", stack="s")
    assert config.engine_config() == {"p:count": "3", "p:flag": "true", "p:list": "[1,2]"}


def test_a_must_be_secret_value_written_in_clear_is_collected_for_redaction():
    config = engine.stack_config(
        {"identities": {"clientSecret": CLEAR_CLIENT_SECRET, "clientId": "id"}}, project="sv-backups", stack="s"
    )
    assert config.clear_secrets == {CLEAR_CLIENT_SECRET}
    assert config.secret_keys == frozenset()  # as `pulumi up` would pass it: the program must wrap it


def test_tiny_program_is_recorded_with_engine_names_urns_and_options(tiny):
    result = tiny()
    types = [r["type"] for r in result.resources]
    assert types == [
        "tiny:index:Box",
        "gcp:storage/bucket:Bucket",
        "kubernetes:core/v1:ConfigMap",
        "kubernetes:core/v1:Secret",
    ]
    box = result.resource("box")
    bucket = result.resource("bucket")
    config_map = result.resource("settings")
    assert box["urn"] == "urn:pulumi:test::tiny::tiny:index:Box::box"
    assert box["parent"] == "urn:pulumi:test::tiny::pulumi:pulumi:Stack::tiny-test"
    # The engine qualifies a child's type with its parent's whole chain.
    assert bucket["urn"] == "urn:pulumi:test::tiny::tiny:index:Box$gcp:storage/bucket:Bucket::bucket"
    assert bucket["parent"] == box["urn"]
    assert bucket["inputs"]["uniformBucketLevelAccess"] is True
    assert bucket["inputs"]["lifecycleRules"] == [
        {"action": {"type": "Delete"}, "condition": {"age": 3, "matchesPrefixes": ["recent/"]}}
    ]
    assert bucket["options"]["protect"] is True
    assert bucket["options"]["ignoreChanges"] == ["labels"]
    assert bucket["options"]["custom"] is True
    assert config_map["dependsOn"] == [bucket["urn"]]
    assert config_map["inputs"]["data"] == {"bucket": "gs://tiny-bucket", "retries": "3"}
    assert result.outputs["url"] == "gs://tiny-bucket"
    assert result.outputs["projectNumber"] == engine.PROJECT_NUMBER
    assert result.outputs["settings"] == {"name": "tiny", "nested": {"size": 3, "password": "[secret]"}}


def test_secrets_are_redacted_and_manifests_rebuilt(tiny):
    result = tiny()
    text = result.to_json()
    assert CIPHERTEXT not in text
    assert result.outputs["token"] == "[secret]"
    assert result.resource("token")["inputs"]["stringData"] == {"token": "[secret]"}
    assert sorted(result.manifests) == ["configmap-box-settings.yaml", "secret-box-token.yaml"]
    secret = result.manifests["secret-box-token.yaml"]
    assert list(secret)[:3] == ["apiVersion", "kind", "metadata"]
    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret"
    assert secret["stringData"] == {"token": "[secret]"}
    assert result.manifests["configmap-box-settings.yaml"]["metadata"] == {"name": "box-settings", "namespace": "ns"}


def test_identical_input_gives_byte_identical_files(tiny, tmp_path):
    first, second = tiny(), tiny()
    engine.write_plan(first, tmp_path / "a")
    engine.write_plan(second, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and Path("plan.json") in files_a
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert str(tmp_path) not in (tmp_path / "a" / "plan.json").read_text()


def test_exports_do_not_leak_between_runs(offline_plan):
    import pulumi

    def first():
        pulumi.export("first", 1)

    def second():
        pulumi.export("second", 2)

    assert offline_plan({}, project="p", program=first).outputs == {"first": 1}
    assert offline_plan({}, project="p", program=second).outputs == {"second": 2}


def test_service_agents_and_transfer_resources_get_stable_realistic_values(offline_plan):
    def program():
        import pulumi
        import pulumi_gcp as gcp

        agent = gcp.storage.get_transfer_project_service_account(project="p")
        topic = gcp.pubsub.Topic("events", name="events", project="p")
        job = gcp.storage.TransferJob(
            "copy",
            description="copy",
            project="p",
            event_stream=gcp.storage.TransferJobEventStreamArgs(name="projects/p/subscriptions/s"),
            transfer_spec=gcp.storage.TransferJobTransferSpecArgs(
                gcs_data_source=gcp.storage.TransferJobTransferSpecGcsDataSourceArgs(bucket_name="a"),
                gcs_data_sink=gcp.storage.TransferJobTransferSpecGcsDataSinkArgs(bucket_name="b"),
            ),
        )
        pulumi.export("agent", agent.member)
        pulumi.export("topic", topic.id)
        pulumi.export("job", job.name)

    first = offline_plan({}, project="p", program=program)
    assert first.outputs["agent"] == (
        f"serviceAccount:project-{engine.PROJECT_NUMBER}@storage-transfer-service.iam.gserviceaccount.com"
    )
    assert first.outputs["topic"] == "projects/p/topics/events"
    assert re.fullmatch(r"transferJobs/\d{20}", first.outputs["job"])
    assert offline_plan({}, project="p", program=program).outputs == first.outputs


def test_an_unknown_invoke_fails_loudly(offline_plan):
    def program():
        import pulumi

        pulumi.runtime.invoke("gcp:compute/getNetwork:getNetwork", {"name": "default"})

    with pytest.raises(Exception, match="no answer for invoke 'gcp:compute/getNetwork:getNetwork'"):
        offline_plan({}, project="p", program=program)


def test_stack_references_read_the_outputs_given_to_the_mocks(offline_plan):
    import pulumi

    def program():
        primary = pulumi.StackReference("org/sv-backups/prod")
        pulumi.export("bucket", primary.get_output("backupBucket"))

    mocks = engine.PlanMocks(project="p", region="r", stack_references={"org/sv-backups/prod": {"backupBucket": "b"}})
    result = offline_plan({}, project="p", program=program, mocks=mocks)
    assert result.outputs == {"bucket": "b"}
    assert result.resource("org/sv-backups/prod")["options"]["read"] == "org/sv-backups/prod"
    with pytest.raises(Exception, match="StackReference 'org/sv-backups/prod': the offline plan has no outputs"):
        offline_plan({}, project="p", program=program)


def test_two_resources_with_one_urn_fail(offline_plan):
    def program():
        from pulumi_kubernetes.core import v1 as core

        core.ConfigMap("same", data={"a": "1"})
        core.ConfigMap("same", data={"a": "2"})

    with pytest.raises(Exception, match="duplicate resource URN"):
        offline_plan({}, project="p", program=program)


def test_aliases_resolve_to_urns_including_those_inherited_by_children(offline_plan):
    def program():
        import pulumi
        from pulumi_kubernetes.core import v1 as core

        class Comp(pulumi.ComponentResource):
            def __init__(self, name: str, opts: pulumi.ResourceOptions):
                super().__init__("t:index:Comp", name, None, opts)
                core.ConfigMap("cm", data={"a": "1"}, opts=pulumi.ResourceOptions(parent=self))
                self.register_outputs({})

        Comp("new", pulumi.ResourceOptions(aliases=[pulumi.Alias(name="old", type_="t:index:OldComp")]))

    result = offline_plan({}, project="p", program=program)
    assert result.resource("new")["options"]["aliases"] == ["urn:pulumi:test::p::t:index:OldComp::old"]
    assert result.resource("cm")["options"]["aliases"] == [
        "urn:pulumi:test::p::t:index:OldComp$kubernetes:core/v1:ConfigMap::cm"
    ]


def test_clear_secret_text_outside_a_pulumi_secret_is_redacted_and_reported(offline_plan):
    def program():
        import pulumi
        from pulumi_kubernetes.core import v1 as core

        raw = pulumi.Config("sv-backups").require_object("identities")
        core.ConfigMap("leaky", data={"secret": raw["clientSecret"], "token": raw["token"]})
        core.ConfigMap("wrapped", data={"secret": pulumi.Output.secret(raw["clientSecret"])})

    config = {"identities": {"clientSecret": CLEAR_CLIENT_SECRET, "token": {"secure": CIPHERTEXT}}}
    result = offline_plan(config, program=program)
    assert CLEAR_CLIENT_SECRET not in result.to_json()
    assert result.resource("leaky")["inputs"]["data"] == {"secret": "[secret]", "token": "[secret]"}
    assert result.resource("wrapped")["inputs"]["data"] == {"secret": "[secret]"}
    assert len(result.leaks) == 2
    assert all("ConfigMap::leaky input data." in where for where in result.leaks)


def test_stack_file_errors_are_plan_input_errors(tmp_path):
    with pytest.raises(engine.PlanInputError, match="no such file"):
        engine.load_stack_file(tmp_path / "missing.yaml", project="p", stack="s")
    bad = tmp_path / "bad.yaml"
    bad.write_text("config: [unclosed\n")
    with pytest.raises(engine.PlanInputError, match="not valid YAML"):
        engine.load_stack_file(bad, project="p", stack="s")
    bad.write_text("config: just-a-string\n")
    with pytest.raises(engine.PlanInputError, match="must be a map"):
        engine.load_stack_file(bad, project="p", stack="s")


def test_tree_and_summary_show_key_settings(tiny):
    result = tiny()
    tree = engine.render_tree(result.plan)
    assert "pulumi:pulumi:Stack tiny-test" in tree.splitlines()[0]
    assert "    gcp:storage/bucket:Bucket bucket  [location=EU, lifecycleRules=1, protect]" in tree
    summary = engine.render_summary(result.plan)
    assert "Resources: 4 (4 types)" in summary


# --- the CLI ----------------------------------------------------------------------------------------------


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """run_cli(config_map or None, *args) -> (exit code, stdout, stderr, out dir); policy checks stubbed."""
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.setattr(policy_check, "run_policy_checks", lambda plan, **_: ("", plan_stacks.EXIT_OK))
    counter = iter(range(1000))

    def run(config: dict | None, *args: str):
        out = tmp_path / f"out{next(counter)}"
        argv = [*args, "--out", str(out)]
        if config is not None:
            stack_file = tmp_path / "Pulumi.cli.yaml"
            stack_file.write_text(yaml.safe_dump({"config": config}))
            argv = ["--config-file", str(stack_file), *argv]
        code = cli.main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err, out

    return run


def test_cli_unreadable_files_exit_2(run_cli, tmp_path):
    code, _, err, out = run_cli(None, "--config-file", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err and not out.exists()
    (tmp_path / "broken.yaml").write_text("config:\n  a: [\n")
    code, _, err, _ = run_cli(None, "--config-file", str(tmp_path / "broken.yaml"))
    assert code == 2 and "not valid YAML" in err
    code, _, err, _ = run_cli(None, "--stack", "no-such-stack")
    assert code == 2 and "Pulumi.no-such-stack.yaml: no such file" in err


@pytest.fixture
def scratch_project(tmp_path, monkeypatch):
    """scratch_project(main_source, config) -> argv for cli.main(argv, root=...): a throwaway sv-backups project."""
    monkeypatch.setattr(plan_stacks, "_validate", lambda config: [])
    monkeypatch.setattr(policy_check, "run_policy_checks", lambda plan, **_: ("", plan_stacks.EXIT_OK))

    def make(main_source: str, config: dict) -> tuple[Path, list[str]]:
        root = tmp_path / "project"
        root.mkdir()
        (root / "Pulumi.yaml").write_text("name: sv-backups\nruntime: python\n")
        (root / "__main__.py").write_text(main_source)
        (root / "Pulumi.s.yaml").write_text(yaml.safe_dump({"config": config}))
        return root, ["--stack", "s", "--out", str(tmp_path / "out")]

    return make


def test_cli_program_failure_exits_1(scratch_project, capsys):
    root, argv = scratch_project("raise ValueError('boom in the program')\n", {})
    assert cli.main(argv, root=root) == 1
    assert "boom in the program" in capsys.readouterr().err


def test_cli_secret_stored_in_clear_exits_3(scratch_project, capsys, tmp_path):
    program = (
        "import pulumi\n"
        "from pulumi_kubernetes.core import v1 as core\n"
        "raw = pulumi.Config().require_object('identities')\n"
        "core.ConfigMap('leaky', data={'s': raw['clientSecret']})\n"
    )
    root, argv = scratch_project(program, {"sv-backups:identities": {"clientSecret": CLEAR_CLIENT_SECRET}})
    assert cli.main(argv, root=root) == 3
    err = capsys.readouterr().err
    assert "outside a Pulumi secret" in err and "ConfigMap::leaky input data.s" in err
    assert CLEAR_CLIENT_SECRET not in (tmp_path / "out" / "plan.json").read_text()
    assert CLEAR_CLIENT_SECRET not in (tmp_path / "out" / "manifests" / "configmap-leaky.yaml").read_text()


@needs_program
def test_cli_invalid_config_exits_2_with_one_line_per_problem(run_cli, dev_config):
    del dev_config["sv-backups:postgres"]["participant"]
    dev_config["sv-backups:node"]["migrationId"] = -1
    code, out, err, out_dir = run_cli(dev_config)
    assert code == 2
    assert not out_dir.exists() and out == ""
    problems = err.splitlines()[1:]
    assert len(problems) >= 2
    assert any("participant" in line for line in problems)
    assert any("migrationId" in line for line in problems)


@needs_program
def test_cli_plans_a_valid_stack_without_passphrase_and_never_shows_secrets(run_cli, dev_config):
    dev_config["sv-backups:identities"]["clientSecret"] = CLEAR_CLIENT_SECRET  # written in clear
    dev_config["gcp:project"] = "sv-dev-project"
    code, out, err, out_dir = run_cli(dev_config)
    assert code == 0, err
    assert "kubernetes:batch/v1:CronJob" in out and "Resources:" in out
    written = [out_dir / "plan.json", *sorted((out_dir / "manifests").glob("*.yaml"))]
    assert len(written) > 5
    for path in written:
        text = path.read_text()
        assert CLEAR_CLIENT_SECRET not in text, path
    secrets = [p for p in written if p.name.startswith("secret-")]
    assert secrets and all("[secret]" in p.read_text() for p in secrets)


@needs_program
def test_cli_plans_an_aws_stack_with_mocked_account_and_cluster_and_never_shows_secrets(run_cli, stack_config_map):
    config = stack_config_map("aws-dev")
    config["sv-backups:identities"]["clientSecret"] = CLEAR_CLIENT_SECRET
    code, out, err, out_dir = run_cli(config)
    assert code == 0, err
    assert "aws:s3/bucket:Bucket" in out and "aws:eks" not in out  # invokes are not resources
    text = (out_dir / "plan.json").read_text()
    assert CLEAR_CLIENT_SECRET not in text
    assert f"arn:aws:iam::{engine.AWS_ACCOUNT_ID}:role/sv-backups/sv-dev/jobs/sv-dev-pg-backup" in text
    for path in (out_dir / "manifests").glob("*.yaml"):
        assert CLEAR_CLIENT_SECRET not in path.read_text(), path


@needs_program
def test_cli_output_is_byte_identical_across_runs(run_cli):
    first = run_cli(None, "--stack", "dev")
    second = run_cli(None, "--stack", "dev")
    assert first[0] == second[0] == 0, first[2]
    assert (first[3] / "plan.json").read_bytes() == (second[3] / "plan.json").read_bytes()
    names = sorted(p.name for p in (first[3] / "manifests").iterdir())
    assert names == sorted(p.name for p in (second[3] / "manifests").iterdir())
    for name in names:
        assert (first[3] / "manifests" / name).read_bytes() == (second[3] / "manifests" / name).read_bytes()


@needs_program
def test_cli_exits_with_the_policy_code(run_cli, monkeypatch):
    monkeypatch.setattr(policy_check, "run_policy_checks", lambda plan, **_: ("FAIL mandatory-rule: broken\n", 3))
    code, out, _, _ = run_cli(None, "--stack", "dev")
    assert code == 3 and "FAIL mandatory-rule" in out


@pytest.mark.slow
@needs_program
@pytest.mark.parametrize("stack", ["prod", "aws-prod"])
def test_cli_as_a_process_is_deterministic_across_hash_seeds(tmp_path, stack):
    """Two processes with different hash seeds (set and dict orders differ) write byte-identical files."""
    outputs = []
    for seed in ("1", "2"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")} | {"PYTHONHASHSEED": seed}
        out = tmp_path / seed
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "plan.py"), "--stack", stack, "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode in (0, 3), done.stderr  # 3: a mandatory policy fails (reported on stdout)
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0][Path("plan.json")])["stack"] == stack


# --- the shipped stacks through the real program ----------------------------------------------------------


@needs_program
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_shipped_stack_plans_without_leaks(shipped_plan, stack):
    result = shipped_plan(stack)
    assert result.leaks == []
    assert result.plan["project"] == PROJECT.name and result.plan["stack"] == stack
    urns = [r["urn"] for r in result.resources]
    assert len(urns) == len(set(urns))
    text = result.to_json()
    stack_file = PROJECT.stack_file(stack).read_text()
    for line in stack_file.splitlines():
        if "secure:" in line:
            assert line.split("secure:", 1)[1].strip() not in text
    kube_objects = [r for r in result.resources if engine.is_kubernetes_object(r)]
    assert len(result.manifests) == len(kube_objects) > 0
    for name, manifest in result.manifests.items():
        assert name == f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        assert "[unknown]" not in json.dumps(manifest)
    assert "[unknown]" not in text
    # An output the mocks do not compute resolves to None: "serviceAccount:None" means PlanMocks needs an entry.
    assert not re.findall(r'"[^"]*\bNone\b[^"]*"', text)
    assert result.outputs, "the program exports the operator's outputs"


@needs_program
def test_shipped_plan_is_deterministic(dev_plan, offline_plan):
    again = offline_plan(PROJECT.stack_file("dev"), stack="dev")
    assert again.to_json() == dev_plan.to_json()
    assert again.manifests == dev_plan.manifests
