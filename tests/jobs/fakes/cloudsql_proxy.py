"""A local stand-in for the Cloud SQL Auth Proxy v2: the same command line (the subset the program uses), the
same health endpoints and shutdown behaviour, relaying to local PostgreSQL servers.

    python -m tests.jobs.fakes.cloudsql_proxy --auto-iam-authn --private-ip --address=127.0.0.1 --port=15434 \
        --health-check --http-address=0.0.0.0 --http-port=9803 --run-connection-test --exit-zero-on-sigterm \
        --structured-logs PROJECT:REGION:INSTANCE

Instances come from $SV_BACKUPS_FAKE_CLOUDSQL, JSON: {"PROJECT:REGION:INSTANCE": {"target": "127.0.0.1:PORT"}}.

What each flag does here, as in the real proxy:
- `--auto-iam-authn`: the real proxy logs the connection in as the workload's IAM principal, so the client sends
  no password. Here the relayed connection comes from IAM_SOURCE_ADDRESS (127.0.0.2), the one address the test
  server's pg_hba.conf trusts for the IAM database user; without the flag it comes from 127.0.0.1, where the
  server asks for a password the job does not have.
- `--private-ip`: the instances have private IPs only: without it every connection fails.
- `--health-check`, `--http-address`, `--http-port`: /startup (200 once listening and, with
  `--run-connection-test`, once a test dial of every instance passed), /readiness, /liveness.
- `--run-connection-test`: an unreachable instance makes the proxy exit 1 before it reports started.
- `--exit-zero-on-sigterm`: SIGTERM (how the kubelet stops a sidecar) exits 0 instead of 143.
- `--address`, `--port`: where to listen; further instances take the following ports.
An unknown flag is an error (exit 1), as in the real proxy, so a misspelt flag in the program fails here too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IAM_SOURCE_ADDRESS = "127.0.0.2"
PLAIN_SOURCE_ADDRESS = "127.0.0.1"
REGISTRY_ENV = "SV_BACKUPS_FAKE_CLOUDSQL"


def _log(structured: bool, severity: str, message: str) -> None:
    line = json.dumps({"severity": severity, "message": message}) if structured else message
    print(line, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cloud-sql-proxy", allow_abbrev=False, exit_on_error=False)
    for flag in ("auto-iam-authn", "private-ip", "health-check", "run-connection-test", "exit-zero-on-sigterm",
                 "structured-logs"):  # fmt: skip
        parser.add_argument(f"--{flag}", action="store_true")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--http-address", default="localhost")
    parser.add_argument("--http-port", type=int, default=9090)
    parser.add_argument("instances", nargs="+")
    return parser.parse_args(argv)


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], source: str, reachable: bool):
        self.target, self.source, self.reachable = target, source, reachable
        super().__init__(listen, _RelayHandler)


class _RelayHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Relay = self.server  # type: ignore[assignment]
        if not server.reachable:
            return  # the real proxy closes the client connection when it cannot dial the instance
        upstream = socket.create_connection(server.target, timeout=10, source_address=(server.source, 0))
        upstream.settimeout(None)
        done = threading.Event()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while chunk := src.recv(1 << 16):
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=pump, args=(upstream, self.request), daemon=True).start()
        pump(self.request, upstream)
        done.wait()
        for sock in (upstream, self.request):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        upstream.close()


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except (argparse.ArgumentError, SystemExit) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    registry = json.loads(os.environ.get(REGISTRY_ENV, "{}"))
    started = threading.Event()
    stopping = threading.Event()

    class Health(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            ok = {"/startup": started.is_set(), "/readiness": started.is_set() and not stopping.is_set(),
                  "/liveness": True}.get(self.path)  # fmt: skip
            status = 404 if ok is None else 200 if ok else 503
            body = b"ok" if status == 200 else b"error"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    if args.health_check:
        health = ThreadingHTTPServer((args.http_address, args.http_port), Health)
        threading.Thread(target=health.serve_forever, daemon=True).start()

    relays = []
    for index, name in enumerate(args.instances):
        if name.count(":") != 2:
            _log(args.structured_logs, "ERROR", f"invalid instance connection name {name!r}")
            return 1
        if name not in registry:
            _log(args.structured_logs, "ERROR", f"[{name}] instance does not exist or is not authorized")
            return 1
        host, _, port = registry[name]["target"].rpartition(":")
        source = IAM_SOURCE_ADDRESS if args.auto_iam_authn else PLAIN_SOURCE_ADDRESS
        relay = _Relay((args.address, args.port + index), (host, int(port)), source, reachable=args.private_ip)
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        relays.append(relay)
        _log(args.structured_logs, "INFO", f"[{name}] Listening on {args.address}:{args.port + index}")
        if args.run_connection_test:
            try:
                if not args.private_ip:
                    raise OSError("instance does not have a public IP address; use --private-ip")
                socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0)).close()
            except OSError as error:
                _log(args.structured_logs, "ERROR", f"[{name}] connection test failed: {error}")
                return 1
    started.set()
    _log(args.structured_logs, "INFO", "The proxy has started successfully and is ready for new connections!")

    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    signal.signal(signal.SIGINT, lambda *_: terminated.set())
    while not terminated.wait(0.2):
        pass
    stopping.set()
    _log(args.structured_logs, "INFO", "SIGTERM signal received. Shutting down...")
    for relay in relays:
        relay.shutdown()
    return 0 if args.exit_zero_on_sigterm else 143


# The program's sidecar flags (components/gcp/cloudsql.py) with the health server on loopback, for tests that
# start a stand-in directly (the contract test runs the plan's own args instead).
SIDECAR_FLAGS = (
    "--auto-iam-authn", "--private-ip", "--address=127.0.0.1", "--health-check", "--http-address=127.0.0.1",
    "--run-connection-test", "--exit-zero-on-sigterm", "--structured-logs",
)  # fmt: skip


def command() -> list[str]:
    """How to start the stand-in in place of the proxy image's entrypoint."""
    return [sys.executable, "-m", "tests.jobs.fakes.cloudsql_proxy"]


def registry_env(instances: dict[str, str]) -> dict[str, str]:
    """The environment entry that tells the stand-in which local server stands for which instance."""
    return {REGISTRY_ENV: json.dumps({name: {"target": target} for name, target in instances.items()})}


def startup_ok(http_port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/startup", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


class RunningProxy:
    """One stand-in process: `port` is the database listener, `http_port` the health server."""

    def __init__(self, instance: str, target: str, *, port: int, http_port: int, flags=SIDECAR_FLAGS):
        import subprocess

        self.port, self.http_port = port, http_port
        self.args = [*flags, f"--port={port}", f"--http-port={http_port}", instance]
        env = {**os.environ, **registry_env({instance: target})}
        self.process = subprocess.Popen([*command(), *self.args], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.exit_code: int | None = None
        self.output = ""

    def wait_started(self, timeout: float = 20.0) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if startup_ok(self.http_port):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.output = self.process.communicate(timeout=20)[0]
        self.exit_code = self.process.returncode
        return self.exit_code

    def __enter__(self) -> RunningProxy:
        if not self.wait_started():
            self.stop()
            raise RuntimeError(f"the Cloud SQL Auth Proxy stand-in did not start: {self.output[-2000:]}")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
