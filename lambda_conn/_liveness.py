"""Cheap checks that an idle connection's socket is still usable (after a thaw).

Each integration's ``Kind.alive`` is the probe for its client (most use
:func:`socket_idle_and_open`); :func:`connection_alive` dispatches to it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
    import select  # here, not at the top: integrations import this module when decorating

    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)


def connection_alive(conn: Any) -> bool:
    """Liveness of a reused connection: its integration's ``Kind.alive`` probe.

    Objects no integration knows are trusted unless they say ``closed``.
    """
    from lambda_conn import _tracking
    from lambda_conn._kinds import registered_kind

    _tracking.install()  # registers the kinds of the clients already imported
    kind = registered_kind(conn)
    if kind is not None:
        return bool(kind.alive(conn))
    closed = getattr(conn, "closed", None)
    if isinstance(closed, bool):
        return not closed
    return True
