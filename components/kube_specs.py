"""Pure builders of the Kubernetes specs the backup CronJobs share: hardened pods, bounded CronJobs.

These functions only build typed `*Args` objects (no resource is registered), so every backup concern gets
the same security posture and the same CronJob discipline from one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from rules.naming import STANDBY_LABEL

if TYPE_CHECKING:
    from components.settings import Timing

# The job image runs as this numeric, unprivileged user (jobs/Dockerfile: USER 65532, "nonroot").
JOB_UID = 65532
TMP_VOLUME = "tmp"
# A read-only root filesystem leaves nowhere for Python, libpq or pg_dump to put scratch files; a small
# emptyDir on /tmp is the only writable place. Dumps are streamed, so it never holds a backup.
TMP_SIZE_LIMIT = "256Mi"
HISTORY_LIMIT = 3
# One retry in a fresh pod (a fresh set id): a transient failure is retried, a persistent one alerts soon.
BACKOFF_LIMIT = 1


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def args(self) -> core.ResourceRequirementsArgs:
        return core.ResourceRequirementsArgs(
            requests={"cpu": self.cpu_request, "memory": self.memory_request, "ephemeral-storage": "64Mi"},
            limits={"cpu": self.cpu_limit, "memory": self.memory_limit, "ephemeral-storage": TMP_SIZE_LIMIT},
        )


# pg_dump plus compression is CPU-bound (DESIGN.md section 4): two cores make a dump ~3x faster than one.
DUMP_RESOURCES = Resources("1", "512Mi", "2", "2Gi")
LIGHT_RESOURCES = Resources("50m", "128Mi", "500m", "512Mi")


def container_security_context() -> core.SecurityContextArgs:
    return core.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=JOB_UID,
        run_as_group=JOB_UID,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        privileged=False,
        capabilities=core.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def pod_security_context() -> core.PodSecurityContextArgs:
    return core.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=JOB_UID,
        run_as_group=JOB_UID,
        fs_group=JOB_UID,
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def job_container(
    name: str,
    image: str,
    args: Sequence[pulumi.Input[str]],
    *,
    env: Sequence[core.EnvVarArgs] = (),
    resources: Resources = LIGHT_RESOURCES,
    extra_mounts: Sequence[core.VolumeMountArgs] = (),
) -> core.ContainerArgs:
    """A container of the job image running `python -m jobs <args>`, hardened, with /tmp writable."""
    return core.ContainerArgs(
        name=name,
        image=image,
        image_pull_policy="IfNotPresent",
        command=["python", "-m", "jobs"],
        args=list(args),
        env=[core.EnvVarArgs(name="PYTHONUNBUFFERED", value="1"), *env],
        resources=resources.args(),
        security_context=container_security_context(),
        volume_mounts=[core.VolumeMountArgs(name=TMP_VOLUME, mount_path="/tmp"), *extra_mounts],
    )


def cron_job_labels(labels: dict[str, str], *, standby: bool) -> dict[str, str]:
    """A backup CronJob's own labels: a standby one (DR stack before failover) says so."""
    return {**labels, STANDBY_LABEL: "true"} if standby else labels


def pod_name_env(name: str = "SET_ID") -> core.EnvVarArgs:
    """The pod's own name: unique per attempt and shared by all its containers (the set id hand-over)."""
    return core.EnvVarArgs(
        name=name, value_from=core.EnvVarSourceArgs(field_ref=core.ObjectFieldSelectorArgs(field_path="metadata.name"))
    )


def secret_env(name: str, secret: str, key: str) -> core.EnvVarArgs:
    """A non-password value from a Secret (policy no-password-env refuses a password this way: password_file)."""
    return core.EnvVarArgs(
        name=name,
        value_from=core.EnvVarSourceArgs(secret_key_ref=core.SecretKeySelectorArgs(name=secret, key=key)),
    )


# Where a container finds its database password (a read-only Secret file) and where the job writes the libpq
# passfile it builds from it (jobs/pgpass.py): a memory-backed emptyDir of its own, so the password never lands
# on the node's disk (the /tmp emptyDir does) and no other container of the pod sees it.
PASSWORD_MOUNT = "/etc/sv-backups/postgres"
PASSWORD_FILE = f"{PASSWORD_MOUNT}/password"
PASSFILE_DIR = "/run/sv-backups/pgpass"
PASSFILE_SIZE_LIMIT = "1Mi"
# 0400: only the owner reads it (with the pod's fsGroup the kubelet adds group read for the job's group).
SECRET_FILE_MODE = 0o400


