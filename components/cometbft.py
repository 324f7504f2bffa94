"""CometBFT: PersistentVolume snapshots every 4 hours, pruned by tier, kept across migration ids.

The VolumeSnapshotClass uses `deletionPolicy: Retain`, so deleting a VolumeSnapshot object (by hand, or with
its namespace) never deletes the disk snapshot. Pruning is deliberate: the job flips the chosen snapshot's
content to Delete first, which is why it needs get/patch on VolumeSnapshotContents (cluster-scoped objects:
a ClusterRole with only those two verbs). RBAC cannot name the contents (the snapshot controller names them):
an admission policy holds the patch to this node's contents and their deletionPolicy (components/admission.py).
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.rbac import v1 as rbac

from components import admission, kube_specs
from components.cloud import CloudBackend
from components.crds import VolumeSnapshotClass
from components.settings import Settings
from rules import retention
from rules.naming import Names

COMPONENT = "cometbft-snapshot"
# Leave the job time to clean up after a snapshot that never became ready.
READY_TIMEOUT_MARGIN_SECONDS = 300


class CometbftSnapshots(pulumi.ComponentResource):
    """Inputs: settings (PVC, driver, schedule, block retention). Outputs: `snapshot_class_name`,
    `cron_job_name`, `historical_cadence`."""

    def __init__(
        self, name: str, settings: Settings, backend: CloudBackend, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("svbackups:cometbft:CometbftSnapshots", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        labels = names.labels(COMPONENT)
        sa_name = names.resource(COMPONENT)
        child = pulumi.ResourceOptions(parent=self)

        class_name = names.resource("cometbft")
        VolumeSnapshotClass(
            names.resource("cometbft", "snapshot-class"),
            metadata=meta.ObjectMetaArgs(name=class_name, labels=labels),
            driver=settings.cometbft.driver or backend.default_snapshot_driver,
            deletion_policy="Retain",
            parameters=backend.snapshot_class_parameters(),
            opts=child,
        )
        # Where the cloud keeps snapshots in the primary region only (EBS), the job copies each one out.
        copies = backend.snapshot_copies(sa_name, parent=self)
        service_account = core.ServiceAccount(
            names.resource(COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name,
                namespace=namespace,
                labels=labels,
                annotations=copies.service_account_annotations if copies else None,
            ),
            opts=child,
        )
        role = rbac.Role(
            names.resource(COMPONENT, "role"),
            metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
            rules=[
                rbac.PolicyRuleArgs(
                    api_groups=["snapshot.storage.k8s.io"],
                    resources=["volumesnapshots"],
                    verbs=["get", "list", "create", "delete"],
                ),
                rbac.PolicyRuleArgs(
                    api_groups=[""],
                    resources=["persistentvolumeclaims"],
                    resource_names=[settings.cometbft.pvc],
                    verbs=["get"],
                ),
            ],
            opts=child,
        )
        rbac.RoleBinding(
            names.resource(COMPONENT, "rolebinding"),
            metadata=meta.ObjectMetaArgs(name=sa_name, namespace=namespace, labels=labels),
            role_ref=rbac.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=role.metadata.name),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=sa_name, namespace=namespace)],
            opts=child,
        )
        cluster_role = rbac.ClusterRole(
            names.resource(COMPONENT, "contents"),
            metadata=meta.ObjectMetaArgs(name=names.cluster_scoped(namespace, COMPONENT, "contents"), labels=labels),
            rules=[
                rbac.PolicyRuleArgs(
                    api_groups=["snapshot.storage.k8s.io"], resources=["volumesnapshotcontents"], verbs=["get", "patch"]
                )
            ],
            opts=child,
        )
        rbac.ClusterRoleBinding(
            names.resource(COMPONENT, "contents-binding"),
            metadata=meta.ObjectMetaArgs(name=names.cluster_scoped(namespace, COMPONENT, "contents"), labels=labels),
            role_ref=rbac.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_role.metadata.name
            ),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=sa_name, namespace=namespace)],
            opts=child,
        )
        # RBAC cannot select contents by label or by a name unknown in advance: admission holds the patch to
        # the contents of this node's snapshots of this class, and to their deletionPolicy.
        admission.content_patch_policy(
            names, COMPONENT, namespace, sa_name, snapshot_classes=[class_name], labels=labels, parent=self
        )

        derived = settings.derived
        ready_timeout = max(60, int(derived.timing["cometbft"].deadline.total_seconds()) - READY_TIMEOUT_MARGIN_SECONDS)
        args = [
            "snapshot-cometbft",
            "--namespace",
            namespace,
            "--pvc",
            settings.cometbft.pvc,
            "--class",
            class_name,
            "--migration-id",
            str(settings.node.migration_id),
            "--keep-recent",
            retention.format_duration(settings.retention.recent),
            "--retain-blocks",
            str(settings.retention.cometbft_retain_blocks),
            "--blocks-per-hour",
            f"{settings.retention.cometbft_blocks_per_hour:g}",
            "--ready-timeout",
            f"{ready_timeout}s",
            *(copies.job_args if copies else ()),
        ]
        # The pod name labels the snapshot as its set id, as for the Postgres sets.
        container = kube_specs.job_container("snapshot", settings.job_image, args, env=[kube_specs.pod_name_env()])
        batch.CronJob(
            names.resource(COMPONENT),
            metadata=meta.ObjectMetaArgs(
                name=names.resource(COMPONENT),
                namespace=namespace,
                labels=kube_specs.cron_job_labels(labels, standby=settings.standby),
            ),
            spec=kube_specs.cron_job_spec(
                schedule=settings.schedule.cometbft,
                timing=derived.timing["cometbft"],
                labels=labels,
                service_account=service_account.metadata.name,
                containers=[container],
                automount_token=True,
                suspend=settings.standby,
            ),
            opts=child,
        )
        self.snapshot_class_name = class_name
        self.cron_job_name = names.resource(COMPONENT)
        self.historical_cadence = retention.format_duration(derived.cometbft_historical_cadence)
        self.register_outputs(
            {"snapshotClass": class_name, "cronJob": self.cron_job_name, "historicalCadence": self.historical_cadence}
        )
