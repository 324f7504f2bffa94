"""The failover runbook as data: from the DR stack's facts and one chosen set, the exact commands, in order.

Pure (no I/O): jobs/failover.py reads the facts, chooses and verifies the set, prints this plan and runs
the steps that carry `run`. Order (Splice "Restoring a full SV node from backups"): scale every SV component
to 0; restore every database from the one set; restore the CometBFT volume from its DR snapshot copy; fetch
the identities dump; scale back to 1; turn the DR stack's backup CronJobs on. A DABFT node (the DR stack's
`synchronizer: dabft` output) has no CometBFT volume: its ordering state is the set's canton-bft database, restored
first with the others, and there is no CometBFT step or deployment.

Cloud differences (where the CometBFT snapshot copy is found, which CSI driver restores it, how the secret is
read with a CLI) are in the small classes at the end, chosen by name: the steps are written once.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlparse, urlunparse

from jobs.cometbft import MIGRATION_ID_LABEL, TAKEN_AT_LABEL
from jobs.secret_stores import AwsSecretsManagerStore, GcpSecretManagerStore, open_store
from rules.naming import LABEL_PREFIX, MANAGED_BY

# The DR stack's switch that turns its suspended backup CronJobs on after a failover (`sv-backups:dr` is an
# object, hence `--path`).
FAILOVER_CONFIG_PATH = "sv-backups:dr.failover"
# Tags the CometBFT job puts on each EBS snapshot copy in the DR region (besides the VolumeSnapshot labels
# taken-at, migration-id and set-id): which node's volume it is (PVC names are the same on every SV).
NODE_TAG = f"{LABEL_PREFIX}/node"
# The Splice runbook's Postgres defaults: service `<role>-pg`, user cnadmin, secret `<role>-pg-secret`.
DEFAULT_PG_USER = "cnadmin"
DEFAULT_PG_PORT = 5432
RESTORED_SNAPSHOT_SUFFIX = "dr-restore"
SIZE_PATH = "jsonpath={.status.restoreSize}"


class FactsError(ValueError):
    """The DR facts are incomplete or malformed: one line per problem, naming the output or flag."""


@dataclass(frozen=True)
class ChosenSet:
    url: str
    set_id: str
    migration_id: int
    tier: str
    created_at: datetime
    databases: tuple[tuple[str, str], ...]  # (role, database), in the manifest's order
    # Why a node restored from it could not catch up (rules.manifest.stale_set_problem), or None. fail_over
    # refuses such a set unless the operator accepts it; then restore-set is told so too.
    stale: str | None = None
    kind: str = "dump"  # dump | snapshot
    snapshots: tuple[tuple[str, str, str], ...] = ()  # a snapshot set's (role, method, PVC of a volume role), in order
    data_taken_by: datetime | None = None
    why: str = ""  # why this set (of either kind) was chosen, for the plan

    @property
    def roles(self) -> list[str]:
        if self.kind == "snapshot":
            return [role for role, _, _ in self.snapshots]
        return list(dict.fromkeys(role for role, _ in self.databases))


@dataclass(frozen=True)
class Target:
    """The server a role's databases are restored into (no database, no password in the URL)."""

    role: str
    server_url: str
    password_secret: str

    def dsn(self, database: str) -> str:
        parsed = urlparse(self.server_url)
        return urlunparse(parsed._replace(path=f"/{database}"))


