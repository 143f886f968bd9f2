"""TLS session resumption: one cached session per endpoint, offered on the next connect.

A per-invocation connect with a shared SSLContext still pays a full TLS handshake (key
exchange and certificate verification: most of its cost on loopback). A server that issues
session tickets (MySQL, MariaDB; not PostgreSQL, which turns tickets and its session cache
off) accepts the previous connect's session instead, and the handshake shrinks to one
round trip of symmetric crypto (TLS 1.2) or a PSK with a fresh key exchange (TLS 1.3).
The session is dropped when a connect that offered it fails, so a server that lost its
ticket keys costs one full handshake, never an error loop.

Reading ``SSLSocket.session`` is not free: CPython copies the session by serialising it and
parsing it back (``_ssl_session_dup``, a workaround for OpenSSL 1.1.0), which re-parses the
server's certificate: with OpenSSL 3.0 that is about 1.5 M instructions, as much as the
resumed handshake's own key exchange. Offering a session (``session=``) pays the same copy.
So a session the server has just accepted is kept and offered again, rather than read back
after every connect, until half its lifetime has passed; a server that takes each ticket
only once (RFC 8446 lets TLS 1.3 servers refuse reuse) is noticed when it refuses a session
it had accepted, twice (once is a restart that lost the ticket keys), and gets the newest
session after every connect from then on.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

_lock = threading.Lock()
_endpoints: dict[tuple[int, str, int], ResumingTLS] = {}


class ResumingTLS:
    """Stands in for an ``SSLContext`` where a driver calls ``ctx.wrap_socket``.

    ``keep=False`` (``resume_tls=False``) never offers or keeps a session.
    """

    __slots__ = (
        "context",
        "host",
        "keep",
        "offered",
        "port",
        "refresh_at",
        "refusals",
        "session",
        "single_use",
        "uses",
    )

    def __init__(self, context: ssl.SSLContext, host: str, port: int, *, keep: bool = True) -> None:
        self.context = context
        self.host = host
        self.port = port
        self.keep = keep
        self.session: ssl.SSLSession | None = None
        self.offered = False  # whether the last handshake offered a cached session
        self.refresh_at = 0.0  # wall-clock time after which the session is read back again
        self.uses = 0  # resumed connects since the session was read
        self.refusals = 0  # sessions refused after the server had resumed them, in time
        self.single_use = False  # ...twice: the server takes each ticket once

    def wrap_socket(self, sock: Any, server_hostname: str | None = None, **kwargs: Any) -> Any:
        session = self.session
        self.offered = session is not None
        wrapped: Any = self.context.wrap_socket(
            sock, server_hostname=server_hostname, session=session, **kwargs
        )
        # Per socket too: another thread's connect to the endpoint may run meanwhile.
        wrapped._lambda_conn_offered = session is not None
        return wrapped

    def remember(self, sock: ssl.SSLSocket) -> None:
        """After a connect that succeeded: keep the session the server accepted, or read
        the new one (a full handshake, an old session, a server that wants fresh tickets)."""
        if not self.keep:
            return
        now = time.time()
        if getattr(sock, "_lambda_conn_offered", self.offered):
            if sock.session_reused:
                if not self.single_use and now < self.refresh_at:
                    self.uses += 1
                    return  # the session we hold works: skip the copy
            elif self.uses and now < self.refresh_at:
                self.refusals += 1
                self.single_use = self.refusals >= 2
        session = sock.session
        if session is not None:
            self.session = session
            self.uses = 0
            lifetime = session.timeout
            if session.ticket_lifetime_hint:
                lifetime = min(lifetime, session.ticket_lifetime_hint)
            self.refresh_at = session.time + lifetime / 2

    def forget(self) -> None:
        self.session = None
        self.uses = 0

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
            state.refusals = 0
            state.single_use = False
