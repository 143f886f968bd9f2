"""HTTP front of one execution environment: Runtime API 2018-06-01, Extensions API 2020-01-01.

Routing and wire details only; every decision is made by ``SandboxState``. One server
(one port) per execution environment, so a request from a killed runtime can never be
mistaken for one from its successor.

The HTTP/1.1 parsing is a few lines instead of ``http.server``: the clients are libcurl
(awslambdaric's native client, one keep-alive connection) and urllib, every request is
small, and ``http.server``'s header parsing was a tenth of the cost of an invocation.
"""

from __future__ import annotations

import socketserver
import threading
from http import HTTPStatus

from lambda_conn.local._constants import EXTENSIONS_API_VERSION, RUNTIME_API_VERSION
from lambda_conn.local._state import Invocation, Reply, SandboxState

__all__ = ["RuntimeApiServer"]

_RUNTIME = f"/{RUNTIME_API_VERSION}/runtime"
_EXTENSION = f"/{EXTENSIONS_API_VERSION}/extension"
_INVOCATION = f"{_RUNTIME}/invocation/"
_NOT_FOUND = Reply(404, b'{"errorMessage":"not found","errorType":"NotFound"}')
_BAD_REQUEST = Reply(400, b'{"errorMessage":"bad request","errorType":"InvalidRequestFormat"}')
_ACCEPTED = Reply(202, b'{"status":"OK"}')
_MAX_LINE = 65_536
_MAX_BODY = 64 * 1024 * 1024


class _BadRequest(Exception):
    pass


class _Connection(socketserver.StreamRequestHandler):
    """Serves requests on one keep-alive connection until the client closes it."""

    disable_nagle_algorithm = True
    server: RuntimeApiServer

    def handle(self) -> None:
        try:
            while self._serve_one():
                pass
        except (OSError, _BadRequest):
            pass

    def _line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest("line too long")
        return line

    def _serve_one(self) -> bool:
        request_line = self._line()
        if not request_line.strip():
            return False
        try:
            method, target, version = request_line.decode("latin-1").split()
        except ValueError:
            self._send(_BAD_REQUEST, keep_alive=False)
            return False
        headers: dict[str, str] = {}
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        body = self._body(headers)
        reply = self._route(method, target.split("?", 1)[0], headers, body)
        if reply is None:  # the environment is gone, and so is whoever asked
            return False
        self._send(reply, keep_alive=keep_alive)
        return keep_alive

    def _body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self._line().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self._line()
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            raise _BadRequest("bad content-length") from None
        if not 0 <= length <= _MAX_BODY:
            raise _BadRequest("bad content-length")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply, *, keep_alive: bool) -> None:
        head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
        head += [f"{name}: {value}" for name, value in reply.headers]
        head.append(f"Content-Length: {len(reply.body)}")
        if not keep_alive:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        state = self.server.state
        if method == "GET":
            if path == f"{_INVOCATION}next":
                got = state.runtime_next()
                if isinstance(got, Invocation):
                    return Reply(200, got.payload, got.next_headers())
                return got
            if path == f"{_EXTENSION}/event/next":
                return state.extension_next(headers.get("lambda-extension-identifier", ""))
            return _NOT_FOUND
        if method != "POST":
            return _NOT_FOUND
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].partition("/")
            error_type = headers.get("lambda-runtime-function-error-type")
            if action == "response":
                return state.runtime_response(request_id, body)
            if action == "error":
                return state.runtime_error(request_id, body, error_type)
            return _NOT_FOUND
        if path == f"{_RUNTIME}/init/error":
            return state.runtime_init_error(body, headers.get("lambda-runtime-function-error-type"))
        if path == f"{_EXTENSION}/register":
            return state.extension_register(headers.get("lambda-extension-name", ""), body)
        if path == f"{_EXTENSION}/init/error":
            # An extension failing its init fails the environment's Init, as in Lambda.
            error_type = headers.get("lambda-extension-function-error-type")
            return state.runtime_init_error(body, error_type)
        if path == f"{_EXTENSION}/exit/error":
            return _ACCEPTED
        return _NOT_FOUND


class RuntimeApiServer(socketserver.ThreadingTCPServer):
    """A threaded server on 127.0.0.1 and a free port, serving one ``SandboxState``."""

    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 64

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Connection)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """The ``AWS_LAMBDA_RUNTIME_API`` value."""
        host, port = self.socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
            name=f"lambda-conn-runtime-api-{self.address}",
        )
        self._thread.start()

    def stop(self) -> None:
        """Release blocked requests and stop accepting."""
        self.state.close()
        if self._thread is not None:
            self.shutdown()
            self._thread = None
        self.server_close()