@dataclass(frozen=True)
class DrFacts:
    dr_url: str
    cloud: str | None  # gcp | aws | None (a file:// copy: no cloud snapshots)
    namespace: str
    node: str | None
    migration_id: int | None
    serial_id: int
    deployments: tuple[str, ...]
    synchronizer: str  # cometbft | dabft (no CometBFT volume: canton-bft is a database of the set)
    identities_secret_url: str | None
    cometbft_pvc: str
    cometbft_release: str
    cometbft_storage_class: str | None
    cometbft_snapshot: str | None  # a snapshot handle chosen by the operator (else looked up)
    snapshot_project: str | None  # gcp: the project holding the PD snapshots
    region: str | None  # aws: the DR region holding the EBS snapshot copies
    targets: dict[str, Target]
    targets_given: bool  # from flags or the stack, not the Splice defaults
    kube_context: str
    stack: str
    restore_identity: str | None  # the DR stack's restore ServiceAccount (reads backups and secrets only)
    # Snapshot sets: restore-snapshot-set's targets (role -> PVC / Cloud SQL instance / new RDS id), the job image
    # of the prepare-datadir pod (pinned by digest), the StorageClass of the restored Postgres claims, and the
    # Kubernetes API --execute reaches (e.g. `kubectl proxy`).
    snapshot_targets: dict[str, str] = field(default_factory=dict)
    job_image: str | None = None
    pg_storage_class: str | None = None
    kube_api: str | None = None


@dataclass
class Step:
    title: str
    commands: list[str]
    why: str = ""
    run: list[str] | None = None  # the argv --execute runs (its shell form is among `commands`)
    manifests: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ facts


def _get(outputs: dict[str, Any], path: str) -> Any:
    value: Any = outputs
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def resolve_facts(outputs: dict[str, Any], flags: dict[str, Any]) -> DrFacts:
    """Flags win over the DR stack's outputs; the Splice runbook's names fill what neither gives."""
    problems: list[str] = []

    def pick(flag: str, output: str, kind: type, required: bool = False):
        value = flags.get(flag)
        source = f"--{flag.replace('_', '-')}"
        if value is None:
            value, source = _get(outputs, output), f"DR stack output {output}"
        if value is None:
            if required:
                problems.append(f"{output}: missing (pass --{flag.replace('_', '-')} or export it from the DR stack)")
            return None
        if kind is int and isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{source}: expected {'an integer' if kind is int else 'a string'}, got {value!r}")
            return None
        return value

    dr_url = pick("dr_url", "backupUrl", str, required=True)
    namespace = pick("namespace", "node.namespace", str, required=True)
    migration_id = pick("migration_id", "node.migrationId", int)
    serial_id = pick("serial_id", "node.serialId", int)
    cloud = pick("cloud", "cloud", str)
    if cloud is None and dr_url:
        cloud = {"gs": "gcp", "s3": "aws"}.get(urlparse(dr_url).scheme)
    if cloud is not None and cloud not in CLOUDS:
        problems.append(f"cloud: {cloud!r} is not one of {', '.join(CLOUDS)}")
    if serial_id is None:
        serial_id = migration_id
    elif migration_id is None and _get(outputs, "node.serialId") is not None:
        # A node that runs logical synchronizer upgrades exports node.serialId: its sets are filed under the serial
        # (docs/synchronizer-upgrade.md), so the set restored is one of the current synchronizer.
        migration_id = serial_id
    if serial_id is None:
        problems.append("node.migrationId: missing (needed for the deployment names; or pass --serial-id)")
    node = pick("node", "node.name", str)
    synchronizer = _get(outputs, "synchronizer") or "cometbft"
    if synchronizer not in ("cometbft", "dabft"):
        problems.append(f"synchronizer: {synchronizer!r} is not one of cometbft, dabft")
    identities = pick("identities_secret", "identitiesSecretUrl", str)
    pvc = pick("cometbft_pvc", "cometbft.pvc", str)
    storage_class = pick("cometbft_storage_class", "cometbft.storageClass", str)
    # Where the CometBFT snapshot copies are: the DR stack exports both (components/dr.py failover_facts).
    project = pick("snapshot_project", "cometbft.snapshotProject", str) or pick("snapshot_project", "project", str)
    region = pick("region", "cometbft.snapshotRegion", str) or pick("region", "region", str)
    context = pick("context", "kubeContext", str)
    if context is None:
        # kubectl without --context acts on whatever cluster the workstation last used: at 3 am, maybe the
        # primary's, or another SV's. Every command failover prints names the DR cluster.
        problems.append(
            "kubeContext: missing; pass --context CONTEXT (the DR cluster's kubectl context), or set "
            "kubernetes:context in the DR stack, which then exports it"
        )
    stack = flags.get("stack") or flags.get("dr_stack") or _get(outputs, "stack")
    if not isinstance(stack, str) or not stack:
        problems.append(
            "stack: missing; pass --stack NAME (the DR stack, for the pulumi commands printed), or use the "
            "outputs of a DR stack planned by this version, which exports it"
        )
    targets, targets_given = _targets(flags.get("pg") or [], outputs, problems)
    if problems:
        raise FactsError("\n".join(problems))
    participant = flags.get("participant_deployment") or "participant"
    deployments = _get(outputs, "deployments") or [
        *([f"global-domain-{serial_id}-cometbft"] if synchronizer == "cometbft" else []),
        f"global-domain-{serial_id}-mediator",
        f"global-domain-{serial_id}-sequencer",
        participant,
        "scan-app",
        "sv-app",
        "validator-app",
    ]
    return DrFacts(
        dr_url=dr_url.rstrip("/"),
        cloud=cloud,
        namespace=namespace,
        node=node,
        migration_id=migration_id,
        serial_id=serial_id,
        deployments=tuple(deployments),
        synchronizer=synchronizer,
        identities_secret_url=identities,
        cometbft_pvc=pvc or f"global-domain-{serial_id}-cometbft-cometbft-data",
        cometbft_release=_get(outputs, "cometbft.release") or f"global-domain-{serial_id}-cometbft",
        cometbft_storage_class=storage_class,
        cometbft_snapshot=flags.get("cometbft_snapshot"),
        snapshot_project=project,
        region=region,
        targets=targets,
        targets_given=targets_given,
        kube_context=context,
        stack=stack,
        restore_identity=_get(outputs, "restoreServiceAccount"),
        snapshot_targets=dict(flags.get("target") or []),
        job_image=flags.get("image") or _get(outputs, "jobImage"),
        pg_storage_class=flags.get("pg_storage_class"),
        kube_api=flags.get("kube_api"),
    )


