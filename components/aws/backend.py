"""The AWS (EKS) implementation of `components.cloud.CloudBackend`.

What survives what:
- backup sets: an S3 bucket in aws:region, replicated to a bucket in dr.region (its own key, its own Object
  Lock), so losing the primary region loses no set; Object Lock keeps every version for the recent window
  even from the account root;
- identities dumps: a Secrets Manager secret with a replica in dr.region, each under its own regional key;
- RDS automated backups: replicated to dr.region under a DR key;
- CometBFT EBS snapshots: regional, so the snapshot job copies each one to dr.region under a DR key;
- Postgres snapshot sets (sv-backups:snapshots): EBS snapshots copied to dr.region and locked for the recent
  window, RDS snapshots copied to dr.region; only their pruner can delete them (components/aws/snapshots.py).
Every key is a customer-managed KMS key with 90-day rotation, protected from `pulumi destroy`.

Regional resources name their region (`region=`, pulumi-aws 7's per-resource region) instead of going through
a second provider: one provider and one set of credentials, and the plan shows where each resource lives.
The job roles are IAM roles for service accounts (IRSA); the policy documents are in `policies.py`.
"""

from __future__ import annotations

import functools
from typing import cast

import pulumi
from pulumi_aws import iam, secretsmanager

from components.aws import alerts, policies, rds, s3, snapshots
from components.aws.context import AwsContext
from components.cloud import (
    AlertSpec,
    BackupStore,
    PostgresEndpoint,
    SecretSlot,
    SnapshotCopies,
    SnapshotJobAccess,
    WorkloadIdentity,
)
from components.settings import RdsPostgres, Settings
from rules.naming import Names

# A DeleteSecret of the identities secret can be undone for 30 days, the longest Secrets Manager allows.
SECRET_RECOVERY_DAYS = 30
ROLE_SESSION_SECONDS = 3600
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


