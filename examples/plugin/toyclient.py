"""A stand-in for a third-party client library: one TCP connection per ``Connection``.

It exists so the plugin example next to it has something real to track; nothing in it
knows about lambda_conn.
"""

from __future__ import annotations

import socket


class Connection:
    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = socket.create_connection((host, port), timeout)

    @property
    def closed(self) -> bool:
        return self.sock is None

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise OSError("connection closed")
        self.sock.sendall(data)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


def connect(host: str, port: int, timeout: float = 5.0) -> Connection:
    return Connection(host, port, timeout)
