"""AWS APIs on loopback for the boto3 / botocore tests: moto's backends behind a
keep-alive HTTP/1.1 server that counts its connections.

Never real AWS: clients get this endpoint and dummy keys. Why not ``moto_server`` /
``ThreadedMotoServer`` as they are: they serve through werkzeug's development server, which
answers every request with ``Connection: close``, so a botocore client would never keep a
pooled connection and a leak could not happen, nor a close be proven. moto's WSGI app is
served here by the standard library instead, keeping connections alive as AWS does.
"""

from __future__ import annotations

import contextlib
import io
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from tests.servers._private import ClosingServer, wait_for_count

DUMMY_KEYS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}
_SKIPPED = {"content-length", "connection", "transfer-encoding", "keep-alive"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner._open.add(self.request)
            self.server.owner._accepted += 1

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.owner._lock:
            self.server.owner._open.discard(self.request)

    def handle(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def _respond(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[f"HTTP_{key}"] = value
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started["status"], started["headers"] = status, headers
            return lambda data: None

        result = self.server.owner.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        code, _, reason = started["status"].partition(" ")
        self.send_response(int(code), reason)
        for name, value in started["headers"]:
            if name.lower() not in _SKIPPED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _respond

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, owner: MotoServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class MotoServer(ClosingServer):
    """moto on 127.0.0.1:<free port>; ``sessions()`` counts the connections it holds."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app

        self.app = DomainDispatcherApplication(create_backend_app)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._accepted = 0
        self._server = _Server(self, (self.host, 0))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"MotoServer:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, str]:
        return {"endpoint_url": self.url, **DUMMY_KEYS}

    def sessions(self) -> int:
        with self._lock:
            return len(self._open)

    def drop_connections(self) -> None:
        """End every open connection from the server's side (an idle timeout, a restart)."""
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.wait_sessions(0)

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def wait_sessions(self, n: int, timeout: float = 10.0) -> int:
        return wait_for_count(self.sessions, n, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(OSError):
            socket.create_connection((self.host, self.port), 0.1).close()
