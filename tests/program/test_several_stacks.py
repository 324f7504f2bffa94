"""Several SV nodes: one stack each, planned by one scripts/plan.py (--config-file repeated), one after the other
in its process (--jobs 1) or in forked copies of it (--jobs N), each exactly as if planned alone; and the
program's collector pause (__main__.py, for the rest of its process, and its freezing of what it made) is undone
by the offline plan after each run whatever the outcome, so a process that plans several stacks keeps
collecting between them."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.plan import node_stack_files
from components import program as program_module
from components.settings import load_settings
from engines import plan_stacks, policy_check
from engines.offline_plan import load_stack_file, main_program, run_program, stack_config
from scripts import plan as cli

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "stacks" / "Pulumi.prod.yaml"


def test_node_stacks_are_prod_with_the_node_renamed(tmp_path):
    files = node_stack_files(PROD, 3, tmp_path)
    assert [f.name for f in files] == [f"Pulumi.prod-sv-{i}.yaml" for i in (1, 2, 3)]
    settings = []
    for path in files:
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        config = load_stack_file(path, project="sv-backups", stack=stack)
        settings.append(load_settings(config.raw_config(), stack=stack))
    assert [(s.node.name, s.node.namespace) for s in settings] == [(f"sv-{i}", f"sv-{i}") for i in (1, 2, 3)]
    third = files[2].read_text()
    # Every per-node name moved with the node (Cloud SQL instances, the identities client and endpoint).
    assert "sv-1" not in third and "sv-3-participant-pg-4" in third and "sv-3-backup-client" in third
    assert settings[0].name_prefix != settings[2].name_prefix


def test_a_source_without_node_sv_1_is_refused(tmp_path):
    source = tmp_path / "Pulumi.other.yaml"
    source.write_text("config:\n  sv-backups:node:\n    name: sv-7\n    namespace: sv\n")
    with pytest.raises(SystemExit, match=r"sv-backups:node\.name sv-1"):
        node_stack_files(source, 2, tmp_path)


def _tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_stacks_planned_in_one_process_equal_each_planned_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(policy_check, "run_policy_checks", lambda plan, **_: ("", plan_stacks.EXIT_OK))
    first, second = node_stack_files(PROD, 2, tmp_path)
    both, alone = tmp_path / "both", tmp_path / "alone"
    assert cli.main(["--jobs", "1", "--config-file", str(first), "--config-file", str(second), "--out", str(both)]) == 0
    out = capsys.readouterr().out
    assert "=== prod-sv-1" in out and "=== prod-sv-2" in out
    assert cli.main(["--config-file", str(second), "--out", str(alone)]) == 0
    assert sorted(p.name for p in both.iterdir()) == ["prod-sv-1", "prod-sv-2"]
    planned_second = _tree(both / "prod-sv-2")
    assert planned_second == _tree(alone)
    assert planned_second != _tree(both / "prod-sv-1")
    assert gc.isenabled()


# plan.py in a fresh process (no other thread runs, so it forks), each stack saying whether it was planned in
# that process or in a copy; FAULT runs first in every stack's planning.
_PLAN_SAYING_WHERE = """
import os, sys
sys.path.insert(0, {root!r})
from engines import plan_stacks
from scripts import plan as cli
FIRST = os.getpid()
plan_stack = plan_stacks._plan_stack
def saying_where(stack, *args, **kwargs):
    {fault}
    print("planned", stack, "here" if os.getpid() == FIRST else "in a copy")
    return plan_stack(stack, *args, **kwargs)
