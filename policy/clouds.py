"""What a stack rule that every stack must pass, whatever its cloud, needs to know about one cloud.

Backup alerts and the resources that hold the backups are cloud resources (a Cloud Monitoring AlertPolicy, a
CloudWatch MetricAlarm; a GCS or an S3 bucket). Each cloud describes them once in a `Cloud` profile
(`stack_rules.GCP`, `aws_stack_rules.AWS`), `catalog.py` lists the profiles, and the cloud-neutral rules
(`coverage_rules.py`) ask the profiles of the clouds a stack is on: no rule tests a cloud's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .props import CRON_JOB, UNKNOWN, backup_kind, containers, flag_values, pod_spec
from .rule import StackResource

# The job flags whose URLs name where backups go (docs/contracts.md): their schemes tell the cloud.
_URL_FLAGS = ("--dest", "--secret")


@dataclass(frozen=True)
class BackupAlert:
    """One backup alert as a cloud declares it.

    `kind` and `alert` are its svbackups-kind / svbackups-alert labels (or tags); `defects` are the reasons it
    would never fire (each a full message: resource, what, Fix), and an alert with defects does not count;
    `notifies` is False when nobody is told when it fires, None when that is only known after deployment."""

    resource: StackResource
    kind: Any
    alert: Any
    defects: list[str] = field(default_factory=list)
    notifies: bool | None = True


@dataclass(frozen=True)
class Cloud:
    name: str
    # Resource type packages of this cloud ("gcp" in gcp:storage/bucket:Bucket).
    packages: tuple[str, ...]
    # Schemes of the job URLs that write to this cloud (gs://, gcpsm://).
    url_schemes: tuple[str, ...]
    # The stack's backup alerts (those labelled with a backup kind).
    alerts: Callable[[list[StackResource]], list[BackupAlert]]
    # (kind, alert type, what nobody would be told about) -> the message for an alert that is missing.
    missing_alert: Callable[[str, str, str], str]
    # The message for an alert that notifies nobody.
    silent_alert: Callable[[BackupAlert], str]
    # One message per backup resource of this cloud the stack lacks (store, identities secret).
    missing_backups: Callable[[list[StackResource]], list[str]]
    # The backup stores that carry the windows the program sized them from, with those labels (or tags).
    stores: Callable[[list[StackResource]], list[tuple[StackResource, dict]]]
    # (store, label) -> the message for a store that lacks a window label.
    missing_store_label: Callable[[StackResource, str], str]


def job_url_schemes(resources: Sequence[StackResource]) -> set[str]:
    """Schemes of the URLs the backup CronJobs write to (`--dest s3://...`, `--secret gcpsm://...`)."""
    schemes = set()
    for resource in resources:
        if resource.type != CRON_JOB or backup_kind(resource.props) is None:
            continue
        for _kind, container in containers(pod_spec(resource.props)):
            for flag in _URL_FLAGS:
                for url in flag_values(container, flag):
                    if url is not UNKNOWN and isinstance(url, str) and "://" in url:
                        schemes.add(urlparse(url).scheme)
    return schemes


def clouds_of(resources: Sequence[StackResource], clouds: Sequence[Cloud]) -> list[Cloud]:
    """The clouds a stack is on: those with a resource in the stack or a job URL of theirs. A stack on none
    (every cloud resource removed) is held to every cloud's profile, so that it cannot pass by being empty."""
    packages = {r.type.split(":", 1)[0] for r in resources}
    schemes = job_url_schemes(resources)
    found = [c for c in clouds if packages & set(c.packages) or schemes & set(c.url_schemes)]
    return found or list(clouds)