def _targets(pairs: list[tuple[str, str]], outputs: dict[str, Any], problems: list[str]):
    """--pg ROLE=URL flags, else the DR stack's `postgresTargets` {role: {url, passwordSecret}}."""
    targets: dict[str, Target] = {}
    declared = _get(outputs, "postgresTargets") or {}
    if not isinstance(declared, dict):
        problems.append("postgresTargets: expected an object {role: {url, passwordSecret}}")
        declared = {}
    for role, entry in declared.items():
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            problems.append(f"postgresTargets.{role}.url: missing")
            continue
        targets[role] = Target(role, url, entry.get("passwordSecret") or f"{role}-pg-secret")
    for role, url in pairs:
        targets[role] = Target(
            role, url, _get(outputs, f"postgresTargets.{role}.passwordSecret") or f"{role}-pg-secret"
        )
    for target in targets.values():
        parsed = urlparse(target.server_url)
        if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
            problems.append(f"{target.role}: {target.server_url!r} is not a postgresql://USER@HOST:PORT server URL")
        elif parsed.password:
            problems.append(f"{target.role}: the server URL carries a password; use PGPASSWORD or PGPASSFILE")
        elif parsed.path not in ("", "/"):
            problems.append(
                f"{target.role}: give the server only (postgresql://USER@HOST:PORT); every database "
                "of the set is restored into it under its own name"
            )
    return targets, bool(targets)


def default_target(role: str) -> Target:
    return Target(role, f"postgresql://{DEFAULT_PG_USER}@{role}-pg:{DEFAULT_PG_PORT}", f"{role}-pg-secret")


# ------------------------------------------------------------------------------------------------- plan


def _kubectl(facts: DrFacts, *args: str) -> list[str]:
    return ["kubectl", "--context", facts.kube_context, "-n", facts.namespace, *args]


def _sh(argv: list[str]) -> str:
    return shlex.join(argv)


def restore_argv(chosen: ChosenSet, targets: dict[str, Target], jobs: int) -> list[str]:
    argv = ["python", "-m", "jobs", "restore-set", chosen.url]
    for role, database in chosen.databases:
        argv += ["--db", f"{role}={targets[role].dsn(database)}"]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    if chosen.stale:
        argv += ["--accept-stale-set"]
    return argv


