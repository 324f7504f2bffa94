"""The read-only side of a stack: the restore identity and the CronJobs that run as it.

Every job that checks the backups rather than takes them (the history audit, a DR stack's replica check, the
restore drills) runs as one cloud identity that may list and read the sets and the identities secret, and may
neither write nor delete anything (policy `dr-restore-read-only` holds every `<node>-restore` identity to that).
A workload identity trusts exactly one Kubernetes ServiceAccount (an IRSA role's trust names one `:sub`), so the
identity and its ServiceAccount are declared once per stack, by the component that owns them (the audit on a
primary, DisasterRecovery on a DR stack), and the other read-only jobs run as the same ServiceAccount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from components import kube_specs
from components.cloud import CloudBackend, WorkloadIdentity
from rules.naming import Names
from rules.schedules import Timing

# The cloud identity's purpose: `<node>-restore` (GCP service account, IAM role); on a DR stack `<node>-dr-restore`.
READER_PURPOSE = "restore"


@dataclass(frozen=True)
class Reader:
    """The restore identity and the Kubernetes ServiceAccount its pods run as (no API token mounted)."""

    identity: WorkloadIdentity
    service_account: str


def declare_reader(
    names: Names, namespace: str, component: str, backend: CloudBackend, *, parent: pulumi.Resource
) -> Reader:
    """The restore identity and its ServiceAccount `<node>-<component>`, children of `parent`. The caller grants
    the reads (backend.allow_object_reads / allow_secret_reads); nothing here can write."""
    sa_name = names.resource(component)
    identity = backend.workload_identity(READER_PURPOSE, sa_name, parent=parent)
    backend.allow_people_to_act_as(identity, parent=parent)
    core.ServiceAccount(
        names.resource(component, "sa"),
        metadata=meta.ObjectMetaArgs(
            name=sa_name,
            namespace=namespace,
            labels=names.labels(component),
            annotations=identity.service_account_annotations,
        ),
        automount_service_account_token=False,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return Reader(identity=identity, service_account=sa_name)


def read_only_cron_job(
    names: Names,
    component: str,
    *,
    namespace: str,
    schedule: str,
    timing: Timing,
    service_account: pulumi.Input[str],
    containers: Sequence[core.ContainerArgs],
    extra_volumes: Sequence[core.VolumeArgs] = (),
    automount_token: bool = False,
    parent: pulumi.Resource,
) -> str:
    """The CronJob `<node>-<component>` (hardened pods, bounded runs: kube_specs.cron_job_spec), labelled with its
    component; returns its name. Never suspended: a check that stops running is what its stale alert is for."""
    name = names.resource(component)
    labels = names.labels(component)
    batch.CronJob(
        name,
        metadata=meta.ObjectMetaArgs(name=name, namespace=namespace, labels=labels),
        spec=kube_specs.cron_job_spec(
            schedule=schedule,
            timing=timing,
            labels=labels,
            service_account=service_account,
            containers=containers,
            extra_volumes=extra_volumes,
            automount_token=automount_token,
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return name
