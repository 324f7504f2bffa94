"""`python -m jobs dump-identities`: copy the SV node's identities dump into a secret manager.

The dump (`GET /api/sv/v0/admin/domain/identities-dump`) holds the private keys of the participant, sequencer
and mediator: without it a node cannot be restored. The job

1. gets an OAuth2 client-credentials token (form POST: grant_type, client_id, client_secret, audience);
2. fetches the dump with that bearer token and checks its shape strictly (every node with an id, a non-empty
   key list, each key a decodable `keyPair` or a KMS `{type, keyId}`): a 404 from a KMS participant, an HTML
   login page, a truncated body is never stored over the last good version;
3. adds it as a new secret version, unless its sha256 equals the one recorded in the fingerprint ConfigMap
   (the writer may not read versions back, and Secret Manager bills per active version).

Transient failures (connection errors, timeouts, 429, 5xx) are retried with backoff; 401/403/404 and a bad
shape are not (retrying cannot fix them). Logs are JSON lines (jobs/events.py) that say what happened (stage,
HTTP status, content type, which field is wrong) and never carry key material, the token or the client
secret: every message passes through a redactor that knows those values.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from jobs import events
from jobs.kube import KubeClient, KubeError, configmap_path, resolve_config
from jobs.secret_stores import SecretStoreError, open_store

KIND = "identities"
NODES = ("participant", "sequencer", "mediator")
ID_FIELDS = ("sv_party_id", "dso_party_id", "domain_id")  # Canton unique identifiers: `name::namespace`
KMS_KEY_TYPES = ("signing", "encryption")
FINGERPRINT_KEY = "sha256"
JSON_TYPES = ("application/json",)


class DumpFailure(Exception):
    """One failed stage. `fields` (status, content_type, field, ...) go to the backup.failed event as-is, so
    they must never hold secret values; `transient` marks failures worth retrying."""

    def __init__(self, stage: str, message: str, *, transient: bool = False, **fields: Any):
        super().__init__(message)
        self.stage = stage
        self.transient = transient
        self.fields = {k: v for k, v in fields.items() if v is not None}


@dataclass
class Redactor:
    """Replaces every known secret value in a text before it is logged (belt and braces: messages are built
    without them in the first place)."""

    secrets: set[str] = field(default_factory=set)

    def add(self, *values: str | None) -> None:
        # Very short values would redact innocent words; real secrets, tokens and keys are long.
        self.secrets.update(v for v in values if v and len(v) >= 8)

    def __call__(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "[REDACTED]")
        return text


# --- HTTP -------------------------------------------------------------------------------------------------
def _content_type(response: httpx.Response) -> str:
    return (response.headers.get("content-type") or "").split(";")[0].strip().lower() or "none"


def _check_status(stage: str, response: httpx.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    content_type = _content_type(response)
    hints = {
        401: "the credentials were refused (wrong client id/secret, or an expired/invalid token)",
        403: "access denied (the client needs participant admin rights and the SV app audience)",
        404: "not found (known to persist for days on KMS participants: check the SV app)",
        429: "rate limited",
    }
    hint = hints.get(status) or ("server error" if status >= 500 else "unexpected status")
    detail = ""
    if stage == "token" and content_type in JSON_TYPES:
        # OAuth2 error codes (RFC 6749 5.2) are a fixed vocabulary: safe and useful to log.
        try:
            code = response.json().get("error")
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, str) and code.replace("_", "").isalpha() and len(code) < 40:
            detail = f", OAuth2 error {code}"
    raise DumpFailure(
        stage,
        f"{what} answered HTTP {status} ({content_type}{detail}): {hint}",
        transient=status == 429 or status >= 500,
        status=status,
        content_type=content_type,
    )


def _parse_json(stage: str, response: httpx.Response, what: str) -> Any:
    content_type = _content_type(response)
    if content_type not in JSON_TYPES:
        raise DumpFailure(
            stage,
            f"{what} answered HTTP {response.status_code} with {content_type}, not JSON "
            "(a login page or a proxy's error page?)",
            status=response.status_code,
            content_type=content_type,
        )
    body = response.content
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        where = f"; position {error.pos} of {len(body)} bytes" if isinstance(error, json.JSONDecodeError) else ""
        reason = getattr(error, "msg", type(error).__name__)
        raise DumpFailure(
            stage,
            f"{what} answered HTTP {response.status_code} with truncated or malformed JSON ({reason}{where})",
            status=response.status_code,
            content_type=content_type,
            bytes=len(body),
        ) from None


def _network(stage: str, what: str, call: Callable[[], httpx.Response]) -> httpx.Response:
    try:
        return call()
    except httpx.TimeoutException as error:
        raise DumpFailure(stage, f"{what}: timed out ({type(error).__name__})", transient=True) from None
    except httpx.HTTPError as error:  # refused, reset, cut-off body (RemoteProtocolError), DNS, TLS
        raise DumpFailure(stage, f"{what}: {type(error).__name__}: {error}", transient=True) from None


def fetch_token(http: httpx.Client, token_endpoint: str, audience: str, client_id: str, client_secret: str) -> str:
    what = f"token endpoint {token_endpoint}"
    response = _network(
        "token",
        what,
        lambda: http.post(
            token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
                "audience": audience,
            },
            headers={"Accept": "application/json"},
        ),
    )
    _check_status("token", response, what)
    payload = _parse_json("token", response, what)
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise DumpFailure("token", f"{what} answered without an access_token", status=response.status_code)
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise DumpFailure("token", f"{what} issued a token of type {token_type!r}, not Bearer")
    return token


def fetch_dump(http: httpx.Client, endpoint: str, token: str) -> tuple[bytes, Any]:
    what = f"identities endpoint {endpoint}"
    response = _network(
        "fetch",
        what,
        lambda: http.get(endpoint, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}),
    )
    _check_status("fetch", response, what)
    return response.content, _parse_json("fetch", response, what)


# --- shape --------------------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _base64_ok(text: str) -> bool:
    try:
        return bool(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
    except (binascii.Error, ValueError):
        return False


def shape_problems(document: Any) -> list[str]:
    """Everything wrong with a dump, as `path: problem` strings that name fields, never values."""
    problems: list[str] = []

    def string(container: dict, key: str, path: str, *, required: bool = True, identifier: bool = False) -> None:
        if key not in container:
            if required:
                problems.append(f"{path}: missing")
            return
        value = container[key]
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_type_name(value)}")
        elif required and not value:
            problems.append(f"{path}: empty")
        elif identifier and "::" not in value:
            problems.append(f"{path}: not a Canton identifier (name::namespace)")

    if not isinstance(document, dict):
        return [f"top level: expected an object, got {_type_name(document)}"]
    identities = document.get("identities")
    if not isinstance(identities, dict):
        return [f"identities: {'missing' if identities is None else 'expected an object'}"]
    for key in ID_FIELDS:
        string(identities, key, f"identities.{key}", identifier=True)
    string(identities, "domain_alias", "identities.domain_alias")
    for node_name in NODES:
        node_path = f"identities.{node_name}"
        node = identities.get(node_name)
        if not isinstance(node, dict):
            problems.append(f"{node_path}: {'missing' if node is None else 'expected an object'}")
            continue
        string(node, "id", f"{node_path}.id", identifier=True)
        string(node, "version", f"{node_path}.version", required=False)
        snapshot = node.get("authorizedStoreSnapshot")
        if not isinstance(snapshot, str) or not snapshot:
            problems.append(
                f"{node_path}.authorizedStoreSnapshot: {'missing' if snapshot is None else 'empty or not a string'}"
            )
        elif not _base64_ok(snapshot):
            problems.append(f"{node_path}.authorizedStoreSnapshot: not valid base64")
        keys = node.get("keys")
        if not isinstance(keys, list) or not keys:
            problems.append(f"{node_path}.keys: {'missing' if keys is None else 'expected a non-empty array'}")
            continue
        for index, key in enumerate(keys):
            problems.extend(_key_problems(key, f"{node_path}.keys[{index}]"))
    return problems


def _key_problems(key: Any, path: str) -> list[str]:
    if not isinstance(key, dict):
        return [f"{path}: expected an object, got {_type_name(key)}"]
    problems = []
    if "name" in key and not isinstance(key["name"], str):
        problems.append(f"{path}.name: expected a string")
    has_pair, has_kms = "keyPair" in key, ("keyId" in key or "type" in key)
    if has_pair and has_kms:
        return [*problems, f"{path}: has both keyPair and KMS fields (type/keyId)"]
    if has_pair:
        pair = key["keyPair"]
        if not isinstance(pair, str) or not pair:
            problems.append(f"{path}.keyPair: empty or not a string")
        elif not _base64_ok(pair):
            problems.append(f"{path}.keyPair: not valid base64")
    elif has_kms:
        if key.get("type") not in KMS_KEY_TYPES:
            problems.append(f"{path}.type: expected one of {', '.join(KMS_KEY_TYPES)}")
        if not isinstance(key.get("keyId"), str) or not key.get("keyId"):
            problems.append(f"{path}.keyId: missing or empty")
    else:
        problems.append(f"{path}: neither a keyPair nor a KMS key (type, keyId)")
    return problems


def secret_values(document: Any) -> Iterable[str]:
    """The private key material in a dump (what the redactor must never let through)."""
    identities = document.get("identities", {}) if isinstance(document, dict) else {}
    for node_name in NODES:
        node = identities.get(node_name) if isinstance(identities, dict) else None
        for key in (node or {}).get("keys") or []:
            if isinstance(key, dict) and isinstance(key.get("keyPair"), str):
                yield key["keyPair"]


def fingerprint(document: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace): a reformatted but equal dump is unchanged."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def summary(document: dict) -> dict[str, Any]:
    """Public facts about a valid dump, for the completed event (ids are public; counts only for keys)."""
    identities = document["identities"]
    return {
        "sv_party_id": identities["sv_party_id"],
        "domain_id": identities["domain_id"],
        "keys": {
            node: {
                "key_pairs": sum(1 for k in identities[node]["keys"] if "keyPair" in k),
                "kms_keys": sum(1 for k in identities[node]["keys"] if "keyPair" not in k),
            }
            for node in NODES
        },
    }


# --- the run -----------------------------------------------------------------------------------------------
@dataclass
class Options:
    endpoint: str
    token_endpoint: str
    audience: str
    client_id: str
    client_secret_file: Path
    secret: str
    fingerprint_configmap: str | None = None
    namespace: str | None = None
    timeout: float = 30.0
    attempts: int = 4
    retry_wait: float = 2.0
    kube_api: str | None = None


def _retrying(options: Options, on_retry: Callable[[RetryCallState], None]) -> Retrying:
    return Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, DumpFailure) and e.transient),
        stop=stop_after_attempt(max(1, options.attempts)),
        wait=wait_exponential_jitter(multiplier=options.retry_wait, max=60, jitter=options.retry_wait),
        before_sleep=on_retry,
        reraise=True,
    )


class _Fingerprints:
    """The sha256 of the last stored dump, kept in a pre-created ConfigMap (get/patch only)."""

    def __init__(self, client: KubeClient, namespace: str, name: str):
        self.client = client
        self.path = configmap_path(namespace, name)
        self.where = f"ConfigMap {namespace}/{name}"
        self.resource_version: str | None = None

    def recorded(self) -> str | None:
        try:
            config_map = self.client.get(self.path)
        except KubeError as error:
            hint = " (the Pulumi program creates it)" if error.not_found else ""
            raise DumpFailure("fingerprint", f"cannot read {self.where}: {error}{hint}", status=error.status) from None
        self.resource_version = (config_map.get("metadata") or {}).get("resourceVersion")
        return (config_map.get("data") or {}).get(FINGERPRINT_KEY)

    def record(self, digest: str, version: str) -> None:
        patch: dict[str, Any] = {
            "data": {
                FINGERPRINT_KEY: digest,
                "version": version,
                "storedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            }
        }
        if self.resource_version:
            patch["metadata"] = {"resourceVersion": self.resource_version}  # fail on a concurrent change
        try:
            self.client.merge_patch(self.path, patch)
        except KubeError as error:
            raise DumpFailure("fingerprint", f"cannot update {self.where}: {error}", status=error.status) from None


def run(options: Options, *, stream=None) -> int:
    redact = Redactor()

    def log(event: str, **fields: Any) -> dict[str, Any]:
        clean = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        return events.emit(event, KIND, stream=stream, **clean)

    def failed(error: DumpFailure, **extra: Any) -> int:
        log(events.FAILED, error=str(error), stage=error.stage, secret=options.secret, **error.fields, **extra)
        return 1

    def on_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log(
            "identities.retrying",
            attempt=state.attempt_number,
            of=options.attempts,
            wait_seconds=round(state.next_action.sleep, 2) if state.next_action else None,
            reason=str(error),
        )

    try:
        client_secret = options.client_secret_file.read_text().strip()
    except OSError as error:
        return failed(
            DumpFailure("config", f"cannot read --client-secret-file {options.client_secret_file}: {error.strerror}")
        )
    redact.add(client_secret)
    if not client_secret:
        return failed(DumpFailure("config", f"--client-secret-file {options.client_secret_file} is empty"))
    try:
        store = open_store(options.secret)
    except ValueError as error:
        return failed(DumpFailure("config", str(error)))
    kube: KubeClient | None = None
    fingerprints: _Fingerprints | None = None
    if options.fingerprint_configmap:
        try:
            config = resolve_config(options.kube_api)
        except KubeError as error:
            return failed(DumpFailure("config", str(error)))
        namespace = options.namespace or config.namespace
        if not namespace:
            return failed(DumpFailure("config", "--fingerprint-configmap needs --namespace (not running in a pod)"))
        kube = KubeClient(config, timeout=options.timeout, attempts=options.attempts, retry_wait=options.retry_wait)
        fingerprints = _Fingerprints(kube, namespace, options.fingerprint_configmap)

    try:
        with httpx.Client(timeout=options.timeout, follow_redirects=False) as http:
            token = _retrying(options, on_retry)(
                fetch_token, http, options.token_endpoint, options.audience, options.client_id, client_secret
            )
            redact.add(token)
            raw, document = _retrying(options, on_retry)(fetch_dump, http, options.endpoint, token)
        redact.add(*secret_values(document))
        problems = shape_problems(document)
        if problems:
            raise DumpFailure(
                "validate",
                f"the identities dump has the wrong shape ({len(problems)} problem(s)): {'; '.join(problems[:10])}",
                field=problems[0].split(":")[0],
                problems=problems[:50],
            )
        digest = fingerprint(document)
        facts = summary(document)

        fingerprint_error: DumpFailure | None = None
        recorded = None
        if fingerprints:
            try:
                recorded = fingerprints.recorded()
            except DumpFailure as error:
                # A backup beats a saved version: store anyway, then report the broken fingerprint.
                fingerprint_error = error
        if recorded == digest:
            log(events.COMPLETED, changed=False, sha256=digest, secret=options.secret, bytes=len(raw), **facts)
            return 0

        try:
            version = store.add_version(raw)
        except SecretStoreError as error:
            raise DumpFailure("store", f"adding a secret version failed: {error}", transient=error.transient) from None
        if fingerprints and not fingerprint_error:
            try:
                fingerprints.record(digest, version)
            except DumpFailure as error:
                fingerprint_error = error
        log(
            events.COMPLETED,
            changed=True,
            sha256=digest,
            secret=options.secret,
            version=version,
            bytes=len(raw),
            **facts,
        )
        if fingerprint_error:
            # The dump is stored (freshness is fine), but the next run will store it again: say so loudly.
            return failed(fingerprint_error, stored=True, version=version)
        return 0
    except DumpFailure as error:
        return failed(error)
    except Exception as error:
        # A bug must still end in backup.failed (the alert), with a message that passed the redactor.
        return failed(DumpFailure("internal", f"unexpected {type(error).__name__}: {error}"))
    finally:
        if kube:
            kube.close()


# --- CLI ---------------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dump-identities",
        help="copy the SV identities dump into a secret manager (a new version when it changed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--endpoint", required=True, help="https://sv.sv.<host>/api/sv/v0/admin/domain/identities-dump")
    parser.add_argument(
        "--token-endpoint", required=True, help="the IdP's OAuth2 token URL (e.g. https://T.auth0.com/oauth/token)"
    )
    parser.add_argument("--audience", required=True, help="the SV app audience")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret-file", required=True, type=Path, help="file holding the client secret")
    parser.add_argument(
        "--secret", required=True, help="gcpsm://projects/P/secrets/S, awssm://REGION/NAME or file:///dir"
    )
    parser.add_argument("--fingerprint-configmap", help="ConfigMap holding the sha256 of the last stored dump")
    parser.add_argument("--namespace", help="namespace of that ConfigMap (default: the pod's own)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)")
    parser.add_argument("--attempts", type=int, default=4, help="tries per call on transient errors (default 4)")
    parser.add_argument("--retry-wait", type=float, default=2.0, help="first backoff in seconds (default 2)")
    parser.add_argument("--kube-api", help="Kubernetes API URL (default: in-cluster; env SV_BACKUPS_KUBE_API)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    return run(
        Options(
            endpoint=args.endpoint,
            token_endpoint=args.token_endpoint,
            audience=args.audience,
            client_id=args.client_id,
            client_secret_file=args.client_secret_file,
            secret=args.secret,
            fingerprint_configmap=args.fingerprint_configmap,
            namespace=args.namespace,
            timeout=args.timeout,
            attempts=args.attempts,
            retry_wait=args.retry_wait,
            kube_api=args.kube_api,
        ),
        stream=sys.stdout,
    )
