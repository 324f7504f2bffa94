"""GCP location facts and the storage layout they lead to (pure; used by the GCP backend and its tests).

Every backup set must survive the loss of `gcp:region`. Where GCS allows it, the backup bucket is one
configurable dual-region over `gcp:region` and `dr.region` with turbo replication: GCS copies every object to
both regions within 15 minutes. GCS allows that only for two regions of one multi-region (EU, US, ASIA), and
London and Zurich belong to none. Any other pair gets *paired regional* buckets: one regional bucket in each
region, each under its own regional key, and every object copied from the primary to the DR bucket by Storage
Transfer Service (components/gcp/buckets.py). Each product names a multi-region its own way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MultiRegion:
    gcs: str  # bucket `location` of a configurable dual-region: EU, US, ASIA
    kms: str  # Cloud KMS location of keys for data in that multi-region: europe, us, asia
    compute: str  # Compute Engine snapshot storage location: eu, us, asia


EU = MultiRegion(gcs="EU", kms="europe", compute="eu")
US = MultiRegion(gcs="US", kms="us", compute="us")
ASIA = MultiRegion(gcs="ASIA", kms="asia", compute="asia")

_BY_PREFIX = {"europe": EU, "us": US, "asia": ASIA}
# Where Compute Engine stores a snapshot in more than one region (priced as multi-regional).
SNAPSHOT_MULTI_REGIONS = frozenset(m.compute for m in _BY_PREFIX.values())
# The EU multi-region holds data in EU member states only: London and Zurich are not part of it.
_OUTSIDE = {"europe-west2", "europe-west6"}

DUAL_REGION = "dual-region"
PAIRED_REGIONAL = "paired-regional"


def multi_region_of(region: str) -> MultiRegion | None:
    """The multi-region a region belongs to, or None (e.g. europe-west6, northamerica-northeast1)."""
    if region in _OUTSIDE:
        return None
    return _BY_PREFIX.get(region.split("-", 1)[0])


def dual_region(primary: str, secondary: str) -> MultiRegion | None:
    """The multi-region of a configurable dual-region over both regions, or None when GCS refuses the pair."""
    first, second = multi_region_of(primary), multi_region_of(secondary)
    return first if first is not None and first == second and primary != secondary else None


@dataclass(frozen=True)
class BucketPlacement:
    """Where one bucket lives, and where its CMEK key must be (GCS requires the key in the bucket's location:
    for a dual-region, the multi-region that contains it)."""

    location: str  # the bucket's `location`: EU/US/ASIA for a dual-region, the upper-case region otherwise
    data_locations: tuple[str, ...]  # the two regions of a configurable dual-region; () for a regional bucket
    kms_location: str


@dataclass(frozen=True)
class StorageLayout:
    """How backup sets, and CometBFT snapshots, are kept out of reach of one region's loss.

    `replica` is the DR bucket of the paired-regional layout, None where the primary bucket replicates itself.
    `snapshot_location` is where PD snapshots are stored: the multi-region of a dual-region pair, else the DR
    region itself (a snapshot stored in the primary region would be lost with it).
    """

    kind: Literal["dual-region", "paired-regional"]
    primary: BucketPlacement
    replica: BucketPlacement | None
    snapshot_location: str


def storage_layout(primary: str, dr: str) -> StorageLayout:
    """The layout for a primary and a DR region (two distinct regions, as settings validation guarantees)."""
    if primary == dr:
        raise ValueError(f"the DR region must differ from the primary region (both are {primary!r})")
    multi = dual_region(primary, dr)
    if multi is not None:
        return StorageLayout(
            kind=DUAL_REGION,
            primary=BucketPlacement(multi.gcs, (primary.upper(), dr.upper()), multi.kms),
            replica=None,
            snapshot_location=multi.compute,
        )
    return StorageLayout(
        kind=PAIRED_REGIONAL,
        primary=_regional(primary),
        replica=_regional(dr),
        snapshot_location=dr,
    )


def standalone_snapshot_location(region: str) -> str:
    """Where a cluster with no DR region of its own (a DR stack's, components/dr.py) stores PD snapshots: the
    multi-region holding its region, else the region itself."""
    multi = multi_region_of(region)
    return multi.compute if multi is not None else region


def _regional(region: str) -> BucketPlacement:
    # GCS reports regional locations in upper case; the key of a regional bucket is in that very region.
    return BucketPlacement(region.upper(), (), region)


# The GCP regions a stack may name (gcp:region, dr.region, a Cloud SQL instance's region). Kept by hand: the
# provider SDK has no list (it passes the name to the API, which refuses an unknown region only at `pulumi up`).
# Source: Google Cloud's region tables (https://cloud.google.com/compute/docs/regions-zones), compiled 2026-12-06;
# add a region here when Google opens one.
GCP_REGIONS = frozenset(
    {
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "asia-southeast3",  # Bangkok
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west10",
        "europe-west12",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "northamerica-south1",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
    }
)

# Bucket locations whose data GCS itself keeps in more than one region: the multi-regions and the predefined
# dual-regions (a configurable dual-region is a multi-region location with two data locations).
MULTI_REGION_LOCATIONS = frozenset({"EU", "US", "ASIA"})
PREDEFINED_DUAL_REGIONS = frozenset({"ASIA1", "EUR4", "EUR5", "EUR7", "EUR8", "NAM4"})


def bucket_region(location: str, data_locations: list[str] | tuple[str, ...] = ()) -> str | None:
    """The one region a bucket's data lives in (lower case), or None when GCS keeps it in several regions."""
    upper = location.upper()
    if upper in PREDEFINED_DUAL_REGIONS:
        return None
    if upper in MULTI_REGION_LOCATIONS:
        distinct = {d.upper() for d in data_locations}
        # A multi-region, or a configurable dual-region over two regions; one data location is no dual-region.
        return None if len(distinct) != 1 else distinct.pop().lower()
    return location.lower()
