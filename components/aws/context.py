"""What the parts of the AWS backend (`s3`, `rds`, `alerts`) share: the stack's settings, names, regions and
account, the tags every resource carries, and its KMS keys.

The façade (components/aws/backend.py) builds one `AwsContext` per stack and hands it to each part. The parts
depend on this module, never on the façade: the imports run one way, backend -> parts -> context.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pulumi
from pulumi_aws import kms
from pulumi_aws.get_caller_identity import GetCallerIdentityResult, get_caller_identity_output

from components.aws import policies
from components.settings import AwsSection, Settings
from rules.naming import Names

KEY_ROTATION_DAYS = 90
# The longest wait KMS allows between "schedule deletion" and the key (and every backup under it) being gone.
KEY_DELETION_WINDOW_DAYS = 30


@dataclass(frozen=True)
class AwsContext:
    settings: Settings
    names: Names
    node: str
    region: str
    # None on a DR stack (components/dr.py): it has no second region of its own.
    dr_region: str | None
    partition: str
    cluster: AwsSection
    # Filled as keys are declared: every part asking for a region and purpose gets the one key.
    _keys: dict[str, kms.Key] = field(default_factory=dict, init=False, repr=False, compare=False)

    # --- account ----------------------------------------------------------------------------------------
    @functools.cached_property
    def caller(self) -> pulumi.Output[GetCallerIdentityResult]:
        return get_caller_identity_output()

    @property
    def account(self) -> pulumi.Output[str]:
        return self.caller.account_id

    def tags(self, purpose: str) -> dict[str, str]:
        return {policies.NODE_TAG: self.node, "svbackups-purpose": purpose, "managed-by": "sv-backups"}

    # --- keys -------------------------------------------------------------------------------------------
    def key(self, region: str, purpose: str, parent: pulumi.Resource, *service_statements: dict) -> kms.Key:
        """One key per region and purpose: a regional service can only use a key of its own region.
        `service_statements`: key-policy statements for AWS services that must use the key as themselves."""
        cache_key = f"{region}/{purpose}"
        if cache_key not in self._keys:
            key = kms.Key(
                self.names.resource("key", purpose, region),
                description=f"sv-backups {self.node}: {purpose} ({region})",
                enable_key_rotation=True,
                rotation_period_in_days=KEY_ROTATION_DAYS,
                deletion_window_in_days=KEY_DELETION_WINDOW_DAYS,
                policy=self.account.apply(
                    lambda account: policies.to_json(policies.key_policy(self.partition, account, *service_statements))
                ),
                region=region,
                tags=self.tags(purpose),
                # Destroying a key destroys every backup encrypted with it.
                opts=pulumi.ResourceOptions(parent=parent, protect=True),
            )
            kms.Alias(
                self.names.resource("key", purpose, region, "alias"),
                name=f"alias/sv-backups/{self.node}/{purpose}",
                target_key_id=key.key_id,
                region=region,
                opts=pulumi.ResourceOptions(parent=key),
            )
            self._keys[cache_key] = key
        return self._keys[cache_key]
