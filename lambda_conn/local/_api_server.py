"""HTTP front of one execution environment: Runtime API 2018-06-01, Extensions API 2020-01-01.

Routing and wire details only; every decision is made by ``SandboxState``. One server
(one port) per execution environment, so a request from a killed runtime can never be
mistaken for one from its successor.

No thread of its own: the supervisor thread that waits for an invocation serves the API
itself (``pump``), in one ``poll`` on the listening socket, the connections and the
runtime's pidfd. A request Lambda holds open (``/next``, ``/event/next``) is parked and
answered by ``release`` right after a dispatch. A thread per connection cost two thread
hand-offs (and the GIL going back and forth) per invocation; an environment that waits
for nothing costs nothing, however many a fleet runs.

The HTTP/1.1 parsing is a few lines instead of ``http.server``: the clients are libcurl
(awslambdaric's native client, one keep-alive connection) and urllib, every request is
small, and ``http.server``'s header parsing was a tenth of the cost of an invocation.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import NamedTuple

from lambda_conn.local._constants import EXTENSIONS_API_VERSION, RUNTIME_API_VERSION
from lambda_conn.local._extensions import Extension
from lambda_conn.local._state import ACCEPTED, Reply, SandboxState

__all__ = ["RuntimeApiServer"]

_RUNTIME = f"/{RUNTIME_API_VERSION}/runtime"
_EXTENSION = f"/{EXTENSIONS_API_VERSION}/extension"
_INVOCATION = f"{_RUNTIME}/invocation/"
_NEXT = f"{_INVOCATION}next"
_EVENT_NEXT = f"{_EXTENSION}/event/next"
_NOT_FOUND = Reply(404, b'{"errorMessage":"not found","errorType":"NotFound"}')
_BAD_REQUEST = Reply(400, b'{"errorMessage":"bad request","errorType":"InvalidRequestFormat"}')
_ACCEPTED = Reply(202, b'{"status":"OK"}')
_MAX_LINE = 65_536
_MAX_HEAD = 4 * _MAX_LINE
_MAX_BODY = 64 * 1024 * 1024
_RECV_SIZE = 262_144
_READ = select.POLLIN | select.POLLPRI
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_PHRASES = {status.value: status.phrase for status in HTTPStatus}

Take = Callable[[], "Reply | None"]


class _BadRequest(Exception):
    pass


class _Head:
    """The header fields of a CRLF head, looked up by name when asked (a request is
    asked for three to five of them) instead of split into a dict field by field."""

    __slots__ = ("_lower", "_text")

    def __init__(self, text: str) -> None:
        self._text = text  # from the first CRLF on: "\r\nName: value\r\n..."
        self._lower = text.lower()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field ``name`` (lower case), stripped; ``default`` if absent."""
        key = f"\r\n{name}:"
        at = self._lower.find(key)
        if at < 0:
            return default
        start = at + len(key)
        end = self._text.find("\r\n", start)
        return self._text[start : None if end < 0 else end].strip()


Headers = dict[str, str] | _Head


class _Request(NamedTuple):
    method: str  # empty: a request line that is not one (answered 400, then closed)
    path: str
    headers: Headers
    body: bytes
    keep_alive: bool
    end: int  # where the next request starts in the buffer


def _line_end(buf: bytearray, start: int) -> tuple[int, int]:
    """(end of the line's content, start of the next line), or (-1, -1) if incomplete."""
    end = buf.find(b"\n", start)
    if end < 0:
        if len(buf) - start > _MAX_LINE:
            raise _BadRequest("line too long")
        return -1, -1
    if end - start > _MAX_LINE:
        raise _BadRequest("line too long")
    return (end - 1 if end > start and buf[end - 1] == 13 else end), end + 1


