"""A small AWS IAM policy evaluator for the least-privilege tests: is one request allowed by a set of policy
documents, and which statements decided it.

Why our own: no maintained evaluator on PyPI fits. moto's IAM access control checks actions only ("TODO add
support for the Resource and Condition parts"), principalmapper's local simulation is unmaintained since 2022
(and AGPL), policyuniverse parses and expands but does not evaluate conditions. The AWS policy simulator is an
API call to AWS. What is here is what the program's documents use, and anything else raises
(`UnsupportedPolicy`) instead of being guessed, so a new construct in a policy makes the test fail loudly.

Semantics (same-account access, as documented in "Policy evaluation logic"):
- an explicit Deny in any applicable policy wins;
- otherwise the request is allowed when an identity policy allows it, or a resource policy allows it for this
  principal by its ARN; a resource policy that names the account (`arn:aws:iam::<account>:root` or the bare
  account id) only delegates to IAM, as KMS's default key policy does;
- for KMS (`key_policy=True`) the key policy must allow, directly or by delegating to the account (then an
  identity policy must allow too): an IAM policy alone never opens a key.
Matching: Action/NotAction (case-insensitive, `*`/`?`), Resource/NotResource and Principal/NotPrincipal (ARN
wildcards), Condition operators String*, Arn*, Bool, Null, Numeric*, each with `...IfExists`, and the
`ForAnyValue:`/`ForAllValues:` set qualifiers; several values of one key are ORed (NORed for negated
operators), several keys and operators ANDed; a key absent from the request makes a condition false, except
for negated operators (true), `...IfExists` (true) and Null.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ContextValue = str | bool | int | Sequence[str]


class UnsupportedPolicy(ValueError):
    """A policy uses a construct this evaluator does not implement."""


@dataclass(frozen=True)
class Request:
    principal: str  # the caller's ARN (an IAM role)
    action: str  # service:Action
    resource: str  # an ARN, or "*" for actions without resource-level permissions
    context: Mapping[str, ContextValue] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.principal.split(":")[4]

    def describe(self) -> str:
        return f"{self.action} on {self.resource}"

    def full_context(self) -> dict[str, ContextValue]:
        """The request's keys plus the global keys every request carries."""
        return {"aws:PrincipalArn": self.principal, "aws:PrincipalAccount": self.account, **self.context}


@dataclass
class Decision:
    allowed: bool
    denied_by: list[str]  # "<policy>#<sid>" of the Deny statements that matched
    allowed_by: list[str]  # of the Allow statements that matched

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Policy:
    name: str
    document: Mapping[str, Any]

    @classmethod
    def parse(cls, name: str, text: str | Mapping[str, Any]) -> Policy:
        document = json.loads(text) if isinstance(text, str) else text
        if document.get("Version") != "2012-10-17":
            raise UnsupportedPolicy(f"{name}: Version must be 2012-10-17 (policy variables and keys depend on it)")
        return cls(name, document)

    def statements(self) -> list[Mapping[str, Any]]:
        statements = self.document.get("Statement", [])
        return [statements] if isinstance(statements, Mapping) else list(statements)


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    if "${" in pattern:
        raise UnsupportedPolicy(f"policy variables are not supported: {pattern!r}")
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, flags=re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    """ArnLike: each of the first five colon-separated parts separately, then the resource part."""
    pattern_parts, arn_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_parts) != 6 or len(arn_parts) != 6:
        return pattern == "*" or _glob(pattern, arn)
    return all(_glob(p, a) for p, a in zip(pattern_parts, arn_parts, strict=True))


def action_matches(patterns: Any, action: str) -> bool:
    return any(_glob(p, action, ignore_case=True) for p in _values(patterns))


def resource_matches(patterns: Any, resource: str) -> bool:
    return any(p == "*" or _glob(p, resource) for p in _values(patterns))


# --- conditions -------------------------------------------------------------------------------------------


def _string(op: str, want: str, have: Any) -> bool:
    have = str(have)
    if op == "StringEquals":
        return have == want
    if op == "StringEqualsIgnoreCase":
        return have.lower() == want.lower()
    if op == "StringLike":
        return _glob(want, have)
    if op == "ArnEquals":
        return have == want
    if op == "ArnLike":
        return _arn_like(want, have)
    if op == "Bool":
        return str(have).lower() == str(want).lower()
    if op.startswith("Numeric"):
        a, b = float(have), float(want)
        return {
            "NumericEquals": a == b,
            "NumericLessThan": a < b,
            "NumericLessThanEquals": a <= b,
            "NumericGreaterThan": a > b,
            "NumericGreaterThanEquals": a >= b,
        }[op]
    raise UnsupportedPolicy(f"condition operator {op!r}")


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}
_POSITIVE = {
    "StringEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "ArnEquals",
    "ArnLike",
    "Bool",
    "NumericEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
}


def _lookup(context: Mapping[str, ContextValue], key: str) -> tuple[bool, Any]:
    lowered = {k.lower(): v for k, v in context.items()}
    return (key.lower() in lowered, lowered.get(key.lower()))


def condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, ContextValue]) -> bool:
    qualifier, _, op = operator.rpartition(":")
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise UnsupportedPolicy(f"condition qualifier {qualifier!r}")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    present, have = _lookup(context, key)
    wants = [str(w) for w in _values(wanted)]
    if op == "Null":
        if qualifier or if_exists:
            raise UnsupportedPolicy(f"{operator} {key}")
        return any((w.lower() == "true") != present for w in wants)
    negated = op in _NEGATED
    base = _NEGATED.get(op, op)
    if base not in _POSITIVE:
        raise UnsupportedPolicy(f"condition operator {operator!r} ({key})")
    if not present:
        if qualifier == "ForAllValues":
            return True  # vacuously: every (no) value matches
        return if_exists or negated
    if qualifier:
        values = [str(v) for v in _values(have)]
        hits = [any(_string(base, w, v) for w in wants) for v in values]
        if negated:
            hits = [not h for h in hits]
        return any(hits) if qualifier == "ForAnyValue" else all(hits)
    if isinstance(have, (list, tuple)):
        raise UnsupportedPolicy(f"{operator} on the multivalued key {key} needs ForAnyValue/ForAllValues")
    matched = any(_string(base, w, have) for w in wants)
    return not matched if negated else matched


def conditions_hold(block: Mapping[str, Mapping[str, Any]] | None, context: Mapping[str, ContextValue]) -> bool:
    return all(
        condition_holds(operator, key, wanted, context)
        for operator, keys in (block or {}).items()
        for key, wanted in keys.items()
    )


# --- statements ---------------------------------------------------------------------------------------------


def _principal_kind(principal: Any, request: Request) -> str | None:
    """How a resource policy's Principal names the caller: "direct", "account" (delegation), or None."""
    if principal == "*":
        return "direct"
    if not isinstance(principal, Mapping):
        raise UnsupportedPolicy(f"Principal {principal!r}")
    kind = None
    for key, values in principal.items():
        if key != "AWS":
            continue  # Service / Federated principals are never a job role
        for value in _values(values):
            if value == "*" or value == request.principal:
                return "direct"
            if "*" in value or "?" in value:
                raise UnsupportedPolicy(f"AWS allows no wildcards in a Principal ARN: {value!r}")
            if value in (request.account, f"arn:{request.principal.split(':')[1]}:iam::{request.account}:root"):
                kind = "account"
    return kind


def statement_applies(statement: Mapping[str, Any], request: Request, *, resource_policy: bool) -> str | None:
    """None if the statement does not apply; else "identity", "direct" or "account" (see _principal_kind)."""
    unknown = set(statement) - {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal",
                                "NotPrincipal", "Condition"}  # fmt: skip
    if unknown or "NotPrincipal" in statement:
        raise UnsupportedPolicy(f"statement elements {sorted(unknown) or ['NotPrincipal']}")
    if "Action" in statement:
        if not action_matches(statement["Action"], request.action):
            return None
    elif "NotAction" in statement:
        if action_matches(statement["NotAction"], request.action):
            return None
    else:
        raise UnsupportedPolicy("a statement without Action or NotAction")
    if "Resource" in statement:
        if not resource_matches(statement["Resource"], request.resource):
            return None
    elif "NotResource" in statement:
        if resource_matches(statement["NotResource"], request.resource):
            return None
    elif not resource_policy:
        raise UnsupportedPolicy("an identity statement without Resource")
    kind = "identity"
    if resource_policy:
        kind = _principal_kind(statement.get("Principal"), request)
        if kind is None:
            return None
    if not conditions_hold(statement.get("Condition"), request.full_context()):
        return None
    return kind


def evaluate(
    request: Request,
    identity: Iterable[Policy],
    resource: Policy | None = None,
    *,
    key_policy: bool = False,
) -> Decision:
    denied, allowed, identity_allows, direct, delegated = [], [], False, False, False
    sources = [(p, False) for p in identity] + ([(resource, True)] if resource else [])
    for policy, is_resource in sources:
        for index, statement in enumerate(policy.statements()):
            kind = statement_applies(statement, request, resource_policy=is_resource)
            if kind is None:
                continue
            label = f"{policy.name}#{statement.get('Sid') or index}"
            effect = statement.get("Effect")
            if effect == "Deny":
                denied.append(label)
            elif effect == "Allow":
                allowed.append(label)
                identity_allows |= kind == "identity"
                direct |= kind == "direct"
                delegated |= kind == "account"
            else:
                raise UnsupportedPolicy(f"{label}: Effect {effect!r}")
    # KMS: the key policy decides (itself, or by delegating to the account's IAM policies).
    ok = (direct or (delegated and identity_allows)) if key_policy else (identity_allows or direct)
    return Decision(allowed=ok and not denied, denied_by=denied, allowed_by=allowed)


def allowed_actions(policies: Iterable[Policy]) -> set[str]:
    """Every Action named by an Allow statement (as written, wildcards included). NotAction allows are refused:
    they grant everything else, which no job role should."""
    found: set[str] = set()
    for policy in policies:
        for statement in policy.statements():
            if statement.get("Effect") != "Allow":
                continue
            if "NotAction" in statement:
                raise UnsupportedPolicy(f"{policy.name}: an Allow with NotAction grants every other action")
            found.update(a.lower() for a in _values(statement["Action"]))
    return found
