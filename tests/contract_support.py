"""Helpers for tests/test_cronjob_contract.py: read the CronJobs out of an offline plan and run their pods the
way Kubernetes would, with the job code of this repository.

- `shipped_plan(stack)`: the plan of stacks/Pulumi.<stack>.yaml (computed once per process).
- `Pod` and `run_pod`: one attempt of a CronJob's pod: a pod name (the downward API's `metadata.name`), env
  resolution (`value`, `fieldRef`, `secretKeyRef`), `$(VAR)` expansion in args as the kubelet does it, the
  pod's secret and emptyDir volumes as local directories (a Secret's items written with their mode; args that
  name a path under a container's mount point see the local directory),
  initContainers one at a time in order, stopping at the first failure, then the main containers. A native
  sidecar (an initContainer with restartPolicy Always) is started in its place, through a stand-in for its
  image, and the next container starts only once its startupProbe passes; sidecars keep running until the
  main containers have exited, are then stopped with SIGTERM in reverse order, and their exit codes do not
  count for the pod's outcome (Kubernetes 1.29+).
- `parse_job_args(args)`: the jobs CLI's own parser (`jobs.__main__.build_parser`), failing with argparse's
  message instead of exiting; `flag_problems(args)`: flags that are not *exactly* an option of the
  subcommand (argparse would accept an unambiguous abbreviation, which hides a rename).
- `rbac_denials(plan, namespace, service_account, requests)`: the Kubernetes API calls a job made (recorded by
  the fake API server) that the plan's Roles and ClusterRoles do not grant to the CronJob's ServiceAccount.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import re
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
CRON_JOB = "kubernetes:batch/v1:CronJob"
# The GCP primary stacks whose CronJobs the contract tests run.
SHIPPED_STACKS = ("dev", "prod", "prod-ch")


# --------------------------------------------------------------------------------------------- the plan


@functools.cache
def shipped_plan(stack: str):
    """The offline plan of a shipped stack (read it, never mutate)."""
    from engines.offline_plan import load_project, load_stack_file, main_program, plan_program

    project = load_project(ROOT)
    config = load_stack_file(project.stack_file(stack), project=project.name, stack=stack)
    return plan_program(main_program(ROOT), config)


@functools.cache
def shipped_settings(stack: str):
    """The program's own validated view of a shipped stack (components.settings.Settings)."""
    from components.settings import load_settings
    from engines.offline_plan import load_project, load_stack_file

    project = load_project(ROOT)
    config = load_stack_file(project.stack_file(stack), project=project.name, stack=stack)
    return load_settings(config.values, stack=stack)


def cron_jobs(plan) -> dict[str, dict]:
    """CronJob name (metadata.name) -> its engine inputs."""
    return {job["inputs"]["metadata"]["name"]: job["inputs"] for job in plan.of_type(CRON_JOB)}


def cron_job_running(plan, subcommand: str) -> dict:
    """The one CronJob whose main container runs `python -m jobs <subcommand> ...`."""
    found = [job for job in cron_jobs(plan).values() if pod_spec(job)["containers"][0]["args"][0] == subcommand]
    assert len(found) == 1, f"expected one CronJob running {subcommand}, found {len(found)}"
    return found[0]


def pod_spec(cron_job: Mapping) -> dict:
    return cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def is_sidecar(container: Mapping) -> bool:
    """A native sidecar: an initContainer the kubelet keeps running (restartPolicy Always)."""
    return container.get("restartPolicy") == "Always"


def containers_in_run_order(spec: Mapping) -> list[tuple[str, dict]]:
    """("sidecar" | "initContainer" | "container", container) in the order the kubelet starts them."""
    return [("sidecar" if is_sidecar(c) else "initContainer", c) for c in spec.get("initContainers") or []] + [
        ("container", c) for c in spec["containers"]
    ]


def resources_of_type(plan, type_: str) -> list[dict]:
    return [r["inputs"] for r in plan.of_type(type_)]


# ----------------------------------------------------------------------------------- what the kubelet does


