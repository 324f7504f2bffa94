"""Reading a plan: what changed between two offline plans (`scripts/plan.py --diff OLD_DIR`), and what the text
tree shows beyond the key settings (grants, suspended CronJobs, what the mock ids are).

    old = load_old_plan(Path("out/plan-main/prod"), "prod")         # before the new plan overwrites it
    diff = diff_plans(old.plan, new_plan)
    print(render_diff(diff, against=old.path, secrets=config.clear_secrets))

Resources are matched by URN (a resource whose aliases name a removed URN is shown as moved, with its changes).
A changed resource lists its changed input paths, old -> new; options (protect, import, ...) likewise. JSON held
in a string input (AWS `policy`, `assumeRolePolicy`, a GCP `policyData`) is parsed and compared as a document:
policy statements by `Sid` (or by content), GCP bindings by role and condition, lists of actions, members and
permissions item by item; an added resource shows its policy documents pretty-printed. CronJobs whose
`spec.suspend` is true are marked `[suspended]`.

Secrets: plan.json already shows every Pulumi secret and the stack's secret config as "[secret]"
(engines/offline_plan.py); the diff reads nothing else. A Kubernetes Secret's payload is masked again here
whatever an old plan holds, and the text is scrubbed of the stack's clear secrets (`secrets=`). A changed secret
value cannot be seen: both sides show "[secret]".

Pure functions over plan dicts (the plan.json document); only `load_old_plan` reads a file.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines import offline_plan

SECRET = offline_plan.SECRET


class _Missing:
    """The side of a change where the value is absent."""

    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()
CRONJOB = "kubernetes:batch/v1:CronJob"
# Inputs that hold a policy document as a JSON string.
POLICY_KEYS = ("policy", "assumeRolePolicy", "policyData", "policyDocument")
# Kubernetes objects whose payload is a secret whatever a plan holds (the provider stores them as secrets).
_SECRET_PAYLOAD = {"kubernetes:core/v1:Secret": ("data", "stringData")}
# Options that say nothing a reviewer acts on (dependencies are the program's wiring; aliases show as "moved").
_QUIET_OPTIONS = ("propertyDependencies", "aliases")
# Keys that identify an item of a list of objects, tried in order (the first one every item has, uniquely).
_ITEM_KEYS = ("Sid", "name", "id", "mountPath", "key", "displayName")
_INLINE = 100  # values longer than this (as JSON) are shown as a block, not on the path's line


class PlanDiffError(Exception):
    """The earlier plan cannot be read (missing, unreadable, not a plan)."""


# --- reading the earlier plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OldPlan:
    path: Path  # the plan.json read (or looked for)
    plan: dict | None  # None: no earlier plan of this stack (a stack new since then)


def _how_to_make(old_dir: Path, stacks: Sequence[str]) -> str:
    return (
        "make one by planning the version to compare with (e.g. a checkout of main) into it: python scripts/plan.py "
        f"{' '.join(f'--stack {stack}' for stack in stacks)} --out {old_dir}"
    )


def load_old_plans(old_dir: Path, stacks: Sequence[str]) -> dict[str, OldPlan]:
    """The earlier plan of each of `stacks` (planned together, as plan.py does with several), by stack name.
    PlanDiffError when `old_dir` holds none of them (or one cannot be read)."""
    several = len(stacks) > 1
    plans = {stack: load_old_plan(old_dir, stack, several=several, hint=stacks) for stack in stacks}
    if all(old.plan is None for old in plans.values()):
        raise PlanDiffError(
            f"--diff {old_dir}: no plan.json of any of these stacks in it (looked for "
            f"{old_dir / '<stack>' / 'plan.json'}); {_how_to_make(old_dir, stacks)}"
        )
    return plans


def load_old_plan(old_dir: Path, stack: str, *, several: bool = False, hint: Sequence[str] | None = None) -> OldPlan:
    """The earlier plan of `stack` in `old_dir` (an `--out` directory of plan.py): `old_dir`/plan.json, or
    `old_dir`/<stack>/plan.json (the layout of several stacks, tried first when `several`). With `several`, a
    stack missing from an existing `old_dir` is new: OldPlan(path, None). PlanDiffError otherwise, naming the path
    and how to make one (planning `hint`, default `stack`)."""
    how = _how_to_make(old_dir, hint or [stack])
    candidates = [old_dir / stack / "plan.json", old_dir / "plan.json"]
    if not several:
        candidates.reverse()
    if not old_dir.is_dir():
        why = "no such directory" if not old_dir.exists() else "not a directory"
        raise PlanDiffError(f"--diff {old_dir}: {why}; it must hold an earlier plan.json; {how}")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        if several:
            return OldPlan(candidates[0], None)
        raise PlanDiffError(
            f"--diff {old_dir}: no plan.json in it (looked for {' and '.join(map(str, candidates))}); {how}"
        )
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PlanDiffError(
            f"--diff {old_dir}: cannot read {path}: {getattr(error, 'strerror', None) or error}; {how}"
        ) from None
    if not isinstance(plan, Mapping) or not isinstance(plan.get("resources"), list):
        raise PlanDiffError(
            f"--diff {old_dir}: {path} is not a plan.json of scripts/plan.py (no `resources` list); {how}"
        )
    return OldPlan(path, dict(plan))


# --- comparing values -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One changed place: `path` (display segments, e.g. (".spec", ".suspend") or (".rules", "[id=dr-copy]")) inside
    the input, option or output, `old` -> `new` (MISSING on the side where it is absent). `document`: how many
    leading segments name the string input holding the JSON document the rest of the path is inside (0: not inside
    one). `added`/`removed`: for a list of unique scalars (actions, members, permissions), the items only one side
    has."""

    path: tuple[str, ...]
    old: Any
    new: Any
    document: int = 0
    added: tuple = ()
    removed: tuple = ()


