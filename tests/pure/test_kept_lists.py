"""The kept lists in rules/ match the installed SDKs they are copied from (read as text and AST; nothing imported).

rules/ may not read files, so the provider configuration keys (rules/config_keys.py) and the AWS regions
(rules/aws_regions.py) are kept there as literals. When a provider or botocore bump changes them, these tests fail
and print the literal to paste in.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from rules import aws_regions, config_keys


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # a top-level package: found without running its __init__
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed as a package"
    return Path(next(iter(spec.submodule_search_locations)))


def _config_reads(vars_py: Path) -> set[str]:
    """The keys a generated `config/vars.py` reads: `__config__.get('<key>')` and its get_bool/get_int forms."""
    keys = set()
    for node in ast.walk(ast.parse(vars_py.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "__config__"
            and node.func.attr.startswith("get")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
    return keys


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _kubernetes_provider_keys() -> set[str]:
    """The getters of pulumi_kubernetes' ProviderArgs: `@pulumi.getter(name="<key>")`, or a bare `@pulumi.getter`
    whose key is the property's own (single-word) name, e.g. cluster, context, kubeconfig, namespace."""
    tree = ast.parse((_package_dir("pulumi_kubernetes") / "provider.py").read_text())
    [provider_args] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ProviderArgs"]
    keys = set()
    for function in provider_args.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        for decorator in function.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if not (isinstance(target, ast.Attribute) and target.attr == "getter"):
                continue
            named = [k.value.value for k in call.keywords if k.arg == "name"] if call else []
            keys.add(named[0] if named else _camel(function.name))
    return keys


def _literal(name: str, values: set[str]) -> str:
    lines = "\n".join(f'        "{v}",' for v in sorted(values))
    return f"{name} = frozenset(\n    {{\n{lines}\n    }}\n)"


@pytest.mark.parametrize(
    ("namespace", "name", "derive"),
    [
        ("gcp", "GCP_PROVIDER_KEYS", lambda: _config_reads(_package_dir("pulumi_gcp") / "config" / "vars.py")),
        ("aws", "AWS_PROVIDER_KEYS", lambda: _config_reads(_package_dir("pulumi_aws") / "config" / "vars.py")),
        ("kubernetes", "KUBERNETES_PROVIDER_KEYS", _kubernetes_provider_keys),
    ],
)
def test_provider_keys_match_the_installed_sdk(namespace, name, derive):
    installed = derive()
    assert len(installed) > 10, f"found too few {namespace} keys: has the SDK's layout changed?"
    kept = config_keys.PROVIDER_KEYS[namespace]
    assert kept == getattr(config_keys, name)
    assert kept == installed, f"the {namespace} provider reads other keys now; in rules/config_keys.py:\n" + _literal(
        name, installed
    )


def test_kubernetes_keys_include_the_single_word_getters():
    assert {"cluster", "context", "kubeconfig", "namespace"} <= config_keys.KUBERNETES_PROVIDER_KEYS


def _botocore_regions() -> set[str]:
    """The regions of the partitions rules/aws_regions.py keeps, from botocore's partition data."""
    data = json.loads((_package_dir("botocore") / "data" / "partitions.json").read_text())
    partitions = {p["id"]: p for p in data["partitions"]}
    assert set(aws_regions.PARTITIONS) <= set(partitions), "a kept partition is gone from botocore"
    regions = set()
    for partition in aws_regions.PARTITIONS:
        # `aws-global`, `aws-cn-global`...: a partition's global endpoint, not a region data can be placed in.
        regions |= {r for r in partitions[partition]["regions"] if not r.endswith("-global")}
    return regions


def test_aws_regions_match_botocore():
    installed = _botocore_regions()
    assert installed == aws_regions.AWS_REGIONS, "botocore knows other regions now; in rules/aws_regions.py:\n" + (
        _literal("AWS_REGIONS", installed)
    )
