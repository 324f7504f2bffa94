"""The policy runner: every rule of the CrossGuard policy pack (policy/) on an offline plan, without the Pulumi CLI.

Each resource of a plan (the plan.json of scripts/plan.py) goes through every ResourceValidationPolicy and the whole
stack through every StackValidationPolicy, built exactly as the pack's gRPC server builds them for the CLI (props
wrapped in CrossGuard's unknown-checking proxy, the policy's config with schema defaults filled in), so a verdict here
is the verdict `pulumi preview --policy-pack policy` gives on the same resources.

Enforcement levels and rule properties come from a policy config in the CLI's `--policy-pack-config` format;
without one, `policy/config/<stack>.json` for the plan's stack is used when it exists. Either is layered over the
production config (policy/production.py) when the stack says `sv-backups:production: true`, as the pack process
does under the CLI; a stack without the key is named in the report as not production (the opt-out). Rules that
need more than one stack run their repository half here too (policy/repo_rules.py: with
`production-dr.requireDrStack`, a DR stack of the plan's stack among stacks/).
Used by scripts/policy_check.py (the command), engines/plan_stacks.py (after each plan) and the tests.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy import production as production_config
from policy import repo_rules
from policy.catalog import CONFIG_DIR, PACK_NAME, POLICIES, pack_version

REPO = Path(__file__).resolve().parent.parent

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_MANDATORY_FAILED = 3

_LEVELS = {level.value: level for level in EnforcementLevel}
_JSON_TYPES = {
    "number": (int, float),
    "integer": (int,),
    "string": (str,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class PolicyConfigError(ValueError):
    """The policy config names an unknown rule, level or property, or a value its schema rejects."""


@dataclass
class Violation:
    message: str
    resource: str  # "type name" of the resource, or "stack"


@dataclass
class Verdict:
    policy: Policy
    level: EnforcementLevel
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # could not run during preview, not applicable

    @property
    def status(self) -> str:
        if self.level == EnforcementLevel.DISABLED:
            return "OFF"
        if not self.violations:
            return "PASS"
        return "WARN" if self.level == EnforcementLevel.ADVISORY else "FAIL"


# --- config -------------------------------------------------------------------------------------------------


def stack_config_file(stack: str) -> Path:
    return CONFIG_DIR / f"{stack}.json"


def _check_property(policy: Policy, key: str, value: Any) -> None:
    schema = policy.config_schema.properties.get(key) if policy.config_schema else None
    if schema is None:
        raise PolicyConfigError(f"policy config: rule {policy.name!r} has no property {key!r}")
    expected = _JSON_TYPES.get(schema.get("type", ""), (object,))
    if (isinstance(value, bool) and schema.get("type") != "boolean") or not isinstance(value, expected):
        raise PolicyConfigError(f"policy config: {policy.name}.{key} = {value!r} is not a {schema.get('type')}")
    bounds = (
        ("minimum", lambda limit: value >= limit),
        ("maximum", lambda limit: value <= limit),
        ("exclusiveMinimum", lambda limit: value > limit),
        ("exclusiveMaximum", lambda limit: value < limit),
    )
    for bound, holds in bounds:
        if bound in schema and not holds(schema[bound]):
            raise PolicyConfigError(f"policy config: {policy.name}.{key} = {value!r} violates {bound} {schema[bound]}")


def _level(name: str, value: Any) -> EnforcementLevel:
    if value not in _LEVELS:
        raise PolicyConfigError(f"policy config: {name}: {value!r} is not one of {', '.join(_LEVELS)}")
    return _LEVELS[value]


def resolve_config(
    config: dict[str, Any] | None, policies: list[Policy] = POLICIES
) -> dict[str, tuple[EnforcementLevel, dict[str, Any]]]:
    """Rule name -> (enforcement level, properties), as the CLI reconciles a --policy-pack-config: the rule's
    own level and schema defaults, then `all`, then the rule's entry. Stricter than the CLI on one point:
    a rule or property name that does not exist is an error (a typo must not silently keep a rule off)."""
    by_name = {p.name: p for p in policies}
    resolved = {}
    for policy in policies:
        defaults = {}
        if policy.config_schema:
            defaults = {k: v["default"] for k, v in policy.config_schema.properties.items() if "default" in v}
        resolved[policy.name] = (policy.enforcement_level or EnforcementLevel.ADVISORY, defaults)
    if not config:
        return resolved
    if not isinstance(config, dict):
        raise PolicyConfigError("policy config: expected a JSON object of rule name -> level or settings")
    unknown = sorted(set(config) - set(by_name) - {"all"})
    if unknown:
        raise PolicyConfigError(f"policy config: unknown rule(s) {', '.join(unknown)}; rules are {', '.join(by_name)}")
    if "all" in config:
        level = _level("all", config["all"])
        resolved = {name: (level, props) for name, (_old, props) in resolved.items()}
    for name, entry in config.items():
        if name == "all":
            continue
        level, props = resolved[name]
        if isinstance(entry, str):
            level = _level(name, entry)
        elif isinstance(entry, dict):
            entry = dict(entry)
            if "enforcementLevel" in entry:
                level = _level(name, entry.pop("enforcementLevel"))
            for key, value in entry.items():
                _check_property(by_name[name], key, value)
            props = {**props, **entry}
        else:
            raise PolicyConfigError(f"policy config: {name}: expected a level or an object, got {entry!r}")
        resolved[name] = (level, props)
    return resolved


# --- running the rules --------------------------------------------------------------------------------------


def _options(resource: dict) -> PolicyResourceOptions:
    options = resource.get("options") or {}
    return PolicyResourceOptions(
        bool(options.get("protect", False)),
        list(options.get("ignoreChanges") or []),
        options.get("deleteBeforeReplace"),
        list(options.get("aliases") or []),
        PolicyCustomTimeouts(0, 0, 0),
        list(options.get("additionalSecretOutputs") or []),
        resource.get("parent") or None,
    )


# How plan.json shows a value the engine cannot know during preview, and how the engine shows it to a policy.
PLAN_UNKNOWN = "[unknown]"


def _engine_value(value: Any) -> Any:
    if value == PLAN_UNKNOWN:
        return UNKNOWN_STRING_VALUE
    if isinstance(value, dict):
        return {key: _engine_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_engine_value(item) for item in value]
    return value


def _props(resource: dict):
    """The resource's inputs as CrossGuard hands them to a rule: engine names, unknowns as the engine's
    sentinels, wrapped in the unknown-checking proxy."""
    return unknown_checking_proxy(deserialize_properties(_engine_value(resource.get("inputs") or {})))


def _run(validate, args, report, verdict: Verdict) -> None:
    """Call a rule like the pack's servicer does: await coroutines; an unknown value during preview and an
    explicit not-applicable become notes, not verdicts."""
    try:
        result = validate(args, report)
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))
    except UnknownValueError as error:
        verdict.notes.append(f"can't run during preview: {error.message}")
    except _NotApplicableError as error:
        verdict.notes.append(f"not applicable: {error.reason or 'policy does not apply'}")


async def _awaited(result):
    await result


def _label(resource: dict) -> str:
    return f"{resource.get('type')} {resource.get('name')}"


def _provider_ref_urn(reference: str) -> str:
    """The provider URN of a provider reference `<urn>::<id>` (URNs contain `::` themselves)."""
    return reference.rsplit("::", 1)[0]


def _stack_values(stack: str, repo: Path = REPO) -> dict[str, Any]:
    """The config of the repository's stack file for `stack` (full key -> value); empty when there is none."""
    from engines.offline_plan import PlanInputError, load_project, load_stack_file

    try:
        project = load_project(repo)
        path = project.stack_file(stack)
        return dict(load_stack_file(path, project=project.name, stack=stack).values) if path.is_file() else {}
    except PlanInputError:
        return {}