def _segment(key: str) -> str:
    return f".{key}" if key.replace("_", "").replace("-", "").isalnum() else f"[{json.dumps(key)}]"


def _parsed_document(value: Any) -> Any:
    """A JSON object or array held in a string, parsed; MISSING for anything else."""
    if not isinstance(value, str) or not value.lstrip().startswith(("{", "[")):
        return MISSING
    try:
        parsed = json.loads(value)
    except ValueError:
        return MISSING
    return parsed if isinstance(parsed, (dict, list)) else MISSING


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _item_labels(old: Sequence[Any], new: Sequence[Any]) -> tuple[list[str], list[str]] | None:
    """Labels that identify each object of two lists ("Sid=ReadSets", "name=seal", "role=..."), or None. The key
    is the first of _ITEM_KEYS that an item of either list has; an item without it (a statement without Sid) is
    labelled by its content, so that it shows as removed and added whole when it changes."""
    items = [*old, *new]
    if not items or not all(isinstance(item, Mapping) for item in items):
        return None
    key = next((k for k in _ITEM_KEYS if any(isinstance(item.get(k), (str, int)) for item in items)), None)
    if key is None and all(isinstance(item.get("role"), str) for item in items):  # GCP bindings: role + condition

        def label(item: Mapping[str, Any]) -> str:
            return f"role={item['role']}" + _condition_label(item.get("condition"))
    elif key is not None:

        def label(item: Mapping[str, Any]) -> str:
            value = item.get(key)
            return f"{key}={value}" if isinstance(value, (str, int)) else _content_label(item)
    else:
        return None
    labels = []
    for side in (old, new):
        seen: dict[str, int] = {}
        side_labels = []
        for item in side:
            text = label(item)
            seen[text] = seen.get(text, 0) + 1
            side_labels.append(text if seen[text] == 1 else f"{text} #{seen[text]}")
        labels.append(side_labels)
    return labels[0], labels[1]


