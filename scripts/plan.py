"""The offline plan: what a stack declares, without the Pulumi CLI, a cloud or the stack's passphrase.

    python scripts/plan.py (--stack NAME | --config-file FILE)... [--out DIR] [--primary-plan DIR] [--jobs N]
                           [--diff OLD_DIR]

Runs the program (`__main__.py`) under Pulumi's mock engine with the stack's config, prints the resource
tree and a summary, and writes DIR/plan.json and DIR/manifests/*.yaml (default DIR: out/plan/<stack>).
Several stacks (`--stack` and `--config-file` repeated, e.g. one stack per SV node) are each planned exactly as if
alone; with `--out DIR`, each is written to DIR/<stack>. The first is planned in this process, which loads the
program and the provider modules; each of the others in its own copy of this process forked then, up to `--jobs`
at once (default: the usable cores; `--jobs 1`, a platform other than Linux, or another thread running in this
process plans them here, one after the other). Output comes in the order the stacks were given.
`secure:` values are not decrypted: they show as "[secret]", as does every secret in the output.
Then runs the policy checks (engines/policy_check.py) on the plan.

`--diff OLD_DIR` (an earlier `--out` directory, e.g. planned from main) then prints what changed since the plan
there, per stack (engines/plan_diff.py, docs/plan.md): resources added, removed and changed by URN, each changed
input old -> new, policies as parsed documents, suspended CronJobs marked; secrets stay "[secret]". OLD_DIR is
read before the new plan is written, so it may be the --out directory itself.

A DR stack (`sv-backups:role: dr`) reads its primary's outputs through a StackReference: they come from the
primary's offline plan, DIR/plan.json of `--primary-plan DIR`, or, without it, from planning the shipped stack
named like the last part of `sv-backups:dr.primaryStack` (stacks/Pulumi.<that>.yaml) first, in-process.

Exit codes: 0 plan written (and policies pass); 1 the program failed; 2 the stack config is invalid (one
message per problem on stderr) or unreadable, or --diff's OLD_DIR holds no readable plan (nothing is planned);
3 a mandatory policy failed, or a secret would be stored in clear in the state. With several stacks, the worst of
theirs: a stack not planned (1, 2) outranks a policy failure (3), so 3 still means every plan was written. What
the diff shows never changes the exit code.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engines import forked, plan_stacks  # noqa: E402
from jobs import cli_types  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--diff",
        type=Path,
        metavar="OLD_DIR",
        help="after planning, print what changed since the plan in OLD_DIR (an earlier --out directory)",
    )
    return parser


def main(argv: list[str] | None = None, *, root: Path = ROOT) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.stack and not args.config_file:
        parser.error("one of the arguments --stack --config-file is required")
    return plan_stacks.run(
        stacks=args.stack,
        config_files=args.config_file,
        out=args.out,
        primary_plan=args.primary_plan,
        jobs=args.jobs,
        root=root,
        diff=args.diff,
    )


if __name__ == "__main__":
    # The config comes from the stack file only, as with `pulumi up`; never from this shell's environment.
    for variable in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS"):
        os.environ.pop(variable, None)
    code = main()
    # The process ends here: leave what it loaded out of the full collection Python runs at exit (over the
    # provider SDKs' classes, see __main__.py).
    gc.freeze()
    sys.exit(code)
