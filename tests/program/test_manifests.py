"""Every Kubernetes object the program declares, validated against the official schemas (strict) and CRD
objects against their CRD schema, for every shipped stack and the Kubernetes versions GKE and EKS run."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from engines.offline_plan import manifest_yaml
from tests.program.conftest import SHIPPED_STACKS

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
CRD_SCHEMAS = {
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): SCHEMAS / "volumesnapshotclass.v1.json",
}
# Oldest GKE and EKS minor still in standard support when written, and the newest schema the library ships.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())


def _validate(manifest: dict, version: str) -> None:
    key = (manifest["apiVersion"], manifest["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(manifest, json.loads(CRD_SCHEMAS[key].read_text()))
    else:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_manifests_are_valid(shipped_plan, stack, version):
    manifests = shipped_plan(stack).manifests
    kinds = sorted({m["kind"] for m in manifests.values()})
    # A primary stack's restore drills bring a StorageClass for their disks (components/drill.py).
    drills = ["StorageClass"] if shipped_plan(stack).outputs["role"] == "primary" else []
    # A DABFT node has no CometBFT node to snapshot: no VolumeSnapshotClass, nor the snapshot contents' ClusterRole.
    # The contents' patch is held by an admission policy (components/admission.py), as are the drill's pods.
    cometbft = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "VolumeSnapshotClass",
    ]
    snapshots = [] if shipped_plan(stack).outputs.get("synchronizer") == "dabft" else cometbft
    assert kinds == sorted(
        [
            "ConfigMap",
            "CronJob",
            "Role",
            "RoleBinding",
            "Secret",
            "ServiceAccount",
            *snapshots,
            *drills,
        ]
    )
    for name, manifest in manifests.items():
        try:
            _validate(manifest, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{stack} {name} is invalid for Kubernetes {version}: {error}")


def test_strict_validation_catches_a_typo(prod_plan):
    [cron] = [m for m in prod_plan.manifests.values() if m["kind"] == "CronJob"][:1]
    broken = json.loads(json.dumps(cron))
    broken["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_crd_schema_rejects_a_bad_snapshot_class(prod_plan):
    # prod declares two, CometBFT's and the Postgres snapshot sets': the schema holds for both.
    classes = [m for m in prod_plan.manifests.values() if m["kind"] == "VolumeSnapshotClass"]
    assert len(classes) == 2
    snapshot_class = classes[0]
    schema = json.loads(CRD_SCHEMAS[("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass")].read_text())
    for mutate in (
        lambda m: m.update(deletionPolicy="Keep"),
        lambda m: m.pop("driver"),
        lambda m: m.update(spec={"driver": "x"}),  # the Python CustomResource trap: fields under spec
        lambda m: m.update(parameters={"storage-locations": 1}),
    ):
        broken = json.loads(json.dumps(snapshot_class))
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_the_fast_yaml_emitter_writes_the_same_bytes_as_pyyamls_own(shipped_plan, stack):
    # The plan's manifests are written with libyaml's emitter when PyYAML has it (engines/offline_plan.py): a
    # machine without it must write the very same files.
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the plan falls back to the pure-Python emitter"
    for name, manifest in shipped_plan(stack).manifests.items():
        assert manifest_yaml(manifest) == manifest_yaml(manifest, dumper=yaml.SafeDumper), name