def _chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """A chunked body from ``pos``: (body, end) or None while incomplete."""
    chunks: list[bytes] = []
    while True:
        end, nxt = _line_end(buf, pos)
        if end < 0:
            return None
        try:
            size = int(bytes(buf[pos:end]).split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        if size < 0 or size > _MAX_BODY:
            raise _BadRequest("bad chunk size")
        if size == 0:
            pos = nxt
            while True:  # trailers, up to the empty line
                end, nxt = _line_end(buf, pos)
                if end < 0:
                    return None
                if end == pos:
                    return b"".join(chunks), nxt
                pos = nxt
        if len(buf) < nxt + size:
            return None
        chunks.append(bytes(buf[nxt : nxt + size]))
        end, pos = _line_end(buf, nxt + size)
        if end < 0:
            return None


def parse_request(buf: bytearray) -> _Request | None:
    """The first complete request in ``buf``; None while incomplete. Raises
    ``_BadRequest`` (close without an answer) for what cannot be read.

    A head no longer than a line whose every line ends in CRLF (what libcurl and urllib
    send) is split in one go; anything else goes through the line-by-line parser."""
    end = buf.find(b"\r\n\r\n")
    if end <= 0 or end > _MAX_LINE or buf[0] in b"\r\n":
        return _parse_by_line(buf)
    head = bytes(buf[:end])
    if head.count(b"\n") != head.count(b"\r\n"):
        return _parse_by_line(buf)
    text = head.decode("latin-1")
    first = text.find("\r\n")
    if first < 0:
        return _request(buf, text.split(), _Head(""), end + 4)
    return _request(buf, text[:first].split(), _Head(text[first:]), end + 4)


def _parse_by_line(buf: bytearray) -> _Request | None:
    """The general parser: bare LF line ends, empty lines before the request line,
    heads still incomplete, lines too long."""
    pos = 0
    while True:  # empty lines before a request line are ignored (RFC 9112, 2.2)
        end, nxt = _line_end(buf, pos)
        if end < 0:
            return None
        if end > pos:
            break
        pos = nxt
    parts = bytes(buf[pos:end]).decode("latin-1").split()
    pos = nxt
    headers: dict[str, str] = {}
    while True:
        end, nxt = _line_end(buf, pos)
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise _BadRequest("header too long")
            return None
        if end == pos:
            pos = nxt
            break
        name, _, value = bytes(buf[pos:end]).decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
        pos = nxt
    return _request(buf, parts, headers, pos)


def _request(buf: bytearray, parts: list[str], headers: Headers, pos: int) -> _Request | None:
    """The request once its head is parsed: its body from ``pos``, if complete."""
    if len(parts) != 3:
        return _Request("", "", headers, b"", False, pos)
    method, target, version = parts
    connection = headers.get("connection")
    if connection is None:  # what libcurl and urllib send: no header, or "close"
        keep_alive = version == "HTTP/1.1"
    else:
        connection = connection.lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    encoding = headers.get("transfer-encoding")
    if encoding is not None and encoding.lower() == "chunked":
        got = _chunked(buf, pos)
        if got is None:
            return None
        body, pos = got
    else:
        declared = headers.get("content-length")
        try:
            length = int(declared) if declared else 0
        except ValueError:
            raise _BadRequest("bad content-length") from None
        if not 0 <= length <= _MAX_BODY:
            raise _BadRequest("bad content-length")
        if len(buf) < pos + length:
            return None
        body, pos = bytes(buf[pos : pos + length]), pos + length
    return _Request(method, target.split("?", 1)[0], headers, body, keep_alive, pos)


def _render(reply: Reply, keep_alive: bool) -> bytes:
    head = f"HTTP/1.1 {reply.status} {_PHRASES[reply.status]}\r\n"
    for name, value in reply.headers:
        head += f"{name}: {value}\r\n"
    connection = "" if keep_alive else "Connection: close\r\n"
    head = f"{head}{reply.head}Content-Length: {len(reply.body)}\r\n{connection}\r\n"
    return head.encode("latin-1") + reply.body


# The replies that never change, rendered once (keyed by identity: hashing a Reply would
# hash its body): every invocation's POST of a response is answered with ACCEPTED.
_RENDERED = {
    id(r): (r, _render(r, True), _render(r, False))
    for r in (ACCEPTED, _ACCEPTED, _NOT_FOUND, _BAD_REQUEST)
}


def _encode(reply: Reply, keep_alive: bool) -> bytes:
    rendered = _RENDERED.get(id(reply))
    if rendered is not None and rendered[0] is reply:
        return rendered[1] if keep_alive else rendered[2]
    return _render(reply, keep_alive)


class _Connection:
    """One client connection: what it sent so far, what is still to be written, and the
    request parked on it (HTTP answers in order, so nothing after it is read meanwhile)."""

    __slots__ = ("closing", "inbox", "keep_alive", "outbox", "parked", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.parked: Take | None = None
        self.keep_alive = True
        self.closing = False


class RuntimeApiServer:
    """The API on 127.0.0.1 and a free port, served by whoever calls ``pump``."""

    def __init__(self, state: SandboxState, spin_s: float = 0.0) -> None:
        self.state = state
        #: How long ``pump`` polls without sleeping before it blocks (see ``SPIN_S``).
        self.spin_s = spin_s
        self.socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.socket.setblocking(False)
        self._poll = select.poll()
        self._poll.register(self.socket, _READ)
        self._connections: dict[int, _Connection] = {}
        self._watched: set[int] = set()
        self._closed = False
        # One receive buffer, reused: recv(n) of a large n allocates (mmap, mremap,
        # munmap) on every call.
        self._chunk = memoryview(bytearray(_RECV_SIZE))

    @property
    def address(self) -> str:
        """The ``AWS_LAMBDA_RUNTIME_API`` value."""
        host, port = self.socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        """Nothing to start: requests are served while the supervisor waits (``pump``)."""

    def watch(self, fd: int) -> None:
        """Let ``pump`` return as soon as ``fd`` is readable (the runtime's pidfd)."""
        self._watched.add(fd)
        self._poll.register(fd, _READ)

    def pump(self, timeout: float | None) -> bool:
        """Serve what arrives within ``timeout`` seconds (None: until something does);
        True when a watched descriptor became readable. Requests are served first, so a
        response posted just before an exit is kept. With ``spin_s``, it polls without
        sleeping for up to that long before it blocks for the rest of ``timeout``."""
        if self._closed:
            return True
        ready = self._spin(timeout) if self.spin_s > 0 else None
        if not ready:
            if ready is not None and timeout is not None:  # what the spin took of it
                timeout -= self.spin_s
            ready = self._poll.poll(None if timeout is None else max(timeout, 0.0) * 1000)
        watched = False
        for fd, events in ready:
            if fd in self._watched:
                watched = True
            elif fd == self.socket.fileno():
                self._accept()
            else:
                conn = self._connections.get(fd)
                if conn is not None:
                    self._service(conn, events)
        return watched

    def _spin(self, timeout: float | None) -> list[tuple[int, int]]:
        """What is ready within ``spin_s`` (or ``timeout``, if shorter), polled without
        sleeping; empty when nothing was."""
        poll = self._poll.poll
        now = time.perf_counter
        end = now() + (self.spin_s if timeout is None else min(self.spin_s, timeout))
        while True:
            ready = poll(0)
            if ready or now() >= end:
                return ready

    def connection_count(self) -> int:
        """Client connections open now (the runtime's; an extension's parked one)."""
        return len(self._connections)

    def release(self) -> None:
        """Answer the parked requests that now have an answer (after a dispatch)."""
        for conn in list(self._connections.values()):
            if conn.parked is not None:
                self._try_parked(conn)

    def stop(self) -> None:
        """Close every connection (parked requests end unanswered) and the socket."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self._connections.values()):
            self._drop(conn)
        for fd in self._watched:
            self._poll.unregister(fd)
        self._watched.clear()
        self.socket.close()

    # ---------------------------------------------------------------- internals
    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock)
            self._connections[sock.fileno()] = conn
            self._poll.register(sock, _READ)

    def _service(self, conn: _Connection, events: int) -> None:
        if events & select.POLLOUT:
            self._flush(conn)
        if events & _READ:
            try:
                size = conn.sock.recv_into(self._chunk)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if not size:
                self._drop(conn)
                return
            conn.inbox += self._chunk[:size]
            self._serve(conn)
        elif events & _GONE:
            self._drop(conn)

    def _serve(self, conn: _Connection) -> None:
        """Answer every complete request in the inbox, up to a parked one."""
        while conn.parked is None and not conn.closing and conn.inbox:
            try:
                request = parse_request(conn.inbox)
            except (_BadRequest, UnicodeDecodeError):
                self._drop(conn)
                return
            if request is None:
                return
            del conn.inbox[: request.end]
            if not request.method:
                conn.keep_alive = False
                self._send(conn, _BAD_REQUEST)
                return
            conn.keep_alive = request.keep_alive
            answer = self._route(request.method, request.path, request.headers, request.body)
            if isinstance(answer, Reply):
                self._send(conn, answer)
            else:
                conn.parked = answer
                self._try_parked(conn)

    def _try_parked(self, conn: _Connection) -> None:
        assert conn.parked is not None
        reply = conn.parked()
        if reply is None:
            return
        conn.parked = None
        self._send(conn, reply)
        self._serve(conn)

    def _send(self, conn: _Connection, reply: Reply) -> None:
        conn.outbox += _encode(reply, conn.keep_alive)
        if not conn.keep_alive:
            conn.closing = True
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)
            return
        del conn.outbox[:sent]
        if conn.outbox:
            self._poll.modify(conn.sock, _READ | select.POLLOUT)
        elif conn.closing:
            self._drop(conn)
        elif sent:
            self._poll.modify(conn.sock, _READ)

    def _drop(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if self._connections.pop(fd, None) is None:
            return
        self._poll.unregister(fd)
        conn.sock.close()

    def _route(self, method: str, path: str, headers: Headers, body: bytes) -> Reply | Take:
        """The answer, or what answers it once parked (``/next``, ``/event/next``)."""
        state = self.state
        if method == "GET":
            if path == _NEXT:
                return state.runtime_next() or state.runtime_take
            if path == _EVENT_NEXT:
                got = state.extension_next(headers.get("lambda-extension-identifier") or "")
                if isinstance(got, Extension):
                    ext = got
                    return lambda: state.extension_take(ext)
                return got
            return _NOT_FOUND
        if method != "POST":
            return _NOT_FOUND
        if path.startswith(_INVOCATION):
            request_id, _, action = path[len(_INVOCATION) :].partition("/")
            if action == "response":
                return state.runtime_response(request_id, body)
            if action == "error":
                error_type = headers.get("lambda-runtime-function-error-type")
                return state.runtime_error(request_id, body, error_type)
            return _NOT_FOUND
        if path == f"{_RUNTIME}/init/error":
            return state.runtime_init_error(body, headers.get("lambda-runtime-function-error-type"))
        if path == f"{_EXTENSION}/register":
            return state.extension_register(headers.get("lambda-extension-name") or "", body)
        if path == f"{_EXTENSION}/init/error":
            # An extension failing its init fails the environment's Init, as in Lambda.
            error_type = headers.get("lambda-extension-function-error-type")
            return state.runtime_init_error(body, error_type)
        if path == f"{_EXTENSION}/exit/error":
            return _ACCEPTED
        return _NOT_FOUND
