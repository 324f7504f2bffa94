"""The backup store: where every Postgres set lands, sized by the retention windows."""

from __future__ import annotations

import pulumi

from components.cloud import BackupStore, CloudBackend
from components.settings import Settings
from rules import retention


class BackupStorage(pulumi.ComponentResource):
    """Inputs: the settings (retention windows, storage options). Outputs: `store` (bucket name and the URL
    the jobs write to), `recent_url` and `historical_url` (where the tiers of the current migration id are)."""

    store: BackupStore

    def __init__(
        self, name: str, settings: Settings, backend: CloudBackend, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("svbackups:storage:BackupStorage", name, None, opts)
        self.store = backend.backup_store(parent=self)
        self.recent_url, self.historical_url = tier_urls(self.store.url, settings.node.migration_id)
        self.register_outputs(
            {
                "bucket": self.store.name,
                "url": self.store.url,
                "recentUrl": self.recent_url,
                "historicalUrl": self.historical_url,
            }
        )


def tier_urls(store_url: pulumi.Input[str], migration_id: int) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """Where the recent and the historical sets of one migration id are (the jobs' layout, docs/jobs.md)."""
    return (
        pulumi.Output.concat(store_url, "/", retention.RECENT_TIER, str(migration_id), "/"),
        pulumi.Output.concat(store_url, "/", retention.HISTORICAL_TIER, str(migration_id), "/"),
    )