def pod_name(cron_job_name: str) -> str:
    """A name like the one the Job controller gives a CronJob's pod: <cronjob>-<minutes since epoch>-<5 chars>."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{cron_job_name}-{int(time.time() // 60)}-{suffix}"


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of command and args: a defined variable is substituted, `$$` is a literal
    `$`, an undefined reference stays as written."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def references(text: str) -> list[str]:
    return [m.group(1) for m in _REFERENCE.finditer(text) if m.group(1)]


@dataclass
class Pod:
    """What the downward API and the Secrets of the namespace give a pod's containers."""

    name: str
    namespace: str
    # Secret name -> key -> value; None: any reference resolves to a placeholder (for parsing only).
    secrets: Mapping[str, Mapping[str, str]] | None = None
    # Volume name -> the local directory that stands in for it (run_pod fills it from the pod spec).
    volumes: dict[str, Path] = field(default_factory=dict)

    def materialize(self, spec: Mapping, root: Path) -> None:
        """The pod's secret and emptyDir volumes as directories under `root`, as the kubelet sets them up before
        the first container starts: a secret volume holds its items (or every key) with defaultMode."""
        for volume in spec.get("volumes") or []:
            local = root / volume["name"]
            local.mkdir(parents=True)
            if "secret" in volume:
                source = volume["secret"]
                name = source["secretName"]
                if self.secrets is None or name not in self.secrets:
                    continue  # a Secret the test does not stand in for: no arg of the run may point into it
                items = source.get("items") or [{"key": k, "path": k} for k in self.secrets[name]]
                for item in items:
                    assert item["key"] in self.secrets[name], f"volume {volume['name']}: no key {item['key']}"
                    target = local / item["path"]
                    target.write_text(self.secrets[name][item["key"]])
                    target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
            elif "emptyDir" not in volume:
                continue  # other sources (ephemeral disks, PVCs) are not simulated: no arg may point into them
            self.volumes[volume["name"]] = local

    def paths(self, container: Mapping, args: list[str]) -> list[str]:
        """`args` with every path under one of the container's simulated mount points moved to its directory."""
        mounts = [
            (m["mountPath"].rstrip("/"), self.volumes[m["name"]])
            for m in container.get("volumeMounts") or []
            if m["name"] in self.volumes
        ]
        out = []
        for arg in args:
            for mount, local in mounts:
                if arg == mount or arg.startswith(mount + "/"):
                    arg = str(local) + arg[len(mount) :]
                    break
            out.append(arg)
        return out

    def env(self, container: Mapping) -> dict[str, str]:
        """The container's environment from its spec (in order: later entries may refer to earlier ones)."""
        resolved: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                resolved[var["name"]] = expand(var["value"], resolved)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                values = {"metadata.name": self.name, "metadata.namespace": self.namespace}
                assert path in values, f"env {var['name']}: fieldRef {path} is not simulated"
                resolved[var["name"]] = values[path]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                if self.secrets is None:
                    resolved[var["name"]] = f"<{ref['name']}/{ref['key']}>"
                    continue
                assert ref["name"] in self.secrets, f"env {var['name']}: Secret {ref['name']} does not exist"
                assert ref["key"] in self.secrets[ref["name"]], f"env {var['name']}: no key {ref['key']}"
                resolved[var["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:
                raise AssertionError(f"env {var['name']}: unsupported source {source}")
        return resolved

    def args(self, container: Mapping) -> list[str]:
        env = self.env(container)
        for arg in container["args"]:
            for name in references(arg):
                assert name in env, f"{container['name']}: $({name}) in args is not in the container's env"
        return [expand(arg, env) for arg in container["args"]]


def password_source(spec: Mapping, container: Mapping) -> tuple[str, str] | None:
    """(Secret, key) of the database password a container reads through `--password-file`: the secret volume
    mounted (read-only) where the flag points; None when the container has no password file."""
    args = list(container.get("args") or [])
    if "--password-file" not in args:
        return None
    path = args[args.index("--password-file") + 1]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if path.startswith(mount["mountPath"].rstrip("/") + "/") and "secret" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, f"{container['name']}: the password volume is writable"
            secret = volumes[mount["name"]]["secret"]
            relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
            (item,) = [i for i in secret["items"] if i["path"] == relative]
            return secret["secretName"], item["key"]
    raise AssertionError(f"{container['name']}: --password-file {path} is on no secret volume")


# ----------------------------------------------------------------------------------------- the job CLI


class ArgsRejected(AssertionError):
    pass


def job_parser() -> argparse.ArgumentParser:
    from jobs.__main__ import build_parser

    return build_parser()


def subcommand_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "the jobs CLI has no subcommands"
    assert command in actions[0].choices, f"the jobs CLI has no subcommand {command!r}"
    return actions[0].choices[command]


def parse_job_args(args: list[str]) -> argparse.Namespace:
    """Parse with the jobs CLI's own parser; an error raises ArgsRejected with argparse's message."""
    parser = job_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(args)
    except SystemExit as exit_:
        raise ArgsRejected(f"python -m jobs {' '.join(args)}\n  rejected ({exit_.code}): {stderr.getvalue()}") from None


def flag_problems(args: list[str]) -> list[str]:
    """Flags that are not exactly an option string of the subcommand, or given twice without `append`."""
    sub = subcommand_parser(job_parser(), args[0])
    options = sub._option_string_actions
    problems = []
    seen: dict[str, int] = {}
    for token in args[1:]:
        if not token.startswith("--"):
            continue
        flag = token.split("=", 1)[0]
        if flag not in options:
            close = [o for o in options if o.startswith(flag)]
            hint = f" (argparse would take it as an abbreviation of {close[0]})" if len(close) == 1 else ""
            problems.append(f"{args[0]}: {flag} is not an option of the job{hint}")
            continue
        action = options[flag]
        seen[action.dest] = seen.get(action.dest, 0) + 1
        if seen[action.dest] > 1 and not isinstance(action, argparse._AppendAction):
            problems.append(f"{args[0]}: {flag} is given twice; the job keeps only the last one")
    return problems


def rewrite_flag(args: list[str], flag: str, change: Callable[[str], str]) -> list[str]:
    """A copy of `args` with every value of `flag` passed through `change`."""
    out = list(args)
    hits = 0
    for i, token in enumerate(out[:-1]):
        if token == flag:
            out[i + 1] = change(out[i + 1])
            hits += 1
    assert hits, f"{flag} is not in {args}"
    return out


def replace_origin(url: str, origin: str) -> str:
    """`url` with scheme and host:port of `origin`, path and query kept."""
    new = urlsplit(origin)
    parts = urlsplit(url)
    return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))


