"""Records every AWS API call made through boto3 in this process while active.

The jobs create their clients with `boto3.client(...)`, i.e. from boto3's default session; the recorder gives
them a fresh default session whose event hooks see each call before it is sent (`provide-client-params`: the
API parameters as the job passed them) and after it came back (`after-call`: the parsed answer, errors
included). Calls that never got an answer (connection refused) are recorded too, with `response=None`.

    with AwsCallRecorder() as recorder:
        run_the_job()
    [call.operation for call in recorder.calls]   # ["PutSecretValue"]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

# Parameters that carry data, not identity: never kept (they are large, and may be secret).
_DROPPED = ("Body", "SecretString", "SecretBinary")
_CONTEXT_KEY = "sv_backups_recorded_call"


@dataclass
class AwsCall:
    service: str  # botocore's service name: s3, secretsmanager, ec2, kms
    operation: str  # the API operation: PutObject, PutSecretValue, CopySnapshot
    region: str  # the region of the client that made the call
    params: dict[str, Any]
    response: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def error_code(self) -> str | None:
        return ((self.response or {}).get("Error") or {}).get("Code")


class AwsCallRecorder:
    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()
        self._previous = None

    def __enter__(self) -> AwsCallRecorder:
        import boto3

        self._previous = boto3.DEFAULT_SESSION
        boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events
        events.register("provide-client-params", self._before, unique_id="sv-backups-recorder-before")
        events.register("after-call", self._after, unique_id="sv-backups-recorder-after")
        return self

    def __exit__(self, *exc: object) -> None:
        import boto3

        boto3.DEFAULT_SESSION = self._previous

    def _before(self, params, model, context, **_) -> None:
        call = AwsCall(
            service=model.service_model.service_name,
            operation=model.name,
            region=context.get("client_region") or "",
            params={k: v for k, v in params.items() if k not in _DROPPED},
        )
        context[_CONTEXT_KEY] = call  # the request context travels with this one call to its after-call event
        with self._lock:
            self.calls.append(call)

    def _after(self, parsed, context, **_) -> None:
        call = context.get(_CONTEXT_KEY)
        if call is not None:
            call.response = parsed

    def operations(self, service: str | None = None) -> list[str]:
        return [c.operation for c in self.calls if service in (None, c.service)]
