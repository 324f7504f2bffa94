"""A fake of the Cloud SQL Admin API v1 surface the snapshot providers use: backupRuns (insert, get, list, delete),
operations.get and instances.restoreBackup.

Shapes follow the API reference (resources BackupRun, Operation, BackupRunsListResponse; Google's JSON error
body): runs have int64 ids sent as strings, `status` ENQUEUED -> RUNNING -> SUCCESSFUL (or FAILED),
`windowStartTime`, `enqueuedTime`, `startTime`, `endTime`; an operation goes PENDING -> RUNNING -> DONE, with
`error.errors[]` when it failed, and carries `backupContext.backupId` for a backup. Like the real service, one
operation at a time per instance: a request while one is unfinished answers 409 with reason
`operationInProgress`. The lifecycle advances on reads of the operation (`polls_per_state` reads per state), so
a test decides nothing by time.

Faults: `busy(instance, n)` (the next n mutating requests answer 409 operationInProgress, as during an automated
backup), `inject(method, path_regex, reply, times)` (any answer: 500s, HTML, a body missing fields),
`fate(kind)` for the next operation: "ok", "error" (DONE with an error; the run FAILED) or "never" (stays
RUNNING). `deny_delete` answers 403 to deletes (the creating identity). Every request must carry
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.jobs.fakes.httpserver import LocalServer, Reply, Request

_RUNS = re.compile(r"^/v1/projects/(?P<p>[^/]+)/instances/(?P<i>[^/]+)/backupRuns$")
_RUN = re.compile(r"^/v1/projects/(?P<p>[^/]+)/instances/(?P<i>[^/]+)/backupRuns/(?P<id>[^/]+)$")
_INSTANCES = re.compile(r"^/v1/projects/(?P<p>[^/]+)/instances$")
_OP = re.compile(r"^/v1/projects/(?P<p>[^/]+)/operations/(?P<op>[^/]+)$")
_RESTORE = re.compile(r"^/v1/projects/(?P<p>[^/]+)/instances/(?P<i>[^/]+)/restoreBackup$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(code: int, message: str, reason: str = "") -> Reply:
    errors = [{"domain": "global", "reason": reason or _STATUS.get(code, "unknown").lower(), "message": message}]
    body = {"error": {"code": code, "message": message, "errors": errors, "status": _STATUS.get(code, "UNKNOWN")}}
    return Reply.json(body, code)


@dataclass
class _Op:
    body: dict[str, Any]
    instance: tuple[str, str]
    fate: str
    on_running: Any
    on_done: Any
    reads: int = 0


class CloudSqlAdmin(LocalServer):
    def __init__(self, token: str = "test-token", *, polls_per_state: int = 1, page_size: int = 2):
        super().__init__()
        self.token = token
        self.polls_per_state = polls_per_state
        self.page_size = page_size
        self.instances: set[tuple[str, str]] = set()
        self.runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.operations: dict[tuple[str, str], _Op] = {}
        self.restored: list[dict[str, Any]] = []
        self.deny_delete = False
        self.omit_backup_context = False
        self._busy: dict[tuple[str, str], int] = {}
        self._fates: deque[str] = deque()
        self._injected: list[list[Any]] = []
        self._next_id = 1765000000000

    # ------------------------------------------------------------------------------------------ test knobs

    def add_instance(self, project: str, instance: str) -> None:
        with self.lock:
            self.instances.add((project, instance))
            self.runs.setdefault((project, instance), [])

    def add_run(self, project: str, instance: str, **fields: Any) -> dict[str, Any]:
        """A finished run made by someone else (an automated backup, another tool), or a leftover of ours."""
        with self.lock:
            run = self._new_run(project, instance, fields.pop("description", None), None)
            run.update({"status": "SUCCESSFUL", "startTime": stamp(), "endTime": stamp(), "windowStartTime": stamp()})
            run.update(fields)
            return run

    def busy(self, project: str, instance: str, times: int) -> None:
        with self.lock:
            self._busy[(project, instance)] = times

    def fate(self, *fates: str) -> None:
        with self.lock:
            self._fates.extend(fates)

    def inject(self, method: str, path_regex: str, reply: Reply, times: int = 1) -> None:
        with self.lock:
            self._injected.append([method, re.compile(path_regex), reply, times])

    def runs_of(self, project: str, instance: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(run) for run in self.runs.get((project, instance), [])]

    # ---------------------------------------------------------------------------------------------- model

    def _new_run(self, project: str, instance: str, description: str | None, location: str | None) -> dict:
        self._next_id += 1
        run = {
            "kind": "sql#backupRun",
            "id": str(self._next_id),
            "status": "ENQUEUED",
            "enqueuedTime": stamp(),
            "type": "ON_DEMAND" if description is not None else "AUTOMATED",
            "instance": instance,
            "location": location or "us",
            "backupKind": "SNAPSHOT",
            "selfLink": f"{self.url}/v1/projects/{project}/instances/{instance}/backupRuns/{self._next_id}",
        }
        if description is not None:
            run["description"] = description
        self.runs[(project, instance)].append(run)
        return run

    def _new_op(self, project: str, instance: str, kind: str, on_running=None, on_done=None) -> dict:
        name = str(uuid.uuid4())
        body = {
            "kind": "sql#operation",
            "name": name,
            "status": "PENDING",
            "operationType": kind,
            "insertTime": stamp(),
            "targetId": instance,
            "targetProject": project,
            "targetLink": f"{self.url}/v1/projects/{project}/instances/{instance}",
            "selfLink": f"{self.url}/v1/projects/{project}/operations/{name}",
            "user": "backup-job@example.iam.gserviceaccount.com",
        }
        fate = self._fates.popleft() if self._fates else "ok"
        self.operations[(project, name)] = _Op(body, (project, instance), fate, on_running, on_done)
        return body

    def _unfinished(self, instance: tuple[str, str]) -> bool:
        return any(op.instance == instance and op.body["status"] != "DONE" for op in self.operations.values())

    def _refuse_busy(self, key: tuple[str, str]) -> Reply | None:
        left = self._busy.get(key, 0)
        if left > 0:
            self._busy[key] = left - 1
        elif not self._unfinished(key):
            return None
        message = "Operation failed because another operation was already in progress."
        return error(409, message, "operationInProgress")

    def _advance(self, op: _Op) -> None:
        op.reads += 1
        status = op.body["status"]
        if op.reads < self.polls_per_state or status == "DONE":
            return
        op.reads = 0
        if status == "PENDING":
            op.body.update(status="RUNNING", startTime=stamp())
            if op.on_running:
                op.on_running()
        elif status == "RUNNING" and op.fate != "never":
            op.body.update(status="DONE", endTime=stamp())
            if op.fate == "error":
                op.body["error"] = {
                    "kind": "sql#operationErrors",
                    "errors": [{"kind": "sql#operationError", "code": "INTERNAL_ERROR", "message": "backup failed"}],
                }
            if op.on_done:
                op.on_done(op.fate == "ok")

    # -------------------------------------------------------------------------------------------- serving

    def handle(self, request: Request) -> Reply:
        with self.lock:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return error(401, "Request is missing required authentication credential.", "required")
            for entry in self._injected:
                method, pattern, reply, times = entry
                if times > 0 and request.method == method and pattern.search(request.path):
                    entry[3] -= 1
                    return reply
            return self._route(request)

    def _route(self, request: Request) -> Reply:
        if (m := _RUNS.match(request.path)) and request.method == "POST":
            return self._insert(m["p"], m["i"], request.json() or {})
        if (m := _RUNS.match(request.path)) and request.method == "GET":
            return self._list(m["p"], m["i"], request.query)
        if m := _RUN.match(request.path):
            key = (m["p"], m["i"])
            run = next((r for r in self.runs.get(key, []) if r["id"] == m["id"]), None)
            if run is None:
                return error(404, f"The backup run {m['id']} does not exist.", "backupRunDoesNotExist")
            if request.method == "GET":
                return Reply.json(run)
            if request.method == "DELETE":
                return self._delete(key, run)
        if (m := _INSTANCES.match(request.path)) and request.method == "GET":
            names = sorted(i for p, i in self.instances if p == m["p"])
            items = [{"kind": "sql#instance", "name": name, "project": m["p"]} for name in names]
            return self._page("sql#instancesList", items, request.query)
        if (m := _OP.match(request.path)) and request.method == "GET":
            op = self.operations.get((m["p"], m["op"]))
            if op is None:
                return error(404, f"The Cloud SQL operation {m['op']} does not exist.", "operationDoesNotExist")
            self._advance(op)
            return Reply.json(op.body)
        if (m := _RESTORE.match(request.path)) and request.method == "POST":
            return self._restore((m["p"], m["i"]), request.json() or {})
        return error(404, f"no such method {request.method} {request.path}", "notFound")

    def _insert(self, project: str, instance: str, body: dict) -> Reply:
        key = (project, instance)
        if key not in self.instances:
            return error(404, f"The Cloud SQL instance {instance} does not exist.", "instanceDoesNotExist")
        if busy := self._refuse_busy(key):
            return busy
        run = self._new_run(project, instance, body.get("description", ""), body.get("location"))

        def running():
            run.update(status="RUNNING", startTime=stamp(), windowStartTime=stamp())

        def done(ok: bool):
            run.update(status="SUCCESSFUL" if ok else "FAILED", endTime=stamp())
            if not ok:
                run["error"] = {"kind": "sql#operationError", "code": "INTERNAL_ERROR", "message": "backup failed"}

        op = self._new_op(project, instance, "BACKUP_VOLUME", running, done)
        if not self.omit_backup_context:
            op["backupContext"] = {"kind": "sql#backupContext", "backupId": run["id"]}
        return Reply.json(op)

    def _list(self, project: str, instance: str, query: dict[str, list[str]]) -> Reply:
        key = (project, instance)
        if key not in self.instances:
            return error(404, f"The Cloud SQL instance {instance} does not exist.", "instanceDoesNotExist")
        # Newest first, as the API lists them.
        return self._page("sql#backupRunsList", list(reversed(self.runs[key])), query)

    def _page(self, kind: str, items: list[dict], query: dict[str, list[str]]) -> Reply:
        size = min(int(query.get("maxResults", ["500"])[0]), self.page_size)
        token = query.get("pageToken", ["0"])[0]
        if not token.isdigit():
            return error(400, f"Invalid page token {token!r}.", "invalid")
        start = int(token)
        page: dict[str, Any] = {"kind": kind, "items": items[start : start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return Reply.json(page)

    def _delete(self, key: tuple[str, str], run: dict) -> Reply:
        if self.deny_delete:
            return error(403, "The client is not authorized to make this request.", "notAuthorized")
        if busy := self._refuse_busy(key):
            return busy

        def done(ok: bool):
            if ok and run in self.runs[key]:
                self.runs[key].remove(run)

        run["status"] = "DELETION_PENDING"
        return Reply.json(self._new_op(key[0], key[1], "DELETE_BACKUP", None, done))

    def _restore(self, target: tuple[str, str], body: dict) -> Reply:
        if target not in self.instances:
            return error(404, f"The Cloud SQL instance {target[1]} does not exist.", "instanceDoesNotExist")
        context = body.get("restoreBackupContext")
        if not isinstance(context, dict) or not {"backupRunId", "instanceId", "project"} <= context.keys():
            return error(
                400, "Invalid request: restoreBackupContext needs backupRunId, instanceId, project.", "invalid"
            )
        source = (str(context["project"]), str(context["instanceId"]))
        run = next((r for r in self.runs.get(source, []) if r["id"] == str(context["backupRunId"])), None)
        if run is None or run["status"] != "SUCCESSFUL":
            return error(400, "The backup run does not exist or is not usable.", "invalid")
        if busy := self._refuse_busy(target):
            return busy

        def done(ok: bool):
            if ok:
                self.restored.append({"target": target, "source": source, "backup_run_id": run["id"]})

        return Reply.json(self._new_op(target[0], target[1], "RESTORE_VOLUME", None, done))
