"""A real HTTP/1.1 keep-alive server that counts client connections on the server side.

Why: "the client closed its pooled connection" is only proven by the *server* seeing EOF
on that socket; client-side pool bookkeeping can lie. One thread per connection, like
most real servers, so a keep-alive connection stays open (and counted) until the client
closes it or :meth:`CountingHTTPServer.close` shuts it down.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers._private import ClosingServer


def pattern_bytes(n: int) -> bytes:
    """The body ``/bytes?n=N`` answers: a test compares what it read against it."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


class _Handler(BaseHTTPRequestHandler):
    """Answers every method/path with a small JSON body; keeps the connection alive.

    ``/slow?ms=N`` sleeps N ms first; ``?status=N`` sets the status code; ``/close``
    answers with ``Connection: close`` and closes (a server-initiated close);
    ``/bytes?n=N`` answers N bytes (a pattern a test can check), ``&chunked=1`` in
    chunked transfer encoding, so a body can be streamed, cut or read in full.
    """

    protocol_version = "HTTP/1.1"
    server: _TCPServer
    connection_number = 0
    requests_on_connection = 0

    def setup(self) -> None:
        super().setup()
        self.connection_number = self.server.owner._numbers.get(self.request, 0)

    def handle(self) -> None:
        # A client reset or a close() during a read is the normal end of a connection.
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _respond(self) -> None:
        owner = self.server.owner
        body_in = self._read_body()
        self.requests_on_connection += 1
        owner._count_request()
        parts = urlsplit(self.path)
        params = parse_qs(parts.query)
        if parts.path == "/slow":
            ms = float(params.get("ms", ["100"])[0])
            owner._stopping.wait(ms / 1000.0)
        status = int(params.get("status", ["200"])[0])
        if parts.path == "/bytes":
            self._send_bytes(int(params.get("n", ["1000000"])[0]), "chunked" in params)
            return
        closing = parts.path == "/close"
        payload: dict[str, Any] = {
            "ok": True,
            "method": self.command,
            "path": parts.path,
            "connection": self.connection_number,
            "request_on_connection": self.requests_on_connection,
            "body_bytes": len(body_in),
        }
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_bytes(self, n: int, chunked: bool) -> None:
        body = pattern_bytes(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        step = 65536
        for start in range(0, n, step):
            piece = body[start : start + step]
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _respond

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: per-request logging to stderr only clutters test output."""


class _TCPServer(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 1024  # tests open hundreds of connections at once

    def __init__(self, owner: CountingHTTPServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._spawn(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Errors are the client's business (resets, timeouts); never print them."""


class CountingHTTPServer(ClosingServer):
    """HTTP/1.1 server on 127.0.0.1:<free port> counting open and accepted connections.

    A connection is open from accept until the server reads EOF from the client (or an
    error/reset, or ``/close``), and only then is it counted closed.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._open: dict[socket.socket, threading.Thread] = {}
        self._numbers: dict[socket.socket, int] = {}  # 1-based accept order, for replies
        self._accepted = 0
        self._requests = 0
        self._closed = False
        self._server = _TCPServer(self, (host, 0))
        self.host, self.port = self._server.server_address[:2]
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"CountingHTTPServer:{self.port}",
            daemon=True,
        )
        self._serve_thread.start()

    # ------------------------------------------------------------------ counting

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    @property
    def accepted(self) -> int:
        """Connections accepted since start (open or closed)."""
        with self._lock:
            return self._accepted

    @property
    def requests(self) -> int:
        """Requests answered since start (keep-alive reuse shows as requests > accepted)."""
        with self._lock:
            return self._requests

    def wait_open(self, n: int, timeout: float = 5.0) -> int:
        """Poll until exactly ``n`` connections are open; returns the last count.

        Why poll: the server notices a client's close only when its thread reads EOF.
        """
        deadline = time.monotonic() + timeout
        while True:
            count = self.open_connections
            if count == n or time.monotonic() >= deadline:
                return count
            time.sleep(0.005)

    def drop_connections(self) -> None:
        """End every open connection from the server's side (a restart, an idle timeout)."""
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.wait_open(0)

    def _count_request(self) -> None:
        with self._lock:
            self._requests += 1

    # ------------------------------------------------------------------ threads

    def _spawn(self, request: socket.socket, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"CountingHTTPServer:{self.port}:conn",
            daemon=True,
        )
        with self._lock:
            if self._closed:
                self._server.shutdown_request(request)
                return
            self._accepted += 1
            self._open[request] = thread
            self._numbers[request] = self._accepted
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            with contextlib.suppress(Exception):
                self._server.finish_request(request, client_address)
        finally:
            with contextlib.suppress(Exception):
                self._server.shutdown_request(request)
            with self._lock:
                self._open.pop(request, None)
                self._numbers.pop(request, None)

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop open connections, join every thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._server.shutdown()
        self._serve_thread.join(timeout)
        self._server.server_close()
        with self._lock:
            conns = dict(self._open)
        for sock in conns:
            # Wakes the handler blocked in readline() with EOF.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in conns.values():
            with contextlib.suppress(RuntimeError):  # not started yet: nothing to join
                thread.join(max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        return (
            f"<CountingHTTPServer {self.url} open={self.open_connections} accepted={self.accepted}>"
        )
