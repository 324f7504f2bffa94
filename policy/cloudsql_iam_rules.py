"""Rules on Cloud SQL logins without a password (docs/cloudsql-iam.md): the Cloud SQL Auth Proxy sidecar, the
project-level grants that let the dump job connect and log in, and the chain from a dump step's connection
string to the instance's IAM flag and IAM user.

A dump step that connects to 127.0.0.1 reaches its instance only through a proxy sidecar in the same pod; when
it has no PGPASSWORD it logs in as the pod's Google service account, which needs, on that one instance and no
other: roles/cloudsql.client and roles/cloudsql.instanceUser, the `cloudsql.iam_authentication` flag, and the
account's IAM database user (named by its email without `.gserviceaccount.com`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity, StackValidationArgs

from .props import (
    CRON_JOB,
    GKE_SA_ANNOTATION,
    K8S_SERVICE_ACCOUNT,
    SQL_INSTANCE,
    UNKNOWN,
    backup_kind,
    cloudsql_proxy_version,
    get,
    labels,
    namespace_of,
    pod_spec,
)
from .rule import StackResource, resource_rule, stack_rule

SQL_USER = "gcp:sql/user:User"
IAM_AUTH_FLAG = "cloudsql.iam_authentication"
IAM_USER_TYPE = "CLOUD_IAM_SERVICE_ACCOUNT"
CLIENT_ROLE = "roles/cloudsql.client"
INSTANCE_USER_ROLE = "roles/cloudsql.instanceUser"
LOGIN_ROLES = (CLIENT_ROLE, INSTANCE_USER_ROLE)
SERVICE_ACCOUNT_DOMAIN = ".gserviceaccount.com"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_PROJECT_IAM = ("gcp:projects/iAMMember:", "gcp:projects/iAMBinding:", "gcp:projects/iAMPolicy:")


# --- reading a proxy's configuration ----------------------------------------------------------------------

# The proxy's flags that take a value, with their short forms (cmd/root.go of cloud-sql-proxy v2).
_VALUE_FLAGS = {"address": "a", "port": "p", "http-address": None, "http-port": None, "unix-socket": "u"}
_BOOL_FLAGS = {"auto-iam-authn": "i", "private-ip": None, "psc": None, "health-check": None}
_SHORT = {short: name for name, short in {**_VALUE_FLAGS, **_BOOL_FLAGS}.items() if short}
_DEFAULTS = {"address": "127.0.0.1", "port": "5432", "http-address": "localhost", "http-port": "9090"}


@dataclass(frozen=True)
class ProxyInstance:
    connection_name: str | None  # PROJECT:REGION:INSTANCE; None while unknown (during preview)
    address: str
    port: int | None  # None: a Unix socket
    iam_authn: bool
    private: bool

    @property
    def project(self) -> str | None:
        return self.connection_name.split(":")[0] if self.connection_name else None

    @property
    def instance(self) -> str | None:
        return self.connection_name.split(":")[-1] if self.connection_name else None


@dataclass(frozen=True)
class Proxy:
    name: str
    index: int  # among the pod's initContainers; -1 for a main container
    options: dict[str, str | bool]
    instances: list[ProxyInstance]


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def proxy_config(container: dict, index: int) -> Proxy:
    """A v2 proxy's effective settings: flags (long or short, `--f=v` or `--f v`), else CSQL_PROXY_* env, else
    the proxy's defaults; per-instance query parameters (`?port=...&address=...`) override them."""
    env = {e.get("name"): e.get("value") for e in get(container, "env", default=[]) or [] if isinstance(e, dict)}
    options: dict[str, str | bool] = {}
    positional: list[str] = []
    words = list(get(container, "args", default=[]) or [])
    i = 0
    while i < len(words):
        word = words[i]
        if word is UNKNOWN or not isinstance(word, str):
            positional.append(None)  # e.g. a connection name only known after deployment
        elif word.startswith("-"):
            name, has_value, value = word.lstrip("-").partition("=")
            name = _SHORT.get(name, name) if not word.startswith("--") else name
            if name in _VALUE_FLAGS and not has_value and i + 1 < len(words):
                value, i = words[i + 1], i + 1
            options[name] = value if (has_value or name in _VALUE_FLAGS) else True
        else:
            positional.append(word)
        i += 1
    for name in (*_VALUE_FLAGS, *_BOOL_FLAGS):
        env_value = env.get("CSQL_PROXY_" + name.upper().replace("-", "_"))
        if name not in options and env_value is not None:
            options[name] = env_value
    for name, default in _DEFAULTS.items():
        options.setdefault(name, default)
    instances = []
    base_port = int(options["port"]) if str(options["port"]).isdigit() else None
    for offset, word in enumerate(positional):
        connection, _, query = (word or "").partition("?")
        params = {key: values[-1] for key, values in parse_qs(query).items()}
        port_text = params.get("port") or (str(base_port + offset) if base_port is not None else "")
        unix = params.get("unix-socket") or params.get("unix-socket-path") or options.get("unix-socket")
        instances.append(
            ProxyInstance(
                connection_name=connection or None,
                address=str(params.get("address", options["address"])),
                port=None if unix else (int(port_text) if port_text.isdigit() else None),
                iam_authn=_truthy(params.get("auto-iam-authn", options.get("auto-iam-authn", False))),
                private=_truthy(params.get("private-ip", options.get("private-ip", False)))
                or _truthy(params.get("psc", options.get("psc", False))),
            )
        )
    return Proxy(str(container.get("name")), index, options, instances)


