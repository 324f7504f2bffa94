"""A tiny threaded HTTP server on 127.0.0.1 (random port) that the fakes build on.

A fake implements `handle(request) -> Reply`; a Reply can also misbehave at the transport level: answer
after a delay (timeouts), or promise more bytes than it sends and close (a body cut off mid-way).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut_after: int | None = None  # send only this many bytes of `body`, announcing all of it, then close

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Reply:
        return cls(status=status, body=json.dumps(payload).encode())


class LocalServer:
    """Subclasses implement `handle`. Use as a context manager; `url` is http://127.0.0.1:PORT."""

    def __init__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms per request.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output clean
                pass

            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with fake.lock:
                    fake.requests.append(request)
                reply = fake.handle(request)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.cut_after is not None:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.cut_after is not None:
                        self.wfile.write(reply.body[: reply.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    self.close_connection = True

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def handle(self, request: Request) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def count(self, method: str, path_prefix: str = "") -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.method == method and r.path.startswith(path_prefix))