def _condition_label(condition: Any) -> str:
    if not condition:
        return ""
    return f", condition={_get(condition, 'title') or _canonical(condition)}"


def _content_label(item: Any) -> str:
    """A short label for an item that has no key (a statement without Sid): its effect and first action."""
    if isinstance(item, Mapping) and "Effect" in item:
        action = item.get("Action") or item.get("NotAction") or ""
        first = action[0] if isinstance(action, list) and action else action
        return f"{item['Effect']} {first}{', ...' if isinstance(action, list) and len(action) > 1 else ''}"
    text = _canonical(item)
    return text if len(text) <= 40 else text[:37] + "..."


def diff_values(old: Any, new: Any, path: tuple[str, ...] = (), document: int = 0) -> list[Change]:
    """Every place where `old` and `new` differ, as Changes (empty when equal)."""
    if old == new:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes = []
        for key in sorted(set(old) | set(new), key=str):
            changes += diff_values(old.get(key, MISSING), new.get(key, MISSING), (*path, _segment(str(key))), document)
        return changes
    if isinstance(old, list) and isinstance(new, list):
        return _diff_lists(old, new, path, document)
    old_doc, new_doc = _parsed_document(old), _parsed_document(new)
    if not document and (old_doc is not MISSING or old is MISSING) and (new_doc is not MISSING or new is MISSING):
        if old_doc is not MISSING and new_doc is not MISSING:
            return diff_values(old_doc, new_doc, path, len(path))
        return [Change(path, old_doc, new_doc, len(path))]  # a document added or removed whole
    return [Change(path, old, new, document)]


