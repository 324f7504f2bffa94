"""The storage layout per region pair (rules/gcp_locations.py): pure, no Pulumi."""

from __future__ import annotations

import itertools

import pytest

from rules.gcp_locations import (
    DUAL_REGION,
    PAIRED_REGIONAL,
    bucket_region,
    dual_region,
    storage_layout,
)
from rules.naming import Names


@pytest.mark.parametrize(
    ("primary", "dr", "gcs", "kms", "snapshots"),
    [
        ("europe-west3", "europe-west4", "EU", "europe", "eu"),
        ("us-central1", "us-east4", "US", "us", "us"),
        ("asia-east1", "asia-northeast1", "ASIA", "asia", "asia"),
    ],
)
def test_pairs_inside_one_multi_region_get_a_dual_region(primary, dr, gcs, kms, snapshots):
    layout = storage_layout(primary, dr)
    assert layout.kind == DUAL_REGION
    assert layout.primary.location == gcs
    assert layout.primary.data_locations == (primary.upper(), dr.upper())
    assert layout.primary.kms_location == kms  # Cloud KMS calls the multi-region its own way
    assert layout.replica is None  # GCS replicates inside the bucket
    assert layout.snapshot_location == snapshots


@pytest.mark.parametrize(
    ("primary", "dr"),
    [
        ("europe-west6", "europe-west3"),  # Zurich: in no multi-region
        ("europe-west2", "europe-west1"),  # London: in no multi-region
        ("europe-west3", "europe-west6"),  # primary in the EU, DR outside it
        ("us-east1", "europe-west1"),  # two continents
        ("us-central1", "northamerica-northeast1"),  # Montreal is not in the US multi-region
    ],
)
def test_any_other_pair_gets_a_regional_bucket_in_each_region(primary, dr):
    layout = storage_layout(primary, dr)
    assert layout.kind == PAIRED_REGIONAL
    assert (layout.primary.location, layout.primary.data_locations, layout.primary.kms_location) == (
        primary.upper(),
        (),
        primary,
    )
    assert (layout.replica.location, layout.replica.data_locations, layout.replica.kms_location) == (
        dr.upper(),
        (),
        dr,
    )
    # Snapshots stored in the primary region would be lost with it.
    assert layout.snapshot_location == dr


REGIONS = (
    "europe-west1",
    "europe-west2",
    "europe-west3",
    "europe-west4",
    "europe-west6",
    "europe-north1",
    "us-central1",
    "us-east1",
    "us-east4",
    "northamerica-northeast1",
    "asia-east1",
    "asia-northeast1",
    "australia-southeast1",
)


@pytest.mark.parametrize(("primary", "dr"), list(itertools.permutations(REGIONS, 2)))
def test_every_layout_keeps_sets_and_snapshots_outside_the_primary_region_alone(primary, dr):
    layout = storage_layout(primary, dr)
    assert (layout.kind == DUAL_REGION) == (dual_region(primary, dr) is not None)
    if layout.replica is None:
        assert set(layout.primary.data_locations) == {primary.upper(), dr.upper()}
        assert bucket_region(layout.primary.location, layout.primary.data_locations) is None
    else:
        assert bucket_region(layout.primary.location) == primary
        assert bucket_region(layout.replica.location) == dr
        # Each bucket's key lives where the bucket does (GCS refuses a key in another location).
        assert layout.replica.kms_location == dr and layout.primary.kms_location == primary
    assert layout.snapshot_location != primary


def test_one_region_is_no_pair():
    with pytest.raises(ValueError, match="must differ from the primary region"):
        storage_layout("europe-west6", "europe-west6")


@pytest.mark.parametrize(
    ("location", "data_locations", "region"),
    [
        ("EU", (), None),  # the multi-region itself
        ("EU", ("EUROPE-WEST3", "EUROPE-WEST4"), None),  # configurable dual-region
        ("EU", ("EUROPE-WEST3",), "europe-west3"),  # one data location is a single region
        ("NAM4", (), None),  # predefined dual-region
        ("EUROPE-WEST6", (), "europe-west6"),
        ("europe-west6", (), "europe-west6"),
    ],
)
def test_bucket_region(location, data_locations, region):
    assert bucket_region(location, data_locations) == region


def test_dr_bucket_names_stay_within_the_gcs_limit():
    names = Names("sv-ch")
    assert names.dr_bucket("sv-ch-project-sv-ch-backups") == "sv-ch-project-sv-ch-backups-dr"
    long = names.bucket("p" * 60, None)  # shortened to 63 characters with a hash suffix
    assert len(long) == 63 and len(names.dr_bucket(long)) == 63
    assert names.dr_bucket(long) != long and names.dr_bucket(long) == names.dr_bucket(long)
