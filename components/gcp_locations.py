"""GCP location facts the program depends on (pure; used by settings validation and the GCP backend).

The backup bucket is a configurable dual-region over `gcp:region` and `dr.region`; GCS allows that only for
two regions of one multi-region, and each product names that multi-region its own way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MultiRegion:
    gcs: str  # bucket `location` of a configurable dual-region: EU, US, ASIA
    kms: str  # Cloud KMS location of keys for data in that multi-region: europe, us, asia
    compute: str  # Compute Engine snapshot storage location: eu, us, asia


EU = MultiRegion(gcs="EU", kms="europe", compute="eu")
US = MultiRegion(gcs="US", kms="us", compute="us")
ASIA = MultiRegion(gcs="ASIA", kms="asia", compute="asia")

_BY_PREFIX = {"europe": EU, "us": US, "asia": ASIA}
# The EU multi-region holds data in EU member states only: London and Zurich are not part of it.
_OUTSIDE = {"europe-west2", "europe-west6"}


def multi_region_of(region: str) -> MultiRegion | None:
    """The multi-region a region belongs to, or None (e.g. europe-west6, northamerica-northeast1)."""
    if region in _OUTSIDE:
        return None
    return _BY_PREFIX.get(region.split("-", 1)[0])


def dual_region(primary: str, secondary: str) -> MultiRegion | None:
    """The multi-region of a configurable dual-region over both regions, or None when GCS refuses the pair."""
    first, second = multi_region_of(primary), multi_region_of(secondary)
    return first if first is not None and first == second and primary != secondary else None


def describe_allowed() -> str:
    return (
        "two different regions of one multi-region: europe-* (EU, without europe-west2 London and europe-west6 "
        "Zurich), us-* (US) or asia-* (ASIA)"
    )
