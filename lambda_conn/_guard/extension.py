"""A no-op internal extension, registered only so that Lambda sends SIGTERM at shutdown.

With no extension registered, Lambda SIGKILLs the runtime and no cleanup can run; with
one, it sends SIGTERM and waits 500 ms (the aws-lambda-rust-runtime does the same). Events
``[]``: it is never woken per invocation, so it adds nothing to an invoke. Init waits for
every registered extension to call ``/event/next`` once, so a daemon thread calls it at
once and stays blocked there for the life of the process.

Plain sockets, not ``http.client``: that would import ssl (about 7 ms) on the cold start.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

VERSION = "2020-01-01"
NAME = "lambda_conn"
REGISTER_TIMEOUT_S = 2.0
MAX_NEXT_FAILURES = 3


class ApiResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def _address(api: str) -> tuple[str, int]:
    host, _, port = api.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def request(
    api: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    timeout: float | None = None,
) -> ApiResponse:
    """One HTTP/1.1 exchange on its own connection (``Connection: close``)."""
    sock = socket.create_connection(_address(api), timeout=timeout)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {api}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return _read_response(sock)
    finally:
        sock.close()


def _read_response(sock: socket.socket) -> ApiResponse:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response headers")
        buf += data
    raw_head, _, body = buf.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    while True:
        if length is not None and len(body) >= int(length):
            return ApiResponse(status, headers, body[: int(length)])
        data = sock.recv(65536)
        if not data:
            return ApiResponse(status, headers, body)
        body += data


def register(api: str, name: str = NAME) -> str | None:
    """Register, start the waiting thread, return the extension id (None if refused).

    Refusals are expected and harmless: 403 ``Extension.RegistrationClosed`` after the first
    invocation, 404 or a refused connection where there is no Extensions API.
    """
    from lambda_conn._log import INFO, log_event

    try:
        response = request(
            api,
            "POST",
            f"/{VERSION}/extension/register",
            {"Lambda-Extension-Name": name, "Content-Type": "application/json"},
            json.dumps({"events": []}).encode(),
            timeout=REGISTER_TIMEOUT_S,
        )
    except (OSError, ValueError, IndexError) as exc:
        log_event(INFO, "extension_not_registered", reason=type(exc).__name__, detail=str(exc))
        return None
    identifier = response.headers.get("lambda-extension-identifier")
    if response.status != 200 or not identifier:
        log_event(
            INFO,
            "extension_not_registered",
            status=response.status,
            reason=_error_type(response.body),
        )
        return None
    import threading

    threading.Thread(
        target=_wait_forever, args=(api, identifier), name="lambda_conn-extension", daemon=True
    ).start()
    return identifier


def _error_type(body: bytes) -> Any:
    try:
        return json.loads(body).get("errorType")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _wait_forever(api: str, identifier: str) -> None:
    """Block in ``/event/next``; with events ``[]`` nothing ever arrives before shutdown."""
    failures = 0
    while failures < MAX_NEXT_FAILURES:
        try:
            response = request(
                api,
                "GET",
                f"/{VERSION}/extension/event/next",
                {"Lambda-Extension-Identifier": identifier},
            )
        except (OSError, ValueError, IndexError):
            failures += 1
            time.sleep(0.05 * failures)  # e.g. the socket a SnapStart restore broke
            continue
        if response.status != 200:
            failures += 1