@dataclass(frozen=True)
class PasswordFile:
    """A password Secret key mounted as a file for one container: its volumes (for the pod), its mounts and the
    job flags that name them (for the container)."""

    volumes: tuple[core.VolumeArgs, ...]
    mounts: tuple[core.VolumeMountArgs, ...]
    args: tuple[str, ...]


def password_file(container: str, secret: pulumi.Input[str], key: str) -> PasswordFile:
    """Key `key` of Secret `secret` as the file PASSWORD_FILE of container `container` (read-only, 0400), and a
    private memory-backed PASSFILE_DIR for the passfile; never an environment variable, an arg or a log line.
    Volume names carry the container's name: each step of a pod reads only its own server's password."""
    secret_volume, passfile_volume = f"{container}-password", f"{container}-pgpass"
    return PasswordFile(
        volumes=(
            core.VolumeArgs(
                name=secret_volume,
                secret=core.SecretVolumeSourceArgs(
                    secret_name=secret,
                    items=[core.KeyToPathArgs(key=key, path=PASSWORD_FILE.rsplit("/", 1)[1])],
                    default_mode=SECRET_FILE_MODE,
                ),
            ),
            core.VolumeArgs(
                name=passfile_volume,
                empty_dir=core.EmptyDirVolumeSourceArgs(medium="Memory", size_limit=PASSFILE_SIZE_LIMIT),
            ),
        ),
        mounts=(
            core.VolumeMountArgs(name=secret_volume, mount_path=PASSWORD_MOUNT, read_only=True),
            core.VolumeMountArgs(name=passfile_volume, mount_path=PASSFILE_DIR),
        ),
        args=("--password-file", PASSWORD_FILE, "--passfile-dir", PASSFILE_DIR),
    )


def cron_job_spec(
    *,
    schedule: str,
    timing: Timing,
    labels: dict[str, str],
    service_account: pulumi.Input[str],
    containers: Sequence[core.ContainerArgs],
    init_containers: Sequence[core.ContainerArgs] = (),
    extra_volumes: Sequence[core.VolumeArgs] = (),
    automount_token: bool = False,
    suspend: bool = False,
) -> batch.CronJobSpecArgs:
    """A CronJob that never overlaps itself: it starts at most `timing.start_window` late and runs at most
    `timing.deadline`, which together stay below the smallest gap between two runs (settings.schedule_timing);
    it retries once and keeps a short history."""
    deadline_seconds = int(timing.deadline.total_seconds())
    starting_deadline = int(timing.start_window.total_seconds())
    return batch.CronJobSpecArgs(
        schedule=schedule,
        # UTC: with daylight saving time a "4-hourly" schedule has a 5-hour gap once a year.
        time_zone="Etc/UTC",
        concurrency_policy="Forbid",
        # Only a DR stack's standby CronJobs are suspended (until failover); the field is left out otherwise.
        suspend=True if suspend else None,
        starting_deadline_seconds=starting_deadline,
        successful_jobs_history_limit=HISTORY_LIMIT,
        failed_jobs_history_limit=HISTORY_LIMIT,
        job_template=batch.JobTemplateSpecArgs(
            metadata=meta.ObjectMetaArgs(labels=labels),
            spec=batch.JobSpecArgs(
                backoff_limit=BACKOFF_LIMIT,
                active_deadline_seconds=deadline_seconds,
                template=core.PodTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(labels=labels),
                    spec=core.PodSpecArgs(
                        restart_policy="Never",
                        service_account_name=service_account,
                        automount_service_account_token=automount_token,
                        security_context=pod_security_context(),
                        init_containers=list(init_containers) or None,
                        containers=list(containers),
                        volumes=[
                            core.VolumeArgs(
                                name=TMP_VOLUME, empty_dir=core.EmptyDirVolumeSourceArgs(size_limit=TMP_SIZE_LIMIT)
                            ),
                            *extra_volumes,
                        ],
                    ),
                ),
            ),
        ),
    )