def replace_host(dsn: str, hosts: Mapping[str, str]) -> str:
    """`postgresql://user@HOST:PORT/db` with HOST:PORT mapped through `hosts` ("host:port" -> "host:port")."""
    parts = urlsplit(dsn)
    user, _, hostport = parts.netloc.rpartition("@")
    assert hostport in hosts, f"{dsn}: no local server stands in for {hostport}"
    return urlunsplit((parts.scheme, f"{user}@{hosts[hostport]}", parts.path, parts.query, parts.fragment))


# ------------------------------------------------------------------------------------------ running a pod


def base_env() -> dict[str, str]:
    """What a container of the job image has besides its spec's env: PATH, HOME, the code on PYTHONPATH."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SV_BACKUPS_TEST_PG_BIN")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONWARNINGS"] = "ignore"
    return env


@dataclass
class ContainerRun:
    name: str
    kind: str
    args: list[str]
    result: subprocess.CompletedProcess

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0

    def events(self) -> list[dict]:
        import json

        found = []
        for line in self.result.stdout.splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def describe(self) -> str:
        return (
            f"{self.kind} {self.name}: exit {self.result.returncode}\n  args: {self.args}\n"
            f"  stdout: {self.result.stdout[-2000:]}\n  stderr: {self.result.stderr[-2000:]}"
        )


def run_container(
    pod: Pod,
    kind: str,
    container: Mapping,
    *,
    rewrite: Callable[[str, list[str]], list[str]] = lambda n, a: a,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> ContainerRun:
    """`command` + `args` of the container as a subprocess, with its env; `rewrite(name, args)` may change the
    expanded args (addresses of the local stand-ins)."""
    command = list(container["command"])
    assert command[:1] == ["python"], f"{container['name']}: command {command} is not the job image's python"
    args = rewrite(container["name"], pod.paths(container, pod.args(container)))
    env = {**base_env(), **pod.env(container), **(extra_env or {})}
    result = subprocess.run(
        [sys.executable, *command[1:], *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    return ContainerRun(container["name"], kind, args, result)


@dataclass
class SidecarRun:
    """A native sidecar's stand-in process, from its start until the kubelet stops it."""

    name: str
    args: list[str]
    process: subprocess.Popen
    exit_code: int | None = None
    output: str = ""

    def stop(self, grace: float = 30) -> None:
        """What the kubelet does once the main containers have exited: SIGTERM, then SIGKILL after the grace."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.output = self.process.communicate(timeout=grace)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output = self.process.communicate()[0]
        self.exit_code = self.process.returncode


class PodRuns(list):
    """The init and main containers' runs, in order; `sidecars`: the native sidecars that ran beside them."""

    def __init__(self) -> None:
        super().__init__()
        self.sidecars: list[SidecarRun] = []


