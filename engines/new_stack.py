"""A starting stack for one SV node on GKE or EKS: what `make new-stack` (scripts/new_stack.py) writes.

The recommended production configuration, as the production examples in stacks/ have it: `sv-backups:production:
true` (the production policy config, policy/production.py), ordered snapshot sets every 4 hours beside weekly
dump sets, pruning windows of 30 days, a DR region, and the DR stack that a production primary must have (written
beside it). Values the program cannot know (the identities endpoint, the OAuth client, the image digest) are
written as placeholders that validate, each on a line marked `# CHANGE:`, so the files plan and pass the policy
pack as written and a reviewer sees what is left to fill in. The text is built line by line rather than dumped, so
the comments that explain each choice stay in the file the operator edits.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

from rules.aws_regions import AWS_REGIONS
from rules.gcp_locations import GCP_REGIONS

CLOUDS = ("gcp", "aws")
POSTGRES_KINDS = ("in-cluster", "managed")
# Where a placeholder stands: the operator replaces each before `pulumi up` (README "Your first stack").
CHANGE = "# CHANGE:"
# A digest that pins nothing real: it validates and passes job-image-pinned-by-digest, and the pod cannot pull
# it, so a stack deployed before the image is published alerts (stale backups) instead of running unreviewed code.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
# The examples' own placeholder: `pulumi config set --secret` replaces it with the stack's encrypted value.
_PLACEHOLDER_SECRET = "v1:" + base64.b64encode(b"set-with-pulumi-config-set-secret").decode()
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_GCP_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")


class NewStackError(ValueError):
    """An answer the stack cannot be written with: one message per problem, naming the flag and what is allowed."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NewStack:
    """The answers. `stack` names the file (stacks/Pulumi.<stack>.yaml); its DR stack is `<stack>-dr`."""

    cloud: str
    stack: str
    node: str
    namespace: str
    migration_id: int
    region: str
    dr_region: str
    postgres: str = "managed"  # in-cluster | managed (Cloud SQL on gcp, RDS on aws)
    project: str | None = None  # gcp
    cluster_name: str | None = None  # aws: the EKS cluster (IRSA's OIDC issuer is looked up from it)
    dr_cluster_name: str | None = None  # aws: the DR EKS cluster; default <cluster_name>-dr
    restore_role_arns: tuple[str, ...] = field(default_factory=tuple)  # aws: who may read the identities secret
    organization: str = "organization"  # the Pulumi organization (DIY backends: "organization")
    image: str | None = None  # the job image; default a placeholder pinned by a digest that pins nothing
    dr_kube_context: str | None = None

    @property
    def dr_stack(self) -> str:
        return f"{self.stack}-dr"


def check(answers: NewStack) -> None:
    """Raise NewStackError with every problem of the answers (the program validates the written stack again)."""
    problems = []
    if answers.cloud not in CLOUDS:
        problems.append(f"--cloud: {answers.cloud!r} is not supported; allowed: {', '.join(CLOUDS)}")
    if not _STACK.match(answers.stack) or answers.stack.endswith("-dr"):
        problems.append(
            f"--stack: {answers.stack!r} is not a stack name (letters, digits, '-', '_', '.'; not ending in -dr: "
            f"that is its DR stack's name)"
        )
    if not _NAME.match(answers.node):
        problems.append(f"--node: {answers.node!r}: lowercase letters, digits and '-', starting with a letter, <= 20")
    if not _DNS_LABEL.match(answers.namespace):
        problems.append(f"--namespace: {answers.namespace!r} is not a Kubernetes namespace name (a DNS label)")
    if answers.migration_id < 0:
        problems.append(f"--migration-id: {answers.migration_id} must be an integer >= 0")
    if answers.postgres not in POSTGRES_KINDS:
        problems.append(f"--postgres: {answers.postgres!r}; allowed: {', '.join(POSTGRES_KINDS)}")
    known = GCP_REGIONS if answers.cloud == "gcp" else AWS_REGIONS if answers.cloud == "aws" else None
    for flag, region in (("--region", answers.region), ("--dr-region", answers.dr_region)):
        if known is not None and region not in known:
            problems.append(f"{flag}: {region!r} is not a {answers.cloud} region (rules/ kept lists)")
    if answers.region == answers.dr_region:
        problems.append(f"--dr-region: {answers.dr_region!r} is the primary region; the DR region must be another")
    if answers.cloud == "gcp" and not _GCP_PROJECT.match(answers.project or ""):
        problems.append(f"--project: {answers.project!r} is not a GCP project id (required on gcp)")
    if answers.cloud == "aws":
        if not answers.cluster_name:
            problems.append("--cluster-name: required on aws (the EKS cluster of the SV node)")
        if not answers.restore_role_arns:
            problems.append("--restore-role-arn: required on aws, at least one (who may read the identities secret)")
        for arn in answers.restore_role_arns:
            if not _ARN.match(arn):
                problems.append(f"--restore-role-arn: {arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/...)")
    if problems:
        raise NewStackError(problems)


