"""Small constructors shared by the rule modules: one place decides how a rule sees a resource."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from .props import plain

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

# validate(props, args, report): props are plain dicts/lists (see props.plain), args the CrossGuard args
# (name, urn, config), report the CrossGuard callback.
ResourceCheck = Callable[[dict, ResourceValidationArgs, ReportViolation], None]
StackCheck = Callable[[list["StackResource"], StackValidationArgs, ReportViolation], None]


def resource_rule(
    name: str,
    description: str,
    *,
    types: Iterable[str] | Callable[[str], bool],
    check: ResourceCheck,
    level: EnforcementLevel = MANDATORY,
    severity: Severity = Severity.HIGH,
    remediation: str,
    config: dict[str, dict[str, Any]] | None = None,
) -> ResourceValidationPolicy:
    """A ResourceValidationPolicy that runs `check` on resources of the given types only."""
    applies = types if callable(types) else frozenset(types).__contains__

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if applies(args.resource_type):
            check(plain(args.props), args, report)

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        severity=severity,
        remediation_steps=remediation,
        config_schema=PolicyConfigSchema(properties=config) if config else None,
    )


class StackResource:
    """One resource as a stack rule sees it: type, logical name, URN and plain props; the plain props of its
    provider (`{}` when the engine gives none), and, per input, the URNs of the resources its value came from
    (`property_dependencies`): how a bucket's side resources name their bucket even when its name is only
    known after deployment."""

    __slots__ = ("name", "property_dependencies", "props", "provider", "type", "urn")

    def __init__(
        self,
        resource_type: str,
        name: str,
        urn: str,
        props: dict,
        provider: dict | None = None,
        property_dependencies: dict[str, list[str]] | None = None,
    ):
        self.type = resource_type
        self.name = name
        self.urn = urn
        self.props = props
        self.provider = provider or {}
        self.property_dependencies = property_dependencies or {}


def _stack_resource(resource: PolicyResource) -> StackResource:
    """The plain view of a resource, made once per PolicyResource: every stack rule reads all of them, and the
    offline checker hands the same PolicyResources to every rule."""
    view = getattr(resource, "_svbackups_view", None)
    if view is None:
        view = StackResource(
            resource.resource_type,
            resource.name,
            resource.urn,
            plain(resource.props),
            plain(resource.provider.props) if resource.provider is not None else None,
            {key: [d.urn for d in deps] for key, deps in (resource.property_dependencies or {}).items()},
        )
        resource._svbackups_view = view
    return view


def stack_rule(
    name: str,
    description: str,
    *,
    check: StackCheck,
    level: EnforcementLevel = MANDATORY,
    severity: Severity = Severity.HIGH,
    remediation: str,
    config: dict[str, dict[str, Any]] | None = None,
) -> StackValidationPolicy:
    """A StackValidationPolicy that runs `check` on every resource of the stack, props made plain."""

    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        check([_stack_resource(r) for r in args.resources], args, report)

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        severity=severity,
        remediation_steps=remediation,
        config_schema=PolicyConfigSchema(properties=config) if config else None,
    )
