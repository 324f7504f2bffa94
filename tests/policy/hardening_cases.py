"""Ways of breaking the rules every workload of the program is held to (policy/kubernetes_rules.py:
backup-pod-hardened, workload-component-known, no-password-env), on both clouds: (rule, stack, mutation, text the
message must contain). test_rules.py runs the GCP ones, test_aws_rules.py the AWS ones; each breaks its rule only.

The pods broken here are the ones the backup-only rule of old let through: the history audit (a check), a drill
pod (which starts a PostgreSQL server and reads backups and secrets), a CronJob without a component label."""

from __future__ import annotations

import copy

from policy.props import COMPONENT_LABEL, pod_spec

from . import helpers as h
from .drill_cases import drill_pod

CRON_JOB = "kubernetes:batch/v1:CronJob"
JOB = "kubernetes:batch/v1:Job"
POD = "kubernetes:core/v1:Pod"


def component_job(plan: dict, component: str) -> dict:
    return h.one(plan, CRON_JOB, lambda r: r["inputs"]["metadata"]["labels"].get(COMPONENT_LABEL) == component)


def _audit_runs_as_root(plan):
    """The history audit's container: runAsNonRoot false, runAsUser 0 (the issue's case)."""
    (container,) = pod_spec(component_job(plan, "history-audit")["inputs"])["containers"]
    container["securityContext"].update(runAsNonRoot=False, runAsUser=0)


def _drill_escalates(plan):
    (container,) = drill_pod(plan, "drill-postgres")["containers"]
    container["securityContext"]["allowPrivilegeEscalation"] = True


def _unlabelled_copy(component: str, resource_type: str = CRON_JOB, label: str | None = None):
    """A copy of a hardened workload of the stack, without labels (or labelled as component `label`): only its
    label is wrong (as a CronJob, or as the Job or bare Pod it would make)."""

    def mutate(plan):
        job = copy.deepcopy(component_job(plan, component))
        inputs = job["inputs"]
        inputs["metadata"]["name"] += "-extra"
        inputs["metadata"].pop("labels")
        if label is not None:
            inputs["metadata"]["labels"] = {COMPONENT_LABEL: label}
        if resource_type == JOB:
            inputs = {"metadata": inputs["metadata"], "spec": inputs["spec"]["jobTemplate"]["spec"]}
        elif resource_type == POD:
            inputs = {"metadata": inputs["metadata"], "spec": pod_spec(inputs)}
        h.add(plan, resource_type, job["name"] + "-extra", inputs)

    return mutate


def _password_env(kind: str, name: str):
    """A backup step given its password the old way: PGPASSWORD from the instance's Secret."""

    def mutate(plan):
        h.container(plan, kind, name)["env"].append(
            {
                "name": "PGPASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "apps-pg-secret", "key": "postgresPassword"}},
            }
        )

    return mutate


def _literal_password(plan):
    h.container(plan, "postgres", "apps")["env"].append({"name": "DB_PASSWORD", "value": "hunter2"})


def _secret_env_from(plan):
    (container,) = drill_pod(plan, "drill-identities")["containers"]
    container["envFrom"] = [{"secretRef": {"name": "participant-pg-secret"}}]


def _unlabelled_root_pod(plan):
    """A bare Pod, hardened but for runAsNonRoot, and with its label: only backup-pod-hardened."""
    job = component_job(plan, "history-audit")["inputs"]
    spec = copy.deepcopy(pod_spec(job))
    spec["securityContext"].pop("runAsNonRoot")
    for container in spec["containers"]:
        container["securityContext"].pop("runAsNonRoot")
    metadata = {**copy.deepcopy(job["metadata"]), "name": "sv-1-probe"}
    h.add(plan, POD, "sv-1-probe", {"metadata": metadata, "spec": spec})


HARDENING_CASES = [
    # backup-pod-hardened: every pod, not only the backups'
    ("backup-pod-hardened", "dev", _audit_runs_as_root, "runAsNonRoot is not true"),
    ("backup-pod-hardened", "prod", _audit_runs_as_root, "runAsUser is 0 (root)"),
    ("backup-pod-hardened", "aws-prod", _audit_runs_as_root, "CronJob 'sv-1-history-audit' (history check)"),
    ("backup-pod-hardened", "prod", _drill_escalates, "allowPrivilegeEscalation is not false"),
    ("backup-pod-hardened", "aws-dev", _drill_escalates, "(postgres restore drill)"),
    ("backup-pod-hardened", "prod-ch", _unlabelled_root_pod, "Pod 'sv-1-probe' (history check)"),
    # workload-component-known: an unlabelled workload fails a rule instead of escaping all of them
    ("workload-component-known", "dev", _unlabelled_copy("history-audit"), "has no app.kubernetes.io/component"),
    ("workload-component-known", "aws-dev", _unlabelled_copy("identities-dump"), "has no app.kubernetes.io/comp"),
    ("workload-component-known", "prod", _unlabelled_copy("history-audit", JOB), "Job 'sv-1-history-audit-extra'"),
    ("workload-component-known", "aws-prod", _unlabelled_copy("drill-postgres", POD), "Pod 'sv-1-drill-postgres"),
    (
        "workload-component-known",
        "prod",
        _unlabelled_copy("history-audit", label="history-audit-v2"),
        "carries app.kubernetes.io/component='history-audit-v2'",
    ),
    # no-password-env
    ("no-password-env", "dev", _password_env("postgres", "apps"), "sets env PGPASSWORD from Secret 'apps-pg-secret'"),
    ("no-password-env", "aws-prod", _password_env("postgres", "participant"), "sets env PGPASSWORD"),
    ("no-password-env", "prod", _secret_env_from, "every key of Secret 'participant-pg-secret'"),
    ("no-password-env", "prod-ch", _literal_password, "sets env DB_PASSWORD to a literal value"),
    ("no-password-env", "aws-dev", _secret_env_from, "(envFrom), passwords included"),
]
