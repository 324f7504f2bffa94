"""drill-cometbft against the fake Kubernetes API (PVC binding from a snapshot, pod phases): the newest ready
snapshot is restored into a PVC, a hardened probe pod mounts it read-only, and both are deleted in every case,
including a snapshot that never binds and a probe that finds no CometBFT data."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import timedelta

import pytest

from jobs.cometbft import MIGRATION_ID_LABEL, SET_ID_LABEL, TAKEN_AT_LABEL
from jobs.drill_cometbft import Options, parse_selector, run
from rules.naming import MANAGED_BY
from tests.jobs.conftest import REPO, job_env
from tests.jobs.fakes.kube import FakeKubeApi

PVC = "global-domain-1-cometbft-cometbft-data"
SELECTOR = {MIGRATION_ID_LABEL: "1"}


def labels(taken_at: int, migration: int = 1) -> dict[str, str]:
    return {SET_ID_LABEL: f"s{taken_at}", MIGRATION_ID_LABEL: str(migration), TAKEN_AT_LABEL: str(taken_at),
            **MANAGED_BY}


@pytest.fixture
def api():
    with FakeKubeApi() as fake:
        fake.add_snapshot("sv", "old", pvc=PVC, labels=labels(1_700_000_000))
        fake.add_snapshot("sv", "newest", pvc=PVC, labels=labels(1_700_100_000))
        fake.add_snapshot("sv", "newer-not-ready", pvc=PVC, labels=labels(1_700_200_000), ready=False)
        fake.add_snapshot("sv", "other-migration", pvc=PVC, labels=labels(1_700_300_000, migration=2))
        fake.add_snapshot("sv", "not-ours", pvc=PVC, labels={MIGRATION_ID_LABEL: "1", TAKEN_AT_LABEL: "1800000000"})
        yield fake


def drill(api: FakeKubeApi, timeout: float = 5) -> tuple[int, list[dict]]:
    out = io.StringIO()
    code = run(Options(namespace="sv", selector=SELECTOR, storage_class="premium-rwo", probe_image="busybox:1.36",
                       timeout=timedelta(seconds=timeout), kube_api=api.url, poll_interval=0.01,
                       kube_retry_wait=0.01), stream=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def created(api: FakeKubeApi, plural: str) -> dict:
    (body,) = [b for p, b in api.created if p == plural]
    return body


def test_the_newest_ready_snapshot_binds_mounts_and_is_cleaned_up(api):
    code, lines = drill(api)
    assert code == 0, lines
    done = lines[-1]
    assert done["event"] == "backup.completed" and done["kind"] == "drill-cometbft"
    assert done["snapshot"] == "newest" and done["restore_size"] == "2000Gi" and done["cleaned_up"] is True
    assert "blockstore.db state.db" in done["probe"]
    claim = created(api, "persistentvolumeclaims")
    assert claim["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                           "name": "newest"}
    assert claim["spec"]["resources"]["requests"]["storage"] == "2000Gi"
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    assert api.names("persistentvolumeclaims", "sv") == [] and api.names("pods", "sv") == []


def test_the_probe_pod_is_hardened_and_mounts_read_only(api):
    drill(api)
    pod = created(api, "pods")["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["volumeMounts"] == [{"name": "restored", "mountPath": "/cometbft", "readOnly": True}]
    assert container["image"] == "busybox:1.36"


def test_a_snapshot_that_never_binds_fails_and_is_cleaned_up(api):
    api.pvc_mode = "pending"
    code, lines = drill(api, timeout=0.5)
    failed = lines[-1]
    assert code == 1 and failed["event"] == "backup.failed" and failed["stage"] == "bind"
    assert "not Bound after" in failed["error"] and failed["pvc_phase"] == "Pending"
    assert failed["cleaned_up"] is True
    assert api.names("persistentvolumeclaims", "sv") == [] and api.names("pods", "sv") == []


def test_a_volume_without_cometbft_data_fails_and_is_cleaned_up(api):
    api.pod_mode = "failed"
    api.pod_message = "no CometBFT data directory (blockstore.db and state.db) at /cometbft or /cometbft/data"
    code, lines = drill(api)
    failed = lines[-1]
    assert code == 1 and failed["stage"] == "probe" and "no CometBFT data directory" in failed["error"]
    assert "(exit 3)" in failed["error"]
    assert api.names("persistentvolumeclaims", "sv") == [] and api.names("pods", "sv") == []


def test_a_pod_that_cannot_be_created_still_removes_the_pvc(api):
    api.forbid("POST", "/api/v1/namespaces/sv/pods")
    code, lines = drill(api)
    assert code == 1 and lines[-1]["stage"] == "create" and "Forbidden" in lines[-1]["error"]
    assert api.names("persistentvolumeclaims", "sv") == []


def test_a_failed_cleanup_fails_the_drill(api):
    api.forbid("DELETE", "/api/v1/namespaces/sv/persistentvolumeclaims")
    code, lines = drill(api)
    assert code == 1 and lines[-1]["stage"] == "cleanup" and lines[-1]["cleaned_up"] is False
    assert "could not be deleted" in lines[-1]["error"]


def test_no_matching_snapshot_fails_clearly(api):
    out = io.StringIO()
    code = run(Options(namespace="sv", selector={MIGRATION_ID_LABEL: "9"}, storage_class="x", probe_image="y",
                       kube_api=api.url, poll_interval=0.01), stream=out)
    failed = json.loads(out.getvalue().splitlines()[-1])
    assert code == 1 and failed["stage"] == "list" and "no ready VolumeSnapshot in sv matches" in failed["error"]
    assert not api.created


def test_selector_parsing():
    assert parse_selector("a=b, sv-backups.canton.network/migration-id=3") == {
        "a": "b", "sv-backups.canton.network/migration-id": "3"}
    for bad in ("", "a", "a!=b", "a=b=c"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_selector(bad)


@pytest.mark.slow
def test_as_the_cronjob_runs_it(api):
    proc = subprocess.run([sys.executable, "-m", "jobs", "drill-cometbft", "--namespace", "sv", "--selector",
                           f"{MIGRATION_ID_LABEL}=1", "--storage-class", "premium-rwo", "--probe-image", "busybox",
                           "--timeout", "30s", "--kube-api", api.url, "--poll-interval", "0.05", "--json"],
                          cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *_, event, result = [json.loads(line) for line in proc.stdout.splitlines()]
    assert event["event"] == "backup.completed" and result["ok"] is True and result["snapshot"] == "newest"
    assert api.names("persistentvolumeclaims", "sv") == [] and api.names("pods", "sv") == []
