"""Typed resources for the Kubernetes CRDs we declare.

`apiextensions.CustomResource` in Python only accepts `spec`, but a VolumeSnapshotClass has top-level
`driver`, `deletionPolicy` and `parameters`; this small typed class passes them as the engine expects.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes import _utilities as kubernetes_sdk
from pulumi_kubernetes.meta import v1 as meta


class VolumeSnapshotClass(pulumi.CustomResource):
    """snapshot.storage.k8s.io/v1 VolumeSnapshotClass (CRD schema: tests/schemas/volumesnapshotclass.json)."""

    def __init__(
        self,
        resource_name: str,
        *,
        metadata: meta.ObjectMetaArgs,
        driver: str,
        deletion_policy: str,
        parameters: dict[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(
            "kubernetes:snapshot.storage.k8s.io/v1:VolumeSnapshotClass",
            resource_name,
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotClass",
                "metadata": metadata,
                "driver": driver,
                "deletionPolicy": deletion_policy,
                "parameters": parameters,
            },
            # Pin the Kubernetes provider version like the SDK's own resources do; without it the engine
            # would create a second, unversioned default provider just for this object.
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=kubernetes_sdk.get_version())),
        )
