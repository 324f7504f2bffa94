"""The plan command's run (scripts/plan.py): plan one or several stacks offline, print each plan and its policy
checks, and rank the stacks' exit codes into the command's.

Each stack is read, validated by the program's own settings and, for a DR stack, given its primary's outputs
(engines/offline_plan.py), then planned under the mock engine, written, printed and checked by the policy pack
(engines/policy_check.py), and with `diff` compared with its earlier plan (engines/plan_diff.py). The first stack
is planned in this process; the others in forked copies of it (engines/forked.py) or one after the other here.
What each stack prints is kept and printed in the order the stacks were given, every message on stderr naming its
stack.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engines import forked, offline_plan, plan_diff, policy_check
from rules import dr_pairing
from rules.config_keys import PRODUCTION_KEY, production_flag

EXIT_OK, EXIT_PROGRAM, EXIT_CONFIG, EXIT_POLICY = 0, 1, 2, 3
# Worst last. Callers read 3 as "written, but a policy failed" (the pull-request check goes on to report it).
_SEVERITY = (EXIT_OK, EXIT_POLICY, EXIT_CONFIG, EXIT_PROGRAM)


def _stack_name(path: Path) -> str:
    name = path.name
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return name.removeprefix("Pulumi.") or "stack"


def _validate(config: offline_plan.StackConfig) -> list[str]:
    """The program's own validation, run before anything is declared: one message per problem."""
    from components.settings import SettingsError, load_settings

    try:
        load_settings(config.raw_config(), stack=config.stack)
    except SettingsError as error:
        return list(error.problems) or [str(error)]
    return []


def _pairing_problems(config: offline_plan.StackConfig, stack_references: dict[str, Any] | None) -> list[str]:
    """A DR stack's node and synchronizer against its primary's exported ones (rules/dr_pairing.py), before
    anything is declared; the program checks the same on `pulumi up` (components/dr.py)."""
    from components.settings import load_settings

    if not stack_references:
        return []
    settings = load_settings(config.raw_config(), stack=config.stack)  # valid: _validate passed
    [(primary, outputs)] = stack_references.items()
    return dr_pairing.node_mismatches(
        settings.node.identity(), outputs.get("node"), primary
    ) + dr_pairing.synchronizer_mismatches(settings.synchronizer, outputs.get("synchronizer"), primary)


def run(
    *,
    stacks: Sequence[str],
    config_files: Sequence[Path],
    out: Path | None,
    primary_plan: Path | None,
    jobs: int,
    root: Path,
    diff: Path | None = None,
) -> int:
    """Plan the stacks named `stacks` (stack files of the project at `root`) and the stack files `config_files`, in
    that order, writing each to `out` (several stacks: `out`/<stack>; default `root`/out/plan/<stack>), up to
    `jobs` at once; with `diff` (an earlier `out`), print what changed since each stack's plan there. Returns the
    command's exit code: the worst of the stacks' (see scripts/plan.py); the diff does not change it."""
    try:
        project = offline_plan.load_project(root)
    except offline_plan.PlanInputError as error:
        print(f"plan: {error}", file=sys.stderr)
        return EXIT_CONFIG
    sources = [(name, project.stack_file(name)) for name in stacks]
    sources += [(_stack_name(path), path) for path in config_files]
    names = [name for name, _ in sources]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        print(f"plan: stack {', '.join(map(repr, twice))} given twice", file=sys.stderr)
        return EXIT_CONFIG
    several = len(sources) > 1
    old_plans: dict[str, plan_diff.OldPlan] = {}
    if diff is not None:
        # Read before anything is planned: the new plan may be written where the old one is (out/plan/<stack>).
        try:
            old_plans = plan_diff.load_old_plans(diff, names)
        except plan_diff.PlanDiffError as error:
            print(f"plan: {error}", file=sys.stderr)
            return EXIT_CONFIG
    stack_jobs = [
        (stack, path, out / stack if out and several else out or root / "out" / "plan" / stack)
        for stack, path in sources
    ]
    plan_one = functools.partial(
        _plan_stack, project=project, root=root, primary_plan=primary_plan, old_plans=old_plans
    )
    codes = []
    for (stack, _, _), (code, out_text, err_text) in zip(stack_jobs, _planned(stack_jobs, plan_one, jobs), strict=True):
        if several:
            print(f"=== {stack}")
        sys.stdout.write(out_text)
        sys.stdout.flush()
        sys.stderr.write(err_text)  # every message in it names its stack: stdout may go elsewhere (make plan-all)
        sys.stderr.flush()
        codes.append(code)
    return max(codes, key=_SEVERITY.index)


_Job = tuple[str, Path, Path]  # stack name, stack file, output directory
_Planned = tuple[int, str, str]  # exit code, what was printed to stdout, and to stderr