def build_plan(facts: DrFacts, chosen: ChosenSet, *, restore_jobs: int = 1) -> list[Step]:
    if chosen.kind == "snapshot":
        return build_snapshot_plan(facts, chosen)
    targets = {role: facts.targets.get(role) or default_target(role) for role in chosen.roles}
    cloud = CLOUDS[facts.cloud]() if facts.cloud else None
    steps = [
        Step(
            "Check the set (done by this script before printing; run again to see for yourself)",
            [
                _sh(["python", "-m", "jobs", "list-sets", facts.dr_url, "--migration-id", str(chosen.migration_id)]),
                _sh(["python", "-m", "jobs", "verify-set", chosen.url]),
            ],
            why=f"set {chosen.set_id} (migration id {chosen.migration_id}, {chosen.tier}, created "
            f"{chosen.created_at.isoformat()}) is "
            + (chosen.why or "the newest complete set in the DR copy that verifies")
            + ". Verified: manifest, every object's size and sha256, apps finished before the participant snapshot "
            "was requested",
        ),
        _scale_down(facts),
        _restore_databases(facts, chosen, targets, restore_jobs),
        *([_restore_cometbft(facts, chosen, cloud)] if facts.synchronizer == "cometbft" else []),
        _identities(facts),
        _scale_up(facts),
        _enable_backups(facts),
    ]
    return steps


def snapshot_restore_argv(facts: DrFacts, chosen: ChosenSet) -> list[str]:
    """restore-snapshot-set from the DR copies, into the DR cluster's namespace (volume roles: the claims the
    charts use, replaced; they are unused once everything is scaled to 0) and the targets given per role."""
    argv = ["python", "-m", "jobs", "restore-snapshot-set", chosen.url, "--from-dr-copy", "--namespace",
            facts.namespace, "--replace"]  # fmt: skip
    for role, target in sorted(facts.snapshot_targets.items()):
        argv += ["--target", f"{role}={target}"]
    methods = {method for _, method, _ in chosen.snapshots}
    if "volume-snapshot" in methods:
        argv += ["--image", facts.job_image or "", "--kube-api", facts.kube_api or KUBE_PROXY]
        if facts.restore_identity:
            argv += ["--service-account", facts.restore_identity]
        if facts.pg_storage_class:
            argv += ["--storage-class", facts.pg_storage_class]
    return [*argv, "--execute"]


KUBE_PROXY = "http://127.0.0.1:8001"


