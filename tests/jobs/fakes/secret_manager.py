"""A small fake of the GCP Secret Manager v1 REST surface the job uses: `secrets.addVersion`.

No official emulator exists. The real client (google-cloud-secret-manager, `transport="rest"`, anonymous
credentials, `api_endpoint` = this server) talks to it, so the request the job builds, its checksum and the
client's error mapping are all exercised. Faults: queue HTTP statuses with `fail(503, ...)`.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from datetime import UTC, datetime

import google_crc32c

from tests.jobs.fakes.httpserver import LocalServer, Reply, Request

_ADD = re.compile(r"^/v1/(projects/[^/]+/secrets/[^/:]+):addVersion$")
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _error(code: int, message: str) -> Reply:
    return Reply.json({"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}, code)


class FakeSecretManager(LocalServer):
    def __init__(self):
        super().__init__()
        self.versions: dict[str, list[bytes]] = {}
        self.faults: deque[int] = deque()

    def create_secret(self, project: str, secret: str) -> str:
        name = f"projects/{project}/secrets/{secret}"
        self.versions.setdefault(name, [])
        return name

    def fail(self, *statuses: int) -> None:
        with self.lock:
            self.faults.extend(statuses)

    def handle(self, request: Request) -> Reply:
        match = _ADD.match(request.path)
        if request.method != "POST" or not match:
            return _error(404, f"no such method {request.method} {request.path}")
        with self.lock:
            if self.faults:
                status = self.faults.popleft()
                return _error(status, "injected fault")
            name = match.group(1)
            if name not in self.versions:
                return _error(404, f"Secret [{name}] not found or has no versions.")
            payload = (request.json() or {}).get("payload") or {}
            data = base64.b64decode(payload.get("data", ""))
            if "dataCrc32c" in payload and int(payload["dataCrc32c"]) != google_crc32c.value(data):
                return _error(400, "Checksum mismatch")
            self.versions[name].append(data)
            number = len(self.versions[name])
        return Reply.json(
            {
                "name": f"{name}/versions/{number}",
                "createTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "state": "ENABLED",
            }
        )
