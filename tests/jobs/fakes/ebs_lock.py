"""EBS Snapshot Lock for the moto-backed tests: moto has no LockSnapshot, so these hooks answer LockSnapshot and
DescribeLockedSnapshots in the EC2 query protocol's XML (parsed by botocore as usual) and make DeleteSnapshot of
a locked snapshot fail as EC2 does; every other call goes on to moto. In-process only (boto3's default session)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from botocore.awsrequest import AWSResponse

_NS = 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body

    def read(self, *_):
        body, self._body = self._body, b""
        return body


def _reply(request, status: int, body: str) -> AWSResponse:
    return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Raw(body.encode()))


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class EbsLocks:
    def __init__(self):
        self.locks: dict[str, datetime] = {}  # snapshot id -> lock expiry
        self.calls: list[tuple[str, dict]] = []

    def _params(self, request) -> dict[str, str]:
        body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        return {k: v[0] for k, v in parse_qs(body).items()}

    def lock(self, request, **_):
        params = self._params(request)
        self.calls.append(("LockSnapshot", params))
        now = datetime.now(UTC)
        expires = now + timedelta(days=int(params["LockDuration"]))
        self.locks[params["SnapshotId"]] = expires
        return _reply(request, 200, f"<LockSnapshotResponse {_NS}><requestId>r</requestId>"
                      f"<snapshotId>{params['SnapshotId']}</snapshotId><lockState>{params['LockMode']}</lockState>"
                      f"<lockDuration>{params['LockDuration']}</lockDuration><lockCreatedOn>{_time(now)}</lockCreatedOn>"
                      f"<lockExpiresOn>{_time(expires)}</lockExpiresOn></LockSnapshotResponse>")  # fmt: skip

    def describe(self, request, **_):
        params = self._params(request)
        ids = [v for k, v in params.items() if k.startswith("SnapshotId.")]
        items = "".join(
            f"<item><snapshotId>{i}</snapshotId><lockState>governance</lockState>"
            f"<lockExpiresOn>{_time(self.locks[i])}</lockExpiresOn></item>"
            for i in ids if i in self.locks
        )  # fmt: skip
        return _reply(request, 200, f"<DescribeLockedSnapshotsResponse {_NS}><requestId>r</requestId>"
                      f"<snapshotSet>{items}</snapshotSet></DescribeLockedSnapshotsResponse>")  # fmt: skip

    def delete(self, request, **_):
        snapshot_id = self._params(request).get("SnapshotId")
        if snapshot_id in self.locks and self.locks[snapshot_id] > datetime.now(UTC):
            error = f"<Code>SnapshotLocked</Code><Message>The snapshot {snapshot_id} is locked</Message>"
            body = f"<Response><Errors><Error>{error}</Error></Errors><RequestID>r</RequestID></Response>"
            return _reply(request, 400, body)
        return None  # on to moto

    def install(self):
        import boto3

        events = boto3.DEFAULT_SESSION.events if boto3.DEFAULT_SESSION else boto3.setup_default_session() or (
            boto3.DEFAULT_SESSION.events)  # fmt: skip
        for op, handler in (("LockSnapshot", self.lock), ("DescribeLockedSnapshots", self.describe),
                            ("DeleteSnapshot", self.delete)):  # fmt: skip
            events.register(f"before-send.ec2.{op}", handler, unique_id=f"ebs-lock-{op}")

        def uninstall():
            for op in ("LockSnapshot", "DescribeLockedSnapshots", "DeleteSnapshot"):
                events.unregister(f"before-send.ec2.{op}", unique_id=f"ebs-lock-{op}")

        return uninstall
