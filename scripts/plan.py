"""The offline plan: what a stack declares, without the Pulumi CLI, a cloud or the stack's passphrase.

    python scripts/plan.py (--stack NAME | --config-file FILE)... [--out DIR] [--primary-plan DIR] [--jobs N]

Runs the program (`__main__.py`) under Pulumi's mock engine with the stack's config, prints the resource
tree and a summary, and writes DIR/plan.json and DIR/manifests/*.yaml (default DIR: out/plan/<stack>).
Several stacks (`--stack` and `--config-file` repeated, e.g. one stack per SV node) are each planned exactly as if
alone; with `--out DIR`, each is written to DIR/<stack>. The first is planned in this process, which loads the
program and the provider modules; each of the others in its own copy of this process forked then, up to `--jobs`
at once (default: the usable cores; `--jobs 1`, a platform other than Linux, or another thread running in this
process plans them here, one after the other). Output comes in the order the stacks were given.
`secure:` values are not decrypted: they show as "[secret]", as does every secret in the output.
Then runs the policy checks (scripts/policy_check.py) on the plan when they exist.

A DR stack (`sv-backups:role: dr`) reads its primary's outputs through a StackReference: they come from the
primary's offline plan, DIR/plan.json of `--primary-plan DIR`, or, without it, from planning the shipped stack
named like the last part of `sv-backups:dr.primaryStack` (stacks/Pulumi.<that>.yaml) first, in-process.

Exit codes: 0 plan written (and policies pass); 1 the program failed; 2 the stack config is invalid (one
message per problem on stderr) or unreadable; 3 a mandatory policy failed, or a secret would be stored in
clear in the state. With several stacks, the worst of theirs: a stack not planned (1, 2) outranks a policy
failure (3), so 3 still means every plan was written.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import io
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engines import forked, offline_plan  # noqa: E402
from jobs import cli_types  # noqa: E402

EXIT_OK, EXIT_PROGRAM, EXIT_CONFIG, EXIT_POLICY = 0, 1, 2, 3
# Worst last. Callers read 3 as "written, but a policy failed" (the pull-request check goes on to report it).
_SEVERITY = (EXIT_OK, EXIT_POLICY, EXIT_CONFIG, EXIT_PROGRAM)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="plan.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack",
        action="append",
        default=[],
        help="stack name: reads <stackConfigDir>/Pulumi.<NAME>.yaml (repeatable)",
    )
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        type=Path,
        help="a stack file (Pulumi.<stack>.yaml layout; repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: out/plan/<stack>; with several stacks: DIR/<stack>)"
    )
    parser.add_argument(
        "--primary-plan", type=Path, help="DR stacks: the primary stack's offline plan directory (its plan.json)"
    )
    parser.add_argument(
        "--jobs",
        type=cli_types.count,
        default=forked.usable_cores(),
        help="several stacks: plan up to N at once in forked copies of this process (default: the usable cores, "
        f"here {forked.usable_cores()}; 1: one after the other, here)",
    )
    args = parser.parse_args(argv)
    if not args.stack and not args.config_file:
        parser.error("one of the arguments --stack --config-file is required")
    return args


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


def _policy_checks(plan: dict) -> tuple[str, int] | None:
    if not (ROOT / "engines" / "policy_check.py").is_file():
        return None
    module = importlib.import_module("engines.policy_check")
    return module.run_policy_checks(plan)


def main(argv: list[str] | None = None, *, root: Path = ROOT) -> int:
    args = _arguments(argv)
    try:
        project = offline_plan.load_project(root)
    except offline_plan.PlanInputError as error:
        print(f"plan: {error}", file=sys.stderr)
        return EXIT_CONFIG
    sources = [(name, project.stack_file(name)) for name in args.stack]
    sources += [(_stack_name(path), path) for path in args.config_file]
    names = [name for name, _ in sources]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        print(f"plan: stack {', '.join(map(repr, twice))} given twice", file=sys.stderr)
        return EXIT_CONFIG
    several = len(sources) > 1
    jobs = [
        (stack, path, args.out / stack if args.out and several else args.out or root / "out" / "plan" / stack)
        for stack, path in sources
    ]
    plan_one = functools.partial(_plan_stack, project=project, root=root, primary_plan=args.primary_plan)
    codes = []
    for (stack, _, _), (code, out, err) in zip(jobs, _planned(jobs, plan_one, args.jobs), strict=True):
        if several:
            print(f"=== {stack}")
        sys.stdout.write(out)
        sys.stdout.flush()
        sys.stderr.write(err)  # every message in it names its stack: stdout may go elsewhere (make plan-all)
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


def _plan_stack(
    stack: str, path: Path, out_dir: Path, *, project: offline_plan.Project, root: Path, primary_plan: Path | None
) -> int:
    try:
        config = offline_plan.load_stack_file(path, project=project.name, stack=stack)
    except offline_plan.PlanInputError as error:
        print(f"plan: stack {stack!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG

    problems = _validate(config)
    if problems:
        print(f"plan: stack {stack!r} has an invalid configuration; nothing was declared:", file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG

    try:
        stack_references = offline_plan.primary_stack_references(config, project, root, primary_plan=primary_plan)
    except offline_plan.PlanInputError as error:
        print(f"plan: stack {stack!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG
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
    print(offline_plan.render_tree(result.plan))
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
    policy = _policy_checks(result.plan)
    if policy is not None:
        report, policy_code = policy
        print()
        print(report.rstrip())
        code = max(code, policy_code)
    return code


if __name__ == "__main__":
    # The config comes from the stack file only, as with `pulumi up`; never from this shell's environment.
    for variable in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS"):
        os.environ.pop(variable, None)
    code = main()
    # The process ends here: leave what it loaded out of the full collection Python runs at exit (over the
    # provider SDKs' classes, see __main__.py).
    gc.freeze()
    sys.exit(code)
