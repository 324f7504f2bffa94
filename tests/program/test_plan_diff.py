"""`scripts/plan.py --diff OLD_DIR` and the tree's grants (engines/plan_diff.py): the diff of two plan dicts and the
policy rendering on small plans, then on real plans of the shipped stacks (planned twice with one setting changed)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest

from engines import plan_diff, plan_stacks, policy_check
from engines.offline_plan import load_stack_file, primary_stack_references
from scripts import plan as cli
from tests.program.conftest import PROJECT, ROOT, plan_config_file, program_ready

needs_program = pytest.mark.skipif(not program_ready(), reason="the program (components/program.py) is not written")
CLEAR = "clear-oauth-secret-0f9e8d"
HEADING = re.compile(r"^([+~-]) (\S+) (\S+)(.*)\n    (urn:pulumi:\S+)$", re.MULTILINE)


# --- small plans: the pure diff ------------------------------------------------------------------------------------


def _resource(name, type_="gcp:storage/bucket:Bucket", stack="s", **inputs):
    return {
        "urn": f"urn:pulumi:{stack}::p::{type_}::{name}",
        "type": type_,
        "name": name,
        "parent": None,
        "dependsOn": [],
        "inputs": inputs,
        "options": {"protect": False, "aliases": [], "propertyDependencies": {}},
    }


def _plan(*resources, stack="s", **outputs):
    return {"project": "p", "stack": stack, "resources": list(resources), "outputs": outputs}


def _policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, separators=(",", ":"))


WRITE = {"Sid": "Write", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::b/*"}
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def _headings(text):
    return {(sign, urn) for sign, _, _, _, urn in HEADING.findall(text)}


def test_the_diff_names_added_removed_and_changed_resources_by_urn():
    kept, gone = _resource("kept", location="EU"), _resource("gone", location="EU")
    old = _plan(kept, gone, _resource("same", location="US"), url="gs://a")
    changed = _resource("kept", location="EU4", lifecycleRules=[{"age": 3}])
    new = _plan(changed, _resource("same", location="US"), _resource("new", location="US"), url="gs://b")
    diff = plan_diff.diff_plans(old, new)
    assert [(r.status, r.urn.rsplit("::", 1)[1]) for r in diff.resources] == [
        ("added", "new"),
        ("removed", "gone"),
        ("changed", "kept"),
    ]
    assert diff.unchanged == 1
    text = plan_diff.render_diff(diff, against="old/plan.json")
    assert text.splitlines()[0] == (
        "Changes since old/plan.json (stack s): 1 added, 1 removed, 1 changed, 1 unchanged; outputs: 1 changed"
    )
    assert _headings(text) == {("+", new["resources"][2]["urn"]), ("-", gone["urn"]), ("~", kept["urn"])}
    assert '    location: "EU" -> "EU4"' in text
    assert '    lifecycleRules: (absent) -> [{"age": 3}]' in text
    assert '  url: "gs://a" -> "gs://b"' in text
    assert "same" not in text
    assert plan_diff.render_diff(plan_diff.diff_plans(old, old), against="x").endswith(
        "none (3 resources, the same outputs)"
    )


def test_lists_of_scalars_by_position_or_item_by_item():
    def changed(old, new):
        return plan_diff.render_diff(
            plan_diff.diff_plans(_plan(_cron("c", **old)), _plan(_cron("c", **new))), against="x"
        )

    assert '    args[2] (--keep): "14d" -> "7d"' in changed(
        {"args": ["run", "--keep", "14d"]}, {"args": ["run", "--keep", "7d"]}
    )
    assert '    members: + "c", + "d", - "a", - "b"' in changed({"members": ["a", "b"]}, {"members": ["c", "d"]})


def test_options_changes_are_shown_and_a_moved_resource_is_matched_by_its_alias():
    old = _plan(_resource("bucket", location="EU"))
    moved = _resource("bucket2", location="EU")
    moved["options"] = {**moved["options"], "protect": True, "aliases": [old["resources"][0]["urn"]]}
    diff = plan_diff.diff_plans(old, _plan(moved))
    [item] = diff.resources
    assert item.status == "moved" and item.moved_from == old["resources"][0]["urn"]
    text = plan_diff.render_diff(diff, against="x")
    assert "moved from urn:pulumi:s::p::gcp:storage/bucket:Bucket::bucket" in text
    assert "    options.protect: false -> true" in text


def test_a_policy_is_compared_statement_by_statement_and_never_as_one_escaped_line():
    read = {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    old = _plan(_resource("writer", ROLE_POLICY, policy=_policy(WRITE, read), role="r"))
    grown = {**WRITE, "Action": ["s3:PutObject", "s3:DeleteObject"]}
    deny = {"Effect": "Deny", "Action": "s3:*", "Principal": "*", "Resource": "*"}
    new = _plan(_resource("writer", ROLE_POLICY, policy=_policy(grown, deny), role="r"))
    text = plan_diff.render_diff(plan_diff.diff_plans(old, new), against="x")
    assert "    policy (policy document, parsed):" in text
    assert '      Statement[Sid=Write].Action: + "s3:DeleteObject"' in text
    removed = text[text.index("Statement[Sid=Read]:") :]
    assert '        -   "Action": "s3:GetObject",' in removed  # the whole statement, pretty-printed
    assert "      Statement[Deny s3:*]:" in text and '        +   "Effect": "Deny",' in text
    assert '\\"' not in text


def test_gcp_bindings_members_and_custom_role_permissions_item_by_item():
    binding = {"role": "roles/storage.objectViewer", "members": ["serviceAccount:a@p.iam.gserviceaccount.com"]}
    old = _plan(
        _resource(
            "policy", "gcp:storage/bucketIAMPolicy:BucketIAMPolicy", policyData=json.dumps({"bindings": [binding]})
        ),
        _resource("role", "gcp:projects/iAMCustomRole:IAMCustomRole", permissions=["storage.objects.get"]),
    )
    more = {**binding, "members": [*binding["members"], "user:b@example.com"]}
    new = _plan(
        _resource("policy", "gcp:storage/bucketIAMPolicy:BucketIAMPolicy", policyData=json.dumps({"bindings": [more]})),
        _resource("role", "gcp:projects/iAMCustomRole:IAMCustomRole", permissions=["storage.objects.list"]),
    )
    text = plan_diff.render_diff(plan_diff.diff_plans(old, new), against="x")
    assert "    policyData (policy document, parsed):" in text
    assert '      bindings[role=roles/storage.objectViewer].members: + "user:b@example.com"' in text
    assert '    permissions: + "storage.objects.list", - "storage.objects.get"' in text
    assert plan_diff.grants(new["resources"][0]) == [
        'bindings=["roles/storage.objectViewer: serviceAccount:a@p.iam.gserviceaccount.com, user:b@example.com"]'
    ]


def test_an_added_resource_shows_its_policy_pretty_printed_and_its_grants():
    new = _plan(_resource("writer", ROLE_POLICY, policy=_policy(WRITE), role="jobs"))
    text = plan_diff.render_diff(plan_diff.diff_plans(_plan(), new), against="x")
    assert '+ aws:iam/rolePolicy:RolePolicy writer  [role=jobs, allow=["s3:PutObject"]]' in text
    assert "    policy (policy document):" in text
    assert '            "Sid": "Write"' in text.splitlines()


def _cron(name, suspend=None, **inputs):
    spec = {"schedule": "0 */4 * * *"} | ({} if suspend is None else {"suspend": suspend})
    return _resource(name, plan_diff.CRONJOB, spec=spec, metadata={"name": name}, **inputs)


def test_suspended_cronjobs_are_marked():
    old = _plan(_cron("standby", True), _cron("resumed", True), _cron("running"), _cron("gone", True))
    new = _plan(_cron("standby", True), _cron("resumed"), _cron("running", False), _cron("added", True))
    new["resources"][0]["inputs"]["spec"]["schedule"] = "0 */2 * * *"
    text = plan_diff.render_diff(plan_diff.diff_plans(old, new), against="x")
    marks = {name: rest for _, _, name, rest, _ in HEADING.findall(text)}
    assert marks["standby"] == "  [suspended]"
    assert marks["resumed"] == "  [was suspended]"
    assert marks["running"] == ""
    assert marks["gone"].startswith("  [suspended]") and marks["added"].startswith("  [suspended]")
    assert "suspend=true" in marks["added"]


def test_secrets_stay_masked_in_the_diff():
    secret_type = "kubernetes:core/v1:Secret"
    # An old plan with a Secret's payload in clear (hand-made, or from a program that leaked) is masked all the same.
    old = _plan(
        _resource("token", secret_type, stringData={"token": CLEAR}),
        _resource("cm", "kubernetes:core/v1:ConfigMap", data={"url": f"https://x/?t={CLEAR}"}),
    )
    new = _plan(
        _resource("token", secret_type, stringData={"token": "[secret]", "other": "[secret]"}),
        _resource("cm", "kubernetes:core/v1:ConfigMap", data={"url": "https://x/?t=[secret]", "n": "1"}),
    )
    text = plan_diff.render_diff(plan_diff.diff_plans(old, new), against="x", secrets=[CLEAR])
    assert CLEAR not in text
    assert '    stringData.other: (absent) -> "[secret]"' in text
    assert "stringData.token" not in text  # [secret] on both sides: no change can be seen
    assert '    data.n: (absent) -> "1"' in text


def test_the_tree_shows_rbac_and_aws_grants():
    role = _resource(
        "r",
        "kubernetes:rbac.authorization.k8s.io/v1:Role",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create"]}],
    )
    binding = _resource(
        "rb",
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
        roleRef={"kind": "Role", "name": "r"},
        subjects=[{"kind": "ServiceAccount", "namespace": "sv", "name": "job"}],
    )
    trust = {
        "Effect": "Allow",
        "Principal": {"Federated": "arn:aws:iam::1:oidc-provider/x"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {"x:sub": "system:serviceaccount:sv:job"}},
    }
    aws_role = _resource("job", "aws:iam/role:Role", assumeRolePolicy=_policy(trust))
    member = _resource("m", "gcp:storage/bucketIAMMember:BucketIAMMember", role="roles/x", member="user:a@b.c")
    assert plan_diff.grants(role) == ['rules=["pods: get,create"]']
    assert plan_diff.grants(binding) == ["roleRef=Role/r", 'subjects=["ServiceAccount sv/job"]']
    assert plan_diff.grants(aws_role) == ['trusts=["system:serviceaccount:sv:job"]']
    assert plan_diff.tree_settings(member) == ["role=roles/x", "member=user:a@b.c"]
    member["options"]["protect"] = True
    assert plan_diff.tree_settings(member) == ["role=roles/x", "member=user:a@b.c", "protect"]


# --- the old plan's directory ----------------------------------------------------------------------------------------


def test_a_missing_or_unreadable_old_dir_is_one_clear_message_and_nothing_is_planned(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-plan"
    assert cli.main(["--stack", "dev", "--out", str(out), "--diff", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--diff {missing}: no such directory" in err
    assert f"python scripts/plan.py --stack dev --out {missing}" in err
    assert not out.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["--stack", "dev", "--out", str(out), "--diff", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"no plan.json in it (looked for {empty / 'plan.json'}" in err and "--out" in err

    (empty / "plan.json").write_text("{not json")
    assert cli.main(["--stack", "dev", "--out", str(out), "--diff", str(empty)]) == 2
    assert f"cannot read {empty / 'plan.json'}" in capsys.readouterr().err

    (empty / "plan.json").write_text('{"stack": "dev"}')
    assert cli.main(["--stack", "dev", "--out", str(out), "--diff", str(empty)]) == 2
    assert "is not a plan.json of scripts/plan.py" in capsys.readouterr().err
    assert not out.exists()


def test_old_plans_of_several_stacks_are_read_from_their_subdirectories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "plan.json").write_text(json.dumps(_plan(stack="a")))
    assert plan_diff.load_old_plan(tmp_path, "a", several=True).plan == _plan(stack="a")
    assert plan_diff.load_old_plan(tmp_path, "a").plan == _plan(stack="a")  # one stack: DIR/<stack> is tried too
    assert plan_diff.load_old_plan(tmp_path, "b", several=True).plan is None  # a stack new since then
    with pytest.raises(plan_diff.PlanDiffError, match=r"no plan\.json in it"):
        plan_diff.load_old_plan(tmp_path, "b")
    assert plan_diff.load_old_plans(tmp_path, ["a", "b"])["b"].plan is None
    with pytest.raises(plan_diff.PlanDiffError) as refused:
        plan_diff.load_old_plans(tmp_path, ["b", "c"])
    assert str(refused.value) == (
        f"--diff {tmp_path}: no plan.json of any of these stacks in it (looked for {tmp_path}/<stack>/plan.json); "
        "make one by planning the version to compare with (e.g. a checkout of main) into it: "
        f"python scripts/plan.py --stack b --stack c --out {tmp_path}"
    )


# --- real plans ----------------------------------------------------------------------------------------------------


def _comparable(resource):
    options = {k: v for k, v in resource["options"].items() if k not in ("propertyDependencies", "aliases")}
    return resource["inputs"], options


@needs_program
def test_two_real_plans_with_the_dr_region_changed(tmp_path, stack_config_map):
    """aws-prod planned with another DR region, then as shipped with --diff: the diff names exactly the resources
    whose inputs or options differ between the two plan.json files, and shows the policies as documents."""
    config = stack_config_map("aws-prod")
    shipped_region = config["sv-backups:dr"]["region"]
    other = "us-east-2" if shipped_region != "us-east-2" else "us-west-1"
    config["sv-backups:dr"]["region"] = other
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    done = plan_config_file(old_dir, "aws-prod", config)
    assert done.returncode == 0, done.stderr
    new_dir = tmp_path / "new"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "plan.py"),
            *("--stack", "aws-prod", "--out", str(new_dir)),
            *("--diff", str(old_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr  # as without --diff: the shipped stack plans and passes
    assert done.stderr == ""
    text = done.stdout[done.stdout.index("Changes since ") :]

    old = {r["urn"]: r for r in json.loads((old_dir / "plan.json").read_text())["resources"]}
    new = {r["urn"]: r for r in json.loads((new_dir / "plan.json").read_text())["resources"]}
    expected = (
        {("+", urn) for urn in new.keys() - old.keys()}
        | {("-", urn) for urn in old.keys() - new.keys()}
        | {("~", urn) for urn in new.keys() & old.keys() if _comparable(new[urn]) != _comparable(old[urn])}
    )
    assert {sign for sign, _ in expected} == {"+", "-", "~"}
    assert _headings(text) == expected
    added, removed, changed = ([s for s, _ in expected].count(sign) for sign in "+-~")
    assert text.startswith(
        f"Changes since {old_dir / 'plan.json'} (stack aws-prod): {added} added, {removed} removed, "
        f"{changed} changed, {len(new) - added - changed} unchanged"
    )

    # A policy that changed is shown statement by statement, with the DR region's ARNs old -> new.
    assert "    policy (policy document, parsed):" in text
    statement = re.compile(rf'^      Statement\[Sid=\w+\]\.\S+: .*"[^"]*{other}[^"]*".*{shipped_region}', re.MULTILINE)
    assert statement.search(text), text
    # A key added in the DR region shows its key policy pretty-printed, a line per field.
    assert re.search(r'^    policy \(policy document\):\n      \{\n        "Statement": \[$', text, re.MULTILINE)
    assert '\\"' not in text  # no escaped JSON anywhere
    assert f'  drRegion: "{other}" -> "{shipped_region}"' in text


@pytest.fixture
def dr_plans(offline_plan, shipped_plan, stack_config_map):
    """(prod-dr as shipped, prod-dr with another job image digest): every CronJob of the second differs."""
    shipped = shipped_plan("prod-dr")
    config = stack_config_map("prod-dr")
    config["sv-backups:jobImage"] = config["sv-backups:jobImage"].rsplit("@sha256:", 1)[0] + "@sha256:" + "0" * 64
    stack_config = load_stack_file(PROJECT.stack_file("prod-dr"), project=PROJECT.name, stack="prod-dr")
    references = primary_stack_references(stack_config, PROJECT, ROOT, plan=lambda primary: shipped_plan(primary.stack))
    return shipped, offline_plan(config, stack="prod-dr", stack_references=references)


@needs_program
def test_a_dr_stack_s_standby_cronjobs_are_marked_suspended(dr_plans):
    shipped, changed = dr_plans
    text = plan_diff.render_diff(plan_diff.diff_plans(shipped.plan, changed.plan), against="x")
    crons = {r["name"]: r for r in changed.of_type(plan_diff.CRONJOB)}
    suspended = {name for name, r in crons.items() if r["inputs"]["spec"].get("suspend") is True}
    assert suspended and suspended != set(crons)  # the backups stand by; the replica check runs
    marks = {name: rest for _, type_, name, rest, _ in HEADING.findall(text) if type_ == plan_diff.CRONJOB}
    assert set(marks) == set(crons)
    assert {name for name, rest in marks.items() if rest == "  [suspended]"} == suspended
    assert all(marks[name] == "" for name in set(crons) - suspended)
    # The tree says it too.
    tree = plan_diff.render_tree(changed.plan)
    for name in crons:
        [line] = [line for line in tree.splitlines() if f"CronJob {name} " in line]
        assert f"suspend={'true' if name in suspended else 'false'}]" in line


@needs_program
def test_the_tree_shows_grants_and_explains_the_mock_ids(shipped_plan):
    plan = shipped_plan("prod").plan
    tree = plan_diff.render_tree(plan)
    members = [r for r in plan["resources"] if r["type"] == "gcp:storage/bucketIAMMember:BucketIAMMember"]
    assert members
    for member in members:
        assert f"role={member['inputs']['role']}, member={member['inputs']['member']}" in tree
    assert re.search(r"RoleBinding \S+  \[namespace=\S+, roleRef=Role/\S+, subjects=\[\"ServiceAccount ", tree)
    assert re.search(r"Role \S+  \[namespace=\S+, rules=\[\"[a-z]+.*: [a-z,]+\"", tree)
    legend = plan_diff.render_legend(plan)
    assert "123456789012  the GCP project number" in legend and "pulumi preview` shows the real ones" in legend
    assert "AWS" not in legend
    aws = plan_diff.render_legend(shipped_plan("aws-dev").plan)
    assert "123456789012  the AWS account id" in aws and "GCP" not in aws
    assert re.search(
        r"aws:iam/role:Role \S+  \[name=\S+, trusts=\[\"system:serviceaccount:",
        plan_diff.render_tree(shipped_plan("aws-dev").plan),
    )


@needs_program
def test_the_cli_diff_never_shows_a_secret_and_reads_the_old_plan_before_writing_over_it(
    tmp_path, stack_config_map, monkeypatch, capsys
):
    """The old plan is the --out directory itself, hand-edited to hold the stack's clear secret where a plan never
    would: the diff shows what changed without it, and the exit code is the plan's."""
    monkeypatch.setattr(policy_check, "run_policy_checks", lambda plan, **_: ("", plan_stacks.EXIT_OK))
    config = stack_config_map("dev")
    config["sv-backups:identities"]["clientSecret"] = CLEAR  # written in clear: the plan redacts it
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(json.dumps({"config": config}))
    out = tmp_path / "out"
    assert cli.main(["--config-file", str(stack_file), "--out", str(out)]) == 0
    capsys.readouterr()
    written = json.loads((out / "plan.json").read_text())
    old = copy.deepcopy(written)
    [secret] = [r for r in old["resources"] if r["type"] == "kubernetes:core/v1:Secret"]
    secret["inputs"]["stringData"] = {key: CLEAR for key in secret["inputs"]["stringData"]}
    cron = next(r for r in old["resources"] if r["type"] == plan_diff.CRONJOB)
    cron["inputs"]["metadata"].setdefault("annotations", {})["note"] = f"token {CLEAR}"
    (out / "plan.json").write_text(json.dumps(old))

    assert cli.main(["--config-file", str(stack_file), "--out", str(out), "--diff", str(out)]) == 0
    printed = capsys.readouterr()
    assert CLEAR not in printed.out + printed.err
    text = printed.out[printed.out.index("Changes since ") :]
    assert _headings(text) == {("~", cron["urn"])}  # the Secret's payload is masked on both sides: no change
    # The dev CronJobs carry annotations of their own (the scanner's skips): the note is one key among them.
    assert 'metadata.annotations.note: "token [secret]" -> (absent)' in text
    assert json.loads((out / "plan.json").read_text()) == written