def _diff_lists(old: list, new: list, path: tuple[str, ...], document: int) -> list[Change]:
    scalars = all(not isinstance(v, (Mapping, list)) for v in (*old, *new))
    if scalars and len(old) == len(new):
        moved = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        if 2 * len(moved) <= len(old):  # a few items replaced in place (an argument's value): by position
            return [Change((*path, _position(new, i)), old[i], new[i], document) for i in moved]
    if scalars and len(set(map(_canonical, old))) == len(old) and len(set(map(_canonical, new))) == len(new):
        added = tuple(v for v in new if v not in old)
        removed = tuple(v for v in old if v not in new)
        # Same items in another order: shown whole (order matters for containers, rarely for actions).
        return [Change(path, old, new, document, added, removed)]
    labelled = _item_labels(old, new)
    if labelled is not None:
        old_keys, new_keys = labelled
        old_by, new_by = dict(zip(old_keys, old, strict=True)), dict(zip(new_keys, new, strict=True))
        order = [k for k in old_keys if k not in new_by] + new_keys
        changes = [
            c
            for key in order
            for c in diff_values(old_by.get(key, MISSING), new_by.get(key, MISSING), (*path, f"[{key}]"), document)
        ]
        if not changes:  # same items, another order
            changes = [Change(path, old, new, document)]
        return changes
    # No key: align the items by content; an item replaced by one item is compared in place.
    old_text, new_text = [_canonical(v) for v in old], [_canonical(v) for v in new]
    changes: list[Change] = []
    matcher = difflib.SequenceMatcher(None, old_text, new_text, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for offset in range(i2 - i1):
                changes += diff_values(old[i1 + offset], new[j1 + offset], (*path, f"[{j1 + offset}]"), document)
            continue
        for i in range(i1, i2):
            changes.append(Change((*path, f"[{_content_label(old[i])}]"), old[i], MISSING, document))
        for j in range(j1, j2):
            changes.append(Change((*path, f"[{_content_label(new[j])}]"), MISSING, new[j], document))
    return changes


def _position(items: Sequence[Any], index: int) -> str:
    """A list position, with the option it is the value of (a command's `--keep-recent 14d`)."""
    before = items[index - 1] if index else None
    option = isinstance(before, str) and before.startswith("-") and before.lstrip("-")
    return f"[{index}]" + (f" ({before})" if option else "")


def _get(mapping: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(step)
    return mapping


# --- comparing plans ------------------------------------------------------------------------------------------


STATUSES = ("added", "removed", "moved", "changed")  # the order they are listed in


@dataclass
class ResourceDiff:
    status: str  # one of STATUSES
    urn: str
    old: dict | None
    new: dict | None
    changes: list[Change] = field(default_factory=list)
    moved_from: str | None = None

    @property
    def resource(self) -> dict:
        return self.new or self.old or {}


@dataclass
class PlanDiff:
    old_stack: str
    new_stack: str
    resources: list[ResourceDiff]
    outputs: list[Change]
    unchanged: int

    def of_status(self, status: str) -> list[ResourceDiff]:
        return [r for r in self.resources if r.status == status]


def _masked(resource: Mapping[str, Any]) -> dict:
    """The resource with a Kubernetes Secret's payload masked whatever the plan holds."""
    fields = _SECRET_PAYLOAD.get(resource.get("type", ""), ())
    if not fields:
        return dict(resource)
    inputs = dict(resource.get("inputs") or {})
    for name in fields:
        if name in inputs:
            inputs[name] = _mask(inputs[name])
    return {**resource, "inputs": inputs}


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return SECRET


def _restacked(urn: str, old_stack: str, new_stack: str) -> str:
    prefix = f"urn:pulumi:{old_stack}::"
    return f"urn:pulumi:{new_stack}::{urn[len(prefix) :]}" if urn.startswith(prefix) else urn


def _options(resource: Mapping[str, Any]) -> dict:
    return {k: v for k, v in (resource.get("options") or {}).items() if k not in _QUIET_OPTIONS}


def _resource_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    return diff_values(old.get("inputs") or {}, new.get("inputs") or {}) + diff_values(
        _options(old), _options(new), ("options",)
    )


def diff_plans(old: Mapping[str, Any], new: Mapping[str, Any]) -> PlanDiff:
    """What changed from plan `old` to plan `new` (plan.json documents), resource by resource (by URN; an old
    plan of another stack name is compared as if it had the new one's) and output by output."""
    old_stack, new_stack = str(old.get("stack", "")), str(new.get("stack", ""))
    old_by = {_restacked(r["urn"], old_stack, new_stack): _masked(r) for r in old["resources"]}
    new_by = {r["urn"]: _masked(r) for r in new["resources"]}
    moved: dict[str, str] = {}  # new urn -> the removed old urn it aliases
    for urn, resource in new_by.items():
        if urn in old_by:
            continue
        aliases = [_restacked(a, old_stack, new_stack) for a in (resource.get("options") or {}).get("aliases") or []]
        found = [a for a in aliases if isinstance(a, str) and a in old_by and a not in new_by]
        if found:
            moved[urn] = found[0]
    moved_old = set(moved.values())
    diffs: list[ResourceDiff] = []
    unchanged = 0
    for urn in sorted(set(old_by) | set(new_by)):
        before, after = old_by.get(urn), new_by.get(urn)
        if after is None:
            if urn not in moved_old:
                diffs.append(ResourceDiff("removed", urn, before, None))
        elif urn in moved:
            source = old_by[moved[urn]]
            diffs.append(ResourceDiff("moved", urn, source, after, _resource_changes(source, after), moved[urn]))
        elif before is None:
            diffs.append(ResourceDiff("added", urn, None, after))
        else:
            changes = _resource_changes(before, after)
            if changes:
                diffs.append(ResourceDiff("changed", urn, before, after, changes))
            else:
                unchanged += 1
    diffs.sort(key=lambda d: (STATUSES.index(d.status), d.urn))
    outputs = diff_values(old.get("outputs") or {}, new.get("outputs") or {})
    return PlanDiff(old_stack, new_stack, diffs, outputs, unchanged)


# --- the text ---------------------------------------------------------------------------------------------------


def suspended(resource: Mapping[str, Any] | None) -> bool:
    return bool(resource) and resource.get("type") == CRONJOB and _get(resource, "inputs", "spec", "suspend") is True


def _marker(diff: ResourceDiff) -> str:
    if diff.resource.get("type") != CRONJOB:
        return ""
    if diff.status == "removed":
        return "  [suspended]" if suspended(diff.old) else ""
    if suspended(diff.new):
        return "  [suspended]"
    return "  [was suspended]" if suspended(diff.old) else ""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=isinstance(value, Mapping))


def _block(value: Any, indent: str) -> list[str]:
    """A value pretty-printed as JSON, each line indented."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return [indent + line for line in text.splitlines()]


def _is_block(value: Any) -> bool:
    if isinstance(value, (Mapping, list)):
        return len(_json(value)) > _INLINE
    return isinstance(value, str) and (len(value) > _INLINE or "\n" in value)


def _change_lines(change: Change, label: str, indent: str) -> list[str]:
    old, new = change.old, change.new
    if change.added or change.removed:
        items = [f"+ {_json(v)}" for v in change.added] + [f"- {_json(v)}" for v in change.removed]
        return [f"{indent}{label}: {', '.join(items)}"]
    if isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new):
        lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=1)
        return [f"{indent}{label}:"] + [f"{indent}    {line}" for line in list(lines)[2:]]
    whole = change.document and MISSING in (old, new) and isinstance(old if new is MISSING else new, Mapping)
    if not whole and not _is_block(old) and not _is_block(new):  # a statement added or removed: always a block
        return [f"{indent}{label}: {_show(old)} -> {_show(new)}"]
    lines = [f"{indent}{label}:"]
    for sign, value in (("-", old), ("+", new)):
        if value is not MISSING:
            lines += [f"{indent}  {sign} {line}" for line in _block(value, "")]
    return lines


def _show(value: Any) -> str:
    return "(absent)" if value is MISSING else _json(value)


def _label(path: Sequence[str]) -> str:
    text = "".join(path)
    return text[1:] if text.startswith(".") else text or "(whole)"


def _changes_lines(changes: Iterable[Change], indent: str) -> list[str]:
    lines: list[str] = []
    current: tuple[str, ...] | None = None
    for change in changes:
        if change.document:
            where = change.path[: change.document]
            if where != current:
                kind = "policy document" if where[-1].lstrip(".") in POLICY_KEYS else "JSON document"
                lines.append(f"{indent}{_label(where)} ({kind}, parsed):")
                current = where
            inner = change.path[change.document :]
            lines += _change_lines(change, _label(inner), indent + "  ")
        else:
            current = None
            lines += _change_lines(change, _label(change.path), indent)
    return lines


def _documents(resource: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The JSON documents held in a resource's string inputs, parsed."""
    found = []
    for key, value in sorted((resource.get("inputs") or {}).items()):
        parsed = _parsed_document(value)
        if parsed is not MISSING:
            found.append((key, parsed))
    return found


def render_diff(diff: PlanDiff, *, against: Path | str, secrets: Iterable[str] = ()) -> str:
    """The diff as text: a summary line, then each added (+), removed (-), moved and changed (~) resource with its
    URN and what changed, then the changed outputs. `secrets`: clear texts that must never be shown."""
    counts = {status: len(diff.of_status(status)) for status in STATUSES}
    stacks = f"stack {diff.new_stack}"
    if diff.old_stack != diff.new_stack:
        stacks += f", compared with stack {diff.old_stack}"
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n or status != "moved")
    outputs = f"; outputs: {len({c.path[0] for c in diff.outputs})} changed" if diff.outputs else ""
    lines = [f"Changes since {against} ({stacks}): {summary}, {diff.unchanged} unchanged{outputs}"]
    if not diff.resources and not diff.outputs:
        lines[0] = f"Changes since {against} ({stacks}): none ({diff.unchanged} resources, the same outputs)"
    sign = {"added": "+", "removed": "-", "moved": "~", "changed": "~"}
    for item in diff.resources:
        status, resource = item.status, item.resource
        settings = tree_settings(resource)
        head = f"{sign[status]} {resource['type']} {resource['name']}{_marker(item)}"
        if status in ("added", "removed") and settings:
            head += f"  [{', '.join(settings)}]"
        lines.append(head)
        lines.append(f"    {item.urn}")
        if item.moved_from:
            lines.append(f"    moved from {item.moved_from}")
        if status == "added":
            for key, document in _documents(resource):
                lines.append(f"    {key} ({'policy document' if key in POLICY_KEYS else 'JSON document'}):")
                lines += _block(document, "      ")
        lines += _changes_lines(item.changes, "    ")
    if diff.outputs:
        lines.append("Outputs:")
        lines += _changes_lines(diff.outputs, "  ")
    return _scrubbed("\n".join(lines), secrets)