def _default_provider_config(stack: str, repo: Path = REPO) -> dict[str, dict[str, Any]]:
    """Package -> the properties of the stack's default provider of that package: its `<package>:*` keys of
    stacks/Pulumi.<stack>.yaml (as the CLI configures a default provider), e.g. {"aws": {"region": ...}}."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in _stack_values(stack, repo).items():
        package, _, name = key.partition(":")
        found.setdefault(package, {})[name] = value
    return found


def _providers(plan: dict, repo: Path = REPO) -> dict[str, PolicyProviderResource]:
    """Resource URN -> its provider, as the engine hands it to a policy: the provider resource named by the
    resource's `provider` option, else the stack's default provider of the resource's package."""
    resources = plan.get("resources") or []
    by_urn = {r["urn"]: r for r in resources}
    defaults = _default_provider_config(str(plan.get("stack", "")), repo)
    found = {}
    for resource in resources:
        options = resource.get("options") or {}
        if not options.get("custom") or resource["type"].startswith("pulumi:providers:"):
            continue
        reference = options.get("provider")
        if reference:
            named = by_urn.get(_provider_ref_urn(reference))
            if named is not None:
                found[resource["urn"]] = PolicyProviderResource(
                    named["type"], _props(named), named["urn"], named["name"]
                )
            continue
        package = resource["type"].split(":", 1)[0]
        found[resource["urn"]] = PolicyProviderResource(
            f"pulumi:providers:{package}",
            unknown_checking_proxy(deserialize_properties(defaults.get(package, {}))),
            f"urn:pulumi:{plan.get('stack')}::{plan.get('project')}::pulumi:providers:{package}::default",
            "default",
        )
    return found


