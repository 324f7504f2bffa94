"""Tamper evidence for the set history: each manifest names the digest of the sets sealed before it (pure).

The store is create-only, so a set cannot be rewritten where it lies; but a copy can be edited (a restored bucket,
a migrated archive, a DR copy), and an edited manifest (row counts, checksums) still passes verify-set, whose
checks are all relative to the manifest. So each seal records, in `chain`, two links of its migration id:
- `previous`: the newest complete set at seal time (any tier): the fine chain, checkable while recent sets live;
- `historical`: the newest historical set at seal time: the coarse chain over sets that are kept forever, so the
  whole history stays checkable from genesis after recent sets expire.
A link is `{"set_id", "sha256"}`: the digest of the linked manifest in canonical form (sorted keys, no spaces),
without the fields a promotion changes (`tier`, `promoted_from`), so both copies of a promoted set match it.

`audit-history` walks the links oldest first and reports the first that does not hold; the digest of the newest
set (the chain head) is printed in its event, so an auditor who wrote down an earlier head can check that nothing
before it changed, and that the newest set is the one that was sealed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

CHAIN = "chain"
LINKS = ("previous", "historical")
_TIER_FIELDS = ("tier", "promoted_from")


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its tier fields (the same for both copies of a set)."""
    content = {k: v for k, v in manifest.items() if k not in _TIER_FIELDS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def link(manifest: dict[str, Any] | None) -> dict[str, str] | None:
    return None if manifest is None else {"set_id": manifest["set_id"], "sha256": manifest_digest(manifest)}


def chain_record(previous: dict[str, Any] | None, historical: dict[str, Any] | None) -> dict[str, Any]:
    """What a seal writes: links to the newest set and the newest historical set of its migration id (None for
    the first of its kind)."""
    return {"previous": link(previous), "historical": link(historical)}


def chain_errors(chain: Any) -> list[str]:
    """The shape of a manifest's `chain` field (absent on sets sealed before the chain existed)."""
    if chain is None:
        return []
    if not isinstance(chain, dict) or set(chain) != set(LINKS):
        return [f"chain is not {{{', '.join(LINKS)}}}"]
    errors = []
    for name in LINKS:
        entry = chain[name]
        if entry is None:
            continue
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("set_id"), str) or not isinstance(digest, str):
            errors.append(f"chain.{name} is not {{set_id, sha256}}")
        elif len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            errors.append(f"chain.{name}.sha256 is not a sha256 hex digest")
    return errors


@dataclass(frozen=True)
class ChainSet:
    """One complete set as the audit reads it: its tier, when it was sealed and its manifest."""

    tier: str
    created_at: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ChainReport:
    checked: int  # links that could be checked (their target still exists)
    unverifiable: int  # `previous` links to recent sets that have expired since
    first_break: str | None
    head: dict[str, str] | None  # the newest set of the migration id and its digest


def check_chain(sets: list[ChainSet]) -> ChainReport:
    """Walk the links of one migration id's sets, oldest first; report the first one that does not hold.

    A link holds when the set it names exists with that digest. A `historical` link must always hold (historical
    sets are kept forever); a `previous` link may name a recent set that has expired, which is counted, not a
    break. A set whose two copies (recent and historical) differ is a break, and so is a set without a chain
    sealed after one with a chain (a manifest rewritten without it)."""
    ordered = sorted(sets, key=lambda s: (s.created_at, s.manifest["set_id"], s.tier))
    head = link(ordered[-1].manifest) if ordered else None
    digests: dict[str, set[str]] = {}
    historical_ids = set()
    for item in ordered:
        digests.setdefault(item.manifest["set_id"], set()).add(manifest_digest(item.manifest))
        if item.tier == "historical":
            historical_ids.add(item.manifest["set_id"])
    checked = unverifiable = 0
    chained_since: str | None = None
    seen: set[str] = set()
    for item in ordered:
        set_id = item.manifest["set_id"]
        if set_id in seen:
            continue
        seen.add(set_id)
        if len(digests[set_id]) > 1:
            return ChainReport(checked, unverifiable, f"set {set_id}: its recent and historical copies differ", head)
        chain = item.manifest.get(CHAIN)
        if chain is None:
            if chained_since is not None:
                return ChainReport(
                    checked, unverifiable, f"set {set_id} has no chain, yet set {chained_since} before it has", head
                )
            continue
        chained_since = chained_since or set_id
        for name in LINKS:
            target = chain.get(name)
            if target is None:
                continue
            found = digests.get(target["set_id"])
            if found is None:
                if name == "previous" and target["set_id"] not in historical_ids:
                    unverifiable += 1
                    continue
                return ChainReport(
                    checked,
                    unverifiable,
                    f"set {set_id}: chain.{name} names set {target['set_id']}, which is gone",
                    head,
                )
            if target["sha256"] not in found:
                return ChainReport(
                    checked,
                    unverifiable,
                    f"set {target['set_id']} differs from what set {set_id} recorded of it (chain.{name}): "
                    f"{target['set_id']} was changed after {set_id} was sealed",
                    head,
                )
            checked += 1
    return ChainReport(checked, unverifiable, None, head)
