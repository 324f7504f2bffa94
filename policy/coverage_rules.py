"""Stack rules every stack must pass whatever its cloud: every backup exists, and each kind has its alerts.

The cloud-neutral part (the three backup CronJobs, the VolumeSnapshotClass; on a DABFT stack, recognised by the
canton-bft step of its Postgres CronJob, no CometBFT CronJob or class) is checked here; the cloud part
(the backup store, the identities secret, the alert resources) comes from the `Cloud` profiles of the clouds
the stack is on (`clouds.py`), so that no rule passes because its subject vanished or lost its label.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulumi_policy import ReportViolation, Severity, StackValidationArgs, StackValidationPolicy

from .clouds import Cloud, clouds_of
from .drill_rules import volume_snapshot_sets
from .props import (
    BACKUP_COMPONENTS,
    COMPONENT_LABEL,
    CRON_JOB,
    DRILL_COMPONENTS,
    SNAPSHOT_CLASS,
    SNAPSHOT_KINDS,
    backup_kind,
    drill_component,
    drill_kind,
    is_dr_stack,
    required_backup_kinds,
    standby,
)
from .rule import ADVISORY, StackResource, stack_rule

ALERT_TYPES = ("stale", "failed")


def _what(alert_type: str) -> str:
    return "no completed backup for longer than the schedule allows" if alert_type == "stale" else "a failed backup run"


def alerted_kinds(resources: list[StackResource]) -> tuple[str, ...]:
    """The kinds that must have alerts: every backup kind, but a DR stack's standby backups (they are suspended
    on purpose until failover: alerting on them would page every day), on a DR stack the replica check, and every
    restore drill the stack declares (`drill-postgres`...: a drill nobody hears about proves nothing). A DABFT
    stack has no cometbft backup (`required_backup_kinds`)."""
    waiting = {backup_kind(r.props) for r in resources if r.type == CRON_JOB and standby(r.props)}
    # Snapshot sets and their pruner are optional (sv-backups:snapshots); where declared, they are watched too.
    declared = {backup_kind(r.props) for r in resources if r.type == CRON_JOB}
    optional = [k for k in SNAPSHOT_KINDS if k in declared]
    kinds = tuple(k for k in (*required_backup_kinds(resources), *optional) if k not in waiting)
    drills = sorted({drill_component(r.props) for r in resources if r.type == CRON_JOB} - {None})
    return (*kinds, *(["replica"] if is_dr_stack(resources) else []), *drills)


def policies(clouds: Sequence[Cloud]) -> list[StackValidationPolicy]:
    """The rules, over the given cloud profiles (catalog.py passes every cloud's)."""

    def check_alerts(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
        for cloud in clouds_of(resources, clouds):
            present = set()
            for alert in cloud.alerts(resources):
                for defect in alert.defects:
                    report(defect, alert.resource.urn)
                if not alert.defects:
                    present.add((alert.kind, alert.alert))
            for kind in alerted_kinds(resources):
                for alert_type in ALERT_TYPES:
                    if (kind, alert_type) not in present:
                        report(cloud.missing_alert(kind, alert_type, _what(alert_type)))

    def check_channels(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
        for cloud in clouds_of(resources, clouds):
            for alert in cloud.alerts(resources):
                if alert.notifies is False:
                    report(cloud.silent_alert(alert), alert.resource.urn)

    def check_coverage(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
        kinds = {backup_kind(r.props) for r in resources if r.type == CRON_JOB}
        required = required_backup_kinds(resources)
        for component, kind in BACKUP_COMPONENTS.items():
            if kind not in kinds and kind in required:
                report(
                    f"No CronJob labelled {COMPONENT_LABEL}={component}: the {kind} backup never runs (or the "
                    f"policies cannot recognise it). Fix: declare it with its component (components/) and keep "
                    f"the label."
                )
        # A DR stack's store and secret are the primary's (read through its StackReference): not declared here.
        for cloud in [] if is_dr_stack(resources) else clouds_of(resources, clouds):
            for message in cloud.missing_backups(resources):
                report(message)
        # A DABFT stack has no CometBFT node: its ordering state is the Postgres set's canton-bft step.
        if "cometbft" in required and not any(r.type == SNAPSHOT_CLASS for r in resources):
            report(
                "No VolumeSnapshotClass: CometBFT snapshots have no class with deletionPolicy Retain. Fix: declare "
                "it with components/cometbft.py."
            )

    def check_drills(resources: list[StackResource], _args: StackValidationArgs, report: ReportViolation) -> None:
        # A DR stack's copy is proven by the replica check against the primary's drilled store (components/drill.py).
        if is_dr_stack(resources):
            return
        drilled = {drill_kind(r.props) for r in resources if r.type == CRON_JOB}
        required = (
            *required_backup_kinds(resources),
            *(["postgres-snapshots"] if volume_snapshot_sets(resources) else []),
        )
        for component, kind in DRILL_COMPONENTS.items():
            if kind not in drilled and kind in required:
                report(
                    f"No CronJob labelled {COMPONENT_LABEL}={component}: nothing restores the {kind} backups on a "
                    f"schedule, so a backup that cannot be restored goes unnoticed until the day it is needed. Fix: "
                    f"keep sv-backups:drill.enabled true (components/drill.py), or disable this rule for the stack in "
                    f"its policy config with the reason."
                )

    return [
        stack_rule(
            "alerts-per-backup-kind",
            "Every backup kind (postgres, cometbft, identities), a DR stack's replica check and every restore drill "
            "has an enabled stale alert and failed alert.",
            check=check_alerts,
            severity=Severity.HIGH,
            remediation="Declare the alerts with components/monitoring.py BackupAlerts.",
        ),
        stack_rule(
            "backup-coverage",
            "The stack declares every backup: the three CronJobs, the labelled backup bucket, the identities "
            "secret, the snapshot class.",
            check=check_coverage,
            severity=Severity.CRITICAL,
            remediation="Declare the stack with components/program.py SvBackups.",
        ),
        stack_rule(
            "restore-drill-coverage",
            "Every primary stack restores the newest backup of each kind on a schedule: a drill CronJob per backup "
            "kind (drill-postgres, drill-cometbft, drill-identities; drill-postgres-snapshots where snapshot sets "
            "take VolumeSnapshots).",
            check=check_drills,
            severity=Severity.HIGH,
            remediation="Keep sv-backups:drill.enabled true; components/drill.py declares the drills.",
        ),
        stack_rule(
            "alert-notification-channels",
            "Every alert the program declares (backup kinds, checks, drills, the DR copy and dual-region "
            "replication) notifies someone: the one rule for silent alerts, advisory by default and mandatory on "
            "production stacks (their policy/config/<stack>.json).",
            check=check_channels,
            # A plain enforcement level, raised per stack by its policy config (or the production default): a
            # dev stack may watch its alerts in the console, a production stack may not.
            level=ADVISORY,
            severity=Severity.MEDIUM,
            remediation="Set sv-backups:monitoring.notificationChannels or notificationEmails.",
        ),
    ]