def _image(answers: NewStack, region: str) -> tuple[str, str]:
    """The job image line's value and its comment."""
    if answers.image:
        return answers.image, "# the job image (docs/image.md)"
    if answers.cloud == "gcp":
        repository = f"{region}-docker.pkg.dev/{answers.project}/sv-backups/jobs"
    else:
        account = answers.restore_role_arns[0].split(":")[4]
        repository = f"{account}.dkr.ecr.{region}.amazonaws.com/sv-backups/jobs"
    return f"{repository}:0.1.0@{PLACEHOLDER_DIGEST}", (
        f"{CHANGE} the digest the release workflow prints (docs/image.md)"
    )


def _postgres_lines(answers: NewStack, *, dr: bool) -> list[str]:
    """The four roles: apps and mediator in the cluster; participant and sequencer on the managed service when asked
    (a DR stack restores every role into fresh in-cluster Postgres: the sets are portable dumps)."""
    mig = answers.migration_id
    roles = [
        ("apps", "apps-pg", ["cantonnet_sv", "cantonnet_scan", "cantonnet_validator"]),
        ("participant", "participant-pg", [f"participant_{mig}"]),
        ("sequencer", "sequencer-pg", [f"sequencer_{mig}"]),
        ("mediator", "mediator-pg", [f"mediator_{mig}"]),
    ]
    lines = ["  sv-backups:postgres:"]
    for role, host, databases in roles:
        lines.append(f"    {role}:")
        managed = not dr and answers.postgres == "managed" and role in ("participant", "sequencer")
        if managed and answers.cloud == "gcp":
            lines += [
                "      kind: cloudsql",
                f"      instance: {answers.node}-{role}-pg-{mig}   {CHANGE} the Cloud SQL instance's name",
                "      databaseVersion: POSTGRES_14",
            ]
        elif managed:
            lines += [
                "      kind: rds",
                f"      instance: {answers.node}-{role}-pg-{mig}   {CHANGE} the RDS DB instance identifier",
                f'      backupWindow: "{"03:00-03:30" if role == "participant" else "03:30-04:00"}"',
            ]
        else:
            lines += ["      kind: in-cluster", f"      host: {host}"]
        if not dr:
            lines.append(f"      passwordSecret: {host}-secret")
        lines.append(f"      databases: [{', '.join(databases)}]")
    return lines


def _identities_lines(answers: NewStack) -> list[str]:
    return [
        "  sv-backups:identities:",
        f"    endpoint: https://sv.{answers.namespace}.{answers.node}.example.com/api/sv/v0/admin/domain/identities-dump"
        f"   {CHANGE} your SV app's",
        f"    tokenEndpoint: https://{answers.node}.example.auth0.com/oauth/token   {CHANGE} your OAuth provider's",
        f"    audience: https://sv.example.com/api   {CHANGE} the SV app audience",
        f"    clientId: {answers.node}-backup-client   {CHANGE} the OAuth client with participant admin rights",
        f"    clientSecret:   {CHANGE} pulumi config set --path --secret 'sv-backups:identities.clientSecret' ...",
        f"      secure: {_PLACEHOLDER_SECRET}",
    ]