def _captured(plan_one, job: _Job) -> _Planned:
    """Plan one stack, keeping what it prints. A failure of ours (a plan that cannot be written, a bug) fails that
    stack with its traceback, not the stacks after it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = plan_one(*job)
        except Exception as error:
            traceback.print_exc()
            print(f"plan: stack {job[0]!r} was not planned: {type(error).__name__}: {error}", file=sys.stderr)
            code = EXIT_PROGRAM
    return code, out.getvalue(), err.getvalue()


def _planned(jobs: Sequence[_Job], plan_one, workers: int) -> Iterator[_Planned]:
    """Each job's outcome, in order. The first is planned here; it loads the program and the provider modules
    its cloud uses, so the copies of this process forked after it (engines/forked.py, one per stack) start with
    all of that loaded and pay only for declaring their own stack."""
    yield _captured(plan_one, jobs[0])
    rest = list(jobs[1:])
    workers = min(workers, len(rest))
    why_not = forked.why_not_fork() if workers > 1 else None
    if workers <= 1 or why_not:
        if why_not:
            print(f"plan: planning the stacks one after the other here: {why_not}", file=sys.stderr)
        yield from (_captured(plan_one, job) for job in rest)
        return
    outcomes = forked.in_forked_copies(functools.partial(_captured, plan_one), rest, workers)
    for (stack, _, _), outcome in zip(rest, outcomes, strict=True):
        if isinstance(outcome, forked.CopyDied):
            outcome = EXIT_PROGRAM, "", f"plan: stack {stack!r} was not planned: its copy of plan.py {outcome}\n"
        yield outcome


def _refused(header: str, problems: list[str]) -> int:
    """A stack not planned for its config: the header, then one problem a line (exit 2)."""
    print(header, file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_CONFIG


def _plan_stack(
    stack: str,
    path: Path,
    out_dir: Path,
    *,
    project: offline_plan.Project,
    root: Path,
    primary_plan: Path | None,
    old_plans: dict[str, plan_diff.OldPlan] | None = None,
) -> int:
    try:
        config = offline_plan.load_stack_file(path, project=project.name, stack=stack)
    except offline_plan.PlanInputError as error:
        print(f"plan: stack {stack!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG

    problems = _validate(config)
    if problems:
        return _refused(f"plan: stack {stack!r} has an invalid configuration; nothing was declared:", problems)

    try:
        stack_references = offline_plan.primary_stack_references(config, project, root, primary_plan=primary_plan)
    except offline_plan.PlanInputError as error:
        print(f"plan: stack {stack!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    problems = _pairing_problems(config, stack_references)
    if problems:
        return _refused(f"plan: DR stack {stack!r} does not match its primary; nothing was declared:", problems)
    try:
        result = offline_plan.plan_program(offline_plan.main_program(root), config, stack_references=stack_references)
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        print(
            f"plan: stack {stack!r}: the program failed under the mock engine: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return EXIT_PROGRAM

    offline_plan.write_plan(result, out_dir)
    print(plan_diff.render_tree(result.plan))
    legend = plan_diff.render_legend(result.plan)
    if legend:
        print(legend)
    print()
    print(offline_plan.render_summary(result.plan))
    print(f"Wrote {out_dir / 'plan.json'} and {len(result.manifests)} manifests under {out_dir / 'manifests'}")

    code = EXIT_OK
    if result.leaks:
        print(
            f"plan: stack {stack!r}: secret text reaches the engine outside a Pulumi secret (it would be stored "
            "in clear):",
            file=sys.stderr,
        )
        for where in result.leaks:
            print(f"  {where}", file=sys.stderr)
        code = EXIT_POLICY
    # The stack file's own `sv-backups:production` (validated above), wherever the file is (--config-file).
    production = production_flag(config.raw_config().get(PRODUCTION_KEY))
    report, policy_code = policy_check.run_policy_checks(result.plan, production=production, repo=root)
    print()
    print(report.rstrip())
    old = (old_plans or {}).get(stack)
    if old is not None:
        print()
        _print_diff(stack, old, result.plan, config.clear_secrets)
    return max(code, policy_code)


def _print_diff(stack: str, old: plan_diff.OldPlan, plan: dict, secrets: frozenset[str]) -> None:
    """What changed since the earlier plan. For reading only: a failure here is reported, the exit code stays."""
    if old.plan is None:
        print(
            f"Changes since {old.path}: no earlier plan of stack {stack!r} there; all {len(plan['resources'])} "
            "resources are new"
        )
        return
    try:
        print(plan_diff.render_diff(plan_diff.diff_plans(old.plan, plan), against=old.path, secrets=secrets))
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        print(
            f"plan: stack {stack!r}: the diff against {old.path} failed: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
