"""Node identities dumps: fetched from the SV app, validated, stored outside the cluster in a secret manager.

The writer identity can only add secret versions (it cannot read, disable or destroy them). The OAuth client
secret reaches the pod as a Kubernetes Secret mounted as a file; in Pulumi state it is encrypted (a secret
Output), and it never appears in args or environment variables.
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.rbac import v1 as rbac

from components import kube_specs
from components.cloud import CloudBackend, SecretSlot
from components.settings import Settings
from rules.naming import Names

COMPONENT = "identities-dump"
OAUTH_MOUNT = "/var/run/secrets/sv-backups/oauth"
CLIENT_SECRET_KEY = "clientSecret"


class IdentityBackups(pulumi.ComponentResource):
    """Inputs: settings (identities endpoint and OAuth client, schedule), optionally an existing `slot` to
    write to. Outputs: `secret_id` (the secret holding the dumps, one version per distinct dump),
    `secret_url`, `cron_job_name`."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        backend: CloudBackend,
        opts: pulumi.ResourceOptions | None = None,
        *,
        slot: SecretSlot | None = None,
    ):
        super().__init__("svbackups:identities:IdentityBackups", name, None, opts)
        names = Names(settings.name_prefix)
        namespace = settings.node.namespace
        labels = names.labels(COMPONENT)
        sa_name = names.resource(COMPONENT)
        child = pulumi.ResourceOptions(parent=self)

        # A DR stack writes to the primary's secret (its DR-region replica) instead of declaring one.
        slot = slot or backend.identities_secret(parent=self)
        identity = backend.workload_identity("identities", sa_name, parent=self)
        backend.allow_secret_version_adds(slot, identity, parent=self)

        service_account = core.ServiceAccount(
            names.resource(COMPONENT, "sa"),
            metadata=meta.ObjectMetaArgs(
                name=sa_name, namespace=namespace, labels=labels, annotations=identity.service_account_annotations
            ),
            opts=child,
        )
        oauth = core.Secret(
            names.resource(COMPONENT, "oauth"),
            metadata=meta.ObjectMetaArgs(name=names.resource(COMPONENT, "oauth"), namespace=namespace, labels=labels),
            type="Opaque",
            # Secret even when the operator wrote it in clear in the stack file.
            string_data={CLIENT_SECRET_KEY: pulumi.Output.secret(settings.identities.client_secret.get_secret_value())},
            opts=child,
        )
        # The job remembers the sha256 of the last stored dump here, so an unchanged dump adds no version
        # (Secret Manager bills per active version; a version every 4 hours would grow without bound).
        fingerprint_name = names.resource(COMPONENT, "fingerprint")
        core.ConfigMap(
            names.resource(COMPONENT, "fingerprint"),
            metadata=meta.ObjectMetaArgs(name=fingerprint_name, namespace=namespace, labels=labels),
            data={},
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["data"]),
        )
        role = rbac.Role(
            names.resource(COMPONENT, "role"),
            metadata=meta.ObjectMetaArgs(name=names.resource(COMPONENT), namespace=namespace, labels=labels),
            rules=[
                rbac.PolicyRuleArgs(
                    api_groups=[""], resources=["configmaps"], resource_names=[fingerprint_name], verbs=["get", "patch"]
                )
            ],
            opts=child,
        )
        rbac.RoleBinding(
            names.resource(COMPONENT, "rolebinding"),
            metadata=meta.ObjectMetaArgs(name=names.resource(COMPONENT), namespace=namespace, labels=labels),
            role_ref=rbac.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=role.metadata.name),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=sa_name, namespace=namespace)],
            opts=child,
        )

        cfg = settings.identities
        args = [
            "dump-identities",
            "--endpoint",
            cfg.endpoint,
            "--token-endpoint",
            cfg.token_endpoint,
            "--audience",
            cfg.audience,
            "--client-id",
            cfg.client_id,
            "--client-secret-file",
            f"{OAUTH_MOUNT}/{CLIENT_SECRET_KEY}",
            "--secret",
            slot.url,
            "--fingerprint-configmap",
            fingerprint_name,
            "--namespace",
            namespace,
        ]
        container = kube_specs.job_container(
            "dump-identities",
            settings.job_image,
            args,
            extra_mounts=[core.VolumeMountArgs(name="oauth", mount_path=OAUTH_MOUNT, read_only=True)],
        )
        batch.CronJob(
            names.resource(COMPONENT),
            metadata=meta.ObjectMetaArgs(
                name=names.resource(COMPONENT),
                namespace=namespace,
                labels=kube_specs.cron_job_labels(labels, standby=settings.standby),
            ),
            spec=kube_specs.cron_job_spec(
                schedule=settings.schedule.identities,
                timing=settings.derived.timing["identities"],
                labels=labels,
                service_account=service_account.metadata.name,
                containers=[container],
                extra_volumes=[
                    core.VolumeArgs(
                        name="oauth",
                        secret=core.SecretVolumeSourceArgs(secret_name=oauth.metadata.name, default_mode=0o400),
                    )
                ],
                automount_token=True,
                suspend=settings.standby,
            ),
            opts=child,
        )
        self.slot = slot
        self.secret_id = slot.id
        self.secret_url = slot.url
        # The DR region's copy: the same secret where its replicas share one name (Secret Manager).
        self.dr_secret_id = slot.dr_id if slot.dr_id is not None else slot.id
        self.dr_secret_url = slot.dr_url if slot.dr_url is not None else slot.url
        self.cron_job_name = names.resource(COMPONENT)
        self.register_outputs({"secretId": slot.id, "secretUrl": slot.url, "cronJob": self.cron_job_name})