def _scrubbed(text: str, secrets: Iterable[str]) -> str:
    texts = set()
    for secret in secrets:
        if secret and secret != SECRET:
            texts.update({secret, base64.b64encode(secret.encode()).decode()})
    for secret in sorted(texts, key=lambda t: (-len(t), t)):
        if len(secret) >= 4:
            text = text.replace(secret, SECRET)
            text = text.replace(json.dumps(secret)[1:-1], SECRET)  # as it appears inside a JSON string
    return text


# --- the tree: grants, suspend, and the mock ids ------------------------------------------------------------------


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _policy_grants(document: Any) -> tuple[list[str], list[str]]:
    """(allowed actions, denials by Sid or action) of an AWS policy document."""
    allowed: list[str] = []
    denied: list[str] = []
    for statement in _listed(_get(document, "Statement")):
        if not isinstance(statement, Mapping):
            continue
        actions = [str(a) for a in _listed(statement.get("Action") or statement.get("NotAction"))]
        if statement.get("Effect") == "Allow":
            allowed += [a for a in actions if a not in allowed]
        else:
            denied.append(str(statement.get("Sid") or ",".join(actions)))
    return allowed, denied


def _trusted(document: Any) -> list[str]:
    """Who may assume an AWS role: the Kubernetes service account of an IRSA trust, or the principal."""
    trusted = []
    for statement in _listed(_get(document, "Statement")):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        subjects = [
            str(v)
            for values in (statement.get("Condition") or {}).values()
            if isinstance(values, Mapping)
            for key, value in values.items()
            if key.endswith(":sub")
            for v in _listed(value)
        ]
        principal = statement.get("Principal")
        if subjects:
            trusted += subjects
        elif isinstance(principal, Mapping):
            trusted += [f"{kind} {p}" for kind, value in sorted(principal.items()) for p in _listed(value)]
        elif principal:
            trusted.append(str(principal))
    return trusted