plan_stacks._plan_stack = saying_where
sys.exit(cli.main(sys.argv[1:]))
"""


def _plan_saying_where(files, out: Path, jobs: int, fault: str = "pass") -> subprocess.CompletedProcess:
    argv = ["--jobs", str(jobs), "--out", str(out), *(a for f in files for a in ("--config-file", str(f)))]
    code = _PLAN_SAYING_WHERE.format(root=str(ROOT), fault=fault)
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_stacks_planned_in_forked_copies_equal_those_planned_one_after_the_other(tmp_path):
    files = node_stack_files(PROD, 3, tmp_path)
    files[2].write_text(files[2].read_text().replace("name: sv-3", "name: Not A Node"))  # refused, as alone
    forked = _plan_saying_where(files, tmp_path / "forked", jobs=2)
    here = _plan_saying_where(files, tmp_path / "here", jobs=1)
    assert forked.returncode == here.returncode == 2, forked.stderr
    where = [line for line in forked.stdout.splitlines() if line.startswith(("planned", "==="))]
    assert where[0] == "=== prod-sv-1" and where[1] == "planned prod-sv-1 here"
    assert where[2:] == ["=== prod-sv-2", "planned prod-sv-2 in a copy", "=== prod-sv-3", "planned prod-sv-3 in a copy"]
    assert "in a copy" not in here.stdout
    assert forked.stdout.replace(str(tmp_path / "forked"), "OUT").replace("in a copy", "here") == here.stdout.replace(
        str(tmp_path / "here"), "OUT"
    )
    assert "stack 'prod-sv-3' has an invalid configuration" in forked.stderr and forked.stderr == here.stderr
    assert sorted(p.name for p in (tmp_path / "forked").iterdir()) == ["prod-sv-1", "prod-sv-2"]
    assert _tree(tmp_path / "forked") == _tree(tmp_path / "here")


@pytest.mark.slow
def test_a_stack_whose_copy_dies_or_fails_is_reported_and_the_others_are_planned(tmp_path):
    files = node_stack_files(PROD, 4, tmp_path)
    fault = "if stack == 'prod-sv-2': os._exit(9)\n    if stack == 'prod-sv-3': raise RuntimeError('a bug of ours')"
    done = _plan_saying_where(files, tmp_path / "out", jobs=2, fault=fault)
    assert done.returncode == 1
    assert "plan: stack 'prod-sv-2' was not planned: its copy of plan.py exited with status 9" in done.stderr
    assert "plan: stack 'prod-sv-3' was not planned: RuntimeError: a bug of ours" in done.stderr
    assert "Traceback" in done.stderr  # the bug's, for whoever fixes it
    planned = sorted(p.parent.name for p in (tmp_path / "out").glob("*/plan.json"))
    assert planned == ["prod-sv-1", "prod-sv-4"]
    assert "planned prod-sv-4 in a copy" in done.stdout


def test_the_worst_stack_decides_the_exit_code(tmp_path, monkeypatch, capsys):
    """A stack not planned (2) outranks another's failed policy (3): 3 must keep meaning "every plan written"."""
    failed = ("a mandatory policy failed", plan_stacks.EXIT_POLICY)
    monkeypatch.setattr(policy_check, "run_policy_checks", lambda plan, **_: failed)
    first, second = node_stack_files(PROD, 2, tmp_path)
    second.write_text(second.read_text().replace("name: sv-2", "name: Not A Node"))
    argv = ["--jobs", "1", "--out", str(tmp_path / "out"), "--config-file", str(first), "--config-file", str(second)]
    assert cli.main(argv) == plan_stacks.EXIT_CONFIG
    assert "a mandatory policy failed" in capsys.readouterr().out
    assert cli.main(argv[:-2]) == plan_stacks.EXIT_POLICY


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_jobs_must_be_a_positive_whole_number(jobs, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--jobs", jobs, "--stack", "prod"])
    assert exit_.value.code == 2
    assert f"--jobs: {jobs!r} is not a whole number of at least 1" in capsys.readouterr().err


def test_the_same_stack_twice_is_refused(tmp_path, capsys):
    (first,) = node_stack_files(PROD, 1, tmp_path)
    assert cli.main(["--config-file", str(first), "--stack", "prod-sv-1", "--out", str(tmp_path / "o")]) == 2
    assert "'prod-sv-1' given twice" in capsys.readouterr().err


def test_the_collector_is_off_from_start_up_to_the_end_of_the_run_and_restored_after(monkeypatch):
    seen = []
    declare = program_module.declare

    def recording_declare(settings):
        seen.append(("declare", gc.isenabled(), gc.get_freeze_count() > 0))
        return declare(settings)

    def program():
        main_program(ROOT)()
        # The engine's work on the outputs is still to come; what the program made is frozen, out of the
        # collection at exit.
        seen.append(("after __main__", gc.isenabled(), gc.get_freeze_count() > 0))

    monkeypatch.setattr(program_module, "declare", recording_declare)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    run_program(program, load_stack_file(PROD, project="sv-backups", stack="prod"))
    assert seen == [("declare", False, False), ("after __main__", False, True)]
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_collector_is_restored_when_the_config_is_invalid():
    config = stack_config(
        {"sv-backups:node": {"name": "Not A Name", "namespace": "sv"}}, project="sv-backups", stack="bad"
    )
    with pytest.raises(Exception, match="node"):
        run_program(main_program(ROOT), config)
    assert gc.isenabled()


def test_a_host_with_the_collector_off_keeps_it_off():
    gc.disable()
    try:
        run_program(main_program(ROOT), load_stack_file(PROD, project="sv-backups", stack="prod"))
        assert not gc.isenabled()
    finally:
        gc.enable()