def _check_resources(
    policy: ResourceValidationPolicy, resources, config, verdict: Verdict, props, options, providers
) -> None:
    for resource in resources:

        def report(message: str, _urn: str | None = None, resource=resource) -> None:
            verdict.violations.append(Violation(message, _label(resource)))

        args = ResourceValidationArgs(
            resource["type"],
            props[resource["urn"]],
            resource["urn"],
            resource["name"],
            options[resource["urn"]],
            providers.get(resource["urn"]),
            config,
        )
        _run(policy.validate, args, report, verdict)


def _stack_resources(resources, props, options, providers) -> list[PolicyResource]:
    """The stack's resources as a stack policy sees them: parents, dependencies and property dependencies linked."""
    stack_resources = {
        r["urn"]: PolicyResource(
            r["type"], props[r["urn"]], r["urn"], r["name"], options[r["urn"]], providers.get(r["urn"]), None, [], {}
        )
        for r in resources
    }
    for resource in resources:
        converted = stack_resources[resource["urn"]]
        converted.parent = stack_resources.get(resource.get("parent") or "")
        converted.dependencies = [stack_resources[d] for d in resource.get("dependsOn") or [] if d in stack_resources]
        converted.property_dependencies = {
            key: [stack_resources[d] for d in urns if d in stack_resources]
            for key, urns in ((resource.get("options") or {}).get("propertyDependencies") or {}).items()
        }
    return list(stack_resources.values())


def _check_stack(policy: StackValidationPolicy, resources, config, verdict: Verdict, stack_resources) -> None:
    by_urn = {r["urn"]: r for r in resources}

    def report(message: str, urn: str | None = None) -> None:
        verdict.violations.append(Violation(message, _label(by_urn[urn]) if urn in by_urn else "stack"))

    _run(policy.validate, StackValidationArgs(stack_resources, config), report, verdict)


def evaluate(plan: dict, config: dict[str, Any] | None = None, *, repo: Path = REPO) -> list[Verdict]:
    """One verdict per rule of the pack, in catalog order. A rule with a repository half (policy/repo_rules.py:
    `production-dr`) also gets that half's violations, checked against the stack files of `repo`."""
    resources = plan.get("resources") or []
    # Built once and shared by every rule: rules only read them (the pack builds the same per rule).
    props = {r["urn"]: _props(r) for r in resources}
    options = {r["urn"]: _options(r) for r in resources}
    providers = _providers(plan, repo)
    stack_resources = _stack_resources(resources, props, options, providers)
    verdicts = []
    for policy, (level, properties) in zip(POLICIES, resolve_config(config).values(), strict=True):
        verdict = Verdict(policy, level)
        verdicts.append(verdict)
        if level == EnforcementLevel.DISABLED:
            continue
        if isinstance(policy, ResourceValidationPolicy):
            _check_resources(policy, resources, properties, verdict, props, options, providers)
        elif isinstance(policy, StackValidationPolicy):
            _check_stack(policy, resources, properties, verdict, stack_resources)
        if policy.name == repo_rules.RULE and properties.get(repo_rules.REQUIRE_DR_STACK):
            stack = str(plan.get("stack", ""))
            verdict.violations += [Violation(m, "repository") for m in repo_rules.dr_stack_problems(stack, repo)]
    return verdicts


# --- reporting ----------------------------------------------------------------------------------------------


def _render(plan: dict, verdicts: list[Verdict], config_source: str, notice: str | None = None) -> tuple[str, int]:
    failed = [v for v in verdicts if v.status == "FAIL"]
    warned = [v for v in verdicts if v.status == "WARN"]
    lines = [
        f"Policy pack {PACK_NAME} {pack_version()} on stack {plan.get('stack', '?')}: "
        f"{len(plan.get('resources') or [])} resources, {len(verdicts)} rules, config: {config_source}",
        *([notice] if notice else []),
        "",
    ]
    for verdict in verdicts:
        lines.append(f"{verdict.status:<5}{verdict.level.value:<10}{verdict.policy.name}")
        if verdict.violations:
            lines.append(f"       {verdict.policy.description}")
        for violation in verdict.violations:
            lines.append(f"       - [{violation.resource}] {violation.message}")
        for note in verdict.notes:
            lines.append(f"       note: {note}")
    lines.append("")
    count = sum(len(v.violations) for v in failed)
    if failed:
        lines.append(
            f"FAILED: {len(failed)} mandatory rule(s) violated ({count} violation(s)): "
            f"{', '.join(v.policy.name for v in failed)}. Fix them before merging."
        )
    else:
        lines.append("PASSED: no mandatory rule violated.")
    if warned:
        lines.append(f"Advisory warnings (review, not blocking): {', '.join(v.policy.name for v in warned)}.")
    return "\n".join(lines) + "\n", EXIT_MANDATORY_FAILED if failed else EXIT_OK


