"""The program imports provider SDK submodules by name, never a provider's top-level package as a namespace.

`from pulumi_gcp import storage, kms`, `from pulumi_kubernetes.batch import v1 as batch`, or a name from a
submodule (`from pulumi_aws.get_caller_identity import get_caller_identity_output`); not `import pulumi_gcp as
gcp` (every `gcp.<service>` then loads on first use, invisibly) nor `from pulumi_gcp import Provider`. The
start-up benchmark (scripts/bench_plan.py) compares the program with importing exactly its submodules; this
keeps the list explicit in each module. Read from the source (AST) and the installed SDKs' files: nothing is
imported.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ("pulumi_gcp", "pulumi_aws", "pulumi_kubernetes")


def _program_files() -> list[Path]:
    return [ROOT / "__main__.py", *sorted((ROOT / "components").rglob("*.py"))]


def _package_dir(provider: str) -> Path:
    spec = importlib.util.find_spec(provider)  # a top-level package: found without running its __init__
    assert spec is not None and spec.submodule_search_locations, f"{provider} is not installed as a package"
    return Path(next(iter(spec.submodule_search_locations)))


def _is_module(provider_dir: Path, dotted: str) -> bool:
    path = provider_dir.joinpath(*dotted.split(".")[1:])
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def violations(source: str, where: str = "<source>") -> list[str]:
    """Every import of a provider SDK in `source` that does not name a submodule."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROVIDERS:
                    package = alias.name.rpartition(".")[0] or alias.name
                    found.append(f"{where}:{node.lineno}: `import {alias.name}`: use `from {package} import <module>`")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root not in PROVIDERS:
                continue
            provider_dir = _package_dir(root)
            if not _is_module(provider_dir, node.module):
                found.append(f"{where}:{node.lineno}: `from {node.module}`: no such module in {root}")
            elif node.module == root:
                # From the top-level package, only submodules (from a submodule, any name).
                for alias in node.names:
                    if not _is_module(provider_dir, f"{root}.{alias.name}"):
                        found.append(
                            f"{where}:{node.lineno}: `from {root} import {alias.name}`: not a submodule of {root}; "
                            f"import it from the submodule that defines it"
                        )
    return found


def test_the_program_imports_provider_submodules_only():
    problems = [p for path in _program_files() for p in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import pulumi_gcp as gcp",
        "import pulumi_gcp",
        "import pulumi_kubernetes.batch.v1",
        "import pulumi_aws as aws",
        "from pulumi_gcp import Provider",
        "from pulumi_aws import get_caller_identity_output",
        "from pulumi_kubernetes.nonexistent import v1",
        "def f():\n    import pulumi_gcp as gcp\n",
    ],
)
def test_a_top_level_or_non_module_import_is_reported(source):
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    [
        "from pulumi_gcp import storage, kms",
        "from pulumi_kubernetes.batch import v1 as batch",
        "from pulumi_kubernetes.core import v1 as core",
        "from pulumi_aws.get_caller_identity import get_caller_identity_output",
        "from pulumi_aws import s3 as aws_s3",
        "import pulumi\nfrom components import retention",
    ],
)
def test_submodule_imports_pass(source):
    assert violations(source) == []
