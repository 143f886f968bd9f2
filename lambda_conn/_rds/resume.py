"""TLS session resumption: one cached session per endpoint, offered on the next connect.

A per-invocation connect with a shared SSLContext still pays a full TLS handshake (key
exchange and certificate verification: most of its cost on loopback). A server that issues
session tickets (MySQL, MariaDB; not PostgreSQL, which turns tickets and its session cache
off) accepts the previous connect's session instead, and the handshake shrinks to one
round trip of symmetric crypto. The session is dropped when a connect that offered it
fails, so a server that lost its ticket keys costs one full handshake, never an error loop.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

_lock = threading.Lock()
_endpoints: dict[tuple[int, str, int], ResumingTLS] = {}


class ResumingTLS:
    """Stands in for an ``SSLContext`` where a driver calls ``ctx.wrap_socket``."""

    __slots__ = ("context", "host", "offered", "port", "session")

    def __init__(self, context: ssl.SSLContext, host: str, port: int) -> None:
        self.context = context
        self.host = host
        self.port = port
        self.session: ssl.SSLSession | None = None
        self.offered = False  # whether the last handshake offered a cached session

    def wrap_socket(self, sock: Any, server_hostname: str | None = None, **kwargs: Any) -> Any:
        session = self.session
        self.offered = session is not None
        return self.context.wrap_socket(
            sock, server_hostname=server_hostname, session=session, **kwargs
        )

    def remember(self, sock: ssl.SSLSocket) -> None:
        """Keep the session of a connect that succeeded (a fresh one or the resumed one)."""
        session = sock.session
        if session is not None:
            self.session = session

    def forget(self) -> None:
        self.session = None

    def __getattr__(self, name: str) -> Any:
        # Drivers read attributes such as ``check_hostname`` off the context.
        return getattr(self.context, name)

    def __repr__(self) -> str:
        cached = "a cached session" if self.session is not None else "no session"
        return f"ResumingTLS({self.host}:{self.port}, {cached})"


def resuming(context: ssl.SSLContext, host: str, port: int) -> ResumingTLS:
    """The process-wide resumption state for ``host:port`` under ``context``."""
    key = (id(context), host, port)
    state = _endpoints.get(key)
    if state is None or state.context is not context:
        with _lock:
            state = _endpoints.get(key)
            if state is None or state.context is not context:
                state = _endpoints[key] = ResumingTLS(context, host, port)
    return state


def forget_all() -> None:
    """Drop every cached session (tests; a process that rotates its CA)."""
    with _lock:
        for state in _endpoints.values():
            state.forget()
