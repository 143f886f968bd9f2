"""File-descriptor accounting for the test process itself.

Why: a leaked connection may be invisible to the library's bookkeeping yet still hold a
socket fd; counting fds (and their TCP peers) in /proc/self/fd catches that.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import socket
import stat


def _fds() -> list[int]:
    # listdir opens one fd for the directory itself; it shows up in the listing but is
    # closed (and maybe reused) by the time we look, so callers must tolerate gone fds.
    return [int(name) for name in os.listdir("/proc/self/fd")]


def open_fds() -> int:
    """Number of open fds of this process (the listing's own fd excluded)."""
    return len(os.listdir("/proc/self/fd")) - 1


def socket_fds() -> set[int]:
    """fds of this process that are sockets (any family)."""
    result = set()
    for fd in _fds():
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                result.add(fd)
        except OSError:
            continue  # closed meanwhile (or the listing's own fd)
    return result


def tcp_peers(port: int | None = None) -> list[tuple[str, int]]:
    """(host, port) peers of this process's connected TCP sockets, sorted.

    ``port`` keeps only peers on that remote port. The fd is wrapped without dup and
    ``detach()``-ed, so the socket is never closed or altered.
    """
    peers = []
    for fd in sorted(socket_fds()):
        try:
            # socket(fileno=) sets O_NONBLOCK when socket.setdefaulttimeout() is in
            # effect; restore the flags so the owner's blocking socket is untouched.
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if sock.type != socket.SOCK_STREAM:
                continue
            try:
                peer = sock.getpeername()
            except OSError:
                continue  # listening or not connected
            if port is None or peer[1] == port:
                peers.append((str(peer[0]), int(peer[1])))
        finally:
            sock.detach()
            with contextlib.suppress(OSError):
                if fcntl.fcntl(fd, fcntl.F_GETFL) != flags:
                    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return sorted(peers)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; returns the new soft limit.

    Why: tests open more than 1,024 client connections, above the usual soft default.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
