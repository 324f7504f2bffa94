"""The checkov checks a CronJob of ours does not meet on purpose, each with its reason, written on the CronJob itself
as checkov's skip annotations (`checkov.io/skipN: CKV_K8S_38=<reason>`), so that a reviewer and the scanner read
the exception next to the object. tests/program/test_checkov.py runs a pinned checkov over every shipped stack's
manifests and fails on any finding that is not skipped here.

A skip is written only where its condition holds on the object itself: the token skip only on a pod that mounts
one, the digest skips only on a container image without a digest; anything else the scanner finds is a failure.
Applied by a Pulumi transformation on the program's root component (components/program.py), so every CronJob any
component declares gets its skips without each component carrying scanner knowledge.
"""

from __future__ import annotations

from typing import Any

import pulumi

from rules.naming import COMPONENT_LABEL

CRON_JOB = "kubernetes:batch/v1:CronJob"
ANNOTATION = "checkov.io/skip{}"

# CKV_K8S_38 (a service-account token is mounted): the components that call the Kubernetes API, and what for.
TOKEN_REASONS = {
    "cometbft-snapshot": "creates, lists and prunes VolumeSnapshots and flips their contents' deletionPolicy through "
    "the Kubernetes API (RBAC: components/cometbft.py; contents bounded by admission: components/admission.py)",
    "postgres-snapshot": "creates and watches VolumeSnapshots of the Postgres volumes through the Kubernetes API "
    "(RBAC: components/pg_snapshots.py)",
    "postgres-snapshot-prune": "deletes expired VolumeSnapshots and flips their contents' deletionPolicy through the "
    "Kubernetes API (contents bounded by admission: components/admission.py)",
    "drill-cometbft": "restores the newest CometBFT snapshot into a claim and probe pod it creates through the "
    "Kubernetes API (pods and claims bounded by admission: components/admission.py)",
    "identities-dump": "records the last stored dump's fingerprint in its one ConfigMap through the Kubernetes API "
    "(RBAC: get/patch on that ConfigMap by name, components/identities.py)",
    "drill-postgres-snapshots": "restores the newest snapshot set into scratch claims under pods it creates through "
    "the Kubernetes API (pods only as the restore identity, claims only from the sets' snapshots: components/"
    "admission.py)",
}
# CKV_K8S_35 (a Secret read into an env var): the Postgres password of a password login, until it is mounted as a
# passfile (issue 21 item 4); only where the pod really has a secretKeyRef env var.
PASSWORD_ENV_REASON = (
    "PGPASSWORD from the node's Postgres Secret for a password login (never in args or logs); to become a mounted "
    "passfile (issue 21 item 4)"
)
# CKV_K8S_43 (image not pinned by digest) and CKV_K8S_15 (pull policy not Always): a stack whose
# `sv-backups:jobImage` is a tag (the dev examples); every production example pins a digest, and then neither
# check fires and no skip is written.
TAG_REASONS = {
    "CKV_K8S_43": "sv-backups:jobImage of this stack is a tag, not a digest (a dev stack; production stacks pin "
    "the digest the release workflow prints)",
    "CKV_K8S_15": "the image is a tag on a dev stack and IfNotPresent is the kubelet default; production stacks pin "
    "a digest, which never needs a pull",
}


def _field(value: Any, name: str) -> Any:
    """`name` (snake_case) of an input type (ObjectMetaArgs...) or of a dict written in either case; None if unset."""
    if value is None:
        return None
    if isinstance(value, dict):
        head, *rest = name.split("_")
        return value.get(head + "".join(part.title() for part in rest), value.get(name))
    try:
        return pulumi.get(value, name)
    except (AttributeError, KeyError, TypeError):
        return None


def _path(value: Any, *names: str) -> Any:
    for name in names:
        value = _field(value, name)
    return value


def _pod(spec: Any) -> dict[str, Any]:
    """The facts `skips` reads from a CronJob spec, as a camelCase dict."""
    pod = _path(spec, "job_template", "spec", "template", "spec")

    def container(c: Any) -> dict[str, Any]:
        env = [
            {"valueFrom": {"secretKeyRef": _path(e, "value_from", "secret_key_ref")}} for e in _field(c, "env") or []
        ]
        return {"image": _field(c, "image"), "env": env}

    return {
        "automountServiceAccountToken": _field(pod, "automount_service_account_token"),
        "initContainers": [container(c) for c in _field(pod, "init_containers") or []],
        "containers": [container(c) for c in _field(pod, "containers") or []],
    }


def skips(component: str | None, pod: dict[str, Any]) -> list[tuple[str, str]]:
    """(check id, reason) for a CronJob of `component` whose pod template spec is `pod` (camelCase, plain)."""
    found = []
    if pod.get("automountServiceAccountToken") is True and component in TOKEN_REASONS:
        found.append(("CKV_K8S_38", TOKEN_REASONS[component]))
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    if any(
        isinstance(env, dict) and ((env.get("valueFrom") or {}).get("secretKeyRef"))
        for container in containers
        for env in container.get("env") or []
    ):
        found.append(("CKV_K8S_35", PASSWORD_ENV_REASON))
    images = [c.get("image") for c in containers]
    if any(isinstance(image, str) and "@sha256:" not in image for image in images):
        found += sorted(TAG_REASONS.items(), reverse=True)
    return found


def annotations(component: str | None, pod: dict[str, Any]) -> dict[str, str]:
    return {ANNOTATION.format(i): f"{check}={reason}" for i, (check, reason) in enumerate(skips(component, pod), 1)}


def transformation(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Adds the skip annotations to every CronJob the program declares (see the module docstring)."""
    if args.type_ != CRON_JOB:
        return None
    metadata = args.props.get("metadata")
    labels = _field(metadata, "labels") or {}
    extra = annotations(labels.get(COMPONENT_LABEL) if isinstance(labels, dict) else None, _pod(args.props.get("spec")))
    if not extra or metadata is None:
        return None
    existing = _field(metadata, "annotations") or {}
    if isinstance(metadata, dict):
        metadata = {**metadata, "annotations": {**existing, **extra}}
    else:
        pulumi.set(metadata, "annotations", {**existing, **extra})
    return pulumi.ResourceTransformationResult(props={**args.props, "metadata": metadata}, opts=args.opts)