def build_snapshot_plan(facts: DrFacts, chosen: ChosenSet) -> list[Step]:
    """The same order as for a dump set; the databases come back from the set's DR copies by
    restore-snapshot-set (volume roles: PVC + prepare-datadir pod; Cloud SQL: restoreBackup onto the DR
    instance; RDS: a new instance from the DR-region copy)."""
    missing = [
        f"--target {role}=<{'the DR Cloud SQL instance' if method == 'cloudsql-backup' else 'a new RDS instance id'}>"
        for role, method, _ in chosen.snapshots
        if method != "volume-snapshot" and role not in facts.snapshot_targets
    ]
    if missing:
        raise FactsError(f"snapshot set {chosen.set_id}: every managed role needs its target: {', '.join(missing)}")
    volumes = [role for role, method, _ in chosen.snapshots if method == "volume-snapshot"]
    if volumes and not facts.job_image:
        raise FactsError(
            "--image (or output jobImage): the job image pinned by digest, for the prepare-datadir pods of "
            + ", ".join(volumes)
        )
    cloud = CLOUDS[facts.cloud]() if facts.cloud else None
    argv = snapshot_restore_argv(facts, chosen)
    lines = []
    if volumes and not facts.kube_api:
        lines.append(f"{_sh(['kubectl', '--context', facts.kube_context, 'proxy', '--port', '8001'])} &")
    lines += [_sh(argv[:-1]), _sh(argv)]
    where = {
        "gcp": "PD snapshots in the multi-region and Cloud SQL backups in their multi-region location, readable "
        "from the DR region",
        "aws": "the EBS and RDS snapshot copies in the DR region",
    }.get(facts.cloud or "", "the DR copies the set records")
    restore = Step(
        f"Restore every database from snapshot set {chosen.set_id} ({len(chosen.snapshots)} roles, from {where})",
        lines,
        why="one set for the whole node, in its role order (apps before participant); the first command prints "
        "the plan (PVCs, imported Retain VolumeSnapshotContents, prepare-datadir pods, restore calls), the second "
        "checks every snapshot and target before creating anything, then restores role by role and stops at the "
        "first failure",
        run=argv,
    )
    servers = postgres_statefulsets(facts, chosen)
    down, up = _scale_down(facts), _scale_up(facts)
    if servers:
        # A claim is replaced only once no pod mounts it: the in-cluster Postgres servers of the volume roles stop
        # with the components, and start again (on the restored claims) before them.
        names = [name for name, _ in servers]
        down.commands.insert(1, _sh(_kubectl(facts, "scale", "statefulset", "--replicas=0", *names)))
        down.commands.append(
            f"while {_sh(_kubectl(facts, 'get', 'pods', '-o', 'name'))} | grep -Eq "
            f"'^pod/({'|'.join(names)})-[0-9]+$'; do sleep 5; done"
        )
        up.commands.insert(0, _sh(_kubectl(facts, "scale", "statefulset", "--replicas=1", *names)))
        up.commands.insert(
            1,
            " && ".join(
                _sh(_kubectl(facts, "rollout", "status", f"statefulset/{name}", "--timeout=30m")) for name in names
            ),
        )
    unknown = [pvc for name, pvc in servers if not name]
    if unknown:
        raise FactsError(f"cannot tell the StatefulSet of PVC(s) {', '.join(unknown)} (expected data-<name>-0 or "
                         "pg-data-<name>-0): scale it yourself")  # fmt: skip
    return [
        Step(
            "Check the set (done by this script before printing; run again to see for yourself)",
            [
                _sh(["python", "-m", "jobs", "list-sets", facts.dr_url, "--migration-id", str(chosen.migration_id)]),
                _sh(["python", "-m", "jobs", "verify-set", chosen.url]),
            ],
            why=f"snapshot set {chosen.set_id} (migration id {chosen.migration_id}, data as of "
            f"{chosen.data_taken_by.isoformat() if chosen.data_taken_by else '?'}) is {chosen.why}. Verified: "
            "manifest, the ordering rule, every WAL object's sha256",
        ),
        down,
        restore,
        *([_restore_cometbft(facts, chosen, cloud)] if facts.synchronizer == "cometbft" else []),
        _identities(facts),
        up,
        _enable_backups(facts),
    ]


# The in-cluster Postgres charts' claim names: bitnami/postgresql (Splice's SV examples) `data-<statefulset>-<n>`,
# the deprecated splice-postgres `pg-data-<statefulset>-<n>` (components/settings.py default_pvc).
_CLAIM = re.compile(r"^(?:pg-data|data)-(?P<sts>[a-z0-9][a-z0-9-]*)-[0-9]+$")


def postgres_statefulsets(facts: DrFacts, chosen: ChosenSet) -> list[tuple[str, str]]:
    """(StatefulSet or "", PVC) of each volume role's restored claim (its target, else the recorded PVC)."""
    found = []
    for role, method, pvc in chosen.snapshots:
        if method != "volume-snapshot":
            continue
        claim = facts.snapshot_targets.get(role) or pvc
        match = _CLAIM.match(claim)
        found.append((match["sts"] if match else "", claim))
    return found


def _scale_down(facts: DrFacts) -> Step:
    names = "|".join(facts.deployments)
    wait = (
        f"while {_sh(_kubectl(facts, 'get', 'pods', '-o', 'name'))} | grep -Eq "
        f"'^pod/({names})-[a-z0-9]+-[a-z0-9]+$'; do sleep 5; done"
    )
    return Step(
        "Scale every SV component to 0 and wait until their pods are gone",
        [_sh(_kubectl(facts, "scale", "deployment", "--replicas=0", *facts.deployments)), wait],
        why="nothing may write to a database"
        + (" or the CometBFT volume" if facts.synchronizer == "cometbft" else "")
        + " while it is restored",
    )


