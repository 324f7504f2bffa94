"""A DR stack restores its primary's node: the node it names must be the primary's, key for key.

The DR stack's own `sv-backups:node` decides the namespace its restore and failover steps act in and the migration
id whose sets failover picks; a value that differs from the primary's would restore the wrong sets, or into the
wrong place, on the day it is needed. The primary exports its node (the `node` output, components/program.py); the
offline plan compares before declaring anything, the program on `pulumi up` from the StackReference. So is its
synchronizer: failover restores a CometBFT volume only for a CometBFT node, and a DABFT node's canton-bft database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def node_mismatches(dr_node: Mapping[str, Any], primary_node: Mapping[str, Any] | None, primary: str) -> list[str]:
    """One message per key of the primary's exported node that the DR stack's node does not match."""
    if not isinstance(primary_node, Mapping):
        return [f"sv-backups:dr.primaryStack: the primary stack {primary} exports no `node`; plan or update it first"]
    return [
        f"sv-backups:node.{key}: {_shown(dr_node, key)} the primary stack {primary}'s {_plain(value)!r}; "
        f"a DR stack restores its primary's node: set {key}: {_plain(value)!r}"
        for key, value in primary_node.items()
        if dr_node.get(key) != value
    ]


def _plain(value: Any) -> Any:
    # Stack outputs cross the engine as protobuf Struct values, where every number is a float: 5.0 is serial 5.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def synchronizer_mismatches(dr_synchronizer: str, primary_synchronizer: Any, primary: str) -> list[str]:
    """The DR stack's synchronizer against the primary's `synchronizer` output (exported only on a DABFT stack:
    none means cometbft); one message on a mismatch."""
    theirs = primary_synchronizer or "cometbft"
    if dr_synchronizer == theirs:
        return []
    return [
        f"sv-backups:synchronizer: {dr_synchronizer!r} differs from the primary stack {primary}'s {theirs!r}; "
        f"a DR stack restores its primary's node: set synchronizer: {theirs!r}"
    ]


def _shown(node: Mapping[str, Any], key: str) -> str:
    return f"{node[key]!r} differs from" if key in node else "is not set, unlike"
