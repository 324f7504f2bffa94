"""The local HTTP server the fakes build on lives in testkit/httpserver.py (the benchmarks use it too); the
tests' fakes keep importing it from here."""

from testkit.httpserver import LocalServer, Reply, Request

__all__ = ["LocalServer", "Reply", "Request"]
