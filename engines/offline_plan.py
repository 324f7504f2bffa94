"""The offline plan engine: run a Pulumi program under Pulumi's mock engine and record what it declares.

No Pulumi CLI, provider plugin, cloud or passphrase is involved. The program runs exactly as under
`pulumi up` (same config values and secret keys, same root Stack resource, same RPC flushing), but every
RegisterResource goes to `RecordingMonitor`, which keeps the raw request, and to `PlanMocks`, which
answers with stable ids and the few computed outputs the program reads.

Used by engines/plan_stacks.py (the plan command's run) and by the tests (fixtures in tests/program/conftest.py):

    config = load_stack_file(Path("stacks/Pulumi.dev.yaml"), project="sv-backups", stack="dev")
    result = plan_program(main_program(ROOT), config)     # or any zero-argument callable
    result.plan        # the plan.json document (secrets redacted)
    result.manifests   # file name -> Kubernetes object
    result.leaks       # places where a secret's clear text reached the engine outside a Pulumi secret

Secrets: a `{secure: ...}` value becomes the text "[secret]" and its key is listed as secret, as the CLI
would do after decrypting. A value that must be secret (MUST_BE_SECRET, e.g. the OAuth client secret) is
redacted wherever its clear text appears even when the operator wrote it in clear. A secret's text that
reaches a resource input or stack output *not* wrapped as a Pulumi secret would be stored in clear in the
state: it is redacted in the plan all the same, and reported in `leaks`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextvars
import functools
import gc
import hashlib
import json
import runpy
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECRET = "[secret]"
UNKNOWN = "[unknown]"
# The project number every mocked invoke and computed output agrees on.
PROJECT_NUMBER = "123456789012"
# The AWS account id likewise (getCallerIdentity, every ARN), and the role the offline "deployer" acts as.
AWS_ACCOUNT_ID = "123456789012"
AWS_DEPLOYER_ROLE = "sv-backups-deployer"
# Config values that are secrets by nature: (full config key, path inside its object).
MUST_BE_SECRET: tuple[tuple[str, tuple[str, ...]], ...] = (("sv-backups:identities", ("clientSecret",)),)

# Markers of Pulumi's wire format (pulumi/runtime/rpc.py): a struct carrying the special signature key is a
# secret, a resource reference, an asset, an archive or an output value rather than a plain object.
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT_VALUE_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN_VALUE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_STACK_TYPE = "pulumi:pulumi:Stack"
# Kubernetes objects whose payload the provider always stores as a secret.
_SECRET_PAYLOAD = {"kubernetes:core/v1:Secret": ("data", "stringData")}


class PlanInputError(Exception):
    """The stack or project file cannot be read (missing, not YAML, wrong shape)."""


class OfflinePlanError(Exception):
    """The program asked the mock engine for something it cannot answer, or declared an impossible plan."""


# --- stack configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackConfig:
    """A stack's configuration as the Pulumi CLI hands it to the program (with secure values unreadable).

    `values` maps full keys (`sv-backups:node`) to decoded values; `secret_keys` are the keys holding a
    `secure:` value anywhere inside; `clear_secrets` are texts that must never be shown.
    """

    project: str
    stack: str
    values: Mapping[str, Any]
    secret_keys: frozenset[str] = frozenset()
    clear_secrets: frozenset[str] = frozenset()

    def engine_config(self) -> dict[str, str]:
        """Config as the engine passes it to a program: every value a string, objects and lists as JSON."""
        return {key: _engine_string(value) for key, value in sorted(self.values.items())}

    def raw_config(self) -> dict[str, Any]:
        """What `components.stack_config.read_raw_config()` returns for this config (objects decoded)."""
        return {
            key: json.loads(text) if isinstance(self.values[key], (Mapping, list)) else text
            for key, text in self.engine_config().items()
        }


def _engine_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def stack_config(config: Mapping[str, Any], *, project: str, stack: str) -> StackConfig:
    """Build a StackConfig from a stack file's `config:` map (keys with or without the project prefix)."""
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise PlanInputError(f"config key {key!r} is not a string")
        full_key = key if ":" in key else f"{project}:{key}"
        if full_key in values:
            raise PlanInputError(f"config key {full_key} is given twice")
        found: list[bool] = []
        values[full_key] = _strip_secure(value, found)
        if found:
            secret_keys.add(full_key)
    clear = set()
    for key, path in MUST_BE_SECRET:
        value: Any = values.get(key)
        for step in path:
            value = value.get(step) if isinstance(value, Mapping) else None
        if isinstance(value, str) and value and value != SECRET:
            clear.add(value)
    return StackConfig(project, stack, values, frozenset(secret_keys), frozenset(clear))


