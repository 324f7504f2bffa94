"""Read the running Pulumi program's whole configuration as one mapping (full key -> decoded value).

`pulumi.Config` can only look keys up one by one; reading everything lets settings.py reject unknown keys
(a misspelt key must not silently fall back to a default).
"""

from __future__ import annotations

import json
from typing import Any

from pulumi.runtime import config as runtime_config


def _decode(value: Any) -> Any:
    # Structured config (objects, lists) reaches the program as JSON text.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_raw_config() -> dict[str, Any]:
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {key: _decode(value) for key, value in merged.items()}