def run_policy_checks(
    plan: dict, config: dict | None = None, *, production: bool | None = None, repo: Path = REPO
) -> tuple[str, int]:
    """Run every rule on `plan` (the plan.json of scripts/plan.py). Returns (report text, exit code): 0 when no
    mandatory rule fails, 3 when one does. `config` is a policy config in --policy-pack-config form; None
    means `policy/config/<stack>.json` when it exists, else the pack's defaults. `production`: whether the stack
    says `sv-backups:production: true` (None: read from the repository's stack file of the plan's stack); a
    production stack's config is layered over the production config. `repo`: the checkout whose stacks/ holds
    the plan's stack and its DR stack. Raises PolicyConfigError on an invalid config."""
    return _render(plan, *_evaluate_with(plan, config, "given", production, repo))


def effective_config(
    plan: dict, config: dict | None, source: str, production: bool | None = None, repo: Path = REPO
) -> tuple[dict | None, str, str | None]:
    """The policy config the plan is checked under, where it came from, and the notice for a stack that is not
    production: `config` (or the stack's policy/config file when None) over the production config when the stack
    is production (`production`, or when None its stack file's `sv-backups:production`)."""
    stack = str(plan.get("stack", ""))
    if config is None:
        default = stack_config_file(stack)
        if default.is_file():
            config = json.loads(default.read_text())
            source = str(default.relative_to(REPO))
        else:
            source = "pack defaults"
    if production is None:
        try:
            production = production_config.is_production(_stack_values(stack, repo))
        except ValueError as error:
            raise PolicyConfigError(f"stack {stack}: {error}") from None
    if not production:
        return config, source, production_config.NOT_PRODUCTION
    role = (plan.get("outputs") or {}).get("role")
    base = production_config.production_config(role if isinstance(role, str) else "primary")
    where = "production (sv-backups:production: true)"
    return production_config.layered(base, config), where if source == "pack defaults" else f"{where} + {source}", None


def _evaluate_with(
    plan: dict, config: dict | None, source: str, production: bool | None = None, repo: Path = REPO
) -> tuple[list[Verdict], str, str | None]:
    """The verdicts, where their config came from, and the not-production notice (see effective_config)."""
    config, source, notice = effective_config(plan, config, source, production, repo)
    return evaluate(plan, config, repo=repo), source, notice


def github_annotations(plan: dict, verdicts: list[Verdict]) -> str:
    """GitHub Actions workflow commands: one error per mandatory violation, one warning per advisory one, shown
    on the pull request's checks page."""

    def escape(text: str, *, title: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if title else text

    lines = []
    for verdict in verdicts:
        command = {"FAIL": "error", "WARN": "warning"}.get(verdict.status)
        for violation in verdict.violations if command else []:
            title = escape(f"{plan.get('stack', '?')}: {verdict.policy.name} ({verdict.level.value})", title=True)
            lines.append(f"::{command} title={title}::{escape(f'[{violation.resource}] {violation.message}')}")
    return "".join(line + "\n" for line in lines)


def check_plan_file(*, plan: Path, config: Path | None, with_github_annotations: bool) -> int:
    """The command: the report on `plan` (a plan.json file) under `config` (a policy config file; None: the stack's
    own or the pack's defaults) on stdout, then the GitHub Actions annotations if asked. Returns the exit code: 0 no
    mandatory rule failed, 3 one did, 2 an unreadable plan or config or an invalid config (said on stderr)."""
    try:
        document = json.loads(plan.read_text())
        config_document = json.loads(config.read_text()) if config else None
        verdicts, source, notice = _evaluate_with(document, config_document, str(config))
    except (OSError, json.JSONDecodeError, PolicyConfigError) as error:
        print(f"policy_check: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    text, code = _render(document, verdicts, source, notice)
    sys.stdout.write(text)
    if with_github_annotations:
        sys.stdout.write(github_annotations(document, verdicts))
    return code
