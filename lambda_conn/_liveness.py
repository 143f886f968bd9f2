"""Cheap checks that an idle connection's socket is still usable (after a thaw)."""

from __future__ import annotations

import select
from typing import Any

_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


def socket_idle_and_open(sock: Any) -> bool:
    """True when nothing is waiting on an idle connection's socket.

    On an idle client connection the server has nothing to say: readable means it closed
    the session (KILL, wait_timeout, proxy idle timeout) or sent an error before closing.
    poll() rather than select(): no FD_SETSIZE limit. Works for TLS sockets too, where
    MSG_PEEK is not allowed.
    """
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return False
    if fd < 0:
        return False
    if getattr(sock, "pending", None) is not None and sock.pending():
        return False
    poller = select.poll()
    poller.register(fd, _READABLE)
    return not poller.poll(0)


def connection_alive(conn: Any) -> bool:
    """Liveness of a reused connection by its type; unknown types are trusted."""
    if getattr(conn, "pgconn", None) is not None:  # psycopg 3: the socket behind libpq
        return not conn.closed and socket_idle_and_open(conn)
    sock = getattr(conn, "_sock", False)
    if sock is not False:  # PyMySQL and its relatives keep the socket in ``_sock``
        return sock is not None and socket_idle_and_open(sock)
    closed = getattr(conn, "closed", None)
    if isinstance(closed, bool):
        return not closed
    return True
