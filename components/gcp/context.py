"""What the parts of the GCP backend (`buckets`, `cloudsql`, `alerts`) share: the stack's settings, names, project
and regions, and its Cloud KMS keys.

The façade (components/gcp/backend.py) builds one `GcpContext` per stack and hands it to each part. The parts
depend on this module, never on the façade: the imports run one way, backend -> parts -> context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pulumi
from pulumi_gcp import kms

from components.settings import Settings
from rules.gcp_locations import StorageLayout
from rules.naming import Names

ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
KEY_ROTATION = timedelta(days=90)


def _seconds(value: timedelta) -> str:
    return f"{int(value.total_seconds())}s"


@dataclass(frozen=True)
class GcpContext:
    settings: Settings
    names: Names
    project: str
    region: str
    # None on a DR stack: it declares no bucket or secret of its own (components/dr.py), so no layout either.
    dr_region: str | None
    layout: StorageLayout | None
    # Filled as keys are declared: every part asking for a location and purpose gets the one key (and ring).
    _keys: dict[str, kms.CryptoKey] = field(default_factory=dict, init=False, repr=False, compare=False)

    def key(self, location: str, purpose: str, parent: pulumi.Resource) -> kms.CryptoKey:
        """One key ring per location and one key per purpose; CMEK keys must live where the data lives."""
        cache_key = f"{location}/{purpose}"
        if cache_key not in self._keys:
            ring = kms.KeyRing(
                self.names.resource("keys", purpose, location),
                name=self.names.resource("backups", purpose),
                location=location,
                project=self.project,
                opts=pulumi.ResourceOptions(parent=parent, protect=True),
            )
            self._keys[cache_key] = kms.CryptoKey(
                self.names.resource("key", purpose, location),
                name=self.names.resource(purpose),
                key_ring=ring.id,
                rotation_period=_seconds(KEY_ROTATION),
                purpose="ENCRYPT_DECRYPT",
                # Destroying a key destroys every backup encrypted with it.
                opts=pulumi.ResourceOptions(parent=ring, protect=True),
            )
        return self._keys[cache_key]

    def grant_key(self, key: kms.CryptoKey, name: str, member: pulumi.Input[str], parent: pulumi.Resource):
        return kms.CryptoKeyIAMMember(
            name, crypto_key_id=key.id, role=ENCRYPTER, member=member, opts=pulumi.ResourceOptions(parent=parent)
        )