def _proxies(spec: dict) -> list[Proxy]:
    found = []
    for kind in ("initContainers", "containers"):
        for index, container in enumerate(get(spec, kind, default=[]) or []):
            if isinstance(container, dict) and cloudsql_proxy_version(container):
                found.append(proxy_config(container, index if kind == "initContainers" else -1))
    return found


# --- the proxy sidecar ------------------------------------------------------------------------------------


def _check_proxy_sidecar(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = backup_kind(props)
    if kind is None:
        return
    spec = pod_spec(props)
    init = [c for c in get(spec, "initContainers", default=[]) or [] if isinstance(c, dict)]
    steps = [i for i, c in enumerate(init) if get(c, "restartPolicy") != "Always" and not cloudsql_proxy_version(c)]
    for field in ("initContainers", "containers"):
        for index, container in enumerate(get(spec, field, default=[]) or []):
            version = cloudsql_proxy_version(container) if isinstance(container, dict) else None
            if version is None:
                continue
            where = f"CronJob '{args.name}' ({kind} backup): Cloud SQL Auth Proxy '{container.get('name')}'"
            for problem in _proxy_problems(container, field, index, version, steps):
                report(f"{where}: {problem}")


def _proxy_problems(container: dict, field: str, index: int, version: str, steps: list[int]) -> list[str]:
    if version == "v1":
        return [
            f"runs the v1 proxy image '{container.get('image')}' (end of life, other flags). Fix: use the pinned "
            f"v2 image of components/gcp/cloudsql.py CLOUD_SQL_PROXY_IMAGE."
        ]
    problems = []
    if field == "containers":
        problems.append(
            "is a main container: it never exits, so the Job never completes and every run ends at its deadline. "
            "Fix: run it as an initContainer with restartPolicy: Always (a native sidecar, Kubernetes 1.29+)."
        )
    elif get(container, "restartPolicy") != "Always":
        problems.append(
            "is an initContainer without restartPolicy: Always: the kubelet waits for it to exit, which it never "
            "does, so no dump step ever starts. Fix: set restartPolicy: Always (a native sidecar)."
        )
    elif steps and index > steps[0]:
        problems.append(
            f"starts after the dump step at initContainers[{steps[0]}]: steps before it cannot reach their "
            f"instance. Fix: declare every proxy sidecar before the first dump step."
        )
    image = container.get("image")
    if isinstance(image, str) and "@sha256:" not in image:
        problems.append(
            f"runs '{image}', a tag that can be moved to another binary after review; this binary holds the "
            f"job's database connection. Fix: pin it by digest (CLOUD_SQL_PROXY_IMAGE in components/gcp/cloudsql.py)."
        )
    proxy = proxy_config(container, index)
    if not proxy.instances:
        problems.append("names no instance connection name. Fix: pass PROJECT:REGION:INSTANCE as its argument.")
    for instance in proxy.instances:
        label = instance.connection_name or "its instance"
        if instance.port is not None and instance.address not in LOOPBACK:
            problems.append(
                f"listens on {instance.address}:{instance.port} for {label}: any pod that reaches this one could "
                f"use the backup identity's database login. Fix: --address=127.0.0.1."
            )
        if not instance.private:
            problems.append(
                f"connects to {label} without --private-ip: backup traffic would leave the VPC for the "
                f"instance's public IP (or fail on an instance without one). Fix: add --private-ip."
            )
    probe = get(container, "startupProbe", "httpGet", default={}) or {}
    health_port = str(proxy.options.get("http-port"))
    if not _truthy(proxy.options.get("health-check")) or get(probe, "path") != "/startup":
        problems.append(
            "has no startupProbe on /startup with --health-check: the next container (a dump step) can start "
            "before the proxy listens, and fails. Fix: --health-check and startupProbe httpGet /startup on "
            "--http-port."
        )
    elif _port_text(get(probe, "port")) != health_port:
        problems.append(
            f"probes port {_port_text(get(probe, 'port'))} but serves health checks on --http-port {health_port}: the "
            f"probe never passes. Fix: probe the --http-port."
        )
    elif str(proxy.options.get("http-address")) in LOOPBACK:
        problems.append(
            f"serves health checks on {proxy.options.get('http-address')} only, which the kubelet's probe (to the "
            f"pod IP) cannot reach: the pod never leaves Init. Fix: --http-address=0.0.0.0."
        )
    return problems


cloudsql_proxy_sidecar = resource_rule(
    "cloudsql-proxy-sidecar",
    "A Cloud SQL Auth Proxy in a backup pod is a native sidecar before the dump steps, pinned by digest, listening "
    "on loopback only, over private IP, with a startupProbe the kubelet can reach.",
    types=[CRON_JOB],
    check=_check_proxy_sidecar,
    severity=Severity.HIGH,
    remediation="Declare the proxy with components/gcp/cloudsql.py proxy_sidecar(): an initContainer with "
    "restartPolicy Always before the dump steps, the pinned v2 image, --address=127.0.0.1, --private-ip, "
    "--health-check with --http-address=0.0.0.0 and a startupProbe on /startup.",
)


# --- project-level Cloud SQL grants ----------------------------------------------------------------------


def _bindings(props: dict) -> list[tuple[object, list, object]]:
    """(role, members, condition expression or None) of a project IAM member, binding or policy."""
    if "policyData" in props:
        data = props["policyData"]
        try:
            policy = json.loads(data) if isinstance(data, str) else {}
        except json.JSONDecodeError:
            return []
        return [
            (b.get("role"), list(b.get("members") or []), get(b, "condition", "expression"))
            for b in policy.get("bindings") or []
        ]
    members = props.get("members") if isinstance(props.get("members"), list) else [props.get("member")]
    return [(props.get("role"), members, get(props, "condition", "expression"))]


_TERM = re.compile(r"""^\(?\s*resource\.(name|type)\s*==\s*(?:'([^']*)'|"([^"]*)")\s*\)?$""")


def condition_instances(expression) -> list[str] | None:
    """The instance resource names a condition limits a grant to, when it is a conjunction of
    `resource.name == '...'` and `resource.type == 'sqladmin.googleapis.com/Instance'` terms; None for any other
    expression (it cannot be shown to name one instance only)."""
    if not isinstance(expression, str) or "||" in expression:
        return None
    names = []
    for term in expression.split("&&"):
        match = _TERM.match(term.strip())
        if not match:
            return None
        value = match.group(2) if match.group(2) is not None else match.group(3)
        if match.group(1) == "type" and value != "sqladmin.googleapis.com/Instance":
            return None
        if match.group(1) == "name":
            names.append(value)
    return names


def _check_cloudsql_grants(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = args.resource_type.rsplit(":", 1)[-1]
    for role, members, expression in _bindings(props):
        if not isinstance(role, str) or not role.startswith("roles/cloudsql."):
            continue
        who = ", ".join("<known after deploy>" if m is UNKNOWN else str(m) for m in members) or "nobody"
        if role not in LOGIN_ROLES:
            report(
                f"{kind} '{args.name}': grants {role} on the project to {who}. A backup login needs "
                f"{CLIENT_ROLE} and {INSTANCE_USER_ROLE} only; broader Cloud SQL roles can change or delete "
                f"instances and their backups. Fix: remove it."
            )
            continue
        if expression is UNKNOWN:
            continue
        names = condition_instances(expression)
        if names is None or len(set(names)) != 1 or not re.fullmatch(r"projects/[^/]+/instances/[^/]+", names[0]):
            shown = f"condition {expression!r}" if expression else "no condition"
            report(
                f"{kind} '{args.name}': grants {role} to {who} with {shown}, so it applies to every Cloud SQL "
                f"instance of the project (Cloud SQL has no instance-level IAM). Fix: add the condition "
                f"\"resource.name == 'projects/<project>/instances/<instance>' && resource.type == "
                f"'sqladmin.googleapis.com/Instance'\" (components/gcp/cloudsql.py instance_condition)."
            )


cloudsql_grants_one_instance = resource_rule(
    "cloudsql-grants-one-instance",
    "Project-level Cloud SQL grants are roles/cloudsql.client or roles/cloudsql.instanceUser only, each with an "
    "IAM condition that names exactly one instance.",
    types=lambda t: t.startswith(_PROJECT_IAM),
    check=_check_cloudsql_grants,
    severity=Severity.HIGH,
    remediation="Grant roles/cloudsql.client and roles/cloudsql.instanceUser with the condition "
    "resource.name == 'projects/<project>/instances/<instance>' && resource.type == "
    "'sqladmin.googleapis.com/Instance'.",
)


# --- from a dump step to the instance ---------------------------------------------------------------------


def _env(container: dict) -> dict[str, object]:
    return {e.get("name"): e for e in get(container, "env", default=[]) or [] if isinstance(e, dict)}


def _dsns(container: dict) -> list[str]:
    words = [w for w in get(container, "args", default=[]) or [] if isinstance(w, str)]
    return [words[i + 1].split("=", 1)[1] for i, w in enumerate(words[:-1]) if w == "--db" and "=" in words[i + 1]]


def _grants(resources: list[StackResource]) -> list[tuple[str, str, str]]:
    """(role, member, instance resource name) of every instance-conditioned project grant."""
    found = []
    for resource in resources:
        if not resource.type.startswith(_PROJECT_IAM):
            continue
        for role, members, expression in _bindings(resource.props):
            for name in condition_instances(expression) or []:
                found += [(str(role), str(member), name) for member in members]
    return found


def _ignored_flags(args: StackValidationArgs, urn: str) -> list[str]:
    for resource in args.resources:
        if resource.urn == urn:
            ignored = getattr(resource.opts, "ignore_changes", None) or []
            return [p for p in map(str, ignored) if p.split("[")[0] in ("settings", "settings.databaseFlags", "*")]
    return []


def _check_iam_login(resources: list[StackResource], args: StackValidationArgs, report: ReportViolation) -> None:
    accounts = {
        (namespace_of(r.props), get(r.props, "metadata", "name")): labels(r.props, "metadata", "annotations").get(
            GKE_SA_ANNOTATION
        )
        for r in resources
        if r.type == K8S_SERVICE_ACCOUNT
    }
    grants = _grants(resources)
    instances = {r.props.get("name"): r for r in resources if r.type == SQL_INSTANCE}
    users = {
        (r.props.get("instance"), r.props.get("name"), r.props.get("type")) for r in resources if r.type == SQL_USER
    }
    for job in resources:
        if job.type != CRON_JOB or backup_kind(job.props) != "postgres":
            continue
        spec = pod_spec(job.props)
        proxies = _proxies(spec)
        email = accounts.get((namespace_of(job.props), spec.get("serviceAccountName")))
        init = [c for c in get(spec, "initContainers", default=[]) or [] if isinstance(c, dict)]
        for field in ("initContainers", "containers"):
            for index, container in enumerate(get(spec, field, default=[]) or []):
                if not isinstance(container, dict) or cloudsql_proxy_version(container):
                    continue
                position = index if field == "initContainers" else len(init)
                for dsn in _dsns(container):
                    where = f"CronJob '{job.name}' (postgres backup): '{container.get('name')}' --db {dsn}"
                    for problem in _login_problems(
                        dsn, container, position, proxies, email, grants, instances, users, args
                    ):
                        report(f"{where}: {problem}", job.urn)


def _login_problems(dsn, container, position, proxies, email, grants, instances, users, args) -> list[str]:
    parts = urlsplit(dsn)
    env = _env(container)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    sslmode = query.get("sslmode") or get(env.get("PGSSLMODE") or {}, "value") or "prefer"
    host = parts.hostname or ""
    if host not in LOOPBACK:
        if sslmode == "disable":
            return [
                f"connects to {host} with sslmode disable: the dump crosses the network in clear. Fix: "
                f"PGSSLMODE require (direct) or connect through the Cloud SQL Auth Proxy on 127.0.0.1."
            ]
        return []
    port = parts.port or 5432
    # Matched by port alone: a listener on every interface serves loopback too (cloudsql-proxy-sidecar fails it).
    serving = [(p, i) for p in proxies for i in p.instances if i.port == port]
    if len(serving) != 1:
        return [
            f"connects to {host}:{port}, where {'no' if not serving else len(serving)} Cloud SQL Auth Proxy "
            f"sidecar(s) of the pod listen: the step cannot reach (or cannot tell) its instance. Fix: one proxy "
            f"sidecar per instance, on the port the step connects to (components/gcp/cloudsql.py proxy_ports)."
        ]
    proxy, instance = serving[0]
    problems = []
    if proxy.index < 0 or proxy.index > position:
        problems.append(f"its proxy '{proxy.name}' does not start before it. Fix: declare the proxy sidecar first.")
    if "PGPASSWORD" in env:
        return problems  # a password login through the proxy: nothing below applies
    if not instance.iam_authn:
        problems.append(
            f"has no PGPASSWORD and its proxy '{proxy.name}' does not log in by IAM for "
            f"{instance.connection_name or 'its instance'}: the login cannot succeed. Fix: --auto-iam-authn on "
            f"the proxy."
        )
        return problems
    if instance.connection_name is None:
        return problems  # which instance is only known after deployment
    user = unquote(parts.username or "")
    if isinstance(email, str) and email.endswith(SERVICE_ACCOUNT_DOMAIN):
        expected = email.removesuffix(SERVICE_ACCOUNT_DOMAIN)
        if user != expected:
            problems.append(
                f"logs in as '{user}', but the pod runs as {email}, whose IAM database user is '{expected}' "
                f"(the email without {SERVICE_ACCOUNT_DOMAIN}). Fix: user {expected} in the DSN."
            )
    resource_name = f"projects/{instance.project}/instances/{instance.instance}"
    member = f"serviceAccount:{email}" if isinstance(email, str) else None
    for role in LOGIN_ROLES:
        if member and not any(g == (role, member, resource_name) for g in grants):
            problems.append(
                f"the pod's account {email} has no {role} limited to {resource_name}: the proxy cannot "
                f"{'connect' if role == CLIENT_ROLE else 'log it in'}. Fix: a project IAM member for {role} with "
                f"the condition resource.name == '{resource_name}' (components/gcp/cloudsql.py)."
            )
    declared = instances.get(instance.instance)
    if declared is None:
        return problems  # not managed here (adopt: false): the flag and the user are the operator's steps
    flags = get(declared.props, "settings", "databaseFlags")
    if flags is not UNKNOWN:
        value = next(
            (f.get("value") for f in flags or [] if isinstance(f, dict) and f.get("name") == IAM_AUTH_FLAG), None
        )
        if value != "on":
            problems.append(
                f"instance {instance.instance} has {IAM_AUTH_FLAG} {value or 'unset'}: it refuses IAM logins. Fix: "
                f"declare the flag on, with the instance's other live flags (components/gcp/cloudsql.py)."
            )
    hidden = _ignored_flags(args, declared.urn)
    if hidden:
        problems.append(
            f"instance {instance.instance} ignores changes to {', '.join(hidden)}, so the declared {IAM_AUTH_FLAG} "
            f"is never applied. Fix: drop settings.databaseFlags from its ignore_changes (CLOUDSQL_IAM_IGNORED_FIELDS)."
        )
    if user and (instance.instance, user, IAM_USER_TYPE) not in users and UNKNOWN not in {u[1] for u in users}:
        problems.append(
            f"instance {instance.instance} has no {IAM_USER_TYPE} user '{user}': the login is refused. Fix: a "
            f"gcp.sql.User of type {IAM_USER_TYPE} named '{user}' on it."
        )
    return problems


cloudsql_iam_login = stack_rule(
    "cloudsql-iam-login",
    "Every Postgres dump step that connects to 127.0.0.1 has a Cloud SQL Auth Proxy sidecar on that port; "
    "without a password it logs in as the pod's service account, which has roles/cloudsql.client and "
    "roles/cloudsql.instanceUser on that instance, whose IAM flag is on (not hidden by ignoreChanges) and which "
    "has that account's IAM user. No step connects elsewhere with sslmode disable.",
    check=_check_iam_login,
    severity=Severity.HIGH,
    remediation="Leave passwordSecret out of a cloudsql instance and let components/gcp/cloudsql.py declare the "
    "proxy, the conditioned grants, the flag and the IAM user together.",
)

POLICIES = [cloudsql_proxy_sidecar, cloudsql_grants_one_instance, cloudsql_iam_login]


def _port_text(port) -> str:
    """A probe port as text: the CLI sends numbers as doubles over gRPC (9803.0), offline plans as ints."""
    return str(int(port)) if isinstance(port, float) and port.is_integer() else str(port)
