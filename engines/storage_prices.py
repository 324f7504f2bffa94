"""List prices of object storage at rest, as dated data (USD per GiB-month; no discounts, no free tier).

Used by engines/retention_sim.py to turn simulated bytes per storage class into a monthly bill. Prices change:
every table names its source and the date it was read; re-read them before quoting a figure to anyone.

Sources (read 2026-12-02 from stored copies of the pages, which carry no date of their own):
- GCS: https://cloud.google.com/storage/pricing, "Data storage" (regional table per location; the dual-region
  table, whose us-central1 row is $0.022 / $0.011 / $0.0044 / $0.0014, i.e. exactly 1.1x the regional row, and
  "Dual-regions are billed to both underlying regions at the above prices"); "Data processing", inter-region
  replication: default replication $0.02/GiB, turbo replication $0.04/GiB written into a dual-region.
  Regional rows read: us-central1, us-east4, europe-west3. Rows NOT read from the page (recalled, to verify):
  europe-west4 (taken equal to europe-west1, which was read) and europe-west6. Dual-region SKUs other than
  us-central1 are the regional row x 1.1, the ratio the page shows for us-central1.
- S3: https://aws.amazon.com/s3/pricing/, "Storage pricing", US East (N. Virginia) and US West (Oregon), first
  50 TB/month tier: Standard $0.023, Standard-IA $0.0125, Glacier Instant Retrieval $0.004, Glacier Flexible
  Retrieval $0.0036, Glacier Deep Archive $0.00099; "Replication": cross-region transfer $0.02/GB, Replication
  Time Control $0.015/GB. (Recalled list prices, unchanged since 2021-11; the stored copy of the page has its
  price cells empty. Standard $0.023 and Deep Archive $0.00099 match third-party tables dated 2026-03 and
  2026-05; the others are still to verify on the page.)

- Disk snapshots (CometBFT's volume; incremental, billed per GiB stored): Compute Engine standard snapshots since
  2023-04-01, regional $0.05 (us-central1 baseline) and multi-regional $0.065 (US multi-region), from Google's
  pricing announcement (https://cloud.google.com/compute/pricing-announce, read 2026-12-03 from a stored copy);
  EBS snapshots, standard tier, $0.05 ("the standard rate for snapshots of $0.05 per GB-month", the EBS User
  Guide's "Pricing and billing for archiving Amazon EBS snapshots", no region named). Copying a snapshot to
  another region "is charged based on the volume of data transferred across Regions" (AWS whitepaper "How AWS
  Pricing Works", Amazon EBS); $0.02/GB is us-east-1 to us-west-2 (an AWS re:Post article, "verified as of
  January 2026"; read 2026-12-03 from stored copies). The rate depends on the pair: other pairs range from
  $0.01 (us-east-1 to us-east-2) to $0.08 and more, so a stack copying between other regions should re-price it.

Minimum storage durations (billed even when an object leaves the class earlier): GCS Nearline 30 d, Coldline
90 d, Archive 365 d; S3 Standard-IA 30 d, Glacier IR and Flexible 90 d, Deep Archive 180 d. sv-backups never
deletes a historical object and moves it only once, so these never add to the bill here.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.gcp_locations import SNAPSHOT_MULTI_REGIONS

PRICES_READ_ON = "2026-12-02"

_GCS_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
_S3_CLASSES = ("STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")

# GCS regional buckets, per region: Standard, Nearline, Coldline, Archive.
GCS_REGIONAL: dict[str, tuple[float, float, float, float]] = {
    "us-central1": (0.020, 0.010, 0.004, 0.0012),
    "us-east4": (0.023, 0.013, 0.006, 0.0025),
    "europe-west1": (0.020, 0.010, 0.004, 0.0012),
    "europe-west3": (0.023, 0.013, 0.006, 0.0025),
    "europe-west4": (0.020, 0.010, 0.004, 0.0012),  # to verify (see the module docstring)
    "europe-west6": (0.025, 0.014, 0.007, 0.0028),  # to verify (see the module docstring)
}
# The dual-region SKU of a region, per region of the pair (each region of a dual-region is billed).
GCS_DUAL_REGION_FACTOR = 1.1
GCS_DUAL_REGION: dict[str, tuple[float, float, float, float]] = {
    "us-central1": (0.022, 0.011, 0.0044, 0.0014),
}
# Per GiB written into a dual-region.
GCS_REPLICATION = {"DEFAULT": 0.02, "ASYNC_TURBO": 0.04}

# S3, per region: Standard, Standard-IA, Glacier IR, Glacier Flexible, Deep Archive (first 50 TB tier).
S3_REGIONAL: dict[str, tuple[float, float, float, float, float]] = {
    "us-east-1": (0.023, 0.0125, 0.004, 0.0036, 0.00099),
    "us-west-2": (0.023, 0.0125, 0.004, 0.0036, 0.00099),
}
S3_REPLICATION_TRANSFER = 0.02  # per GB copied to another region (CRR)
S3_REPLICATION_TIME_CONTROL = 0.015  # per GB replicated with RTC


@dataclass(frozen=True)
class Copy:
    """One billed copy of every object: where, and at which SKU."""

    provider: str  # gcs | s3
    region: str
    sku: str  # regional | dual-region

    def price(self, storage_class: str) -> float:
        """USD per GiB-month of `storage_class` in this copy; KeyError names what is missing."""
        if self.provider == "gcs":
            index = _GCS_CLASSES.index(storage_class)
            if self.sku == "dual-region":
                if self.region in GCS_DUAL_REGION:
                    return GCS_DUAL_REGION[self.region][index]
                return round(_table(GCS_REGIONAL, self)[index] * GCS_DUAL_REGION_FACTOR, 6)
            return _table(GCS_REGIONAL, self)[index]
        return _table(S3_REGIONAL, self)[_S3_CLASSES.index(storage_class)]


def _table(table: dict, copy: Copy):
    try:
        return table[copy.region]
    except KeyError:
        raise KeyError(
            f"no {copy.provider} price for region {copy.region!r} in engines/storage_prices.py; known: "
            f"{', '.join(sorted(table))} (add the row from the provider's pricing page, with the date)"
        ) from None


def replication_per_gib(provider: str, mode: str) -> float:
    """USD per GiB written that the second copy costs on top of its storage (GCS dual-region replication, or S3
    cross-region transfer plus RTC); `mode`: ASYNC_TURBO / DEFAULT (GCS dual-region), RTC / CRR (S3), or
    TRANSFER for a GCS paired-regional copy by Storage Transfer Service (inter-region egress in one continent,
    priced like default replication)."""
    if provider == "gcs":
        return GCS_REPLICATION["DEFAULT" if mode == "TRANSFER" else mode]
    return S3_REPLICATION_TRANSFER + (S3_REPLICATION_TIME_CONTROL if mode == "RTC" else 0.0)


# Disk snapshots, USD per GiB-month of snapshot data stored: (cloud, "regional" | "multi-regional").
SNAPSHOT = {("gcp", "regional"): 0.05, ("gcp", "multi-regional"): 0.065, ("aws", "regional"): 0.05}
SNAPSHOT_COPY_TRANSFER = 0.02  # per GiB a snapshot copy transfers to another region (EBS; inter-region transfer)


def snapshot_per_gib(cloud: str, location: str) -> float:
    """USD per GiB-month of CometBFT snapshot data: `location` is where they are stored (a GCP multi-region such as
    `us`, or a region)."""
    kind = "multi-regional" if cloud == "gcp" and location in SNAPSHOT_MULTI_REGIONS else "regional"
    return SNAPSHOT[(cloud, kind)]


# ------------------------------------------------------------------------ Postgres snapshot sets (issue 17)
#
# Storage snapshots of the Postgres instances, USD per GiB-month of snapshot data stored, and the inter-region
# transfer a DR copy pays per GiB copied. Each price class is `KIND:LOCATION`; a class not in the table is refused
# with MissingPrice, whose message names the class and the override `--price CLASS=USD` (scripts/simulate_retention.py).
#
# Sources (read 2026-12-07 from stored copies, see the module docstring for the disk snapshot rows):
# - pd-snapshot: Compute Engine standard snapshots (the CSI VolumeSnapshots of in-cluster instances), as for
#   CometBFT above: multi-regional $0.065 (US multi-region), regional $0.05 (us-central1). `eu` and `asia` are taken
#   equal to `us` and the other regions equal to us-central1: NOT read, to verify (marked below).
# - cloudsql-backup: Cloud SQL "Backups" $0.08 per GB-month (Enterprise edition, the backup storage line of
#   https://cloud.google.com/sql/pricing, stored copy scraped 2025-02-23; the figure itself recalled, to verify).
#   Backups are incremental: "your oldest backup is a similar size to your database ... When the oldest backup is
#   deleted, the size of the next oldest backup increases so that a full backup still exists" (Cloud SQL
#   "About backups"). Stored in the multi-region given as the backup's `location` (one billed copy).
# - ebs-snapshot: EBS snapshots, standard tier, $0.05 (as for CometBFT above), per region.
# - rds-snapshot: RDS backup storage beyond the free allowance, ~$0.095 per GB-month in us-east-1 ("Backup
#   storage ... x ~$0.095/GB-month", usage.ai's RDS pricing guide of 2026-06 citing aws.amazon.com/rds/pricing;
#   the free allowance, up to 100% of the provisioned storage per region, is left out: the automated backups the
#   instance already has use it). A cross-region copy: storage at the destination's rate plus "DB snapshot copy
#   charges apply to the data transfer" (RDS User Guide, "Replicating automated backups to another Region").
# - transfer: inter-region data transfer per GiB, us-east-1 <-> us-west-2 $0.02 (see SNAPSHOT_COPY_TRANSFER).
# Prices are per GB on the pages; like the bucket prices above they are applied per GiB (a 7% difference).
_UNVERIFIED = "taken equal to a row that was read; to verify"
SNAPSHOT_PRICES: dict[str, float] = {
    "pd-snapshot:us": 0.065,
    "pd-snapshot:eu": 0.065,  # _UNVERIFIED
    "pd-snapshot:asia": 0.065,  # _UNVERIFIED
    "pd-snapshot:us-central1": 0.05,
    "pd-snapshot:us-east4": 0.05,  # _UNVERIFIED
    "pd-snapshot:europe-west3": 0.05,  # _UNVERIFIED
    "pd-snapshot:europe-west4": 0.05,  # _UNVERIFIED
    "cloudsql-backup:us": 0.08,
    "ebs-snapshot:us-east-1": 0.05,
    "ebs-snapshot:us-west-2": 0.05,
    "rds-snapshot:us-east-1": 0.095,
    "rds-snapshot:us-west-2": 0.095,  # _UNVERIFIED (same as us-east-1 on the page in past years)
    "transfer:us-east-1>us-west-2": 0.02,
    "transfer:us-west-2>us-east-1": 0.02,
}
SNAPSHOT_PRICES_READ_ON = "2026-12-07"


class MissingPrice(ValueError):
    """A price class the table does not hold; the message says how to give it."""


def price_unit(price_class: str) -> str:
    return "USD/GB" if price_class.startswith("transfer:") else "USD/GB-month"


# Bucket storage classes as price classes: `gcs:REGION:CLASS`, `gcs-dual-region:REGION:CLASS`, `s3:REGION:CLASS`
# (the tables above; an override for a region they lack).
BUCKET_KINDS = ("gcs", "gcs-dual-region", "s3")


def bucket_price_class(copy: Copy, storage_class: str) -> str:
    kind = "gcs-dual-region" if copy.provider == "gcs" and copy.sku == "dual-region" else copy.provider
    return f"{kind}:{copy.region}:{storage_class}"


class PriceBook:
    """SNAPSHOT_PRICES and the bucket tables with the operator's overrides (`--price CLASS=USD`) on top."""

    def __init__(self, overrides: dict[str, float] | None = None):
        self.overrides = dict(overrides or {})

    def bucket(self, copy: Copy, storage_class: str) -> float:
        """USD per GiB-month of `storage_class` in one bucket copy."""
        name = bucket_price_class(copy, storage_class)
        if name in self.overrides:
            return self.overrides[name]
        try:
            return copy.price(storage_class)
        except KeyError as error:
            raise MissingPrice(f"{error.args[0]}; or give it with --price {name}=USD/GB-month") from None

    def get(self, price_class: str) -> float:
        if price_class in self.overrides:
            return self.overrides[price_class]
        if price_class in SNAPSHOT_PRICES:
            return SNAPSHOT_PRICES[price_class]
        kind = price_class.split(":", 1)[0]
        known = sorted(c for c in SNAPSHOT_PRICES if c.startswith(kind + ":"))
        raise MissingPrice(
            f"no list price for {price_class} in engines/storage_prices.py (known for {kind}: "
            f"{', '.join(known) or 'none'}); give it with --price {price_class}={price_unit(price_class)}, e.g. "
            f"--price {price_class}={SNAPSHOT_PRICES[known[0]] if known else 0.05}"
        )


def parse_price(text: str) -> tuple[str, float]:
    """`pd-snapshot:us=0.065` -> ("pd-snapshot:us", 0.065); ValueError naming the form otherwise."""
    name, sep, value = text.partition("=")
    kinds = sorted({c.split(":", 1)[0] for c in SNAPSHOT_PRICES} | set(BUCKET_KINDS))
    try:
        number = float(value.strip().removesuffix("USD/GB-month").removesuffix("USD/GB"))
    except ValueError:
        number = None
    if not sep or ":" not in name or name.split(":", 1)[0] not in kinds or number is None or number < 0:
        raise ValueError(
            f"--price: {text!r} is not CLASS=USD with CLASS one of {', '.join(k + ':LOCATION' for k in kinds)} "
            "(e.g. --price rds-snapshot:eu-central-1=0.095; buckets s3:REGION:STORAGE_CLASS; transfer:FROM>TO is "
            "per GB copied)"
        )
    return name.strip(), number
