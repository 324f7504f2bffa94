"""drill-snapshots against the fake Kubernetes API (real HTTP; PVCs bind from ready snapshots, pods start once
their claims are Bound): a set is taken through the real snapshot step and seal, then drilled. The scratch pod is
simulated by a kubelet that reports each container's exit and termination message as the probe would write it
(the probe itself runs against real PostgreSQL in test_drill_snapshots_pg.py). Every failure fails the drill with
its stage, and the scratch PVCs and pod are deleted in every case."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from jobs.destinations import open_destination
from jobs.drill_snapshots import (
    KIND,
    Options,
    PickError,
    SnapshotDrill,
    Terminated,
    pick_summary,
    pod_body,
    run,
)
from jobs.drill_snapshots_probe import parse_role_values
from jobs.kube import KubeClient, KubeConfig
from jobs.pgsnap import run_step, seal
from jobs.pgsnap_volume import KubeOptions, KubeVolumeSnapshotter, VolumeSnapshotProvider
from rules.naming import MANAGED_BY
from tests.jobs.conftest import job_env
from tests.jobs.fakes.kube import FakeKubeApi

NS = "sv"
CLASS = "sv-1-postgres-snapshot-class"
PVCS = {"apps": "data-apps-pg-0", "participant": "data-participant-pg-0"}
DATABASES = {"apps": ["cantonnet_sv"], "participant": ["participant_1"]}
USERS = {"apps": "cnadmin", "participant": "cnadmin"}
SA = "sv-1-history-audit"


def findings(ok: bool = True, stage: str | None = None, problems: list[str] | None = None, **roles) -> str:
    body = {
        "ok": ok,
        "problems": problems or [],
        "roles": roles
        or {
            "apps": {"started": True, "consistent": True, "databases": ["cantonnet_sv"], "ready_seconds": 3.1},
            "participant": {"started": True, "consistent": True, "databases": ["participant_1"], "ready_seconds": 4},
        },
        "ordering": {"checked": True, "holds": stage != "ordering", "problems": [], "detail": "offsets"},
    }
    if stage:
        body["stage"] = stage
    return json.dumps(body)


class Kubelet(FakeKubeApi):
    """The fake API with a kubelet that runs the scratch pod as `outcome(pod)` says: per init container and for
    the probe, (exit code, termination message)."""

    def __init__(self):
        super().__init__()
        self.outcome: Callable[[dict], dict[str, tuple[int, str]]] = lambda pod: {"probe": (0, findings())}
        self.seen_pods: list[dict] = []

    def _advance_pod(self, pod: dict) -> None:
        status = pod.setdefault("status", {"phase": "Pending"})
        if status.get("phase") in ("Succeeded", "Failed") or self.pod_mode == "pending":
            return
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
        ]
        ns = pod["metadata"]["namespace"]
        if not all(
            (self.objects.get(("persistentvolumeclaims", ns, c)) or {}).get("status", {}).get("phase") == "Bound"
            for c in claims
        ):
            return
        if status["phase"] == "Pending":
            status["phase"] = "Running"
            return
        self.seen_pods.append(pod)
        outcome = pick(pod) if pod["spec"]["containers"][0]["name"] == "pick" else self.outcome(pod)

        def terminated(name: str) -> dict:
            code, message = outcome.get(name, (0, ""))
            return {
                "name": name,
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "message": message,
                        "reason": "Completed" if code == 0 else "Error",
                    }
                },
            }

        inits = [terminated(c["name"]) for c in pod["spec"].get("initContainers", [])]
        status["initContainerStatuses"] = inits
        failed_init = any(s["state"]["terminated"]["exitCode"] for s in inits)
        if not failed_init:
            status["containerStatuses"] = [terminated(c["name"]) for c in pod["spec"]["containers"]]
        codes = [s["state"]["terminated"]["exitCode"] for s in inits + status.get("containerStatuses", [])]
        status["phase"] = "Failed" if any(codes) else "Succeeded"


def pick(pod: dict) -> dict[str, tuple[int, str]]:
    """The pick pod, run for real on the store its args name (what `drill-snapshots-pick` prints)."""
    args = pod["spec"]["containers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    try:
        summary = pick_summary(open_destination(flags["--dest"]), int(flags["--migration-id"]), flags.get("--set-id"))
    except PickError as error:
        return {"pick": (1, json.dumps({"error": str(error)}))}
    return {"pick": (0, json.dumps(summary))}


@pytest.fixture
def api():
    with Kubelet() as fake:
        fake.ready_after = 1
        for pvc in PVCS.values():
            fake.add_pvc(NS, pvc)
        yield fake


def take_set(api, url: str, set_id: str = "snap-set-1", migration_id: int = 2) -> dict:
    dest = open_destination(url)
    client = KubeClient(KubeConfig(server=api.url), retry_wait=0.01)
    for role in ("apps", "participant"):
        snapshotter = KubeVolumeSnapshotter(
            client, KubeOptions(NS, PVCS[role], CLASS, poll_interval=0.01), lambda *a, **k: None
        )
        run_step(
            dest,
            VolumeSnapshotProvider(snapshotter, lambda *a, **k: None),
            role=role,
            set_id=set_id,
            migration_id=migration_id,
        )
    return seal(dest, set_id=set_id, migration_id=migration_id, roles=["apps", "participant"])


def options(url: str, **overrides) -> Options:
    values = dict(
        dest=url,
        namespace=NS,
        migration_id=2,
        databases=DATABASES,
        users=USERS,
        image="jobs:1",
        service_account=SA,
        storage_class="sv-sv-1-drill",
        timeout=timedelta(seconds=10),
        kube_api=None,
        poll_interval=0.01,
        kube_retry_wait=0.01,
    )
    values.update(overrides)
    return Options(**values)


def drill(api, url: str, **overrides) -> tuple[int, list[dict]]:
    out = io.StringIO()
    code = run(options(url, kube_api=api.url, **overrides), stream=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def nothing_left(api) -> None:
    assert api.names("pods", NS) == []
    assert api.names("persistentvolumeclaims", NS) == sorted(PVCS.values())


@pytest.fixture
def store(api, tmp_path):
    url = f"file://{tmp_path}/store"
    manifest = take_set(api, url)
    return url, manifest


def test_the_newest_set_restores_passes_and_everything_scratch_is_deleted(api, store, tmp_path):
    url, _ = store
    take_set(api, url, set_id="snap-set-0-older")  # sealed last: the newest by created_at, though its id sorts first
    code, lines = drill(api, url)
    assert code == 0, lines
    done = lines[-1]
    assert done["event"] == "backup.completed" and done["kind"] == KIND == "drill-postgres-snapshots"
    assert done["set_id"] == "snap-set-0-older"
    assert done["rto_seconds"] >= 0 and 0 <= done["rpo_seconds"] < 600
    assert done["roles"]["participant"]["databases"] == ["participant_1"] and done["cleaned_up"] is True
    assert done["ordering"]["holds"] is True
    # one PVC per role from that role's VolumeSnapshot, sized from it
    claims = [b for p, b in api.created if p == "persistentvolumeclaims"]
    sources = {c["spec"]["dataSource"]["name"] for c in claims}
    newest = tmp_path / "store" / "snapshot-sets" / "2" / done["set_id"] / "manifest.json"
    handles = {r["handle"].split("/", 1)[1] for r in json.loads(newest.read_text())["snapshots"]}
    assert sources == handles and {c["spec"]["storageClassName"] for c in claims} == {"sv-sv-1-drill"}
    nothing_left(api)


def test_the_scratch_pod_is_hardened_and_prepares_each_role_before_the_probe(api, store):
    url, manifest = store
    code, lines = drill(api, url)
    assert code == 0, lines
    picker, pod = [b for p, b in api.created if p == "pods"]
    assert picker["metadata"]["name"].endswith("-pick") and picker["spec"]["automountServiceAccountToken"] is False
    assert picker["spec"]["serviceAccountName"] == SA and picker["spec"]["containers"][0]["args"][0] == (
        "drill-snapshots-pick"
    )
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == SA
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1001
    assert "fsGroup" not in spec["securityContext"]  # PostgreSQL refuses a group-writable data directory
    assert [c["name"] for c in spec["initContainers"]] == ["prepare-apps", "prepare-participant"]
    for container in spec["initContainers"] + spec["containers"] + picker["spec"]["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    prepare = spec["initContainers"][0]["args"]
    assert prepare[:2] == ["prepare-datadir", "--dest"] and prepare[-2:] == ["--datadir", "/restored/apps/data"]
    assert "--set" in prepare and manifest["set_id"] in prepare
    probe = spec["containers"][0]["args"]
    assert probe[0] == "drill-snapshots-probe" and "apps=cantonnet_sv" in probe and "participant=cnadmin" in probe
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == MANAGED_BY["app.kubernetes.io/managed-by"]
    nothing_left(api)


def test_a_snapshot_that_is_gone_fails_before_any_pod_and_removes_the_pvcs_made(api, store):
    url, manifest = store
    participant = next(r for r in manifest["snapshots"] if r["role"] == "participant")
    del api.objects[("volumesnapshots", NS, participant["handle"].split("/", 1)[1])]
    code, lines = drill(api, url)
    assert code == 1
    failed = lines[-1]
    assert failed["event"] == "backup.failed" and failed["stage"] == "snapshot" and failed["role"] == "participant"
    assert "is gone" in failed["error"] and participant["handle"] in failed["error"]
    # only the pick pod ran: no scratch pod without every role's PVC
    assert [b["metadata"]["name"].endswith("-pick") for p, b in api.created if p == "pods"] == [True]
    nothing_left(api)


@pytest.mark.parametrize(
    ("stage", "problem"),
    [
        (
            "start",
            "participant: the server did not start on the restored data (pg_ctl exit 1): FATAL: could not "
            "open file global/pg_control",
        ),
        (
            "databases",
            "apps: database(s) cantonnet_sv of the stack's config missing in the restored data "
            "(present: postgres, template1)",
        ),
        (
            "ordering",
            "apps/cantonnet_sv ingested up to offset 50, beyond the participant's ledger end 42 "
            "(participant/participant_1): apps data is newer than the participant's (Splice issue #932)",
        ),
    ],
)
def test_a_failing_probe_fails_the_drill_with_its_stage_and_problem(api, store, stage, problem):
    url, _ = store
    api.outcome = lambda pod: {"probe": (3, findings(ok=False, stage=stage, problems=[problem]))}
    code, lines = drill(api, url)
    assert code == 1
    failed = lines[-1]
    assert failed["event"] == "backup.failed" and failed["kind"] == KIND
    assert failed["stage"] == stage and problem in failed["error"]
    nothing_left(api)


def test_a_failing_prepare_datadir_fails_the_drill_naming_the_role(api, store):
    url, _ = store
    api.outcome = lambda pod: {
        "prepare-participant": (
            1,
            "prepare-datadir: wal/participant/000000010000000000000003.zst: sha256 differs from the manifest",
        )
    }
    code, lines = drill(api, url)
    assert code == 1
    failed = lines[-1]
    assert failed["stage"] == "prepare" and "prepare-participant" in failed["error"] and "sha256" in failed["error"]
    nothing_left(api)


def test_a_probe_without_findings_fails(api, store):
    url, _ = store
    api.outcome = lambda pod: {"probe": (0, "not json")}
    code, lines = drill(api, url)
    assert code == 1 and "no findings" in lines[-1]["error"]
    nothing_left(api)


def test_pvcs_that_never_bind_time_out_and_are_deleted(api, store):
    url, _ = store
    api.pvc_mode = "pending"
    code, lines = drill(api, url, timeout=timedelta(seconds=0.5))
    assert code == 1 and lines[-1]["stage"] == "bind" and "not Bound after" in lines[-1]["error"]
    nothing_left(api)


def test_sigterm_while_waiting_still_deletes_everything(api, store):
    url, _ = store
    api.pod_mode = "pending"
    out: list[dict] = []

    def sleep(_seconds):
        raise Terminated()

    with KubeClient(KubeConfig(server=api.url), retry_wait=0.01) as client:
        code = SnapshotDrill(
            client, open_destination(url), options(url), lambda e, **f: out.append({"event": e, **f}) or {}, sleep=sleep
        ).run()
    assert code == 1 and out[-1]["stage"] == "terminated"
    nothing_left(api)


def test_a_set_older_than_max_age_restores_but_fails_the_rpo(api, store):
    url, _ = store
    code, lines = drill(api, url, max_age=timedelta(seconds=0))
    assert code == 1 and lines[-1]["stage"] == "rpo" and "RPO" in lines[-1]["error"]
    assert lines[-1]["rto_seconds"] >= 0
    nothing_left(api)


def test_no_complete_set_fails_clearly(api, tmp_path):
    code, lines = drill(api, f"file://{tmp_path}/empty")
    assert code == 1 and lines[-1]["stage"] == "pick" and "the pick pod found no set to drill" in lines[-1]["error"]
    assert "no complete snapshot set of migration id 2" in lines[-1]["error"]
    nothing_left(api)
    code, lines = drill(api, f"file://{tmp_path}/empty", pick_in_pod=False)
    assert (
        code == 1
        and lines[-1]["stage"] == "pick"
        and "no complete snapshot set of migration id 2" in lines[-1]["error"]
    )


def test_a_role_without_a_user_is_a_config_failure(api, store):
    url, _ = store
    code, lines = drill(api, url, users={"apps": "cnadmin"})
    assert code == 1 and lines[-1]["stage"] == "config" and "participant" in lines[-1]["error"]
    nothing_left(api)


def test_role_value_flags_are_checked():
    assert parse_role_values(["apps=a,b", "participant=p"], "--databases") == {"apps": "a,b", "participant": "p"}
    with pytest.raises(ValueError, match="ROLE one of canton-bft, apps, participant, sequencer, mediator"):
        parse_role_values(["app=a"], "--databases")
    with pytest.raises(ValueError, match="given twice"):
        parse_role_values(["apps=a", "apps=b"], "--user")


def test_pod_body_mounts_each_claim_at_its_role():
    body = pod_body("drill-snap-x", options("file:///s"), "set-1", {"apps": "c-apps", "participant": "c-par"})
    volumes = {v["name"]: v for v in body["spec"]["volumes"]}
    assert volumes["restored-apps"]["persistentVolumeClaim"]["claimName"] == "c-apps"
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "256Mi"


def test_as_the_cronjob_runs_it(api, store, jobs_cli):
    url, _ = store
    result = jobs_cli(
        "drill-snapshots",
        "--dest",
        url,
        "--namespace",
        NS,
        "--migration-id",
        "2",
        "--databases",
        "apps=cantonnet_sv",
        "--databases",
        "participant=participant_1",
        "--user",
        "apps=cnadmin",
        "--user",
        "participant=cnadmin",
        "--image",
        "jobs:1",
        "--service-account",
        SA,
        "--storage-class",
        "sv-sv-1-drill",
        "--timeout",
        "30s",
        "--max-age",
        "6h",
        "--kube-api",
        api.url,
        "--poll-interval",
        "0.05",
        "--json",
        env=job_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *_, event, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert event["event"] == "backup.completed" and summary["ok"] is True
    nothing_left(api)
    bad = jobs_cli(
        "drill-snapshots",
        "--dest",
        url,
        "--namespace",
        NS,
        "--migration-id",
        "2",
        "--user",
        "app=x",
        "--image",
        "i",
        "--service-account",
        SA,
        "--kube-api",
        api.url,
    )
    assert bad.returncode == 1 and "ROLE one of" in bad.stdout


def test_the_pick_command_prints_the_newest_sets_summary(store, jobs_cli, tmp_path):
    url, manifest = store
    message = tmp_path / "termination-log"
    result = jobs_cli("drill-snapshots-pick", "--dest", url, "--migration-id", "2", "--termination-log", str(message))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(message.read_text())
    assert summary["set_id"] == manifest["set_id"] and summary["prefix"] == "snapshot-sets/2/snap-set-1"
    assert [s["role"] for s in summary["snapshots"]] == ["apps", "participant"]
    assert summary["snapshots"][0]["details"]["volume_snapshots"][0]["volume"] == "data"
    missing = jobs_cli("drill-snapshots-pick", "--dest", url, "--migration-id", "7", "--termination-log", str(message))
    assert missing.returncode == 1 and "no complete snapshot set of migration id 7" in message.read_text()