def _provider_lines(answers: NewStack, *, dr: bool) -> list[str]:
    region = answers.dr_region if dr else answers.region
    if answers.cloud == "gcp":
        lines = [f"  gcp:project: {answers.project}", f"  gcp:region: {region}"]
    else:
        lines = [f"  aws:region: {region}"]
    if dr and answers.dr_kube_context:
        lines += [
            "  # The DR cluster's kubectl context: the program deploys there, and failover pins every kubectl to it.",
            f"  kubernetes:context: {answers.dr_kube_context}",
        ]
    lines += [
        f"  sv-backups:cloud: {answers.cloud}",
        '  # The production policy config applies (README "Production guard-rails"); remove to opt out.',
        "  sv-backups:production: true",
    ]
    if dr:
        lines.append("  sv-backups:role: dr")
    if answers.cloud == "aws":
        cluster = (answers.dr_cluster_name or f"{answers.cluster_name}-dr") if dr else answers.cluster_name
        lines += [
            "  sv-backups:aws:",
            f"    clusterName: {cluster}",
            "    restoreRoleArns:",
            *(f"      - {arn}" for arn in answers.restore_role_arns),
        ]
        if not dr:
            lines.append("    replicationTimeControl: true        # every object in the DR bucket within 15 minutes")
    return lines


def _common_tail(answers: NewStack, *, dr: bool) -> list[str]:
    region = answers.dr_region if dr else answers.region
    image, comment = _image(answers, region)
    lines = [
        "  sv-backups:retention:",
        "    recent: 14d",
        "    participantPruning: 30d             # CHANGE: your participant's pruning retentionPeriod (omit if off)",
        "    sequencerPruning: 30d               # CHANGE: your sequencer's pruning retentionPeriod (omit if off)",
        *_identities_lines(answers),
        "  sv-backups:cometbft:",
        f"    pvc: global-domain-{answers.migration_id}-cometbft-cometbft-data   {CHANGE} the CometBFT data PVC",
        "  sv-backups:dr:",
    ]
    if dr:
        lines += [
            f"    primaryStack: {answers.organization}/sv-backups/{answers.stack}",
            "    failover: false                     # true after failover: the DR cluster's backups start",
        ]
    else:
        lines.append(f"    region: {answers.dr_region}")
    lines += [
        f"  {comment}",
        f"  sv-backups:jobImage: {image}",
        "  sv-backups:monitoring:",
        f"    notificationEmails: [oncall@example.com]   {CHANGE} who is paged when a backup is late or failed",
    ]
    if not dr:
        lines += ["  sv-backups:storage:", "    softDelete: 30d"]
    return lines


def render(answers: NewStack) -> dict[str, str]:
    """File name -> text: the primary stack and its DR stack. Raises NewStackError on bad answers."""
    check(answers)
    kind = {"gcp": "Cloud SQL", "aws": "RDS"}[answers.cloud] if answers.postgres == "managed" else "in-cluster"
    platform = {"gcp": "GKE", "aws": "EKS"}[answers.cloud]
    primary = [
        f"# SV node {answers.node} on {platform} ({answers.region}), DR in {answers.dr_region}; participant and "
        f"sequencer {kind}.",
        "# Written by `make new-stack` (engines/new_stack.py). Replace every value marked CHANGE, then README",
        '# "Your first stack". Its DR stack is Pulumi.' + answers.dr_stack + ".yaml.",
        "config:",
        *_provider_lines(answers, dr=False),
        "  sv-backups:node:",
        f"    name: {answers.node}",
        f"    namespace: {answers.namespace}",
        f"    migrationId: {answers.migration_id}",
        "  # Ordered Postgres snapshot sets every 4 hours (apps before participant), each with a copy that survives",
        "  # the primary region's loss; the dump sets run weekly beside them and carry the historical tier (README).",
        "  sv-backups:snapshots:",
        '    schedule: "0 */4 * * *"',
        *_postgres_lines(answers, dr=False),
        *_common_tail(answers, dr=False),
    ]
    dr = [
        f"# The disaster-recovery stack of {answers.stack}: deployed into {answers.dr_region} and the DR cluster, it",
        f"# reads {answers.stack}'s outputs and depends on nothing in {answers.region}. Until failover its backup",
        "# CronJobs are suspended; the replica check runs from the start (docs/runbook.md).",
        "# Written by `make new-stack` (engines/new_stack.py).",
        "config:",
        *_provider_lines(answers, dr=True),
        "  sv-backups:node:",
        f"    name: {answers.node}",
        f"    namespace: {answers.namespace}",
        f"    migrationId: {answers.migration_id}",
        *_postgres_lines(answers, dr=True),
        *_common_tail(answers, dr=True),
    ]
    return {
        f"Pulumi.{answers.stack}.yaml": "\n".join(primary) + "\n",
        f"Pulumi.{answers.dr_stack}.yaml": "\n".join(dr) + "\n",
    }


