"""A small Kubernetes API client over httpx: the few calls the backup jobs make.

The jobs need get/list/create/merge-patch/delete on a handful of resources (VolumeSnapshots, their contents,
one PVC, one ConfigMap); the official client would add a large dependency for that. Configuration:

- in a pod: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the ServiceAccount token and CA
  under /var/run/secrets/kubernetes.io/serviceaccount (the CronJob must mount the token);
- `--kube-api URL` or env `SV_BACKUPS_KUBE_API`: an explicit API address, without credentials unless
  `SV_BACKUPS_KUBE_TOKEN_FILE` names a bearer-token file. For `kubectl proxy` (http://127.0.0.1:8001) on
  an operator's machine, and for the tests' fake API server.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with backoff; everything else raises
`KubeError` at once, carrying the API's own `Status` message (never a request body).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_ENV = "SV_BACKUPS_KUBE_API"
TOKEN_FILE_ENV = "SV_BACKUPS_KUBE_TOKEN_FILE"

SNAPSHOT_GROUP = "/apis/snapshot.storage.k8s.io/v1"
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """A Kubernetes API call failed. `status` is the HTTP status (None for a network failure)."""

    def __init__(self, method: str, path: str, status: int | None, message: str):
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        where = f"{method} {path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status else f"{where}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def _transient(error: BaseException) -> bool:
    if isinstance(error, KubeError):
        return error.status is None or error.status == 429 or error.status >= 500
    return False


@dataclass(frozen=True)
class KubeConfig:
    server: str
    token_file: Path | None = None
    ca_file: Path | None = None
    namespace: str | None = None  # the pod's own namespace, when running in one


def resolve_config(api_url: str | None = None) -> KubeConfig:
    """An explicit URL (flag, then env) wins; otherwise the in-cluster configuration."""
    explicit = api_url or os.environ.get(API_ENV)
    if explicit:
        token_file = os.environ.get(TOKEN_FILE_ENV)
        return KubeConfig(server=explicit.rstrip("/"), token_file=Path(token_file) if token_file else None)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeError(
            "CONFIG",
            "-",
            None,
            f"not running in a pod (KUBERNETES_SERVICE_HOST unset) and no --kube-api / {API_ENV} given",
        )
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
    return KubeConfig(
        server=f"https://{host}:{port}",
        token_file=SERVICE_ACCOUNT_DIR / "token",
        ca_file=SERVICE_ACCOUNT_DIR / "ca.crt",
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else None,
    )


class KubeClient:
    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 30.0,
        attempts: int = 5,
        retry_wait: float = 1.0,
    ):
        self.config = config
        verify: Any = str(config.ca_file) if config.ca_file and config.ca_file.exists() else True
        self._http = httpx.Client(base_url=config.server, timeout=timeout, verify=verify)
        self._attempts = attempts
        self._retry_wait = retry_wait

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.token_file:
            # Re-read every call: projected tokens are rotated on disk while the pod runs.
            headers["Authorization"] = "Bearer " + self.config.token_file.read_text().strip()
        return headers

    def _once(self, method: str, path: str, *, params=None, body=None, content_type=None) -> dict[str, Any]:
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self._http.request(method, path, params=params, json=body, headers=headers)
        except httpx.HTTPError as error:  # connection refused/reset, timeouts, protocol errors
            raise KubeError(method, path, None, f"{type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise KubeError(method, path, response.status_code, _status_message(response))
        try:
            return response.json()
        except ValueError:
            raise KubeError(
                method, path, response.status_code, f"response is not JSON ({response.headers.get('content-type')})"
            ) from None

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=self._retry_wait, max=30, jitter=self._retry_wait),
            reraise=True,
        )
        return retrying(self._once, method, path, **kwargs)

    # --- verbs ----------------------------------------------------------------------------------------
    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def get_optional(self, path: str) -> dict[str, Any] | None:
        try:
            return self.get(path)
        except KubeError as error:
            if error.not_found:
                return None
            raise

    def list(self, path: str, label_selector: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        params = {}
        if label_selector:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(label_selector.items()))
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", path, params=dict(params))
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=dict(body))

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH)

    def delete(self, path: str) -> None:
        """Delete; an object that is already gone counts as deleted (a retried DELETE may see 404)."""
        try:
            self.request("DELETE", path)
        except KubeError as error:
            if not error.not_found:
                raise


def _status_message(response: httpx.Response) -> str:
    """The API's `Status.message` (what kubectl prints), or the content type when the body is not one."""
    try:
        payload = response.json()
    except ValueError:
        return f"non-JSON response ({response.headers.get('content-type') or 'no content type'})"
    if isinstance(payload, dict) and payload.get("message"):
        reason = payload.get("reason")
        return f"{reason}: {payload['message']}" if reason else str(payload["message"])
    return response.reason_phrase or "error"


# --- paths ----------------------------------------------------------------------------------------------
def _seg(value: str) -> str:
    return quote(value, safe="")


def pvc_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}/persistentvolumeclaims/{_seg(name)}"


def configmap_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}/configmaps/{_seg(name)}"


def volume_snapshots_path(namespace: str, name: str | None = None) -> str:
    base = f"{SNAPSHOT_GROUP}/namespaces/{_seg(namespace)}/volumesnapshots"
    return f"{base}/{_seg(name)}" if name else base


def volume_snapshot_content_path(name: str) -> str:
    return f"{SNAPSHOT_GROUP}/volumesnapshotcontents/{_seg(name)}"


def pvcs_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}/persistentvolumeclaims"


def pods_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{_seg(namespace)}/pods"
    return f"{base}/{_seg(name)}" if name else base