def _strip_secure(value: Any, found: list[bool]) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"secure"}:
            found.append(True)
            return SECRET
        return {str(k): _strip_secure(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secure(v, found) for v in value]
    return value


@dataclass(frozen=True)
class Project:
    name: str
    root: Path
    stack_config_dir: Path

    def stack_file(self, stack: str) -> Path:
        return self.stack_config_dir / f"Pulumi.{stack}.yaml"


def load_project(root: Path) -> Project:
    document = _read_yaml(root / "Pulumi.yaml")
    if not isinstance(document, Mapping) or not isinstance(document.get("name"), str):
        raise PlanInputError(f"{root / 'Pulumi.yaml'}: a `name:` is required")
    return Project(document["name"], root, root / str(document.get("stackConfigDir") or "."))


# The top-level keys of a Pulumi.<stack>.yaml (Pulumi's project and stack settings reference): the config, how its
# secrets are encrypted, and the ESC environments it imports. Only `config` is read here.
STACK_FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")


def load_stack_file(path: Path, *, project: str, stack: str) -> StackConfig:
    document = _read_yaml(path)
    if document is None:
        raise PlanInputError(f"{path}: the file is empty; a stack file holds its settings under a top-level `config:`")
    if not isinstance(document, Mapping):
        raise PlanInputError(f"{path}: expected a YAML map with a `config:` key")
    unknown = [str(key) for key in document if key not in STACK_FILE_KEYS]
    if unknown and "config" not in document:
        # The common slip: the config keys written at the top level, without `config:` above them. One message
        # that says so, instead of one "is required but missing" per key the program needs.
        raise PlanInputError(
            f"{path}: no top-level `config:` key; put the settings ({', '.join(unknown[:3])}"
            f"{', ...' if len(unknown) > 3 else ''}) under `config:`, indented"
        )
    if unknown:
        raise PlanInputError(
            f"{path}: unknown top-level key {', '.join(map(repr, unknown))}; a stack file has "
            f"{', '.join(STACK_FILE_KEYS)} (settings go under `config:`)"
        )
    config = document.get("config")
    if not isinstance(config, Mapping):
        raise PlanInputError(f"{path}: `config:` must be a map of keys to values")
    return stack_config(config, project=project, stack=stack)


# libyaml's parser (in PyYAML's wheels) under PyYAML's safe constructor: the same values, 9x faster than the
# pure-Python parser, whose time showed in every stack planned.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanInputError(f"{path}: no such file") from None
    except OSError as error:
        raise PlanInputError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        raise PlanInputError(f"{path}: not valid YAML: {error}") from None


# --- mocks -----------------------------------------------------------------------------------------------


def _digits(text: str, count: int) -> str:
    """Stable pseudo-random digits (the same text always gives the same number)."""
    return str(int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10**count).rjust(count, "0")


def _email_member(email: str) -> dict[str, str]:
    return {"email": email, "member": f"serviceAccount:{email}"}


def _hex(text: str, count: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:count]


def _uuid(text: str) -> str:
    h = _hex(text, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _aws_partition(region: str) -> str:
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


class PlanMocks:
    """Answers the program's resource registrations and invokes with stable, realistic values.

    `new_resource` echoes the inputs and adds the computed outputs in RESOURCE_OUTPUTS; `call` answers the
    invokes in INVOKES and refuses any other token, so a new data source is added here, never mocked as empty.
    """

    def __init__(
        self,
        *,
        project: str,
        region: str,
        stack_references: Mapping[str, Mapping[str, Any]] | None = None,
        cloudsql_flags: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
    ):
        self.project = project
        self.region = region
        # Outputs of the stacks a program reads through StackReference, by stack name ("org/project/stack").
        self.stack_references = dict(stack_references or {})
        # Database flags of live Cloud SQL instances ({name, value} lists by instance name), as
        # getDatabaseInstance reads them; an instance not listed has none set.
        self.cloudsql_flags = dict(cloudsql_flags or {})

    # Computed outputs per type token: (logical name, inputs, project) -> (id, extra outputs).
    def _key_ring(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        ring = f"projects/{project}/locations/{inputs.get('location')}/keyRings/{inputs.get('name', name)}"
        return ring, {}

    def _crypto_key(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        return f"{inputs.get('keyRing')}/cryptoKeys/{inputs.get('name', name)}", {}

    def _service_account(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        email = f"{inputs.get('accountId', name)}@{project}.iam.gserviceaccount.com"
        path = f"projects/{project}/serviceAccounts/{email}"
        return path, {"name": path, "uniqueId": _digits(email, 21), **_email_member(email)}

    def _service_identity(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        service = str(inputs.get("service", "unknown.googleapis.com"))
        email = f"service-{PROJECT_NUMBER}@gcp-sa-{service.split('.')[0]}.iam.gserviceaccount.com"
        return f"projects/{project}/services/{service}", _email_member(email)

    def _bucket(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        bucket = inputs.get("name", name)
        return bucket, {"url": f"gs://{bucket}", "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}"}

    def _secret(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        secret_id = inputs.get("secretId", name)
        return f"projects/{project}/secrets/{secret_id}", {"name": f"projects/{PROJECT_NUMBER}/secrets/{secret_id}"}

    def _sql_instance(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        instance = inputs.get("name", name)
        region = inputs.get("region", self.region)
        address = f"10.{int(_digits(instance, 3)) % 250 + 1}.0.{int(_digits(instance + '/ip', 3)) % 250 + 2}"
        return instance, {
            "privateIpAddress": address,
            "firstIpAddress": address,
            "connectionName": f"{project}:{region}:{instance}",
            "selfLink": f"https://sqladmin.googleapis.com/sql/v1beta4/projects/{project}/instances/{instance}",
        }

    def _numbered(self, collection: str) -> Callable[[str, dict, str], tuple[str, dict]]:
        def outputs(name: str, inputs: dict, project: str) -> tuple[str, dict]:
            path = f"projects/{project}/{collection}/{_digits(name, 19)}"
            return path, {"name": path}

        return outputs

    def _log_metric(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        return str(inputs.get("name", name)), {}

    # AWS: every ARN in the one mocked account; a regional resource is where its `region` input says.
    def _arn(self, service: str, inputs: dict, resource: str, *, regional: bool = True) -> str:
        region = str(inputs.get("region") or self.region) if regional else ""
        account = AWS_ACCOUNT_ID if service != "s3" else ""
        return f"arn:{_aws_partition(str(inputs.get('region') or self.region))}:{service}:{region}:{account}:{resource}"

    def _kms_key(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        key_id = _uuid(f"kms/{name}")
        return key_id, {"keyId": key_id, "arn": self._arn("kms", inputs, f"key/{key_id}")}

    def _kms_alias(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        alias = str(inputs.get("name", name))
        return alias, {"arn": self._arn("kms", inputs, alias)}

    def _iam_role(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        role, path = str(inputs.get("name", name)), str(inputs.get("path") or "/")
        arn = self._arn("iam", inputs, f"role{path}{role}", regional=False)
        return role, {"name": role, "path": path, "arn": arn, "uniqueId": "AROA" + _hex(arn, 17).upper()}

    def _iam_role_policy(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        return f"{inputs.get('role')}:{inputs.get('name', name)}", {"name": inputs.get("name", name)}

    def _s3_bucket(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        bucket = str(inputs.get("bucket", name))
        region = str(inputs.get("region") or self.region)
        return bucket, {
            "bucket": bucket,
            "arn": self._arn("s3", inputs, bucket, regional=False),
            "region": region,
            "bucketDomainName": f"{bucket}.s3.amazonaws.com",
            "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
        }

    def _secretsmanager_secret(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        secret = str(inputs.get("name", name))
        # Secrets Manager appends six random characters to every secret's ARN.
        arn = self._arn("secretsmanager", inputs, f"secret:{secret}-{_hex(secret, 6)}")
        return arn, {"arn": arn, "name": secret}

    def _rds_instance(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        identifier = str(inputs.get("identifier", name))
        region = str(inputs.get("region") or self.region)
        address = f"{identifier}.c{_hex('rds/' + AWS_ACCOUNT_ID + region, 11)}.{region}.rds.amazonaws.com"
        return identifier, {
            "arn": self._arn("rds", inputs, f"db:{identifier}"),
            "address": address,
            "endpoint": f"{address}:5432",
            "port": 5432,
            "resourceId": "db-" + _hex(identifier, 26).upper(),
        }

    def _rds_backups_replication(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        return self._arn("rds", inputs, f"auto-backup:ab-{_hex(name, 26)}"), {}

    def _sns_topic(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        arn = self._arn("sns", inputs, str(inputs.get("name", name)))
        return arn, {"arn": arn}

    def _sns_subscription(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        arn = f"{inputs.get('topic')}:{_uuid('sns/' + name)}"
        return arn, {"arn": arn}

    def _metric_alarm(self, name: str, inputs: dict, _: str) -> tuple[str, dict]:
        alarm = str(inputs.get("name", name))
        return alarm, {"arn": self._arn("cloudwatch", inputs, f"alarm:{alarm}")}

    def _pubsub(self, collection: str) -> Callable[[str, dict, str], tuple[str, dict]]:
        def outputs(name: str, inputs: dict, project: str) -> tuple[str, dict]:
            return f"projects/{project}/{collection}/{inputs.get('name', name)}", {}

        return outputs

    def _notification(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        bucket = inputs.get("bucket", name)
        number = str(int(_digits(f"{bucket}/{name}", 3)))
        return f"{bucket}/notificationConfigs/{number}", {
            "notificationId": number,
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}/notificationConfigs/{number}",
        }

    def _transfer_job(self, name: str, inputs: dict, project: str) -> tuple[str, dict]:
        # Without a name in the inputs, STS names a job transferJobs/<number>.
        job = inputs.get("name") or f"transferJobs/{_digits(name, 20)}"
        return f"{project}/{job.removeprefix('transferJobs/')}", {"name": job}

    def _outputs_for(self, type_: str) -> Callable[[str, dict, str], tuple[str, dict]] | None:
        return {
            "aws:kms/key:Key": self._kms_key,
            "aws:kms/alias:Alias": self._kms_alias,
            "aws:iam/role:Role": self._iam_role,
            "aws:iam/rolePolicy:RolePolicy": self._iam_role_policy,
            "aws:s3/bucket:Bucket": self._s3_bucket,
            "aws:secretsmanager/secret:Secret": self._secretsmanager_secret,
            "aws:rds/instance:Instance": self._rds_instance,
            "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication": (
                self._rds_backups_replication
            ),
            "aws:sns/topic:Topic": self._sns_topic,
            "aws:sns/topicSubscription:TopicSubscription": self._sns_subscription,
            "aws:cloudwatch/metricAlarm:MetricAlarm": self._metric_alarm,
            "aws:cloudwatch/logMetricFilter:LogMetricFilter": self._log_metric,
            "gcp:kms/keyRing:KeyRing": self._key_ring,
            "gcp:kms/cryptoKey:CryptoKey": self._crypto_key,
            "gcp:serviceaccount/account:Account": self._service_account,
            "gcp:projects/serviceIdentity:ServiceIdentity": self._service_identity,
            "gcp:storage/bucket:Bucket": self._bucket,
            "gcp:secretmanager/secret:Secret": self._secret,
            "gcp:sql/databaseInstance:DatabaseInstance": self._sql_instance,
            "gcp:monitoring/notificationChannel:NotificationChannel": self._numbered("notificationChannels"),
            "gcp:monitoring/alertPolicy:AlertPolicy": self._numbered("alertPolicies"),
            "gcp:logging/metric:Metric": self._log_metric,
            "gcp:pubsub/topic:Topic": self._pubsub("topics"),
            "gcp:pubsub/subscription:Subscription": self._pubsub("subscriptions"),
            "gcp:storage/notification:Notification": self._notification,
            "gcp:storage/transferJob:TransferJob": self._transfer_job,
        }.get(type_)

    def new_resource(self, args: Any) -> tuple[str, dict]:
        if getattr(args, "transforms", None):
            raise OfflinePlanError(f"{args.typ} {args.name}: resource transforms do not run under the offline plan")
        inputs = dict(args.inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            return self._stack_reference(args.name, inputs)
        if args.typ.startswith("kubernetes:") and not args.typ.startswith("kubernetes:index:"):
            # Real auto-names get a random suffix; the plan uses the logical name so it stays stable.
            metadata = dict(inputs.get("metadata") or {})
            metadata.setdefault("name", args.name)
            inputs["metadata"] = metadata
            namespace = metadata.get("namespace")
            return (f"{namespace}/{metadata['name']}" if namespace else metadata["name"]), inputs
        outputs = self._outputs_for(args.typ)
        if outputs is None:
            return args.resource_id or f"{args.name}-id", inputs
        project = str(inputs.get("project") or self.project)
        resource_id, computed = outputs(args.name, inputs, project)
        return args.resource_id or resource_id, {**inputs, **computed}

    def _stack_reference(self, name: str, inputs: dict) -> tuple[str, dict]:
        stack = str(inputs.get("name") or name)
        if stack not in self.stack_references:
            raise OfflinePlanError(
                f"StackReference {stack!r}: the offline plan has no outputs for it; "
                "pass PlanMocks(stack_references={...})"
            )
        return stack, {"name": stack, "outputs": dict(self.stack_references[stack]), "secretOutputNames": []}

    def call(self, args: Any) -> tuple[dict, list]:
        answer = {
            "gcp:organizations/getProject:getProject": self._get_project,
            "gcp:storage/getProjectServiceAccount:getProjectServiceAccount": self._gcs_service_account,
            "aws:index/getCallerIdentity:getCallerIdentity": self._aws_caller_identity,
            "aws:iam/getSessionContext:getSessionContext": self._aws_session_context,
            "aws:eks/getCluster:getCluster": self._eks_cluster,
            "gcp:sql/getDatabaseInstance:getDatabaseInstance": self._sql_instance_read,
            "gcp:storage/getTransferProjectServiceAccount:getTransferProjectServiceAccount": self._transfer_agent,
        }.get(args.token)
        if answer is None:
            raise OfflinePlanError(
                f"the offline plan has no answer for invoke {args.token!r} (args {sorted(args.args)}); "
                "add it to PlanMocks.call in engines/offline_plan.py"
            )
        return answer(dict(args.args)), []

    def _get_project(self, args: dict) -> dict:
        project = args.get("projectId") or self.project
        return {"id": f"projects/{project}", "projectId": project, "name": project, "number": PROJECT_NUMBER}

    def _aws_caller_identity(self, args: dict) -> dict:
        # A deployer acting through an assumed role, as with SSO or a CI role.
        arn = f"arn:{_aws_partition(self.region)}:sts::{AWS_ACCOUNT_ID}:assumed-role/{AWS_DEPLOYER_ROLE}/offline-plan"
        user_id = "AROA" + _hex(AWS_DEPLOYER_ROLE, 17).upper()
        return {"id": AWS_ACCOUNT_ID, "accountId": AWS_ACCOUNT_ID, "arn": arn, "userId": f"{user_id}:offline-plan"}

    def _aws_session_context(self, args: dict) -> dict:
        arn = str(args.get("arn", ""))
        fields = arn.split(":", 5)
        if len(fields) != 6:
            raise OfflinePlanError(f"getSessionContext: {arn!r} is not an ARN")
        part, account, resource = fields[1], fields[4], fields[5]
        kind, _, rest = resource.partition("/")
        if kind != "assumed-role":
            return {"id": arn, "arn": arn, "issuerArn": arn, "issuerName": rest, "issuerId": "", "sessionName": ""}
        role, _, session = rest.partition("/")
        return {
            "id": arn,
            "arn": arn,
            "issuerArn": f"arn:{part}:iam::{account}:role/{role}",
            "issuerName": role,
            "issuerId": "AROA" + _hex(role, 17).upper(),
            "sessionName": session,
        }

    def _eks_cluster(self, args: dict) -> dict:
        name = str(args.get("name", ""))
        region = str(args.get("region") or self.region)
        issuer = f"https://oidc.eks.{region}.amazonaws.com/id/{_hex('eks/' + name, 32).upper()}"
        return {
            "id": name,
            "name": name,
            "arn": f"arn:{_aws_partition(region)}:eks:{region}:{AWS_ACCOUNT_ID}:cluster/{name}",
            "identities": [{"oidcs": [{"issuer": issuer}]}],
            "status": "ACTIVE",
            "version": "1.31",
        }

    def _sql_instance_read(self, args: dict) -> dict:
        project = args.get("project") or self.project
        name = str(args.get("name"))
        _, outputs = self._sql_instance(name, {"name": name, "region": self.region}, project)
        flags = [{"name": f["name"], "value": f["value"]} for f in self.cloudsql_flags.get(name, [])]
        return {"name": name, "project": project, "region": self.region, **outputs,
                "settings": [{"databaseFlags": flags}]}  # fmt: skip

    def _gcs_service_account(self, args: dict) -> dict:
        project = args.get("project") or self.project
        email = f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
        return {"id": email, "project": project, "emailAddress": email, "member": f"serviceAccount:{email}"}

    def _transfer_agent(self, args: dict) -> dict:
        project = args.get("project") or self.project
        email = f"project-{PROJECT_NUMBER}@storage-transfer-service.iam.gserviceaccount.com"
        return {
            "id": email,
            "project": project,
            "email": email,
            "member": f"serviceAccount:{email}",
            "subjectId": _digits(email, 21),
        }

    # pulumi.runtime.Mocks hooks the mock monitor may call.
    def register_transform(self, transform: Any) -> None:
        raise OfflinePlanError("stack transforms are not supported by the offline plan")

    def register_invoke_transform(self, transform: Any) -> None:
        raise OfflinePlanError("invoke transforms are not supported by the offline plan")


# --- recording -------------------------------------------------------------------------------------------


def _struct_to_python(struct: Any) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct) if struct is not None else {}


@dataclass
class Recording:
    """Everything the program sent to the engine, as plain data (values still in wire format)."""

    project: str
    stack: str
    root_urn: str = ""
    resources: list[dict] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)


def resource_urn(stack: str, project: str, parent: str, type_: str, name: str) -> str:
    """The URN the engine gives a resource: its type is qualified by the parent's whole type chain (a parent
    that is the root stack excepted). MockMonitor keeps only the parent's last type: URNs `pulumi up` never
    makes."""
    qualified = type_
    if parent:
        parent_type = parent.split("::")[2]
        if parent_type != _STACK_TYPE:
            qualified = f"{parent_type}${type_}"
    return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"


@functools.cache
def recording_monitor_class() -> type:
    """`RecordingMonitor`, built on first use so that importing this module does not import Pulumi."""
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):
        """A MockMonitor that also keeps every registration request, and the stack outputs.

        The engine calls these methods from worker threads, concurrently: recording is under a lock, and the
        plan is ordered afterwards (never by arrival).
        """

        def __init__(self, mocks: Any, recording: Recording):
            super().__init__(mocks)
            self.recording = recording
            self.project, self.stack = recording.project, recording.stack
            self._lock = threading.Lock()
            self._urns: set[str] = set()

        def make_urn(self, parent: str, type_: str, name: str) -> str:
            return resource_urn(self.stack, self.project, parent, type_, name)

        def _record(self, urn: str, request: Any, *, read_id: str | None = None) -> None:
            entry = {
                "urn": urn,
                "type": request.type,
                "name": request.name,
                "parent": request.parent or None,
                "inputs": _struct_to_python(request.properties if read_id is not None else request.object),
                "options": _options(request, read_id),
            }
            with self._lock:
                if urn in self._urns:
                    raise OfflinePlanError(f"duplicate resource URN {urn}: two resources share a type and name")
                self._urns.add(urn)
                if request.type == _STACK_TYPE and not request.parent:
                    self.recording.root_urn = urn
                self.recording.resources.append(entry)

        def RegisterResource(self, request: Any) -> Any:
            self._record(self.make_urn(request.parent, request.type, request.name), request)
            return super().RegisterResource(request)

        def ReadResource(self, request: Any) -> Any:
            # Reads (e.g. StackReference, `Resource.get`) are recorded too, marked with the id they read.
            self._record(self.make_urn(request.parent, request.type, request.name), request, read_id=request.id)
            return super().ReadResource(request)

        def RegisterResourceOutputs(self, request: Any) -> Any:
            # Read the struct as plain data: `rpc.deserialize_properties` here deadlocks the mock engine.
            outputs = _struct_to_python(request.outputs)
            with self._lock:
                self.recording.outputs[request.urn] = outputs
            return super().RegisterResourceOutputs(request)

    return RecordingMonitor


def _options(request: Any, read_id: str | None) -> dict[str, Any]:
    from google.protobuf import json_format

    if read_id is not None:
        return {
            "custom": True,
            "read": read_id,
            "provider": request.provider or None,
            "version": request.version or None,
        }
    aliases = [json_format.MessageToDict(alias) for alias in request.aliases]
    aliases += list(request.aliasURNs)
    timeouts = json_format.MessageToDict(request.customTimeouts) if request.HasField("customTimeouts") else None
    return {
        "custom": bool(request.custom),
        "protect": bool(request.protect),
        "retainOnDelete": bool(request.retainOnDelete),
        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
        "ignoreChanges": sorted(request.ignoreChanges),
        "replaceOnChanges": sorted(request.replaceOnChanges),
        "additionalSecretOutputs": sorted(request.additionalSecretOutputs),
        "aliases": aliases,
        "import": request.importId or None,
        "provider": request.provider or None,
        "version": request.version or None,
        "deletedWith": request.deletedWith or None,
        "customTimeouts": timeouts or None,
        "dependencies": sorted(set(request.dependencies)),
        "propertyDependencies": {
            key: sorted(set(deps.urns)) for key, deps in sorted(request.propertyDependencies.items()) if deps.urns
        },
    }


def __getattr__(name: str) -> Any:
    if name == "RecordingMonitor":
        return recording_monitor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- running a program -----------------------------------------------------------------------------------


def run_program(
    program: Callable[[], Any],
    config: StackConfig,
    *,
    mocks: Any = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    process_goes_on: bool = True,
) -> Recording:
    """Run `program` under the mock engine with `config`, as `pulumi up` would, and return what it declared.

    Each run has its own thread, event loop and context (root stack, config, exports, pending outputs), so
    runs never leak into one another nor into the caller's Pulumi state. Exceptions from the program (or
    the mocks) are raised here, after the engine has drained. `stack_references` (stack name -> outputs)
    answers the program's StackReference reads when `mocks` is not given. `process_goes_on=False` (a caller
    that exits right after, as the language host's process does: benchmarks/plan.py) leaves the collector
    as the program set it.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline-plan") as pool:
        return pool.submit(
            contextvars.copy_context().run,
            _run_in_context,
            program,
            config,
            mocks,
            stack_references,
            process_goes_on,
        ).result()


def _run_in_context(
    program: Callable[[], Any],
    config: StackConfig,
    mocks: Any,
    stack_references: Mapping[str, Mapping[str, Any]] | None,
    process_goes_on: bool = True,
) -> Recording:
    import pulumi.runtime
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.stack import run_in_stack

    recording = Recording(project=config.project, stack=config.stack)
    if mocks is None:
        mocks = PlanMocks(
            project=str(config.values.get("gcp:project", "")),
            region=str(config.values.get("gcp:region") or config.values.get("aws:region") or ""),
            stack_references=stack_references,
        )
    monitor = recording_monitor_class()(mocks, recording)
    pulumi.runtime.set_all_config(config.engine_config(), sorted(config.secret_keys))
    # set_mocks would create and finish an empty root Stack at once (so exports made later are never
    # registered). Hold it off with a placeholder, then let run_in_stack create the Stack and register its
    # outputs after the program, exactly as the language host does.
    runtime_settings.set_root_resource(_PLACEHOLDER_ROOT)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(mocks, project=config.project, stack=config.stack, preview=False, monitor=monitor)
    runtime_settings.SETTINGS.outputs = set()
    runtime_settings.set_root_resource(None)  # type: ignore[arg-type]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The program pauses the cyclic collector and freezes what it made for the rest of its process (__main__.py);
    # this process goes on, so both are undone (a host that froze objects of its own keeps everything frozen).
    collector_was_on = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        loop.run_until_complete(run_in_stack(program))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        # The SDK makes its engine calls in the loop's default executor; close() would leave those threads to end
        # on their own, after this run returns (and a process that forks next must have none: engines/forked.py).
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
        if process_goes_on and frozen_before == 0:
            gc.unfreeze()
        if process_goes_on and collector_was_on:
            gc.enable()
    return recording


_PLACEHOLDER_ROOT = object()


def main_program(project_root: Path) -> Callable[[], None]:
    """The real program path: run the project's `__main__.py` as the Python language host does."""
    main = project_root / "__main__.py"

    def program() -> None:
        if str(project_root) not in sys.path:
            sys.path.insert(0, str(project_root))
        runpy.run_path(str(main), run_name="__main__")

    return program


# --- the plan document -----------------------------------------------------------------------------------


@dataclass
class PlanResult:
    """A plan (the plan.json document), its Kubernetes manifests, and where secrets leaked (if anywhere)."""

    plan: dict
    manifests: dict[str, dict]
    leaks: list[str]
    recording: Recording

    @property
    def resources(self) -> list[dict]:
        return self.plan["resources"]

    @property
    def outputs(self) -> dict:
        return self.plan["outputs"]

    def of_type(self, type_: str) -> list[dict]:
        return [r for r in self.resources if r["type"] == type_]

    def resource(self, name: str, type_: str | None = None) -> dict:
        """The one resource with this logical name (and type); KeyError naming the candidates otherwise."""
        found = [r for r in self.resources if r["name"] == name and type_ in (None, r["type"])]
        if len(found) != 1:
            names = sorted(f"{r['type']} {r['name']}" for r in self.resources)
            raise KeyError(f"{len(found)} resources named {name!r} ({type_ or 'any type'}); the plan has: {names}")
        return found[0]

    def to_json(self) -> str:
        return plan_json(self.plan)


class _Redactor:
    """Turns wire-format values into plain JSON, with every secret shown as "[secret]"."""

    def __init__(self, clear_secrets: Iterable[str]):
        texts: set[str] = {SECRET}
        for secret in clear_secrets:
            texts.add(secret)
            texts.add(base64.b64encode(secret.encode()).decode())
        # Longest first, so a secret containing another is replaced whole.
        self.texts = sorted(texts, key=lambda t: (-len(t), t))
        self.leaks: list[str] = []

    def value(self, value: Any, where: str, *, secret: bool = False) -> Any:
        if isinstance(value, Mapping):
            sig = value.get(_SIG)
            if sig == _SECRET_SIG:
                return _mask(value.get("value"))
            if sig == _RESOURCE_SIG:
                return value.get("urn")
            if sig == _OUTPUT_VALUE_SIG:
                if value.get("secret"):
                    return _mask(value.get("value"))
                return self.value(value["value"], where, secret=secret) if "value" in value else UNKNOWN
            # Assets and archives keep their description without the marker.
            return {k: self.value(v, f"{where}.{k}", secret=secret) for k, v in value.items() if k != _SIG}
        if isinstance(value, list):
            return [self.value(v, f"{where}[{i}]", secret=secret) for i, v in enumerate(value)]
        if secret:
            return _mask(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return self.text(value, where)
        return value

    def text(self, text: str, where: str) -> str:
        if text == _UNKNOWN_VALUE:
            return UNKNOWN
        redacted = text
        for clear in self.texts:
            if (len(clear) >= 4 and clear in redacted) or clear == redacted:
                redacted = redacted.replace(clear, SECRET)
        if redacted != text or SECRET in text:
            self.leaks.append(where)
        return redacted


def _mask(value: Any) -> Any:
    """A secret's shape with every leaf shown as "[secret]" (a Secret's `stringData` stays a map of keys)."""
    if isinstance(value, Mapping) and _SIG not in value:
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return SECRET


def build_plan(recording: Recording, config: StackConfig) -> PlanResult:
    """Turn a recording into the plan document and the Kubernetes manifests."""
    redactor = _Redactor(config.clear_secrets)
    alias_urns: dict[str, list[str]] = {}
    entries = [e for e in recording.resources if e["urn"] != recording.root_urn]
    resources = []
    for entry in _tree_order(entries):
        urn = entry["urn"]
        forced = _SECRET_PAYLOAD.get(entry["type"], ())
        inputs = {
            key: redactor.value(value, f"{urn} input {key}", secret=key in forced)
            for key, value in entry["inputs"].items()
        }
        options = dict(entry["options"])
        depends_on = options.pop("dependencies", [])
        if "aliases" in options:
            options["aliases"] = alias_urns[urn] = _alias_urns(entry, alias_urns, recording)
        resources.append(
            {
                "urn": urn,
                "type": entry["type"],
                "name": entry["name"],
                "parent": entry["parent"],
                "dependsOn": depends_on,
                "inputs": inputs,
                "options": options,
            }
        )
    root_outputs = recording.outputs.get(recording.root_urn, {})
    outputs = {key: redactor.value(value, f"stack output {key}") for key, value in root_outputs.items()}
    plan = {"project": recording.project, "stack": recording.stack, "resources": resources, "outputs": outputs}
    return PlanResult(plan, kubernetes_manifests(plan), sorted(set(redactor.leaks)), recording)


def _alias_urns(entry: Mapping[str, Any], resolved: Mapping[str, list[str]], recording: Recording) -> list[str]:
    """A resource's aliases as the engine resolves them: URNs, including those inherited from the aliases of
    its parents (a moved or renamed component carries its children's old URNs along)."""
    parent = entry["parent"] or ""
    parent_aliases = resolved.get(parent, [])
    found: set[str] = set()
    for alias in entry["options"]["aliases"]:
        if isinstance(alias, str):
            found.add(alias)
            continue
        if "urn" in alias:
            found.add(alias["urn"])
            continue
        spec = alias.get("spec", {})
        if spec.get("noParent"):
            parents = [""]
        elif spec.get("parentUrn"):
            parents = [spec["parentUrn"]]
        else:
            parents = [parent, *parent_aliases]
        for old_parent in parents:
            found.add(
                resource_urn(
                    spec.get("stack") or recording.stack,
                    spec.get("project") or recording.project,
                    old_parent,
                    spec.get("type") or entry["type"],
                    spec.get("name") or entry["name"],
                )
            )
    for old_parent in parent_aliases:
        found.add(resource_urn(recording.stack, recording.project, old_parent, entry["type"], entry["name"]))
    found.discard(entry["urn"])
    return sorted(found)


def _tree_order(entries: list[dict]) -> list[dict]:
    """Parents before children, siblings by URN: stable whatever order the engine threads delivered them in."""
    children: dict[str | None, list[dict]] = {}
    by_urn = {e["urn"]: e for e in entries}
    for entry in entries:
        parent = entry["parent"] if entry["parent"] in by_urn else None
        children.setdefault(parent, []).append(entry)
    ordered: list[dict] = []

    def visit(parent: str | None) -> None:
        for child in sorted(children.get(parent, []), key=lambda e: e["urn"]):
            ordered.append(child)
            visit(child["urn"])

    visit(None)
    return ordered


def plan_program(
    program: Callable[[], Any],
    config: StackConfig,
    *,
    mocks: Any = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
) -> PlanResult:
    return build_plan(run_program(program, config, mocks=mocks, stack_references=stack_references), config)


# --- Kubernetes manifests ---------------------------------------------------------------------------------


def is_kubernetes_object(resource: Mapping[str, Any]) -> bool:
    type_ = resource["type"]
    return type_.startswith("kubernetes:") and not type_.startswith("kubernetes:index:")


def kubernetes_manifest(resource: Mapping[str, Any]) -> dict:
    """The object as `kubectl apply` would receive it, rebuilt from the recorded (redacted) inputs."""
    _, group_version, kind = resource["type"].split(":", 2)
    group, _, version = group_version.rpartition("/")
    inputs = dict(resource["inputs"])
    manifest = {
        "apiVersion": inputs.pop("apiVersion", version if group in ("core", "") else f"{group}/{version}"),
        "kind": inputs.pop("kind", kind),
        # Without a name the provider auto-names (logical name plus a random suffix): show the logical name.
        "metadata": _sorted_deep({"name": resource["name"], **(inputs.pop("metadata", None) or {})}),
    }
    manifest.update(_sorted_deep(inputs))
    return manifest


def _sorted_deep(value: Any) -> Any:
    """Maps with sorted keys at every level (list order kept): the same object always gives the same YAML."""
    if isinstance(value, Mapping):
        return {key: _sorted_deep(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


def kubernetes_manifests(plan: Mapping[str, Any]) -> dict[str, dict]:
    """File name (`<kind>-<metadata.name>.yaml`) -> object, for every Kubernetes object in the plan."""
    objects = [kubernetes_manifest(r) for r in plan["resources"] if is_kubernetes_object(r)]
    counts = Counter(_manifest_name(o) for o in objects)
    named: dict[str, dict] = {}
    for obj in objects:
        name = _manifest_name(obj)
        if counts[name] > 1:  # same kind and name in two namespaces
            name = f"{obj['kind'].lower()}-{obj['metadata'].get('namespace', 'cluster')}-{obj['metadata'].get('name')}"
        named[f"{name}.yaml"] = obj
    return dict(sorted(named.items()))


def _manifest_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}"


# --- writing ----------------------------------------------------------------------------------------------


def plan_json(plan: Mapping[str, Any]) -> str:
    return json.dumps(plan, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# libyaml's emitter (in PyYAML's wheels) is 4x faster than the pure-Python one and writes the same bytes
# (tests/program/test_manifests.py compares both on every shipped stack's manifests).
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def manifest_yaml(obj: Mapping[str, Any], *, dumper: type = _YAML_DUMPER) -> str:
    return yaml.dump(obj, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def write_plan(result: PlanResult, out_dir: Path) -> None:
    """Write `plan.json` and `manifests/*.yaml` under out_dir (stale manifests of earlier runs removed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plan.json").write_text(plan_json(result.plan), encoding="utf-8")
    manifests = out_dir / "manifests"
    manifests.mkdir(exist_ok=True)
    for stale in manifests.glob("*.yaml"):
        if stale.name not in result.manifests:
            stale.unlink()
    for name, obj in result.manifests.items():
        (manifests / name).write_text(manifest_yaml(obj), encoding="utf-8")


# --- the human view ---------------------------------------------------------------------------------------


def _get(mapping: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(step)
    return mapping


def key_settings(resource: Mapping[str, Any]) -> list[str]:
    """A few settings worth seeing in the tree, per resource type."""
    inputs, options, type_ = resource["inputs"], resource["options"], resource["type"]
    shown: list[str] = []

    def show(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            shown.append(f"{label}={value if isinstance(value, (str, int)) else json.dumps(value)}")

    if type_ == "kubernetes:batch/v1:CronJob":
        show("schedule", _get(inputs, "spec", "schedule"))
        show("concurrency", _get(inputs, "spec", "concurrencyPolicy"))
        pod = _get(inputs, "spec", "jobTemplate", "spec", "template", "spec") or {}
        show("initContainers", [c.get("name") for c in pod.get("initContainers") or []])
        show("containers", [c.get("name") for c in pod.get("containers") or []])
    elif type_ == "gcp:storage/bucket:Bucket":
        show("location", inputs.get("location"))
        show("lifecycleRules", len(inputs.get("lifecycleRules") or []))
        show("retention", _get(inputs, "retentionPolicy", "retentionPeriod"))
        show("versioning", _get(inputs, "versioning", "enabled"))
    elif type_ == "gcp:sql/databaseInstance:DatabaseInstance":
        backups = _get(inputs, "settings", "backupConfiguration") or {}
        show("backups", backups.get("enabled"))
        show("pitr", backups.get("pointInTimeRecoveryEnabled"))
        show("backupLocation", backups.get("location"))
    elif type_ == "gcp:secretmanager/secret:Secret":
        replicas = _get(inputs, "replication", "userManaged", "replicas") or []
        show("replicas", [r.get("location") for r in replicas])
    elif type_ == "gcp:kms/cryptoKey:CryptoKey":
        show("rotation", inputs.get("rotationPeriod"))
    elif type_.endswith(":VolumeSnapshotClass"):
        show("driver", inputs.get("driver"))
        show("deletionPolicy", inputs.get("deletionPolicy"))
    elif type_ in ("gcp:monitoring/alertPolicy:AlertPolicy", "gcp:serviceaccount/account:Account"):
        show("displayName", inputs.get("displayName"))
    elif type_ == "aws:s3/bucket:Bucket":
        show("bucket", inputs.get("bucket"))
        show("objectLock", inputs.get("objectLockEnabled"))
    elif type_ == "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration":
        retention = _get(inputs, "rule", "defaultRetention") or {}
        show("mode", retention.get("mode"))
        show("days", retention.get("days"))
    elif type_ == "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration":
        show("rules", [r.get("id") for r in inputs.get("rules") or []])
    elif type_ == "aws:kms/key:Key":
        show("rotationDays", inputs.get("rotationPeriodInDays"))
    elif type_ == "aws:rds/instance:Instance":
        show("backupRetentionDays", inputs.get("backupRetentionPeriod"))
        show("deletionProtection", inputs.get("deletionProtection"))
    elif type_ == "aws:secretsmanager/secret:Secret":
        show("replicas", [r.get("region") for r in inputs.get("replicas") or []])
    elif type_ in ("aws:iam/role:Role", "aws:cloudwatch/metricAlarm:MetricAlarm"):
        show("name", inputs.get("name"))
    elif "IAM" in type_ or type_.endswith("IamMember"):
        show("role", inputs.get("role"))
    elif is_kubernetes_object(resource):
        show("namespace", _get(inputs, "metadata", "namespace"))
    if type_.startswith("aws:"):
        show("region", inputs.get("region"))
    for flag in ("protect", "retainOnDelete"):
        if options.get(flag):
            shown.append(flag)
    if options.get("import"):
        shown.append(f"import={options['import']}")
    if options.get("read"):
        shown.append(f"read={options['read']}")
    return shown


def render_tree(plan: Mapping[str, Any], *, settings: Callable[[Mapping[str, Any]], list[str]] = key_settings) -> str:
    """One line per resource under its parent, with what `settings` shows of it (plan.py passes the key settings
    and grants: engines/plan_diff.py)."""
    resources = plan["resources"]
    depth: dict[str, int] = {}
    lines = [f"{_STACK_TYPE} {plan['project']}-{plan['stack']}"]
    for resource in resources:
        level = depth.get(resource["parent"], 0) + 1
        depth[resource["urn"]] = level
        shown = settings(resource)
        line = f"{'  ' * level}{resource['type']} {resource['name']}"
        lines.append(line + (f"  [{', '.join(shown)}]" if shown else ""))
    return "\n".join(lines)


def render_summary(plan: Mapping[str, Any]) -> str:
    counts = Counter(r["type"] for r in plan["resources"])
    width = max((len(t) for t in counts), default=0)
    lines = [f"Resources: {sum(counts.values())} ({len(counts)} types)"]
    lines += [f"  {count:4d}  {type_:<{width}}".rstrip() for type_, count in sorted(counts.items())]
    lines.append(f"Outputs: {', '.join(sorted(plan['outputs'])) or '(none)'}")
    return "\n".join(lines)


# --- DR stacks: the primary's outputs ----------------------------------------------------------------------


def primary_stack_of(config: StackConfig) -> str | None:
    """The `<org>/<project>/<stack>` a DR stack (`sv-backups:role: dr`) stands in for; None otherwise."""
    raw = config.raw_config()
    dr = raw.get(f"{config.project}:dr")
    if raw.get(f"{config.project}:role") != "dr" or not isinstance(dr, Mapping):
        return None
    return dr.get("primaryStack")


def primary_stack_references(
    config: StackConfig,
    project: Project,
    root: Path,
    *,
    primary_plan: Path | None = None,
    plan: Callable[[StackConfig], PlanResult] | None = None,
) -> dict[str, Mapping[str, Any]] | None:
    """What a DR stack's StackReference reads: the primary's outputs, from its recorded plan (DIR/plan.json of
    `primary_plan`) or from planning the shipped stack named like the primary's last name part (with `plan`,
    default: the real program). None for a primary stack."""
    name = primary_stack_of(config)
    if name is None:
        return None
    if primary_plan is not None:
        path = primary_plan / "plan.json"
        try:
            return {name: json.loads(path.read_text())["outputs"]}
        except (OSError, ValueError, KeyError) as error:
            raise PlanInputError(f"--primary-plan: cannot read the outputs in {path}: {error}") from None
    stack = name.rsplit("/", 1)[-1]
    path = project.stack_file(stack)
    if not path.is_file():
        raise PlanInputError(
            f"the DR stack's primary {name!r} has no stack file {path}; plan it first and pass --primary-plan DIR"
        )
    primary = load_stack_file(path, project=project.name, stack=stack)
    result = plan(primary) if plan else plan_program(main_program(root), primary)
    return {name: result.plan["outputs"]}