def grants(resource: Mapping[str, Any]) -> list[str]:
    """Who is granted what, for the tree: IAM members and conditions, bindings, custom role permissions, what an
    AWS role trusts and its policies allow or deny, RBAC rules and subjects, and whether a CronJob is suspended."""
    inputs, type_ = resource.get("inputs") or {}, resource.get("type", "")
    shown: list[str] = []

    def show(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            shown.append(f"{label}={value if isinstance(value, (str, int)) else json.dumps(value)}")

    if type_ == CRONJOB:
        shown.append(f"suspend={'true' if _get(inputs, 'spec', 'suspend') is True else 'false'}")
    elif type_.startswith("gcp:") and ("IAM" in type_ or type_.endswith("IamMember")):
        show("member", inputs.get("member"))
        show("members", inputs.get("members"))
        show("condition", _get(inputs, "condition", "title"))
        show("permissions", inputs.get("permissions"))
        bindings = [b for b in _listed(_get(_parsed_document(inputs.get("policyData")), "bindings")) if b]
        show("bindings", [f"{b.get('role')}: {', '.join(b.get('members') or [])}" for b in bindings])
    elif type_ == "aws:iam/role:Role":
        show("trusts", _trusted(_parsed_document(inputs.get("assumeRolePolicy"))))
    elif type_.startswith("aws:") and isinstance(inputs.get("policy"), str):
        allowed, denied = _policy_grants(_parsed_document(inputs["policy"]))
        show("role", inputs.get("role"))
        show("allow", allowed)
        show("deny", denied)
    elif type_.endswith((":Role", ":ClusterRole")) and type_.startswith("kubernetes:rbac"):
        rules = []
        for rule in _listed(inputs.get("rules")):
            if not isinstance(rule, Mapping):
                continue
            names = _listed(rule.get("resourceNames"))
            for kind in _listed(rule.get("resources")):
                rules.append(f"{kind}{'/' + ','.join(names) if names else ''}: {','.join(_listed(rule.get('verbs')))}")
        show("rules", rules)
    elif type_.endswith((":RoleBinding", ":ClusterRoleBinding")) and type_.startswith("kubernetes:rbac"):
        ref = inputs.get("roleRef") or {}
        show("roleRef", f"{ref.get('kind')}/{ref.get('name')}" if ref else None)
        subjects = [s for s in _listed(inputs.get("subjects")) if isinstance(s, Mapping)]
        show(
            "subjects",
            [f"{s.get('kind')} {'/'.join(filter(None, (s.get('namespace'), s.get('name'))))}" for s in subjects],
        )
    return shown


def tree_settings(resource: Mapping[str, Any]) -> list[str]:
    """What the tree shows of a resource: its key settings (engines/offline_plan.py) and its grants, before the
    resource options (protect, retainOnDelete, import=, read=) that end the key settings."""
    settings = offline_plan.key_settings(resource)
    flags = [s for s in settings if s in ("protect", "retainOnDelete") or s.startswith(("import=", "read="))]
    return [s for s in settings if s not in flags] + grants(resource) + flags


def render_tree(plan: Mapping[str, Any]) -> str:
    """The plan's resource tree with grants and suspend (what scripts/plan.py prints)."""
    return offline_plan.render_tree(plan, settings=tree_settings)


def render_legend(plan: Mapping[str, Any]) -> str:
    """What the made-up ids in an offline plan are, for the ids this plan shows ("" when it shows none)."""
    text = json.dumps(plan, ensure_ascii=False)
    lines = []
    if any(r["type"].startswith("aws:") for r in plan["resources"]) and offline_plan.AWS_ACCOUNT_ID in text:
        lines.append(
            f"  {offline_plan.AWS_ACCOUNT_ID}  the AWS account id in every ARN and account-named bucket: the "
            "offline plan's answer to getCallerIdentity"
        )
        if offline_plan.AWS_DEPLOYER_ROLE in text:
            lines.append(f"  {offline_plan.AWS_DEPLOYER_ROLE}  the role the offline plan deploys as")
        if "oidc.eks." in text:
            lines.append("  oidc.eks.<region>.amazonaws.com/id/<hex>  the EKS cluster's OIDC issuer (getCluster)")
    if any(r["type"].startswith("gcp:") for r in plan["resources"]) and offline_plan.PROJECT_NUMBER in text:
        lines.append(
            f"  {offline_plan.PROJECT_NUMBER}  the GCP project number in Google's service agents' e-mails "
            "(getProject); the project id is the stack's gcp:project"
        )
    if not lines:
        return ""
    return "\n".join(
        [
            "Mock ids (an offline plan asks no cloud; engines/offline_plan.py answers with stable made-up values):",
            *lines,
            "  key ids, numbered alert/channel ids, unique ids, IP addresses: made up the same way",
            "  A real `pulumi preview` shows the real ones.",
        ]
    )