class AwsBackend:
    name = "aws"
    default_snapshot_driver = "ebs.csi.aws.com"

    def __init__(self, settings: Settings):
        region = settings.aws.region
        # What the parts (s3, rds, alerts) read; the keys are declared through it (AwsContext.key).
        self.context = AwsContext(
            settings=settings,
            # Role and resource names carry `-dr` on a DR stack; paths and tags stay the node's, so the primary's
            # bucket policy (which matches the node's job path) holds the DR stack's job roles too.
            names=Names(settings.name_prefix),
            node=settings.node.name,
            region=region,
            dr_region=settings.dr.region,
            partition=policies.partition(region),
            cluster=settings.aws.irsa,
        )
        self._store: s3.S3Store | None = None
        self._secret: secretsmanager.Secret | None = None

    # --- cluster ----------------------------------------------------------------------------------------
    @functools.cached_property
    def oidc_issuer(self) -> pulumi.Output[str]:
        """The cluster's OIDC issuer without https://, as IRSA condition keys spell it."""
        if self.context.cluster.oidc_provider:
            return pulumi.Output.from_input(self.context.cluster.oidc_provider)
        # Looked up only when not pinned in the config (the EKS SDK module costs start-up time).
        from pulumi_aws import eks

        cluster = eks.get_cluster_output(name=self.context.cluster.cluster_name, region=self.context.region)
        return cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer.removeprefix("https://"))

    # --- snapshots --------------------------------------------------------------------------------------
    def drill_volume_parameters(self) -> dict[str, str]:
        # gp3 (3000 IOPS baseline whatever the size), encrypted like every disk holding the node's data.
        return {"type": "gp3", "encrypted": "true"}

    def snapshot_class_parameters(self, purpose: str = "cometbft") -> dict[str, str]:
        # The EBS CSI driver tags each snapshot: the jobs may lock, copy and delete only snapshots with this tag.
        return {
            "tagSpecification_1": f"{policies.NODE_TAG}={self.context.node}",
            "tagSpecification_2": f"svbackups-purpose={purpose}",
        }

    def snapshot_copies(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotCopies | None:
        if self.context.dr_region is None:
            # A DR stack's snapshots stay in its own region: the primary region may be the one that is gone.
            return None
        identity = self.workload_identity("cometbft-snapshot", k8s_service_account, parent=parent)
        dr_key = self.context.key(self.context.dr_region, "ebs", parent)
        iam.RolePolicy(
            self.context.names.resource("cometbft-snapshot", "copier"),
            role=self._role(identity).name,
            policy=pulumi.Output.all(self.context.account, dr_key.arn).apply(
                lambda args: policies.to_json(
                    policies.snapshot_copier(
                        self.context.partition,
                        args[0],
                        self.context.node,
                        self.context.region,
                        self.context.dr_region,
                        args[1],
                    )
                )
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )
        # The job implements exactly these two flags (docs/contracts.md section 2).
        return SnapshotCopies(
            job_args=["--copy-to-region", self.context.dr_region, "--copy-kms-key", dr_key.arn],
            service_account_annotations=identity.service_account_annotations,
        )

    # --- object storage ---------------------------------------------------------------------------------
    def backup_store(self, *, parent: pulumi.Resource) -> BackupStore:
        self._store = s3.declare_store(self.context, parent=parent)
        return self._store.store

    def allow_object_writes(self, store: BackupStore, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        prefix = self.context.settings.storage.prefix
        if self._store is not None and store is self._store.store:
            arns = pulumi.Output.all(self._store.bucket.arn, self._store.key.arn)
        else:
            # Another stack's bucket (a DR stack's writers after failover): its key is bound by S3 and the
            # bucket's encryption context instead of by ARN (policies.object_writer).
            arns = pulumi.Output.all(
                store.name.apply(lambda bucket: f"arn:{self.context.partition}:s3:::{bucket}"), "*"
            )
        iam.RolePolicy(
            self.context.names.resource("backups", "object-writer"),
            role=self._role(identity).name,
            policy=arns.apply(
                lambda arns: policies.to_json(policies.object_writer(arns[0], prefix, arns[1], self.context.region))
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    # --- identities -------------------------------------------------------------------------------------
    def allow_people_to_act_as(self, identity: WorkloadIdentity, *, parent: pulumi.Resource) -> None:
        """Nothing: the IRSA role trusts one ServiceAccount only; people restore as sv-backups:aws.restoreRoleArns."""

    def workload_identity(self, purpose: str, k8s_service_account: str, *, parent: pulumi.Resource) -> WorkloadIdentity:
        """An IAM role that tokens of exactly one ServiceAccount of the node's namespace may assume (IRSA)."""
        namespace = self.context.settings.node.namespace
        role = iam.Role(
            self.context.names.resource(purpose, "role"),
            name=self.context.names.resource(purpose),
            path=policies.jobs_path(self.context.node),
            description=f"sv-backups {self.context.node} {purpose}: {namespace}/{k8s_service_account} (IRSA)",
            assume_role_policy=pulumi.Output.all(self.context.account, self.oidc_issuer).apply(
                lambda args: policies.to_json(
                    policies.irsa_trust(
                        policies.oidc_provider_arn(self.context.partition, args[0], args[1]),
                        args[1],
                        namespace,
                        k8s_service_account,
                    )
                )
            ),
            max_session_duration=ROLE_SESSION_SECONDS,
            tags=self.context.tags(purpose),
            opts=pulumi.ResourceOptions(parent=parent),
        )
        return WorkloadIdentity(member=role.arn, service_account_annotations={IRSA_ANNOTATION: role.arn}, resource=role)

    @staticmethod
    def _role(identity: WorkloadIdentity) -> iam.Role:
        return cast(iam.Role, identity.resource)

    def allow_object_reads(
        self, store: BackupStore, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        prefix = self.context.settings.storage.prefix
        iam.RolePolicy(
            self.context.names.resource("backups", "reader", label),
            role=self._role(identity).name,
            policy=store.name.apply(
                lambda bucket: policies.to_json(
                    policies.object_reader(f"arn:{self.context.partition}:s3:::{bucket}", prefix)
                )
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def allow_secret_reads(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, label: str, parent: pulumi.Resource
    ) -> None:
        iam.RolePolicy(
            self.context.names.resource("identities-dump", "reader", label),
            role=self._role(identity).name,
            policy=pulumi.Output.from_input(secret.id).apply(lambda arn: policies.to_json(policies.secret_reader(arn))),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def identities_secret(self, *, parent: pulumi.Resource) -> SecretSlot:
        key = self.context.key(self.context.region, "secrets", parent)
        dr_key = self.context.key(self.context.dr_region, "secrets", parent)
        secret = secretsmanager.Secret(
            self.context.names.resource("identities-dump"),
            name=self.context.names.identities_secret(),
            description=f"sv-backups {self.context.node}: node identities dumps (one version per distinct dump)",
            kms_key_id=key.arn,
            replicas=[secretsmanager.SecretReplicaArgs(region=self.context.dr_region, kms_key_id=dr_key.arn)],
            force_overwrite_replica_secret=False,
            recovery_window_in_days=SECRET_RECOVERY_DAYS,
            region=self.context.region,
            tags=self.context.tags("identities"),
            # Deleting the secret deletes every stored identities dump: the node's keys.
            opts=pulumi.ResourceOptions(parent=parent, protect=True),
        )
        # Who deploys keeps managing the secret (its policy, tags, replicas), whatever role that is.
        deployer = iam.get_session_context_output(arn=self.context.caller.arn).issuer_arn
        # The operator's break-glass roles, the restore role of this node's DR stack (named by convention) and,
        # where the identities drill reads the newest version back (components/drill.py), this stack's own
        # restore role: IAM lets each of them read only (policy dr-restore-read-only).
        readers = [Names(f"{self.context.node}-dr").resource("restore")]
        if self.context.settings.drill.enabled:
            readers.append(Names(self.context.node).resource("restore"))
        restore_roles = self.context.account.apply(
            lambda account: [
                policies.dr_restore_role_arn(self.context.partition, account, self.context.node, r) for r in readers
            ]
        )
        secretsmanager.SecretPolicy(
            self.context.names.resource("identities-dump", "policy"),
            secret_arn=secret.arn,
            policy=pulumi.Output.all(deployer, restore_roles).apply(
                lambda args: policies.to_json(
                    policies.secret_resource_policy([*self.context.cluster.restore_role_arns, *args[1]], [args[0]])
                )
            ),
            block_public_policy=True,
            region=self.context.region,
            # Removing it from the program must not open the secret up.
            opts=pulumi.ResourceOptions(parent=secret, retain_on_delete=True),
        )
        self._secret = secret
        return SecretSlot(
            id=secret.arn,
            url=pulumi.Output.concat("awssm://", self.context.region, "/", secret.name),
            resource=secret,
            # The replica has its own ARN and endpoint: the DR side reads it there.
            dr_id=secret.arn.apply(lambda arn: policies.in_region(arn, self.context.dr_region)),
            dr_url=pulumi.Output.concat("awssm://", self.context.dr_region, "/", secret.name),
        )

    def allow_secret_version_adds(
        self, secret: SecretSlot, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> None:
        if self._secret is None or secret.resource is not self._secret:
            # Another stack's secret: a DR stack writes to the primary's replica in its region once failover
            # promoted it (docs/runbook.md); its key is bound by Secrets Manager and the secret's ARN.
            iam.RolePolicy(
                self.context.names.resource("identities-dump", "version-adder"),
                role=self._role(identity).name,
                policy=pulumi.Output.from_input(secret.id).apply(
                    lambda arn: policies.to_json(
                        policies.secret_writer(
                            {self.context.region: arn}, {self.context.region: "*"}, self.context.region
                        )
                    )
                ),
                opts=pulumi.ResourceOptions(parent=parent),
            )
            return
        regions = (self.context.region, self.context.dr_region)
        # The secret's own keys, declared with it (identities_secret): key() returns them, it declares nothing.
        keys = [self.context.key(region, "secrets", parent).arn for region in regions]
        iam.RolePolicy(
            self.context.names.resource("identities-dump", "version-adder"),
            role=self._role(identity).name,
            policy=pulumi.Output.all(secret.id, *keys).apply(
                lambda arns: policies.to_json(
                    policies.secret_writer(
                        {region: policies.in_region(arns[0], region) for region in regions},
                        dict(zip(regions, arns[1:], strict=True)),
                        self.context.region,
                    )
                )
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    # --- managed Postgres and alerts: their own modules ----------------------------------------------
    def managed_postgres(
        self, role: str, instance: RdsPostgres, identity: WorkloadIdentity, *, parent: pulumi.Resource
    ) -> PostgresEndpoint:
        return rds.adopt_instance(self.context, role, instance, parent=parent)

    def snapshot_creator(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotJobAccess:
        identity = self.workload_identity(snapshots.CREATOR_PURPOSE, k8s_service_account, parent=parent)
        return snapshots.snapshot_creator(self.context, identity, parent=parent)

    def snapshot_pruner(self, k8s_service_account: str, *, parent: pulumi.Resource) -> SnapshotJobAccess:
        identity = self.workload_identity(snapshots.PRUNER_PURPOSE, k8s_service_account, parent=parent)
        return snapshots.snapshot_pruner(self.context, identity, parent=parent)

    def backup_alerts(self, specs: list[AlertSpec], *, parent: pulumi.Resource) -> list[pulumi.Resource]:
        return alerts.declare_alerts(self.context, specs, parent=parent)
