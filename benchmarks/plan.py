"""The start-up and planning benchmark behind scripts/bench_plan.py (its docstring says what is measured and why).

The program's start-up under the mock engine for a GCP and an AWS stack against the floor of importing the very
provider submodules it loads (derived from a planning process, checked module for module); the command planning N
generated SV node stacks (node_stack_files) against one node, in one process and in forked copies; and the Pulumi
SDK's own share of those plans (node 1's plan replayed through the SDK's generic classes). Each measurement is a
fresh Python process, the variants interleaved over the rounds; medians, spreads and ratios are printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engines.forked import usable_cores

ROOT = Path(__file__).resolve().parent.parent

PROVIDERS = ("pulumi_gcp", "pulumi_aws", "pulumi_kubernetes")
STARTUP_STACKS = {"gcp": "prod", "aws": "aws-prod"}
NODES_FROM = "prod"

# Runs the program under the mock engine exactly as scripts/plan.py does, and stops once it has declared
# everything (no plan document, files or policies: that is the start-up `pulumi up` pays before the engine works);
# the process then ends with the run, as the language host's does (the program's collector pause and freeze stay).
_DECLARE = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from engines import offline_plan
root = Path({root!r})
project = offline_plan.load_project(root)
config = offline_plan.load_stack_file(project.stack_file({stack!r}), project=project.name, stack={stack!r})
{before}
recording = offline_plan.run_program(offline_plan.main_program(root), config, process_goes_on=False)
{after}
"""
# What a process loaded from the provider SDKs, leaving out the lazy stand-ins of submodules not yet loaded
# (pulumi._utils and importlib.util both call theirs _LazyModule; a stand-in turns into a plain module once loaded).
_LOADED = """
import json, sys
loaded = sorted(
    name for name, module in list(sys.modules.items())
    if name.split(".")[0] in {providers!r} and module is not None and type(module).__name__ != "_LazyModule"
)
packages = [name for name in loaded if hasattr(sys.modules[name], "__path__")]
print(json.dumps({{"modules": loaded, "packages": packages{extra}}}))
"""
# The Pulumi SDK's own share of a plan: one node's resources (type, name, parent, inputs as the engine got them,
# read from its plan.json) declared again through the SDK's generic classes, no program logic, once per node stack
# in one process, each run under the mock engine as scripts/plan.py runs a stack (collector paused, frozen at
# exit). Untyped, so the SDK does less than for the provider classes: a lower bound on what any program
# declaring these resources pays per node.
_REPLAY = """
import gc, json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
{floor}
import pulumi
from engines import offline_plan
root = Path({root!r})
project = offline_plan.load_project(root)
resources = json.loads(Path({plan!r}).read_text(encoding="utf-8"))["resources"]
urns = {{r["urn"] for r in resources}}  # a parent outside the plan is the root stack

def replay():
    gc.disable()  # as __main__.py does; the offline plan turns it back on after the run
    declared = {{}}
    pending = list(resources)
    while pending:  # parents first
        ready = [r for r in pending if r["parent"] in declared or r["parent"] not in urns]
        for r in ready:
            opts = pulumi.ResourceOptions(parent=declared.get(r["parent"]))
            if r["options"]["custom"]:
                declared[r["urn"]] = pulumi.CustomResource(r["type"], r["name"], dict(r["inputs"]), opts)
            else:
                component = pulumi.ComponentResource(r["type"], r["name"], None, opts)
                component.register_outputs({{}})
                declared[r["urn"]] = component
        if not ready:
            raise SystemExit("bench_plan: the replayed plan's parents form a cycle")
        pending = [r for r in pending if r["urn"] not in declared]

for path in {files!r}:
    stack = Path(path).name.removeprefix("Pulumi.").removesuffix(".yaml")
    config = offline_plan.load_stack_file(Path(path), project=project.name, stack=stack)
    offline_plan.run_program(replay, config)
gc.freeze()  # as scripts/plan.py does before it exits
"""

# What __main__.py does once it has declared everything: the collection at exit skips what is frozen.
_FREEZE = "import gc\ngc.freeze()\n"
# The variant with the collector on throughout: __main__.py's pause becomes a no-op.
_GC_ON = """
import gc
gc.disable = lambda: None
"""


