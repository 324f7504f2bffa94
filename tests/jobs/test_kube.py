"""The small Kubernetes client against the fake API server: config resolution, verbs, errors, retries."""

from __future__ import annotations

import pytest

from jobs import kube
from jobs.kube import (
    KubeClient,
    KubeConfig,
    KubeError,
    configmap_path,
    pvc_path,
    resolve_config,
    volume_snapshot_content_path,
    volume_snapshots_path,
)
from tests.jobs.fakes.httpserver import LocalServer, Reply
from tests.jobs.fakes.kube import FakeKubeApi


@pytest.fixture
def api():
    with FakeKubeApi() as fake:
        yield fake


@pytest.fixture
def client(api):
    with KubeClient(KubeConfig(server=api.url), attempts=3, retry_wait=0.01) as c:
        yield c


def test_paths():
    assert pvc_path("sv", "global-domain-0-cometbft-cometbft-data") == (
        "/api/v1/namespaces/sv/persistentvolumeclaims/global-domain-0-cometbft-cometbft-data"
    )
    assert configmap_path("sv", "fp") == "/api/v1/namespaces/sv/configmaps/fp"
    assert volume_snapshots_path("sv") == "/apis/snapshot.storage.k8s.io/v1/namespaces/sv/volumesnapshots"
    assert volume_snapshot_content_path("snapcontent-1") == (
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/snapcontent-1"
    )
    assert volume_snapshots_path("sv", "a/b").endswith("/volumesnapshots/a%2Fb")


def test_in_cluster_config(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("")
    (tmp_path / "namespace").write_text("sv\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.delenv(kube.API_ENV, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = resolve_config()
    assert config.server == "https://10.0.0.1:443" and config.namespace == "sv"
    assert config.token_file == tmp_path / "token" and config.ca_file == tmp_path / "ca.crt"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert resolve_config().server == "https://[fd00::1]:443"


def test_explicit_api_wins_then_env(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv(kube.API_ENV, "http://127.0.0.1:8001/")
    assert resolve_config().server == "http://127.0.0.1:8001"
    assert resolve_config("http://127.0.0.1:9999").server == "http://127.0.0.1:9999"


def test_no_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(kube.API_ENV, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="not running in a pod"):
        resolve_config()


def test_bearer_token_is_read_from_the_file_on_every_call(tmp_path):
    class Recorder(LocalServer):
        def handle(self, request):
            return Reply.json({"auth": request.headers.get("authorization")})

    token = tmp_path / "token"
    with Recorder() as server, KubeClient(KubeConfig(server=server.url, token_file=token)) as c:
        token.write_text("first\n")
        assert c.get("/x")["auth"] == "Bearer first"
        token.write_text("rotated")
        assert c.get("/x")["auth"] == "Bearer rotated"


def test_crud_and_label_selected_list(api, client):
    api.add_configmap("sv", "fp", {"sha256": "a"})
    assert client.get(configmap_path("sv", "fp"))["data"] == {"sha256": "a"}
    assert client.get_optional(configmap_path("sv", "nope")) is None
    patched = client.merge_patch(configmap_path("sv", "fp"), {"data": {"sha256": "b", "extra": "c"}})
    assert patched["data"] == {"sha256": "b", "extra": "c"}
    body = {"metadata": {"name": "s1", "labels": {"app.kubernetes.io/managed-by": "sv-backups"}}, "spec": {}}
    client.create(volume_snapshots_path("sv"), body)
    client.create(volume_snapshots_path("sv"), {"metadata": {"name": "s2"}, "spec": {}})
    listed = client.list(volume_snapshots_path("sv"), {"app.kubernetes.io/managed-by": "sv-backups"})
    assert [s["metadata"]["name"] for s in listed] == ["s1"]
    client.delete(volume_snapshots_path("sv", "s1"))
    client.delete(volume_snapshots_path("sv", "s1"))  # already gone: fine
    assert api.names("volumesnapshots", "sv") == ["s2"]


def test_list_follows_continue_tokens(api, client):
    api.page_size = 2
    for i in range(5):
        api.add_configmap("sv", f"cm{i}")
    assert [c["metadata"]["name"] for c in client.list("/api/v1/namespaces/sv/configmaps")] == [
        f"cm{i}" for i in range(5)
    ]


def test_create_conflict_and_resource_version_precondition(api, client):
    api.add_configmap("sv", "fp")
    with pytest.raises(KubeError) as raised:
        client.create("/api/v1/namespaces/sv/configmaps", {"metadata": {"name": "fp"}})
    assert raised.value.conflict and "already exists" in str(raised.value)
    with pytest.raises(KubeError) as raised:
        client.merge_patch(configmap_path("sv", "fp"), {"metadata": {"resourceVersion": "1"}, "data": {"a": "b"}})
    assert raised.value.status == 409 and "Conflict" in raised.value.message


def test_transient_errors_are_retried(api, client):
    api.add_configmap("sv", "fp")
    api.fail("GET", "/api/v1/namespaces/sv/configmaps", 503, 500)
    assert client.get(configmap_path("sv", "fp"))["metadata"]["name"] == "fp"
    assert api.count("GET") == 3


def test_permanent_errors_are_not_retried(api, client):
    api.forbid("GET", "/api/v1/namespaces/sv/configmaps")
    with pytest.raises(KubeError) as raised:
        client.get(configmap_path("sv", "fp"))
    assert raised.value.status == 403 and "Forbidden" in str(raised.value)
    assert api.count("GET") == 1


def test_retries_give_up(api, client):
    api.fail("GET", "/api", 503, 503, 503, 503)
    with pytest.raises(KubeError) as raised:
        client.get(configmap_path("sv", "fp"))
    assert raised.value.status == 503 and api.count("GET") == 3


def test_unreachable_server_is_a_network_error():
    client = KubeClient(KubeConfig(server="http://127.0.0.1:9"), attempts=2, retry_wait=0.01)
    with client, pytest.raises(KubeError) as raised:
        client.get("/api/v1/namespaces/sv/configmaps/fp")
    assert raised.value.status is None and "ConnectError" in str(raised.value)


def test_non_json_error_body_names_the_content_type():
    class Proxy(LocalServer):
        def handle(self, request):
            return Reply(status=502, body=b"<html>bad gateway</html>", content_type="text/html")

    with (
        Proxy() as server,
        KubeClient(KubeConfig(server=server.url), attempts=1) as c,
        pytest.raises(KubeError, match=r"HTTP 502: non-JSON response \(text/html\)"),
    ):
        c.get("/x")
