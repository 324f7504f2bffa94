"""The house's floors, read from the source (AST; nothing is imported).

    commands     scripts/*.py, __main__.py (the Pulumi program), jobs/__main__.py, policy/__main__.py
    engines      engines/ (offline plan, policy runner, simulator), benchmarks/
    declarations components/ (Pulumi), jobs/ (in the pods), policy/ (the CrossGuard pack), testkit/
    rules        rules/: pure Python, no Pulumi, no cloud SDK, no I/O

Every import runs down or sideways within its own package, never up, and the import graph has no circle
(imports under TYPE_CHECKING and inside functions count: a circle for the type checker is still one for a reader).
`from package import module` depends on that module, not on the package's __init__.
"""

from __future__ import annotations

import ast
import functools
import graphlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rules", "components", "jobs", "policy", "testkit", "engines", "benchmarks", "scripts")

# What each package may import of ours besides itself. tests/ may import anything and nothing imports tests/.
MAY_IMPORT = {
    "rules": set(),
    "components": {"rules"},
    "jobs": {"rules"},
    "policy": {"rules"},
    "testkit": {"rules"},
    "engines": {"components", "jobs", "policy", "rules"},
    "benchmarks": {"engines", "components", "jobs", "policy", "rules", "testkit"},
    "scripts": {"engines", "benchmarks", "components", "jobs", "policy", "rules", "testkit"},
    "__main__": {"components"},
}
# The ground floor's only third-party dependency: cron parsing (a pure library, also in the job image).
RULES_THIRD_PARTY = {"croniter"}
# A command is its argument parser and one call into the package that does the work.
COMMAND_FUNCTIONS = {"build_parser", "main"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {"__main__": ROOT / "__main__.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


# Each file is parsed once, while the tests are collected: CPython 3.11's AST builder keeps one recursion counter
# per interpreter, and a parse while another thread parses (a test's leftover threads) can fail with "AST
# constructor recursion depth mismatch" (python/cpython#106905).
@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def _imported(module: str, path: Path) -> frozenset[str]:
    """Every module name `module` imports (absolute, resolved; third-party names included)."""
    names: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(_parsed(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
            names.update(submodules or [base])
    return frozenset(names)


def _ours(name: str) -> str | None:
    """The module of ours that `name` refers to (its longest known prefix), or None for a third-party name."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {
    module: {ours for name in _imported(module, path) if (ours := _ours(name)) and ours != module}
    for module, path in MODULES.items()
}


def _package(module: str) -> str:
    return module.split(".")[0]


def test_every_import_runs_down_the_floors():
    upward = [
        f"{module} imports {dependency}"
        for module, dependencies in GRAPH.items()
        for dependency in sorted(dependencies)
        if _package(dependency) != _package(module) and _package(dependency) not in MAY_IMPORT[_package(module)]
    ]
    assert upward == []


def test_the_import_graph_has_no_circle():
    """The standard library's topological sort refuses a graph with a circle and names one."""
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) == "rules"))
def test_rules_are_pure(module):
    """Standard library and croniter only: no Pulumi, no cloud SDK, no database or HTTP client."""
    third_party = {
        name.split(".")[0]
        for name in _imported(module, MODULES[module])
        if _ours(name) is None and name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
    }
    assert third_party <= RULES_THIRD_PARTY
    source = MODULES[module].read_text()
    for io_call in ("open(", "subprocess", "socket", "urllib.request", "Path("):
        assert io_call not in source, f"{module} does I/O ({io_call})"


@pytest.mark.parametrize("path", sorted((ROOT / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_commands_are_thin(path):
    """A command parses its arguments and makes one call: no classes, no functions beyond its parser and main."""
    tree = _parsed(path)
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert classes == []
    assert defined <= COMMAND_FUNCTIONS


def test_nothing_imports_tests_or_commands():
    offending = [
        f"{module} imports {dependency}"
        for module, dependencies in GRAPH.items()
        for dependency in dependencies
        if _package(dependency) == "scripts" and _package(module) != "scripts"
    ]
    assert offending == []
    for module, path in MODULES.items():
        assert not any(name == "tests" or name.startswith("tests.") for name in _imported(module, path)), module