def start_sidecar(
    pod: Pod,
    container: Mapping,
    *,
    command: list[str],
    rewrite: Callable[[str, list[str]], list[str]] = lambda n, a: a,
    extra_env: Mapping[str, str] | None = None,
) -> SidecarRun:
    """The sidecar's args (expanded, rewritten) run by `command`, a local stand-in for its image's entrypoint."""
    args = rewrite(container["name"], pod.args(container))
    env = {**base_env(), **pod.env(container), **(extra_env or {})}
    process = subprocess.Popen(
        [*command, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return SidecarRun(container["name"], args, process)


def startup_probe_passes(container: Mapping, sidecar: SidecarRun, ports: Mapping[int, int]) -> bool:
    """The kubelet's startupProbe (httpGet, to the pod's address: here 127.0.0.1, the probe's port mapped
    through `ports`): every periodSeconds until it answers 2xx or failureThreshold attempts have failed.
    Without a probe the kubelet goes on as soon as the container has started."""
    import urllib.error
    import urllib.request

    probe = container.get("startupProbe")
    if not probe:
        return sidecar.process.poll() is None
    http = probe["httpGet"]
    port = ports.get(int(http["port"]), int(http["port"]))
    url = f"http://127.0.0.1:{port}{http.get('path', '/')}"
    period = float(probe.get("periodSeconds", 10))
    for _ in range(int(probe.get("failureThreshold", 3))):
        if sidecar.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=float(probe.get("timeoutSeconds", 1))) as reply:
                if 200 <= reply.status < 300:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        # The real probe waits a whole period; the stand-ins start in well under a second.
        time.sleep(min(period, 0.1))
    return False


def run_pod(
    pod: Pod,
    spec: Mapping,
    *,
    sidecar_commands: Mapping[str, list[str]] | None = None,
    ports: Mapping[int, int] | None = None,
    **kwargs: Any,
) -> PodRuns:
    """The pod as the kubelet runs it with restartPolicy Never: initContainers one at a time, each to
    completion; the first failure fails the pod (nothing after it runs); then the main container(s).

    A native sidecar is started with `sidecar_commands[image]` (a stand-in for that image) and must pass its
    startupProbe before the next container starts (`ports`: container port -> local port the stand-in really
    listens on). Sidecars run until the main containers exit (or the pod fails), then are stopped in reverse
    order; their exit codes are recorded in `runs.sidecars` and do not decide the pod's outcome."""
    assert spec.get("restartPolicy") == "Never"
    import tempfile

    pod.materialize(spec, Path(tempfile.mkdtemp(prefix=f"{pod.name}-volumes-")))
    runs = PodRuns()
    try:
        for kind, container in containers_in_run_order(spec):
            if kind == "sidecar":
                image = container["image"]
                assert sidecar_commands and image in sidecar_commands, f"{container['name']}: no stand-in for {image}"
                sidecar = start_sidecar(
                    pod,
                    container,
                    command=sidecar_commands[image],
                    rewrite=kwargs.get("rewrite", lambda n, a: a),
                    extra_env=kwargs.get("extra_env"),
                )
                runs.sidecars.append(sidecar)
                if not startup_probe_passes(container, sidecar, ports or {}):
                    # The kubelet would restart it and hold the pod in Init until the Job's deadline fails it.
                    sidecar.stop()
                    failed = subprocess.CompletedProcess(
                        sidecar.args, 1, "", f"startupProbe never passed:\n{sidecar.output}"
                    )
                    runs.append(ContainerRun(container["name"], kind, sidecar.args, failed))
                    break
                continue
            run = run_container(pod, kind, container, **kwargs)
            runs.append(run)
            if not run.ok:
                break
    finally:
        for sidecar in reversed(runs.sidecars):
            if sidecar.exit_code is None:
                sidecar.stop()
    return runs


# ----------------------------------------------------------------------------------------------- RBAC

_CORE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)(?:/(?P<name>[^/]+))?$")
_GROUP_NS = re.compile(r"^/apis/(?P<group>[^/]+)/[^/]+/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)(?:/(?P<name>[^/]+))?$")
_GROUP_CLUSTER = re.compile(r"^/apis/(?P<group>[^/]+)/[^/]+/(?P<res>[^/]+)(?:/(?P<name>[^/]+))?$")
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Access:
    verb: str
    group: str
    resource: str
    namespace: str  # "" for cluster-scoped
    name: str | None

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "cluster scope"
        return f"{self.verb} {self.resource}.{self.group or 'core'} {self.name or '(all)'} in {where}"