def write(answers: NewStack, directory: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the two stack files into `directory`; refuse to replace an existing one unless `overwrite`."""
    files = render(answers)
    paths = [directory / name for name in files]
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise NewStackError([f"{path}: exists; choose another --stack or pass --force" for path in existing])
    directory.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.write_text(files[path.name])
    return paths


# --- the questions -------------------------------------------------------------------------------------------

# Flag name (argparse dest) -> the question asked when it was not given and a terminal is there to answer.
QUESTIONS: dict[str, str] = {
    "cloud": "Cloud (gcp or aws)",
    "stack": "Stack name (the file is stacks/Pulumi.<stack>.yaml)",
    "node": "SV node name (lowercase, <= 20 characters; prefixes every resource)",
    "namespace": "Kubernetes namespace of the SV node",
    "migration_id": "Current migration id (synchronizer serial)",
    "region": "Primary region (the cluster's)",
    "dr_region": "DR region (a second region: backups are copied there and the DR stack runs there)",
    "postgres": "Participant and sequencer Postgres: managed (Cloud SQL / RDS) or in-cluster",
    "project": "GCP project id",
    "cluster_name": "EKS cluster name",
    "restore_role_arns": "IAM role ARN allowed to read the identities secret (break-glass restore)",
}
_GCP_ONLY, _AWS_ONLY = {"project"}, {"cluster_name", "restore_role_arns"}


def answers_from(values: dict, ask=None) -> NewStack:
    """NewStack from the flags' values (argparse dests; None: not given). A missing answer is asked with `ask`
    (a function of the question that returns the answer) when given, else reported as a missing flag. Raises
    NewStackError listing every problem."""
    values = dict(values)
    missing = []
    for key, question in QUESTIONS.items():
        cloud = values.get("cloud")
        if (key in _GCP_ONLY and cloud != "gcp") or (key in _AWS_ONLY and cloud != "aws"):
            continue
        if values.get(key) in (None, [], ()):
            if ask is None:
                flag = "--restore-role-arn" if key == "restore_role_arns" else f"--{key.replace('_', '-')}"
                missing.append(f"{flag}: required ({question})")
                continue
            answer = ask(question).strip()
            values[key] = [answer] if key == "restore_role_arns" else answer
    if missing:
        raise NewStackError(missing)
    try:
        migration_id = int(values["migration_id"])
    except (TypeError, ValueError):
        raise NewStackError([f"--migration-id: {values['migration_id']!r} is not an integer >= 0"]) from None
    return NewStack(
        cloud=values["cloud"],
        stack=values["stack"],
        node=values["node"],
        namespace=values["namespace"],
        migration_id=migration_id,
        region=values["region"],
        dr_region=values["dr_region"],
        postgres=values["postgres"],
        project=values.get("project"),
        cluster_name=values.get("cluster_name"),
        dr_cluster_name=values.get("dr_cluster_name"),
        restore_role_arns=tuple(values.get("restore_role_arns") or ()),
        organization=values.get("organization") or "organization",
        image=values.get("image"),
        dr_kube_context=values.get("dr_kube_context"),
    )


def run(values: dict, directory: Path, *, force: bool, ask=None) -> int:
    """The command: ask what is missing, write the two files, say what is left. Exit 0, or 2 with one line per
    problem on stderr."""
    import sys

    try:
        answers = answers_from(values, ask)
        paths = write(answers, directory, overwrite=force)
    except NewStackError as error:
        for problem in error.problems:
            print(f"new-stack: {problem}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"Wrote {path}")
    print(
        f"Next: replace every value marked '{CHANGE.removeprefix('# ').rstrip(':')}' (grep -n CHANGE {paths[0]}), "
        f'then plan it offline: make plan STACK={answers.stack}  (README "Your first stack")'
    )
    return 0
