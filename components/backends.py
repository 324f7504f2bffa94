"""Which backend implements `components.cloud.CloudBackend` for a stack's `sv-backups:cloud`.

The one place that knows every backend. Imported lazily: a stack only pays for (and needs) its own cloud's
provider SDK, which is the largest part of the program's start-up time.
"""

from __future__ import annotations

import importlib

from components.cloud import CloudBackend
from components.settings import Settings

# cloud -> (module, class)
BACKENDS = {
    "gcp": ("components.gcp", "GcpBackend"),
    "aws": ("components.aws", "AwsBackend"),
}


def backend_for(settings: Settings) -> CloudBackend:
    try:
        module, name = BACKENDS[settings.cloud]
    except KeyError:
        raise ValueError(f"sv-backups:cloud {settings.cloud!r} has no backend; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), name)(settings)