def access_of(method: str, path: str) -> Access:
    for pattern in (_CORE, _GROUP_NS, _GROUP_CLUSTER):
        match = pattern.match(path)
        if match:
            parts = match.groupdict()
            name = parts.get("name")
            verb = _VERBS.get(method) or ("get" if name else "list")
            return Access(verb, parts.get("group") or "", parts["res"], parts.get("ns") or "", name)
    raise AssertionError(f"not a Kubernetes resource path: {method} {path}")


def _rule_allows(rule: Mapping, access: Access) -> bool:
    def has(values: Iterable[str] | None, value: str) -> bool:
        values = list(values or [])
        return "*" in values or value in values

    names = rule.get("resourceNames")
    return (
        has(rule.get("apiGroups"), access.group)
        and has(rule.get("resources"), access.resource)
        and has(rule.get("verbs"), access.verb)
        # resourceNames cannot restrict list or create: such a rule never grants them.
        and (not names or (access.name is not None and access.name in names))
    )


def rbac_denials(plan, namespace: str, service_account: str, accesses: Iterable[Access]) -> list[str]:
    """The accesses no Role (bound in `namespace`) or ClusterRole (bound cluster-wide, or by a RoleBinding in
    `namespace` for namespaced objects) of the plan grants to system:serviceaccount:<namespace>:<sa>."""

    def binds(binding: Mapping) -> bool:
        return any(
            s.get("kind") == "ServiceAccount" and s.get("name") == service_account and s.get("namespace") == namespace
            for s in binding.get("subjects") or []
        )

    roles = {
        (r["metadata"].get("namespace"), r["metadata"]["name"]): r
        for r in resources_of_type(plan, "kubernetes:rbac.authorization.k8s.io/v1:Role")
    }
    cluster_roles = {
        r["metadata"]["name"]: r for r in resources_of_type(plan, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    }
    namespaced_rules: list[Mapping] = []
    cluster_rules: list[Mapping] = []
    for binding in resources_of_type(plan, "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"):
        if binding["metadata"].get("namespace") != namespace or not binds(binding):
            continue
        ref = binding["roleRef"]
        if ref["kind"] == "Role":
            namespaced_rules += roles[(namespace, ref["name"])].get("rules") or []
        else:
            namespaced_rules += cluster_roles[ref["name"]].get("rules") or []
    for binding in resources_of_type(plan, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"):
        if binds(binding):
            cluster_rules += cluster_roles[binding["roleRef"]["name"]].get("rules") or []

    denied = []
    for access in accesses:
        if access.namespace and access.namespace != namespace:
            denied.append(f"{access} (outside the job's namespace {namespace})")
            continue
        rules = cluster_rules + (namespaced_rules if access.namespace else [])
        if not any(_rule_allows(rule, access) for rule in rules):
            denied.append(str(access))
    return sorted(set(denied))
