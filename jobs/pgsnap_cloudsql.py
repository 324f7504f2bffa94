"""Cloud SQL on-demand backups as a snapshot set's role snapshots (`--method cloudsql-backup`), and their restore.

The Cloud SQL Admin API v1 over plain HTTP (httpx), as `gcloud sql backups create/list/delete/restore` does:
- take: `POST /v1/projects/P/instances/I/backupRuns` (body: our description; `location` when given, the
  multi-region that survives the loss of the primary region), wait for the returned operation
  (`GET /v1/projects/P/operations/OP`, PENDING -> RUNNING -> DONE, `error` when it failed), then read the run
  (`GET .../backupRuns/ID`: status SUCCESSFUL, `windowStartTime` is the cut);
- list: `GET .../backupRuns` (paged by `nextPageToken`), ours recognised by their description;
- delete: `DELETE .../backupRuns/ID`, waiting for its operation (the pruning identity only);
- restore: `POST /v1/projects/P/instances/TARGET/restoreBackup` with `restoreBackupContext`, waiting for the
  operation. Cloud SQL restores onto an existing instance and overwrites it; onto its own source only with
  `in_place=True` (failover), never by accident.

Backup runs carry no labels: the description does (`DESCRIPTION_PREFIX set=... role=... migration=...`), the way
Splice's node-backup.sh finds its runs by description. Cloud SQL runs one operation at a time per instance: a
request while another runs (an automated backup, maintenance) answers 409 `operationInProgress`, which is
retried with backoff (Splice's script retries 20 times, 30 s apart).

Credentials: Application Default Credentials (google-auth; Workload Identity in the cluster), scope
`sqlservice.admin`. The bearer token goes in one header and nowhere else: no message here carries it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from jobs.pgdump import boot_id, now
from jobs.snapshot_providers import SnapshotError, Taken
from rules.manifest import Clock, parse_time, utc_now
from rules.snapshot_sets import CLOUDSQL_BACKUP, PROVIDER, RoleSnapshot

API_URL = "https://sqladmin.googleapis.com"
# Local runs and tests: the Admin API at this URL (the tests' fake; no official emulator exists), with a fixed
# bearer token instead of Google credentials, as secret_stores.py does for Secret Manager.
EMULATOR_ENV = "SV_BACKUPS_CLOUDSQL_EMULATOR"
EMULATOR_TOKEN = "emulator"
SCOPE = "https://www.googleapis.com/auth/sqlservice.admin"
DESCRIPTION_PREFIX = "sv-backups snapshot-set"
_DESCRIPTION = re.compile(
    rf"^{re.escape(DESCRIPTION_PREFIX)} set=(?P<set_id>\S+) role=(?P<role>\S+) migration=(?P<migration_id>\d+)$"
)
# The provider's timestamps of a run, recorded verbatim (windowStartTime is also the cut).
RUN_TIMES = ("enqueuedTime", "startTime", "endTime", "windowStartTime")
OPERATION_TIMES = ("insertTime", "startTime", "endTime")
# Answers that a later identical GET may not repeat: the API's own transient failures and throttling.
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
# Project ids, instance names and backup run ids as Cloud SQL allows them (checked before they enter a URL).
_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.:-]{0,61}[a-z0-9]|[a-z])$")
_INSTANCE = re.compile(r"^[a-z][a-z0-9-]{0,97}$")
_RUN_ID = re.compile(r"^\d{1,20}$")

TokenSource = Callable[[], str]


@dataclass(frozen=True)
class Poll:
    """How long and how often to wait for a provider: each read waits `interval` more, doubling up to
    `max_interval`, until `timeout` seconds have passed (then the step fails). `busy_retries` bounds the retries
    of a request refused because another operation is running; `transient_retries` the consecutive transient
    failures (5xx, 429, network) of a read before it fails. `sleep` and `monotonic` are injectable for tests."""

    interval: float = 5.0
    max_interval: float = 30.0
    timeout: float = 3 * 3600.0
    busy_retries: int = 20
    transient_retries: int = 8
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def waits(self) -> Iterator[float]:
        """Yields before each new read (after sleeping); stops at the deadline."""
        deadline = self.monotonic() + self.timeout
        wait = self.interval
        while True:
            left = deadline - self.monotonic()
            if left <= 0:
                return
            self.sleep(min(wait, left))
            wait = min(wait * 2, self.max_interval)
            yield left


def description(set_id: str, role: str, migration_id: int) -> str:
    return f"{DESCRIPTION_PREFIX} set={set_id} role={role} migration={migration_id}"


def parse_description(text: str | None) -> tuple[str, str, int] | None:
    """(set id, role, migration id) of one of our runs; None for any other run (automated, someone else's)."""
    match = _DESCRIPTION.match(text or "")
    if not match:
        return None
    return match["set_id"], match["role"], int(match["migration_id"])


def format_handle(project: str, instance: str, run_id: str) -> str:
    return f"{project}/{instance}/{run_id}"


def parse_handle(handle: str) -> tuple[str, str, str]:
    parts = handle.split("/")
    if len(parts) != 3 or not _PROJECT.match(parts[0]) or not _INSTANCE.match(parts[1]) or not _RUN_ID.match(parts[2]):
        raise SnapshotError("delete", f"{handle!r} is not a Cloud SQL backup handle (PROJECT/INSTANCE/BACKUP_RUN_ID)")
    return parts[0], parts[1], parts[2]


def default_token_source() -> TokenSource:
    """Application Default Credentials, refreshed when they expire (google-auth, shipped with the GCS client)."""
    import google.auth
    import google.auth.transport.requests

    credentials, _ = google.auth.default(scopes=[SCOPE])
    request = google.auth.transport.requests.Request()

    def token() -> str:
        if not credentials.valid:
            credentials.refresh(request)
        return credentials.token

    return token


def _check_names(project: str, *instances: str) -> None:
    if not _PROJECT.match(project or ""):
        raise ValueError(f"project {project!r}: expected a GCP project id (lowercase letters, digits, hyphens)")
    for instance in instances:
        if not _INSTANCE.match(instance or ""):
            raise ValueError(
                f"instance {instance!r}: expected a Cloud SQL instance name (lowercase letters, digits, hyphens)"
            )


# ApiError.status for what is not an HTTP error: an answer that is not what the API answers (HTML, a field
# missing), an operation or run the provider reports failed, a wait that reached its deadline, no credentials.
GARBAGE, FAILED, TIMEOUT, NO_CREDENTIALS = -1, -2, -3, -4


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


class ApiError(Exception):
    """The API answered an error (or transport failed); `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def busy(self) -> bool:
        return self.status == 409 and (self.reason == "operationInProgress" or "already in progress" in str(self))

    @property
    def transient(self) -> bool:
        return self.status == 0 or self.status in TRANSIENT_STATUSES


class AdminApi:
    """The few calls of the Admin API we make; every answer checked for the fields we use."""

    def __init__(self, *, api_url: str | None, token_source: TokenSource | None, poll: Poll, timeout: float = 60.0):
        self.base = (api_url or API_URL).rstrip("/")
        self._token_source = token_source
        self.poll = poll
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _token(self) -> str:
        # google-auth's errors say which credentials were tried and why they failed, never a token.
        try:
            if self._token_source is None:
                self._token_source = default_token_source()
            token = self._token_source()
        except Exception as exc:
            message = f"no Google credentials for the Cloud SQL Admin API ({type(exc).__name__}: {exc})"
            raise ApiError(message, NO_CREDENTIALS) from None
        if not isinstance(token, str) or not token:
            raise ApiError("no Google credentials for the Cloud SQL Admin API (no access token)", NO_CREDENTIALS)
        return token

    def call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> dict:
        what = f"{method} {path}"
        try:
            response = self._http.request(
                method,
                self.base + path,
                json=body,
                params=params,
                headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:  # the message names the URL and the failure, never the header
            raise ApiError(f"{what}: no answer ({type(exc).__name__}: {exc})") from None
        payload = _json(response)
        if response.status_code >= 400:
            message, reason = _google_error(payload)
            detail = message or _snippet(response)
            raise ApiError(f"{what}: HTTP {response.status_code}: {detail}", response.status_code, reason)
        if not isinstance(payload, dict):
            raise ApiError(f"{what}: HTTP {response.status_code}, not a JSON object: {_snippet(response)}", GARBAGE)
        return payload

    def call_retrying(self, method: str, path: str, *, body: Any = None, busy: bool = False, **kw) -> dict:
        """Reads are retried on transient failures; with `busy`, also a request refused because another
        operation holds the instance (retrying it is safe: a refused request created nothing)."""
        transient = busy_count = 0
        wait = self.poll.interval
        while True:
            try:
                return self.call(method, path, body=body, **kw)
            except ApiError as error:
                if busy and error.busy and busy_count < self.poll.busy_retries:
                    busy_count += 1
                elif method == "GET" and error.transient and transient < self.poll.transient_retries:
                    transient += 1
                else:
                    raise
            self.poll.sleep(wait)
            wait = min(wait * 2, self.poll.max_interval)

    def wait_operation(self, project: str, operation: dict, what: str) -> dict:
        """Poll until DONE; raise ApiError with the operation's own errors when it failed, or at the deadline."""
        name = _field(operation, "name", str, what)
        path = f"/v1/projects/{quote(project)}/operations/{quote(name, safe='')}"
        current = operation
        for _ in _chain_first(self.poll):
            status = _field(current, "status", str, f"{what} (operation {name})")
            if status == "DONE":
                errors = (current.get("error") or {}).get("errors") if isinstance(current.get("error"), dict) else None
                if errors:
                    text = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors if _is_dict(e))
                    raise ApiError(f"{what}: operation {name} failed: {text}", FAILED)
                return current
            if status not in ("PENDING", "RUNNING"):
                expected = "expected PENDING, RUNNING or DONE"
                raise ApiError(f"{what}: operation {name} is in status {status!r} ({expected})", GARBAGE)
            current = self.call_retrying("GET", path)
        last = current.get("status")
        raise ApiError(f"{what}: operation {name} not DONE after {self.poll.timeout:.0f}s (last {last!r})", TIMEOUT)


