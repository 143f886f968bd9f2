"""Descriptor audit: what an invocation opened and left open, whoever opened it.

Tracking sees the clients we know; this sees every descriptor, so it also finds the
third-party client or forgotten file behind a leak. It lists /proc/self/fd before and
after the invocation (tens of microseconds), so it is opt-in: ``audit_descriptors=True``
or ``LAMBDA_CONN_AUDIT_DESCRIPTORS=1``. Descriptors are only looked at, never wrapped in
socket objects (that would change their blocking mode).
"""

from __future__ import annotations

import os
import stat
from typing import Any

ENV_VAR = "LAMBDA_CONN_AUDIT_DESCRIPTORS"


def audit_from_env() -> bool:
    """The variable through the one boolean parser; unset or empty is off."""
    from lambda_conn._settings import env_value, parse_bool

    raw = env_value(os.environ, ENV_VAR)
    return False if raw is None else parse_bool(ENV_VAR, raw)


def snapshot() -> frozenset[int]:
    fds = {int(name) for name in os.listdir("/proc/self/fd")}
    # The listing's own descriptor is in the list, closed again since: it is the lowest
    # free descriptor now, so the next open() returns it. Left in, a leak that reuses its
    # number would look old.
    probe = os.open("/", os.O_RDONLY | os.O_CLOEXEC)
    os.close(probe)
    fds.discard(probe)
    return frozenset(fds)


def safe_snapshot() -> frozenset[int] | None:
    """A snapshot, or None (no audit for this call) where one cannot be taken: out of
    descriptors (the moment an audit matters most), or no /proc. Never fails a request."""
    try:
        return snapshot()
    except OSError as exc:
        from lambda_conn._log import WARNING, log_event

        log_event(WARNING, "descriptor_audit_failed", error=repr(exc))
        return None


def left_open(before: frozenset[int]) -> list[dict[str, Any]]:
    """Descriptors open now that were not open before, described."""
    opened = snapshot() - before
    leaks = []
    for fd in sorted(opened):
        try:
            mode = os.fstat(fd).st_mode
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed again
        leaks.append(_describe(fd, mode, target))
    return leaks


def _describe(fd: int, mode: int, target: str) -> dict[str, Any]:
    if stat.S_ISSOCK(mode):
        inode = target[len("socket:[") : -1] if target.startswith("socket:[") else ""
        return {"fd": fd, "kind": "socket", "remote": _tcp_remote(inode)}
    if stat.S_ISFIFO(mode):
        return {"fd": fd, "kind": "pipe"}
    return {"fd": fd, "kind": "file", "path": target}


def _tcp_remote(inode: str) -> str | None:
    """The peer of a TCP socket from /proc/net (milliseconds: only on a leak)."""
    for name, width in (("tcp", 8), ("tcp6", 32)):
        try:
            with open(f"/proc/self/net/{name}", encoding="ascii") as table:
                next(table)
                for line in table:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] == inode:
                        return _address(fields[2], width)
        except OSError:
            continue
    return None


def _address(hex_address: str, width: int) -> str:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    host = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    import ipaddress

    ip = ipaddress.ip_address(host) if width == 8 else ipaddress.IPv6Address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    text = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{text}:{int(port_hex, 16)}"
