"""A Runtime API on 127.0.0.1 that serves several runtime connections at once.

Why: ``lambda_conn.local.LocalLambda`` serves one invocation at a time and refuses
``AWS_LAMBDA_MAX_CONCURRENCY``, while awslambdaric in multi-concurrent mode forks that many
worker processes, each with a ``GET /2018-06-01/runtime/invocation/next`` of its own
waiting. Here every connection has its own thread: a ``/next`` blocks on one queue of
events until :meth:`RuntimeApi.invoke` puts one there, and every request is recorded with
the time it arrived (or its event left) and the connection it came on, so a test can tell
the workers apart and order what each did. The ``/next`` reply carries the headers
awslambdaric reads (as ``benchmarks/bench_soak.py``'s ``MinimalRuntimeApi``); every POST
is answered 202.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.servers._private import ClosingServer

PREFIX = "/2018-06-01/runtime"
NEXT = f"{PREFIX}/invocation/next"
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n" + b'{"status":"OK"}'
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Request:
    """One thing the runtime did: ``kind`` is ``next`` (a ``/next`` arrived), ``handed``
    (its event left), ``response``, ``error`` (an invocation's posts) or ``init_error``;
    ``at`` is ``time.monotonic()`` here; ``connection`` counts from 1 in accept order."""

    kind: str
    connection: int
    at: float
    request_id: str | None = None
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class RuntimeApi(ClosingServer):
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._events: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[Request] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._invoked = 0
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def invoke(self, event: object) -> str:
        """Queue ``event`` for the next ``/next`` (whichever worker asks); its request id."""
        with self._lock:
            self._invoked += 1
            request_id = f"req-{self._invoked}"
        self._events.put((request_id, json.dumps(event).encode()))
        return request_id

    def requests(self, kind: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if kind is None or r.kind == kind]

    def wait_for(self, kind: str, count: int, timeout: float) -> list[Request]:
        """Wait until ``count`` requests of ``kind`` have been recorded; them, or fewer."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self._requests if r.kind == kind]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._changed.wait(left)

    def close(self) -> None:
        """Stop accepting and end every connection (a waiting ``/next`` gets EOF)."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5.0)

    # ------------------------------------------------------------------ serving

    def _record(self, request: Request) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _accept_loop(self) -> None:
        number = 0
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            number += 1
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = conn.makefile("rb")
        with contextlib.suppress(OSError, ValueError), conn:
            while True:
                line = reader.readline()
                if not line:
                    return
                method, path = line.decode("latin-1").split()[:2]
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = reader.read(length) if length else b""
                at = time.monotonic()
                if method == "GET" and path == NEXT:
                    self._record(Request("next", number, at))
                    reply = self._next_reply(number)
                    if reply is None:
                        return
                    conn.sendall(reply)
                elif method == "POST" and path.startswith(f"{PREFIX}/"):
                    parts = path[len(PREFIX) + 1 :].split("/")
                    if parts == ["init", "error"]:
                        self._record(Request("init_error", number, at, body=body))
                    elif len(parts) == 3 and parts[0] == "invocation":
                        self._record(Request(parts[2], number, at, parts[1], body))
                    conn.sendall(ACCEPTED)
                else:
                    conn.sendall(NOT_FOUND)

    def _next_reply(self, number: int) -> bytes | None:
        """The next queued event once there is one (None: closing)."""
        while not self._closing.is_set():
            try:
                request_id, payload = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            self._record(Request("handed", number, time.monotonic(), request_id, payload))
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Lambda-Runtime-Aws-Request-Id: {request_id}\r\n"
                "Lambda-Runtime-Deadline-Ms: 99999999999999\r\n"
                "Lambda-Runtime-Invoked-Function-Arn: "
                "arn:aws:lambda:us-east-1:000000000000:function:app\r\n"
                "Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            )
            return head.encode() + payload
        return None