def _restore_databases(facts: DrFacts, chosen: ChosenSet, targets: dict[str, Target], jobs: int) -> Step:
    lines = ['umask 077; PGPASSFILE="$(mktemp)"; export PGPASSFILE']
    for role in chosen.roles:
        target = targets[role]
        parsed = urlparse(target.server_url)
        secret = _sh(
            _kubectl(facts, "get", "secret", target.password_secret, "-o", "jsonpath={.data.postgresPassword}")
        )
        # .pgpass fields escape ':' and '\'; '*' matches every database of the server.
        lines.append(
            f"printf '%s:%s:*:%s:%s\\n' {shlex.quote(parsed.hostname)} {parsed.port or DEFAULT_PG_PORT} "
            f"{shlex.quote(parsed.username or DEFAULT_PG_USER)} "
            f'"$({secret} | base64 -d | sed \'s/[\\\\:]/\\\\&/g\')" >> "$PGPASSFILE"'
        )
    argv = restore_argv(chosen, targets, jobs)
    lines += [_sh(argv), 'rm -f "$PGPASSFILE"; unset PGPASSFILE']
    source = (
        "given" if facts.targets_given else "the Splice runbook's in-cluster defaults (pass --pg ROLE=URL otherwise)"
    )
    return Step(
        f"Restore every database from set {chosen.set_id} ({len(chosen.databases)} databases, {source})",
        lines,
        why="one set for the whole node: its apps databases are older than its participant's; restore-set creates "
        "each target database, refuses a non-empty one, checks sha256 while streaming and every table and "
        "constraint afterwards. Passwords come from the Postgres secrets through a private passfile, never argv",
        run=argv,
    )


def _restore_cometbft(facts: DrFacts, chosen: ChosenSet, cloud: _Cloud | None) -> Step:
    pvc, ns = facts.cometbft_pvc, facts.namespace
    snapshot_name = f"{pvc[: 253 - len(RESTORED_SNAPSHOT_SUFFIX) - 1]}-{RESTORED_SNAPSHOT_SUFFIX}"
    content_name = f"{ns}-{snapshot_name}"[:253]
    if cloud is None:
        return Step(
            "Restore the CometBFT volume",
            [f"# {facts.dr_url} is not a cloud store: no snapshot copy to look up; pass --cloud gcp|aws"],
            why="the CometBFT volume is restored from a cloud disk snapshot",
        )
    if facts.cometbft_snapshot:
        lookup = [f"HANDLE={shlex.quote(facts.cometbft_snapshot)}"]
    else:
        lookup = cloud.snapshot_lookup(facts, chosen)
    storage_class = facts.cometbft_storage_class or cloud.default_storage_class
    content = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name, "labels": dict(MANAGED_BY)},
        "spec": {
            "deletionPolicy": "Retain",  # deleting these objects later must never delete the disk snapshot
            "driver": cloud.snapshot_driver,
            "source": {"snapshotHandle": "$HANDLE"},
            "volumeSnapshotRef": {"name": snapshot_name, "namespace": ns},
        },
    }
    snapshot = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": snapshot_name, "namespace": ns, "labels": dict(MANAGED_BY)},
        "spec": {"source": {"volumeSnapshotContentName": content_name}},
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": pvc,
            "namespace": ns,
            # So that the CometBFT Helm release adopts the restored claim as its own.
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": facts.cometbft_release,
                "meta.helm.sh/release-namespace": ns,
                "helm.sh/resource-policy": "keep",
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "$SIZE"}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot_name},
        },
    }
    if storage_class:
        claim["spec"]["storageClassName"] = storage_class
    apply = _sh(_kubectl(facts, "apply", "-f", "-"))
    lines = [
        *lookup,
        'test -n "$HANDLE" && test "$HANDLE" != None || { echo "no CometBFT snapshot copy found" >&2; false; }',
        _sh(_kubectl(facts, "delete", "pvc", pvc, "--ignore-not-found", "--wait")),
        f"{apply} <<EOF\n{json.dumps(content, indent=2)}\nEOF",
        f"{apply} <<EOF\n{json.dumps(snapshot, indent=2)}\nEOF",
        _sh(
            _kubectl(
                facts,
                "wait",
                f"volumesnapshot/{snapshot_name}",
                "--for=jsonpath={.status.readyToUse}=true",
                "--timeout=30m",
            )
        ),
        f'SIZE="$({_sh(_kubectl(facts, "get", "volumesnapshot", snapshot_name, "-o", SIZE_PATH))})"',
        f"{apply} <<EOF\n{json.dumps(claim, indent=2)}\nEOF",
    ]
    return Step(
        f"Restore the CometBFT volume ({pvc}) from its DR snapshot copy",
        lines,
        why="the newest snapshot taken at or after the set (else the newest): CometBFT catches up from the other "
        "SVs from there. The snapshot is imported as a pre-provisioned VolumeSnapshotContent (Retain) and the "
        "claim is recreated from it under the release's name, at least the snapshot's size",
        manifests=[content, snapshot, claim],
    )


