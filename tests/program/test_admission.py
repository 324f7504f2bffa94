"""The ValidatingAdmissionPolicies (components/admission.py), taken from the shipped stacks' offline plans, their
CEL evaluated for real against allowed and forbidden objects.

The evaluator is cel-python (`celpy`) 0.5.0, pinned with its whole closure in tests/pinned/cel-python.txt and
installed by tests/pinned_venvs.py into a venv of its own under the temp directory (it is not a dependency of the
program or the jobs, and its dependencies, pendulum and google-re2 among them, have no place in the project's
venv). It implements the CEL spec, not Kubernetes' CEL environment: there is no schema type-checking and none of
Kubernetes' extension libraries, so the expressions keep to standard CEL (has(), all(), in, startsWith, ==) that
both evaluate alike; a kube-apiserver cannot run here (no binary on the reachable registries). Each forbidden
object must make its expression *false*, not an evaluation error, so that no denial rests on an error.

The objects the drill really creates come from jobs/drill_cometbft.py (pod_body, pvc_body), as the API server
stores them after defaulting; the contents are shaped as the external-snapshotter writes them and validated
against the CRD schema (tests/schemas).
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from components.admission import snapshot_prefix
from jobs.cometbft import snapshot_name
from jobs.drill_cometbft import pod_body, pvc_body
from policy.admission_rules import CLUSTER_ROLE, ROLE
from tests.pinned_venvs import CEL_PYTHON

VAP = "ValidatingAdmissionPolicy"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
EVALUATOR = Path(__file__).resolve().parents[1] / "cel_eval.py"
NAMESPACE = "sv"
DRILL_USER = "system:serviceaccount:sv:sv-1-drill-cometbft"
STACKS = ("prod", "aws-prod")


@pytest.fixture(scope="module")
def cel() -> Callable[[list[tuple[str, dict]]], list]:
    python = CEL_PYTHON.python()

    def evaluate(cases: list[tuple[str, dict]]) -> list:
        payload = json.dumps([{"expression": e, "activation": a} for e, a in cases])
        done = subprocess.run(
            [str(python), str(EVALUATOR)], input=payload, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return evaluate


def _policy(plan, suffix: str) -> dict:
    found = [m for m in plan.manifests.values() if m["kind"] == VAP and m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [m["metadata"]["name"] for m in plan.manifests.values() if m["kind"] == VAP]
    return found[0]


def _outcomes(cel, policy: dict, objects: list[dict], old: list[dict] | None = None) -> list[dict[str, object]]:
    """Per object: validation message -> true/false/{"error"}."""
    validations = policy["spec"]["validations"]
    cases = []
    for i, obj in enumerate(objects):
        activation = {"object": obj, **({"oldObject": old[i]} if old else {})}
        cases += [(v["expression"], activation) for v in validations]
    results = cel(cases)
    n = len(validations)
    return [{v["message"]: results[i * n + j] for j, v in enumerate(validations)} for i in range(len(objects))]


# --- the drill's pods ----------------------------------------------------------------------------------------


def _stored(pod: dict) -> dict:
    """The pod as admission sees it after the API server's defaulting (ServiceAccount admission included)."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    not_ready = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
    spec.update(serviceAccountName="default", serviceAccount="default", dnsPolicy="ClusterFirst",
                schedulerName="default-scheduler", terminationGracePeriodSeconds=30)  # fmt: skip
    spec["tolerations"] = [not_ready]
    for container in spec["containers"]:
        container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    return pod


def _drill_pod(plan) -> dict:
    return _stored(pod_body("drill-sv-1-cometbft-1-12345", NAMESPACE, "drill-sv-1-cometbft-1-12345",
                            plan.outputs["jobImage"], 10001))  # fmt: skip


def _edit(change: Callable[[dict], None]) -> Callable[[dict], dict]:
    def make(pod: dict) -> dict:
        pod = copy.deepcopy(pod)
        change(pod)
        return pod

    return make


def _spec(**values):
    return _edit(lambda pod: pod["spec"].update(values))


def _container(**values):
    return _edit(lambda pod: pod["spec"]["containers"][0].update(values))


def _security(**values):
    return _edit(lambda pod: pod["spec"]["containers"][0]["securityContext"].update(values))


def _volume(volume: dict, mount: bool = True):
    def change(pod):
        pod["spec"]["volumes"].append(volume)
        if mount:
            pod["spec"]["containers"][0]["volumeMounts"].append({"name": volume["name"], "mountPath": "/x"})

    return _edit(change)