@dataclass
class Variant:
    name: str
    argv: list[str]
    seconds: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _env(pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    # The config comes from the stack files only (scripts/plan.py drops these too).
    for variable in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS"):
        env.pop(variable, None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _run(argv: Sequence[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KiB, stdout) of one fresh process; a failing process stops the benchmark."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"bench_plan: {' '.join(argv)[:200]} exited {process.returncode}:\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss, stdout


def replay_code(packages: Sequence[str], plan_dir: Path, files: Sequence[Path]) -> str:
    return _REPLAY.format(
        root=str(ROOT),
        floor=floor_code(packages),
        plan=str(plan_dir / "plan.json"),
        files=[str(f) for f in files],
    )


def declare_code(stack: str, *, before: str = "", after: str = "") -> str:
    return _DECLARE.format(root=str(ROOT), stack=stack, before=before, after=after)


def _loaded(argv_code: str, env: dict[str, str]) -> dict:
    _, _, out = _run([sys.executable, "-c", argv_code], env)
    return json.loads(out.strip().splitlines()[-1])


def used_packages(stack: str, env: dict[str, str]) -> tuple[list[str], int, int]:
    """The provider packages a plan of `stack` loads, reduced to the leaves (importing a leaf imports its
    parents), and how many resources it declared. Checked: the floor built from them loads the very same
    provider modules as the program (no more, no fewer)."""
    record = _LOADED.format(providers=PROVIDERS, extra=', "resources": len(recording.resources)')
    found = _loaded(declare_code(stack, after=record), env)
    packages = [p for p in found["packages"] if "." in p]
    leaves = [p for p in packages if not any(q.startswith(p + ".") for q in packages)]
    floor = _loaded(floor_code(leaves) + _LOADED.format(providers=PROVIDERS, extra=""), env)
    if floor["modules"] != found["modules"]:
        missing = sorted(set(found["modules"]) - set(floor["modules"]))
        extra = sorted(set(floor["modules"]) - set(found["modules"]))
        raise SystemExit(
            f"bench_plan: the floor for {stack} differs from the program: missing {missing}, extra {extra}"
        )
    return leaves, found["resources"], len(found["modules"])


def floor_code(packages: Sequence[str]) -> str:
    """`import pulumi, <packages>`, then touch each package so that a lazily imported one is really loaded (any
    attribute but the module's introspection ones, such as __name__, loads it)."""
    names = ", ".join(packages)
    return f"import pulumi, {names}\nfor module in ({names},):\n    hasattr(module, 'load')\n"


_NODE_NAME = re.compile(r"\bsv-1\b")


def node_stack_files(source: Path, count: int, directory: Path) -> list[Path]:
    """`count` stack files for nodes sv-1..sv-<count>, made from `source` (prod's): every `sv-1` in a value
    (node name, Cloud SQL instances, endpoints, client id) becomes `sv-<i>`, the namespace `sv-<i>`."""
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    config = document.get("config") or {}
    node = config.get("sv-backups:node")
    if not isinstance(node, dict) or node.get("name") != "sv-1":
        raise SystemExit(f"bench_plan: {source} must declare sv-backups:node.name sv-1 to derive the nodes from")

    def renamed(value, i: int):
        if isinstance(value, str):
            return _NODE_NAME.sub(f"sv-{i}", value)
        if isinstance(value, dict):
            return {k: renamed(v, i) for k, v in value.items()}
        if isinstance(value, list):
            return [renamed(v, i) for v in value]
        return value

    files = []
    for i in range(1, count + 1):
        node_config = renamed(config, i)
        node_config["sv-backups:node"]["namespace"] = f"sv-{i}"
        # Synthetic nodes have no DR stack file in the repository: as production stacks their plans would stop at
        # the policy's production-dr rule (exit 3). The benchmark times planning, not that rule.
        node_config.pop("sv-backups:production", None)
        path = directory / f"Pulumi.{NODES_FROM}-sv-{i}.yaml"
        path.write_text(yaml.safe_dump({**document, "config": node_config}, sort_keys=False), encoding="utf-8")
        files.append(path)
    return files


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _ratio_line(label: str, top: Variant, bottom: Variant, goal: float | None) -> str:
    per_round = [t / b for t, b in zip(top.seconds, bottom.seconds, strict=True)]
    ratio = top.median / bottom.median
    verdict = (
        "" if goal is None else ("  (goal <= %.2fx: met)" if ratio <= goal else "  (goal <= %.2fx: NOT met)") % goal
    )
    return f"  {label:<40} {ratio:5.2f}x  (per round {_spread(per_round)}){verdict}"


def run(*, repeat: int, nodes: int, warm_up: bool) -> int:
    """Measure every variant `repeat` rounds (after one untimed run of each when `warm_up`), planning `nodes` node
    stacks, and print the table and the ratios. Returns the exit code (0; a failing process raises SystemExit)."""
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    try:
        env = _env(work / "pycache")
        python = sys.executable
        variants: list[Variant] = []
        floors: dict[str, list[str]] = {}
        for cloud, stack in STARTUP_STACKS.items():
            packages, resources, modules = used_packages(stack, env)
            floors[cloud] = packages
            print(f"{cloud}: {stack} declares {resources} resources, loads {modules} provider modules (its floor too)")
            print(f"  from: {', '.join(packages)}")
            variants.append(Variant(f"{cloud} floor", [python, "-c", floor_code(packages)]))
            variants.append(Variant(f"{cloud} floor, frozen at exit", [python, "-c", floor_code(packages) + _FREEZE]))
            variants.append(Variant(f"{cloud} program ({stack})", [python, "-c", declare_code(stack)]))
        variants.append(
            Variant("gcp program, collector on", [python, "-c", declare_code(STARTUP_STACKS["gcp"], before=_GC_ON)])
        )
        files = node_stack_files(ROOT / "stacks" / f"Pulumi.{NODES_FROM}.yaml", nodes, work)
        plan = [python, str(ROOT / "scripts" / "plan.py"), "--out", str(work / "plan")]
        one = Variant("plan 1 node", [*plan, "--config-file", str(files[0])])
        every_node = [a for f in files for a in ("--config-file", str(f))]
        several = Variant(f"plan {nodes} nodes, one process", [*plan, "--jobs", "1", *every_node])
        cores = usable_cores()
        forked = Variant(f"plan {nodes} nodes, --jobs {cores}", [*plan, "--jobs", str(cores), *every_node])
        variants += [one, several, forked]
        # The SDK floor of the same runs: node 1's plan, replayed (the plan is made here, untimed).
        source = work / "replay-source"
        _run([*plan[:2], "--out", str(source), "--config-file", str(files[0])], env)
        replay_one = Variant(
            "SDK floor: 1 node replayed", [python, "-c", replay_code(floors["gcp"], source, files[:1])]
        )
        replay_all = Variant(
            f"SDK floor: {nodes} nodes replayed", [python, "-c", replay_code(floors["gcp"], source, files)]
        )
        variants += [replay_one, replay_all]

        if warm_up:
            for variant in variants:  # fills the byte-code cache; not timed
                _run(variant.argv, env)
        for round_ in range(repeat):
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                seconds, rss, _ = _run(variant.argv, env)
                variant.seconds.append(seconds)
                variant.rss_kb.append(rss)

        by_name = {v.name: v for v in variants}
        print()
        print(f"medians of {repeat} fresh processes each (spread min-max), load average at the end {_load()}")
        print(f"  {'measurement':<40} {'wall (s)':>9}  {'spread':>11}  {'peak RSS (MiB)':>14}")
        for v in variants:
            rss = statistics.median(v.rss_kb) / 1024
            print(f"  {v.name:<40} {v.median:9.2f}  {_spread(v.seconds):>11}  {rss:14.0f}")
        print()
        print("ratios (of medians)")
        for cloud, stack in STARTUP_STACKS.items():
            program, floor = by_name[f"{cloud} program ({stack})"], by_name[f"{cloud} floor"]
            # The goal is the issue's, against the bare floor; like for like (the floor skipping the collection at
            # exit as the program does) is printed under it, without a goal.
            print(_ratio_line(f"start-up {cloud} / bare floor", program, floor, 1.3))
            frozen = by_name[f"{cloud} floor, frozen at exit"]
            print(_ratio_line(f"start-up {cloud} / floor frozen at exit", program, frozen, None))
        print(_ratio_line("gcp collector on / gcp program", by_name["gcp program, collector on"],
                          by_name[f"gcp program ({STARTUP_STACKS['gcp']})"], None))  # fmt: skip
        print(_ratio_line(f"{nodes} nodes, one process / 1 node", several, one, 1.5))
        print(_ratio_line(f"{nodes} nodes, --jobs {cores} / 1 node", forked, one, 1.5))
        print(_ratio_line(f"SDK floor: {nodes} nodes / 1 node", replay_all, replay_one, None))
        extra = (several.median - one.median) / (nodes - 1)
        sdk_extra = (replay_all.median - replay_one.median) / (nodes - 1)
        print(f"  each further node: {extra:.2f} s planned, of which the SDK's floor {sdk_extra:.2f} s")
        print()
        print("floor (gcp):  python -c " + json.dumps(floor_code(floors["gcp"])))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"