def _identities(facts: DrFacts) -> Step:
    url = facts.identities_secret_url
    if not url:
        return Step("Fetch the identities dump", ["# no identities secret: pass --identities-secret URL"])
    out = "identities-dump.json"
    return Step(
        "Fetch the newest identities dump (with the restore identity; never printed)",
        ["umask 077", *secret_fetch_command(url, out)],
        why="the restored participant, sequencer and mediator databases hold their keys (unless in a KMS); the "
        "dump is what Splice's re-onboarding needs if they do not. --execute --identities-out FILE fetches and "
        "checks it here" + (f" (run as ServiceAccount {facts.restore_identity})" if facts.restore_identity else ""),
    )


def secret_fetch_command(url: str, out: str) -> list[str]:
    """The CLI that writes the newest version of a secret to `out` without showing it."""
    store = open_store(url)
    if isinstance(store, GcpSecretManagerStore):
        return [
            _sh(
                [
                    "gcloud",
                    "secrets",
                    "versions",
                    "access",
                    "latest",
                    f"--secret={store.secret}",
                    f"--project={store.project}",
                    f"--out-file={out}",
                ]
            )
        ]
    if isinstance(store, AwsSecretsManagerStore):
        return [
            _sh(
                [
                    "aws",
                    "secretsmanager",
                    "get-secret-value",
                    "--region",
                    store.region,
                    "--secret-id",
                    store.name,
                    "--query",
                    "SecretString",
                    "--output",
                    "text",
                ]
            )
            + f" > {shlex.quote(out)}"
        ]
    newest = f"$(ls -1 {shlex.quote(str(store.directory))}/*.json | sort | tail -n 1)"
    return [f'cp -- "{newest}" {shlex.quote(out)}']


def _scale_up(facts: DrFacts) -> Step:
    return Step(
        "Scale every SV component back to 1",
        [_sh(_kubectl(facts, "scale", "deployment", "--replicas=1", *facts.deployments))],
        why="the components catch up from the other SVs",
    )


def _enable_backups(facts: DrFacts) -> Step:
    return Step(
        "Turn the DR stack's backup CronJobs on (they are created suspended)",
        [
            _sh(["pulumi", "config", "set", "--stack", facts.stack, "--path", FAILOVER_CONFIG_PATH, "true"]),
            _sh(["pulumi", "up", "--stack", facts.stack]),
        ],
        why="from now on this region is the primary: its backups must run",
    )


def render(steps: list[Step]) -> str:
    lines = []
    for number, step in enumerate(steps, start=1):
        lines.append(f"# {number}. {step.title}")
        if step.why:
            lines.append(f"#    {step.why}")
        lines += step.commands
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ clouds


class _Cloud:
    snapshot_driver: str
    default_storage_class: str | None

    def snapshot_lookup(self, facts: DrFacts, chosen: ChosenSet) -> list[str]:
        """Shell lines that set HANDLE to the CSI snapshot handle of the CometBFT snapshot copy to restore."""
        raise NotImplementedError