def _chain_first(poll: Poll) -> Iterator[None]:
    """One pass straight away (the answer we already hold), then one per poll wait."""
    yield None
    for _ in poll.waits():
        yield None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _snippet(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type")
    text = response.text[:120].replace("\n", " ")
    return f"{kind}: {text!r}"


def _google_error(payload: Any) -> tuple[str, str]:
    """Google's JSON error: {"error": {"code", "message", "errors": [{"reason", "message"}]}}."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", ""
    reasons = [e.get("reason", "") for e in error.get("errors") or [] if isinstance(e, dict)]
    return str(error.get("message", "")), next((r for r in reasons if r), "")


def _field(payload: dict, name: str, kind: type, what: str) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind) or (isinstance(value, str) and not value):
        raise ApiError(f"{what}: the answer has no valid {name!r} ({value!r})", GARBAGE)
    return value


def _time(payload: dict, name: str, what: str) -> datetime:
    text = _field(payload, name, str, what)
    try:
        return parse_time(text)
    except ValueError:
        raise ApiError(f"{what}: {name} {text!r} is not an RFC 3339 time", GARBAGE) from None


class CloudSqlBackups:
    """The `cloudsql-backup` provider of one instance. `location`: where the backup is stored (a multi-region
    such as `us`, so that it outlives the primary region); None leaves Cloud SQL's default (the instance's
    multi-region). `instance` None: the pruner's provider, which lists the runs of every instance of the project
    (`GET /v1/projects/P/instances`) and deletes by handle; it cannot take."""

    method = CLOUDSQL_BACKUP

    def __init__(
        self,
        project: str,
        instance: str | None,
        location: str | None,
        *,
        clock: Clock = utc_now,
        api_url: str | None = None,
        token_source: TokenSource | None = None,
        poll: Poll = Poll(),
    ):
        _check_names(project, *([instance] if instance is not None else []))
        if location is not None and not re.match(r"^[a-z][a-z0-9-]*$", location):
            raise ValueError(f"location {location!r}: expected a GCP region or multi-region such as 'us'")
        self.project = project
        self.instance = instance
        self.location = location
        self.clock = clock
        self.api = AdminApi(api_url=api_url, token_source=token_source, poll=poll)

    def close(self) -> None:
        self.api.close()

    def _runs_path(self, project: str | None = None, instance: str | None = None) -> str:
        instance = instance or self.instance
        assert instance, "a run path needs an instance"
        return f"/v1/projects/{quote(project or self.project)}/instances/{quote(instance)}/backupRuns"

    # ------------------------------------------------------------------------------------------------- take

    def take(self, *, role: str, set_id: str, migration_id: int) -> RoleSnapshot:
        text = description(set_id, role, migration_id)
        if parse_description(text) != (set_id, role, migration_id):
            raise SnapshotError("request", f"set id {set_id!r} / role {role!r}: must be non-empty and without spaces")
        where = f"Cloud SQL {self.project}/{self.instance} ({role})"
        if self.instance is None:
            raise SnapshotError("request", f"{where}: no instance given (--instance): this provider only prunes")
        body: dict[str, Any] = {"description": text}
        if self.location:
            body["location"] = self.location
        requested = now(self.clock)
        try:
            operation = self.api.call_retrying("POST", self._runs_path(), body=body, busy=True)
        except ApiError as error:
            # An error answer created nothing, but a lost answer (no reply, 5xx) may have: find it by description.
            if error.transient:
                self._discard(text, error)
            raise SnapshotError("request", f"{where}: {error}") from None
        op_name = operation.get("name")
        try:
            done = self.api.wait_operation(self.project, operation, f"{where}: backup")
            run_id = self._run_id(done, text)
            run = self.api.call_retrying("GET", f"{self._runs_path()}/{run_id}")
            status = _field(run, "status", str, f"{where}: backup run {run_id}")
            if status != "SUCCESSFUL":
                error = run.get("error") if isinstance(run.get("error"), dict) else {}
                reason = error.get("message", "no error given")
                raise ApiError(f"{where}: backup run {run_id} is {status} ({reason})", FAILED)
            if str(run.get("id")) != run_id or run.get("description") != text:
                seen = f"id {run.get('id')!r}, description {run.get('description')!r}"
                raise ApiError(f"{where}: backup run {run_id} is not the one requested ({seen})", GARBAGE)
            cut = _time(run, "windowStartTime", f"{where}: backup run {run_id}")
        except ApiError as error:
            self._discard(text, error)
            raise SnapshotError("wait", f"{where}: {error}") from None
        completed = now(self.clock)
        times = {name: run[name] for name in RUN_TIMES if isinstance(run.get(name), str)}
        times.update({f"operation.{n}": done[n] for n in OPERATION_TIMES if isinstance(done.get(n), str)})
        return RoleSnapshot(
            role=role,
            method=self.method,
            handle=format_handle(self.project, self.instance, run_id),
            consistency=PROVIDER,
            requested_at=requested.wall,
            cut_at=cut,
            completed_at=completed.wall,
            requested_mono=requested.monotonic_ns / 1e9,
            completed_mono=completed.monotonic_ns / 1e9,
            boot_id=boot_id() or "",
            provider_times=times,
            details={
                "project": self.project,
                "instance": self.instance,
                "backup_run_id": run_id,
                "description": text,
                "location": run.get("location") or self.location,
                "backup_kind": run.get("backupKind"),
                "type": run.get("type"),
                "operation": op_name,
            },
            dr_copy=None,
        )

    def _run_id(self, operation: dict, text: str) -> str:
        """The run the operation made: `backupContext.backupId` where the API gives it, else ours by description."""
        context = operation.get("backupContext")
        if isinstance(context, dict) and context.get("backupId") is not None:
            run_id = str(context["backupId"])
            if not _RUN_ID.match(run_id):
                name = operation.get("name")
                raise ApiError(f"operation {name}: backupContext.backupId {run_id!r} is not a run id", GARBAGE)
            return run_id
        found = [run for run in self._runs() if run.get("description") == text]
        if len(found) != 1:
            raise ApiError(
                f"operation {operation.get('name')} is DONE but {len(found)} backup runs carry {text!r}", GARBAGE
            )
        return str(found[0].get("id"))

    def _discard(self, text: str, cause: ApiError) -> None:
        """Delete the run this call made (failed, unfinished or unconfirmed), if it exists. The creating identity
        may not delete (docs/jobs-snapshots-managed.md): then the run stays, list_taken shows it (not ready
        unless it completed) and the pruner removes it; the step fails either way."""
        try:
            runs = [run for run in self._runs() if run.get("description") == text]
        except ApiError as error:
            cause.args = (f"{cause.args[0]} (could not look for the run to remove: {error})",)
            return
        for run in runs:
            run_id = str(run.get("id"))
            try:
                operation = self.api.call("DELETE", f"{self._runs_path()}/{run_id}")
                self.api.wait_operation(self.project, operation, f"delete of backup run {run_id}")
                note = f"backup run {run_id} removed"
            except ApiError as error:
                note = f"backup run {run_id} left for the pruner ({error})"
            cause.args = (f"{cause.args[0]}; {note}",)

    # ------------------------------------------------------------------------------------------ list, delete

    def _runs(self, project: str | None = None, instance: str | None = None) -> Iterator[dict]:
        return self._pages(self._runs_path(project, instance))

    def _instances(self) -> list[str]:
        if self.instance:
            return [self.instance]
        names = [item.get("name") for item in self._pages(f"/v1/projects/{quote(self.project)}/instances")]
        for name in names:
            if not isinstance(name, str) or not _INSTANCE.match(name):
                raise ApiError(f"GET /v1/projects/{self.project}/instances: an instance without a valid name", GARBAGE)
        return names

    def _pages(self, path: str) -> Iterator[dict]:
        """Every item of a paged list (`items`, `nextPageToken`)."""
        token = None
        pages = 0
        while True:
            params = {"maxResults": "500", **({"pageToken": token} if token else {})}
            page = self.api.call_retrying("GET", path, params=params)
            items = page.get("items", [])
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise ApiError(f"GET {path}: 'items' is not a list of objects", GARBAGE)
            yield from items
            token = page.get("nextPageToken")
            pages += 1
            if not token:
                return
            if pages >= 1000:  # a server that pages forever must not hold the job until its deadline
                raise ApiError(f"GET {path}: more than {pages} pages", GARBAGE)

    def list_taken(self) -> list[Taken]:
        taken = []
        try:
            runs = [(instance, run) for instance in self._instances() for run in self._runs(instance=instance)]
            for instance, run in runs:
                ours = parse_description(run.get("description"))
                if ours is None or run.get("type", "ON_DEMAND") != "ON_DEMAND":
                    continue
                run_id = str(run.get("id"))
                if not _RUN_ID.match(run_id):
                    raise ApiError(f"backup run with description {run.get('description')!r} has no valid id", GARBAGE)
                stamp = run.get("windowStartTime") or run.get("enqueuedTime")
                taken.append(
                    Taken(
                        handle=format_handle(self.project, instance, run_id),
                        set_id=ours[0],
                        role=ours[1],
                        migration_id=ours[2],
                        taken_at=_time({"t": stamp}, "t", f"backup run {run_id}"),
                        ready=run.get("status") == "SUCCESSFUL",
                    )
                )
        except ApiError as error:
            raise SnapshotError("list", f"Cloud SQL {self.project}/{self.instance or '*'}: {error}") from None
        return taken

    def delete(self, handle: str) -> None:
        """Delete one backup run (handle PROJECT/INSTANCE/ID: the pruner may delete any instance's runs of the
        project its identity is granted). A run already gone counts as deleted."""
        project, instance, run_id = parse_handle(handle)
        try:
            operation = self.api.call_retrying("DELETE", f"{self._runs_path(project, instance)}/{run_id}", busy=True)
            self.api.wait_operation(project, operation, f"delete of backup run {handle}")
        except ApiError as error:
            if error.status == 404:
                return
            raise SnapshotError("delete", f"Cloud SQL backup run {handle}: {error}") from None


def provider_from_args(args) -> CloudSqlBackups:
    """The provider from `python -m jobs snapshot-step/prune-snapshots` flags (jobs/pgsnap_cli.py calls it):
    `--project` (required), `--instance` (None for the pruner: every instance of the project), `--location`;
    the waits from `--poll-interval` (seconds) and `--ready-timeout` (a timedelta) when present."""
    if not getattr(args, "project", None):
        raise ValueError("--method cloudsql-backup needs --project")
    emulator = os.environ.get(EMULATOR_ENV)
    return CloudSqlBackups(
        args.project,
        getattr(args, "instance", None),
        getattr(args, "location", None),
        poll=poll_from_args(args),
        api_url=emulator or None,
        token_source=(lambda: EMULATOR_TOKEN) if emulator else None,
    )


def poll_from_args(args) -> Poll:
    interval = getattr(args, "poll_interval", None) or Poll.interval
    timeout = getattr(args, "ready_timeout", None)
    return Poll(
        interval=interval,
        max_interval=max(interval, Poll.max_interval),
        timeout=timeout.total_seconds() if timeout is not None else Poll.timeout,
    )


def restore_cloudsql_backup(
    project: str,
    source_instance: str,
    backup_run_id: str | int,
    target_instance: str,
    *,
    in_place: bool = False,
    target_project: str | None = None,
    api_url: str | None = None,
    token_source: TokenSource | None = None,
    poll: Poll = Poll(),
) -> dict[str, Any]:
    """Restore a backup run of `source_instance` onto the existing `target_instance` (in `target_project`,
    default the same), overwriting its data; wait until the operation is DONE. Restoring onto the source itself
    needs `in_place=True`. Returns the operation's name and the provider's times."""
    target_project = target_project or project
    _check_names(project, source_instance)
    _check_names(target_project, target_instance)
    run_id = str(backup_run_id)
    if not _RUN_ID.match(run_id):
        raise ValueError(f"backup run id {backup_run_id!r}: expected the numeric id of a backup run")
    if (target_project, target_instance) == (project, source_instance) and not in_place:
        raise SnapshotError(
            "restore",
            f"refusing to restore backup run {run_id} onto its own instance {project}/{source_instance}: that "
            "overwrites the live database; restore into another instance, or pass in_place=True for a failover",
        )
    api = AdminApi(api_url=api_url, token_source=token_source, poll=poll)
    where = f"restore of {project}/{source_instance}/{run_id} onto {target_project}/{target_instance}"
    body = {
        "restoreBackupContext": {
            "kind": "sql#restoreBackupContext",
            "backupRunId": run_id,
            "instanceId": source_instance,
            "project": project,
        }
    }
    try:
        operation = api.call_retrying(
            "POST", f"/v1/projects/{quote(target_project)}/instances/{quote(target_instance)}/restoreBackup",
            body=body, busy=True,
        )  # fmt: skip
        done = api.wait_operation(target_project, operation, where)
    except ApiError as error:
        raise SnapshotError("restore", str(error) if where in str(error) else f"{where}: {error}") from None
    finally:
        api.close()
    return {
        "operation": done.get("name"),
        "target": f"{target_project}/{target_instance}",
        "provider_times": {n: done[n] for n in OPERATION_TIMES if isinstance(done.get(n), str)},
    }


__all__ = [
    "CloudSqlBackups",
    "Poll",
    "description",
    "format_handle",
    "parse_description",
    "parse_handle",
    "poll_from_args",
    "provider_from_args",
    "restore_cloudsql_backup",
]
