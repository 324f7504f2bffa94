"""A fake IdP token endpoint and SV identities endpoint, able to misbehave on demand.

Faults are queued per endpoint and consumed one per request (`server.fail("dump", "500", "500")` makes the
next two dump requests answer 500, then the server behaves). Fault names:
`401 403 404 429 500 502 503` (the status, JSON body), `html` (200 text/html login page), `truncated` (200,
valid headers, the JSON cut in half), `cut` (the connection closes mid-body), `slow` (answers after
`slow_seconds`), `shape` (200 JSON, the dump with `shape_change` applied), `not-json` (200 JSON of a list).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
from collections import deque
from collections.abc import Callable

from tests.jobs.fakes.httpserver import LocalServer, Reply, Request

TOKEN_PATH = "/oauth/token"
DUMP_PATH = "/api/sv/v0/admin/domain/identities-dump"
HTML = b"<!doctype html><html><body><h1>Sign in</h1></body></html>"


def make_dump(*, kms_participant: bool = False) -> dict:
    """A dump shaped like Splice's GetSynchronizerNodeIdentitiesDumpResponse, with random key material."""
    namespace = "1220" + secrets.token_hex(32)

    def key_pair() -> str:
        return base64.b64encode(os.urandom(96)).decode()

    def node(prefix: str, kms: bool = False) -> dict:
        keys = (
            [
                {"type": "signing", "keyId": f"projects/p/locations/l/keyRings/r/cryptoKeys/{prefix}-s", "name": "sig"},
                {"type": "encryption", "keyId": f"projects/p/locations/l/keyRings/r/cryptoKeys/{prefix}-e"},
            ]
            if kms
            else [{"keyPair": key_pair(), "name": f"{prefix}-signing"}, {"keyPair": key_pair()}]
        )
        return {
            "id": f"{prefix}::sv-1::{namespace}",
            "keys": keys,
            "authorizedStoreSnapshot": base64.b64encode(os.urandom(512)).decode(),
            "version": "0.4.20",
        }

    return {
        "identities": {
            "sv_party_id": f"sv-1::{namespace}",
            "dso_party_id": "DSO::1220" + secrets.token_hex(32),
            "domain_alias": "global",
            "domain_id": "global-domain::1220" + secrets.token_hex(32),
            "participant": node("PAR", kms=kms_participant),
            "sequencer": node("SEQ"),
            "mediator": node("MED"),
        }
    }


class FakeSvServer(LocalServer):
    def __init__(self, *, client_id: str, client_secret: str, audience: str, dump: dict | None = None):
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.audience = audience
        self.dump = dump or make_dump()
        self.issued: list[str] = []
        self.faults: dict[str, deque[str]] = {"token": deque(), "dump": deque()}
        self.slow_seconds = 2.0
        self.shape_change: Callable[[dict], None] = lambda d: d["identities"]["participant"].pop("keys")

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def dump_url(self) -> str:
        return self.url + DUMP_PATH

    def fail(self, endpoint: str, *faults: str) -> None:
        with self.lock:
            self.faults[endpoint].extend(faults)

    def _fault(self, endpoint: str) -> str | None:
        with self.lock:
            queue = self.faults[endpoint]
            return queue.popleft() if queue else None

    def _misbehave(self, fault: str, good: bytes) -> Reply:
        if fault.isdigit():
            status = int(fault)
            return Reply.json(
                {"error": "access_denied" if status in (401, 403) else "error", "error_description": "denied"},
                status=status,
            )
        if fault == "html":
            return Reply(body=HTML, content_type="text/html; charset=utf-8")
        if fault == "truncated":
            return Reply(body=good[: len(good) // 2])
        if fault == "cut":
            return Reply(body=good, cut_after=len(good) // 2)
        if fault == "slow":
            return Reply(body=good, delay=self.slow_seconds)
        if fault == "shape":
            broken = copy.deepcopy(self.dump)
            self.shape_change(broken)
            return Reply(body=json.dumps(broken).encode())
        if fault == "not-json":
            return Reply.json(["identities"])
        raise ValueError(f"unknown fault {fault!r}")

    def handle(self, request: Request) -> Reply:
        if request.path == TOKEN_PATH and request.method == "POST":
            return self._token(request)
        if request.path == DUMP_PATH and request.method == "GET":
            return self._dump(request)
        return Reply.json({"error": "not found"}, status=404)

    def _token(self, request: Request) -> Reply:
        token = "eyJ" + secrets.token_urlsafe(48)
        good = json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": 86400}).encode()
        fault = self._fault("token")
        if fault:
            return self._misbehave(fault, good)
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return Reply.json({"error": "invalid_request"}, status=400)
        form = request.form()
        if form.get("grant_type") != "client_credentials":
            return Reply.json({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return Reply.json({"error": "access_denied", "error_description": "Unauthorized"}, status=401)
        if form.get("audience") != self.audience:
            return Reply.json({"error": "access_denied", "error_description": "Service not found"}, status=403)
        with self.lock:
            self.issued.append(token)
        return Reply(body=good)

    def _dump(self, request: Request) -> Reply:
        good = json.dumps(self.dump).encode()
        fault = self._fault("dump")
        if fault:
            return self._misbehave(fault, good)
        auth = request.headers.get("authorization", "")
        with self.lock:
            valid = auth.startswith("Bearer ") and auth[len("Bearer ") :] in self.issued
        if not valid:
            return Reply.json({"error": "Unauthorized"}, status=401)
        return Reply(body=good)