class _Gcp(_Cloud):
    """PD snapshots are global and stored in the multi-region (the snapshot class pins it): the primary's own
    snapshots are the DR copy. The CSI driver writes the VolumeSnapshot's name and namespace into each
    snapshot's description; the name is `<pvc>-<unix time>` (jobs/cometbft.py)."""

    snapshot_driver = "pd.csi.storage.gke.io"
    default_storage_class = "premium-rwo"  # the splice-cometbft chart's default

    def snapshot_lookup(self, facts: DrFacts, chosen: ChosenSet) -> list[str]:
        project = facts.snapshot_project
        if not project:
            raise FactsError(
                "cometbft.snapshotProject: missing (the GCP project of the PD snapshots; the DR stack exports it, "
                "or pass --snapshot-project)"
            )
        mine = (
            f"description~'volumesnapshot/namespace.{{3}}{facts.namespace}.{{1}}' AND "
            f"description~'volumesnapshot/name.{{3}}{facts.cometbft_pvc}-[0-9]+.{{1}}'"
        )
        since = chosen.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")

        def listing(extra: str, order: str) -> str:
            return _sh(
                [
                    "gcloud",
                    "compute",
                    "snapshots",
                    "list",
                    f"--project={project}",
                    f"--filter={mine}{extra}",
                    f"--sort-by={order}",
                    "--limit=1",
                    "--format=value(name)",
                ]
            )

        return [
            f'NAME="$({listing(f" AND creationTimestamp>={since}", "creationTimestamp")})"',
            f'test -n "$NAME" || NAME="$({listing("", "~creationTimestamp")})"',
            f'test -n "$NAME" && HANDLE="projects/{project}/global/snapshots/$NAME"',
        ]


class _Aws(_Cloud):
    """EBS snapshots are regional: the CometBFT job copies each kept one to the DR region (ec2:CopySnapshot)
    with the VolumeSnapshot's labels as tags plus the node's name."""

    snapshot_driver = "ebs.csi.aws.com"
    default_storage_class = None  # EKS has no standard ebs.csi.aws.com class name: the stack or a flag gives it

    def snapshot_lookup(self, facts: DrFacts, chosen: ChosenSet) -> list[str]:
        if not facts.region:
            raise FactsError(
                "cometbft.snapshotRegion: missing (the DR region holding the EBS snapshot copies; the DR stack "
                "exports it, or pass --region)"
            )
        if not facts.node:
            raise FactsError("node.name: missing (the EBS copies are found by node tag; pass --node)")
        filters = [f"Name=tag:{key},Values={value}" for key, value in MANAGED_BY.items()] + [
            f"Name=tag:{NODE_TAG},Values={facts.node}",
            f"Name=tag:{MIGRATION_ID_LABEL},Values={chosen.migration_id}",
            "Name=status,Values=completed",
        ]
        taken = f'to_number(Tags[?Key==`"{TAKEN_AT_LABEL}"`] | [0].Value)'
        since = int(chosen.created_at.timestamp())

        def query(expression: str) -> str:
            return _sh(
                [
                    "aws",
                    "ec2",
                    "describe-snapshots",
                    "--region",
                    facts.region,
                    "--owner-ids",
                    "self",
                    "--filters",
                    *filters,
                    "--query",
                    expression,
                    "--output",
                    "text",
                ]
            )

        return [
            f'HANDLE="$({query(snapshot_query(taken, since))})"',
            f'test -n "$HANDLE" && test "$HANDLE" != None || HANDLE="$({query(snapshot_query(taken, None))})"',
        ]


def snapshot_query(taken: str, since: int | None) -> str:
    """JMESPath over describe-snapshots: the earliest copy taken at or after `since`, or the newest of all."""
    if since is None:
        return f"sort_by(Snapshots, &{taken})[-1].SnapshotId"
    return f"sort_by(Snapshots[?{taken} >= `{since}`], &{taken})[0].SnapshotId"


CLOUDS: dict[str, type[_Cloud]] = {"gcp": _Gcp, "aws": _Aws}