SECRET_ENV = {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sv-postgres", "key": "password"}}}
# (what it tries, the validation message prefix that must deny it)
FORBIDDEN_PODS = [
    ("another image", _container(image="busybox:latest"), "every container must run the pinned job image"),
    ("an init container of another image", _spec(initContainers=[{"name": "x", "image": "alpine"}]),
     "every container must run the pinned job image"),
    ("a Secret volume", _volume({"name": "keys", "secret": {"secretName": "sv-node-keys"}}), "volumes:"),
    ("a projected token", _volume({"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}),
     "volumes:"),
    ("a hostPath", _volume({"name": "h", "hostPath": {"path": "/"}}), "volumes:"),
    ("a ConfigMap", _volume({"name": "c", "configMap": {"name": "kube-root-ca.crt"}}), "volumes:"),
    ("another claim", _volume({"name": "db", "persistentVolumeClaim": {"claimName": "sv-postgres-data"}}),
     "volumes:"),
    ("a CSI inline volume", _volume({"name": "s", "csi": {"driver": "secrets-store.csi.k8s.io"}}), "volumes:"),
    ("a Secret through env", _container(env=[SECRET_ENV]), "no env var may be read"),
    ("a Secret through envFrom", _container(envFrom=[{"secretRef": {"name": "sv-postgres"}}]),
     "no env var may be read"),
    ("a token", _spec(automountServiceAccountToken=True), "spec.automountServiceAccountToken"),
    ("no word on the token", _edit(lambda p: p["spec"].pop("automountServiceAccountToken")),
     "spec.automountServiceAccountToken"),
    ("another ServiceAccount", _spec(serviceAccountName="sv-1-postgres-backup", serviceAccount="sv-1-postgres-backup"),
     "spec.serviceAccountName"),
    ("the host network", _spec(hostNetwork=True), "no imagePullSecrets, hostNetwork"),
    ("the host PID namespace", _spec(hostPID=True), "no imagePullSecrets, hostNetwork"),
    ("a pull secret", _spec(imagePullSecrets=[{"name": "regcred"}]), "no imagePullSecrets, hostNetwork"),
    ("root", _edit(lambda p: p["spec"]["securityContext"].update(runAsNonRoot=False, runAsUser=0)),
     "spec.securityContext"),
    ("no seccomp", _edit(lambda p: p["spec"]["securityContext"].pop("seccompProfile")), "spec.securityContext"),
    ("privileged", _security(privileged=True), "every container:"),
    ("privilege escalation", _security(allowPrivilegeEscalation=True), "every container:"),
    ("a writable root", _security(readOnlyRootFilesystem=False), "every container:"),
    ("a capability", _security(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}), "every container:"),
    ("capabilities kept", _security(capabilities={"drop": ["NET_RAW"]}), "every container:"),
    ("a root container", _security(runAsUser=0), "every container:"),
    ("no securityContext", _edit(lambda p: p["spec"]["containers"][0].pop("securityContext")), "every container:"),
]  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_the_drills_own_pod_passes_every_validation(shipped_plan, cel, stack):
    plan = shipped_plan(stack)
    [outcome] = _outcomes(cel, _policy(plan, "-drill-cometbft-pods"), [_drill_pod(plan)])
    assert all(value is True for value in outcome.values()), outcome


def test_every_forbidden_pod_is_denied_by_its_validation_and_no_other_errs(shipped_plan, cel):
    plan = shipped_plan("prod")
    allowed = _drill_pod(plan)
    pods = [make(allowed) for _, make, _ in FORBIDDEN_PODS]
    outcomes = _outcomes(cel, _policy(plan, "-drill-cometbft-pods"), pods)
    for (what, _, denied_by), outcome in zip(FORBIDDEN_PODS, outcomes, strict=True):
        denying = [message for message, value in outcome.items() if value is False]
        errors = {message: value for message, value in outcome.items() if isinstance(value, dict)}
        assert not errors, f"{what}: {errors}"
        assert any(m.startswith(denied_by) for m in denying), f"{what}: denied by {denying} only"


def test_a_claim_named_as_another_pod_is_denied(shipped_plan, cel):
    """The one claim a pod may mount is named as the pod itself: a pod named after an existing claim is not
    `drill-...` (every drill name is), and a drill-named pod cannot name another claim."""
    plan = shipped_plan("prod")
    pod = _drill_pod(plan)
    other = copy.deepcopy(pod)
    other["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "drill-someone-elses"
    renamed = copy.deepcopy(pod)
    renamed["metadata"]["name"] = renamed["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "data-sv-0"
    for outcome in _outcomes(cel, _policy(plan, "-drill-cometbft-pods"), [other, renamed]):
        assert [m for m, v in outcome.items() if v is not True] == [
            next(m for m in outcome if m.startswith("volumes:"))
        ]


# --- the drill's claims ----------------------------------------------------------------------------------------


def _drill_claim(plan) -> dict:
    snapshot_args = _args(plan, "cometbft-snapshot")
    name = snapshot_name(snapshot_args[snapshot_args.index("--pvc") + 1], 1700000000)
    snapshot = {"metadata": {"name": name}, "status": {"restoreSize": "100Gi"}}
    args = _args(plan, "drill-cometbft")
    claim = pvc_body("drill-sv-1-cometbft-1-12345", NAMESPACE, snapshot, args[args.index("--storage-class") + 1])
    # The API server mirrors dataSource into dataSourceRef and defaults the volume mode.
    claim["spec"]["dataSourceRef"] = dict(claim["spec"]["dataSource"])
    claim["spec"]["volumeMode"] = "Filesystem"
    return claim


def _args(plan, suffix: str) -> list[str]:
    [job] = [m for m in plan.manifests.values() if m["kind"] == "CronJob" and m["metadata"]["name"].endswith(suffix)]
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]


def _claim(change: Callable[[dict], None]) -> Callable[[dict], dict]:
    return _edit(change)


PVC_CLONE = {"kind": "PersistentVolumeClaim", "name": "sv-postgres-data"}
FORBIDDEN_CLAIMS = [
    ("another class", _claim(lambda c: c["spec"].update(storageClassName="standard")), "spec.storageClassName"),
    ("a clone of the database's disk",
     _claim(lambda c: c["spec"].update(dataSource=PVC_CLONE, dataSourceRef=PVC_CLONE)), "the claim must be restored"),
    ("an empty disk", _claim(lambda c: [c["spec"].pop("dataSource"), c["spec"].pop("dataSourceRef")]),
     "the claim must be restored"),
    ("a Postgres volume's snapshot", _claim(lambda c: [c["spec"][k].update(name="sv-1-postgres-data-1700000000")
                                                   for k in ("dataSource", "dataSourceRef")]),
     "the claim must be restored from a CometBFT snapshot"),
    ("an existing volume", _claim(lambda c: c["spec"].update(volumeName="pvc-0123")), "spec.volumeName"),
    ("another name", _claim(lambda c: c["metadata"].update(name="data-sv-0")), "the claim's name"),
]  # fmt: skip


def test_the_drills_claims_are_held_to_its_shape(shipped_plan, cel):
    plan = shipped_plan("prod")
    policy = _policy(plan, "-drill-cometbft-claims")
    allowed = _drill_claim(plan)
    claims = [allowed, *(make(allowed) for _, make, _ in FORBIDDEN_CLAIMS)]
    first, *rest = _outcomes(cel, policy, claims)
    assert all(value is True for value in first.values()), first
    for (what, _, denied_by), outcome in zip(FORBIDDEN_CLAIMS, rest, strict=True):
        assert not [v for v in outcome.values() if isinstance(v, dict)], f"{what}: {outcome}"
        assert any(m.startswith(denied_by) for m, v in outcome.items() if v is False), f"{what}: {outcome}"


@pytest.mark.parametrize("pvc", ["cometbft-data", "c" * 242, "c" * 243, "d" * 253])
def test_the_snapshot_prefix_is_what_the_snapshot_job_names_its_snapshots(pvc):
    assert snapshot_name(pvc, 1700000000).startswith(snapshot_prefix(pvc))
    assert not snapshot_name(pvc + "x", 1700000000).startswith(snapshot_prefix(pvc)) or len(pvc) >= 242


# --- the pruners' patches of VolumeSnapshotContents --------------------------------------------------------------


def _content(snapshot_class: str, namespace: str = NAMESPACE) -> dict:
    content = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {
            "name": "snapcontent-0b7e6b3c-6d2f-4b1e-9d55-0c4f7d1e2a11",
            "finalizers": ["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"],
            "annotations": {"snapshot.storage.kubernetes.io/deletion-secret-name": ""},
        },
        "spec": {
            "deletionPolicy": "Retain",
            "driver": "pd.csi.storage.gke.io",
            "source": {"volumeHandle": "projects/p/zones/us-central1-a/disks/pvc-1"},
            "sourceVolumeMode": "Filesystem",
            "volumeSnapshotClassName": snapshot_class,
            "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                  "name": "sv-1-cometbft-1700000000", "namespace": namespace, "uid": "u-1"},
        },
    }  # fmt: skip
    jsonschema.validate(content, json.loads((SCHEMAS / "volumesnapshotcontent.v1.json").read_text()))
    return content


def _flip(content: dict, **spec) -> dict:
    new = copy.deepcopy(content)
    new["spec"].update(deletionPolicy="Delete", **spec)
    return new


@pytest.mark.parametrize(("stack", "suffix", "output"), [
    ("prod", "-cometbft-snapshot-contents", "snapshotClass"),
    ("aws-prod", "-postgres-snapshot-prune-contents", "snapshotSets"),
])  # fmt: skip
def test_a_pruner_may_flip_only_its_own_contents_deletion_policy(shipped_plan, cel, stack, suffix, output):
    plan = shipped_plan(stack)
    policy = _policy(plan, suffix)
    ours = plan.outputs[output] if output == "snapshotClass" else plan.outputs[output]["snapshotClass"]
    mine = _content(ours)
    other_ns, other_class = _content(ours, namespace="kube-system"), _content("someone-elses")
    no_class = copy.deepcopy(mine)
    del no_class["spec"]["volumeSnapshotClassName"]
    pairs = {
        "the flip": (mine, _flip(mine)),
        "another namespace's content": (other_ns, _flip(other_ns)),
        "another class's content": (other_class, _flip(other_class)),
        "a content without a class": (no_class, _flip(no_class)),
        "a new source": (mine, _flip(mine, source={"snapshotHandle": "projects/p/global/snapshots/other"})),
        "a rebinding": (mine, _flip(mine, volumeSnapshotRef={**mine["spec"]["volumeSnapshotRef"], "name": "x"})),
        "a finalizer dropped": (mine, {**_flip(mine), "metadata": {**mine["metadata"], "finalizers": []}}),
        "a label added": (mine, {**_flip(mine), "metadata": {**mine["metadata"], "labels": {"a": "b"}}}),
        "back to Retain": (_flip(mine), mine),
    }
    outcomes = _outcomes(cel, policy, [new for _, new in pairs.values()], [old for old, _ in pairs.values()])
    results = dict(zip(pairs, outcomes, strict=True))
    assert all(v is True for v in results.pop("the flip").values())
    for what, outcome in results.items():
        assert not [v for v in outcome.values() if isinstance(v, dict)], f"{what}: {outcome}"
        assert False in outcome.values(), f"{what} was allowed"


# --- who the policies apply to -----------------------------------------------------------------------------------


def test_the_policies_match_only_their_own_service_accounts_requests(shipped_plan, cel):
    plan = shipped_plan("prod")
    policy = _policy(plan, "-drill-cometbft-pods")
    [condition] = policy["spec"]["matchConditions"]
    users = [DRILL_USER, "system:serviceaccount:sv:sv-1-postgres-backup", "system:serviceaccount:kube-system:x",
             "system:serviceaccount:other:sv-1-drill-cometbft", "admin@example.com"]  # fmt: skip
    results = cel([(condition["expression"], {"request": {"userInfo": {"username": u}}}) for u in users])
    assert results == [True, False, False, False, False]
    assert policy["spec"]["failurePolicy"] == "Fail"


def _subjects(plan, role: dict) -> set[str]:
    kind, name = role["kind"], role["metadata"]["name"]
    return {
        f"system:serviceaccount:{s['namespace']}:{s['name']}"
        for b in plan.manifests.values()
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding") and b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}
        for s in b["subjects"]
    }  # fmt: skip


@pytest.mark.parametrize("stack", ["prod", "aws-prod", "prod-dr", "dev"])
def test_every_role_that_creates_pods_or_patches_contents_is_bound_by_a_policy(shipped_plan, stack):
    """Found from the plan, not from a list: any Role or ClusterRole the program declares with create on pods or
    patch on VolumeSnapshotContents; each of its ServiceAccounts is named by a Deny-bound policy on that resource."""
    plan = shipped_plan(stack)
    manifests = list(plan.manifests.values())
    bound = {b["spec"]["policyName"] for b in manifests if b["kind"] == "ValidatingAdmissionPolicyBinding"
             if b["spec"]["validationActions"] == ["Deny"]}  # fmt: skip
    covered = {
        (rule_resource, user)
        for p in manifests
        if p["kind"] == VAP and p["metadata"]["name"] in bound
        for rule in p["spec"]["matchConstraints"]["resourceRules"]
        for rule_resource in rule["resources"]
        for condition in p["spec"]["matchConditions"]
        for user in [condition["expression"].split('"')[1]]
    }
    guarded = {"pods": {"create"}, "volumesnapshotcontents": {"patch", "update"}}
    seen = set()
    for role in manifests:
        if role["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in role.get("rules", []):
            for resource in set(rule["resources"]) & set(guarded):
                if set(rule["verbs"]) & guarded[resource]:
                    for user in _subjects(plan, role):
                        seen.add((resource, user))
                        assert (resource, user) in covered, f"{role['metadata']['name']}: {user} {resource}"
    assert seen  # every stack has a CometBFT or snapshot pruner, and primaries the drill
    assert ROLE.endswith(":Role") and CLUSTER_ROLE.endswith(":ClusterRole")


@pytest.mark.parametrize("version", ["1.31.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("stack", STACKS)
def test_the_admission_manifests_are_valid_kubernetes(shipped_plan, stack, version):
    """GA (admissionregistration.k8s.io/v1) since 1.30: valid on the oldest GKE/EKS minor we support and the newest."""
    policies = [m for m in shipped_plan(stack).manifests.values() if m["apiVersion"].startswith("admissionreg")]
    # Policy + binding each: the CometBFT drill's pods and claims, the snapshot-set drill's pods and claims, the
    # CometBFT snapshot job's and the Postgres snapshot pruner's contents.
    assert len(policies) == 2 * 6
    for manifest in policies:
        kubernetes_validate.validate(manifest, version, strict=True)


# --- the snapshot sets' drill (jobs/drill_snapshots.py): its pods run as the restore identity ---------------------


def _snapshots_drill_pods(plan) -> tuple[list[dict], str]:
    from jobs.drill_snapshots import Options, pick_pod_body
    from jobs.drill_snapshots import pod_body as scratch_pod_body

    args = _args(plan, "-drill-postgres-snapshots")
    reader = args[args.index("--service-account") + 1]
    options = Options(dest="gs://b/p", namespace=NAMESPACE, migration_id=0, databases={"apps": ["cantonnet_sv"]},
                      users={"apps": "cnadmin"}, image=plan.outputs["jobImage"], service_account=reader)  # fmt: skip
    pods = [
        scratch_pod_body("drill-snap-s1-12345", options, "s1", {"apps": "drill-snap-s1-12345-apps"}),
        pick_pod_body("drill-snap-pick-12345", options),
    ]
    # As admission sees them: the API server copies serviceAccountName into the deprecated serviceAccount.
    stored = [_stored(pod) for pod in pods]
    for pod in stored:
        pod["spec"].update(serviceAccountName=reader, serviceAccount=reader)
    return stored, reader


@pytest.mark.parametrize("stack", STACKS)
def test_the_snapshot_drills_pods_pass_and_others_are_denied(shipped_plan, cel, stack):
    plan = shipped_plan(stack)
    policy = _policy(plan, "-drill-postgres-snapshots-pods")
    pods, reader = _snapshots_drill_pods(plan)
    for outcome in _outcomes(cel, policy, pods):
        assert [m for m, value in outcome.items() if value is not True] == []
    as_writer = copy.deepcopy(pods[0])
    as_writer["spec"]["serviceAccountName"] = as_writer["spec"]["serviceAccount"] = "sv-1-postgres-backup"
    with_secret = copy.deepcopy(pods[0])
    with_secret["spec"]["volumes"].append({"name": "keys", "secret": {"secretName": "splice-app-sv-key"}})
    other_claim = copy.deepcopy(pods[0])
    other_claim["spec"]["volumes"].append({"name": "db", "persistentVolumeClaim": {"claimName": "data-apps-pg-0"}})
    denied = _outcomes(cel, policy, [as_writer, with_secret, other_claim])
    assert denied[0][f"spec.serviceAccountName must be {reader} (the restore identity)"] is False
    for outcome in denied[1:]:
        [message] = [m for m, value in outcome.items() if value is not True]
        assert message.startswith("volumes: only the drill's scratch claims")
