"""requests: a Session built in a scope is closed at its end, with its adapters' pools.

A module-level Session keeps its keep-alive connections (deliberate reuse); urllib3 under
it checks a pooled connection before reusing it, so a reused Session needs no probe.
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._integrations._urllib3 import (
    _CONNS,
    close_open,
    pool_manager_is_open,
    pool_manager_remote,
)
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


_SHUT = "_lambda_conn_shut"  # set by a close that left nothing open; read once, by is_open


def _managers_of(session: Any) -> list[Any]:
    managers = []
    for adapter in session.adapters.values():
        attrs = adapter.__dict__
        manager = attrs.get("poolmanager")
        if manager is not None:
            managers.append(manager)
        proxies = attrs.get("proxy_manager")
        if proxies:
            managers.extend(proxies.values())
    return managers


def _close_session(session: Any) -> None:
    session.close()  # clears the managers, closing their pools' idle connections
    # Then the connections still out with an unread response. No list is built and no
    # instance __dict__ read (reading one makes CPython build it): a scope's close of a
    # Session should cost about what close() does.
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        conns = getattr(manager, _CONNS, None)
        if conns is not None:
            close_open(conns)
        proxies = getattr(adapter, "proxy_manager", None)
        if proxies:
            for proxy in proxies.values():
                close_open(getattr(proxy, _CONNS, None))
    setattr(session, _SHUT, True)  # all succeeded: nothing of it is open


def _session_is_open(session: Any) -> bool:
    """Asked right after the close: a close that succeeded answers without a second walk."""
    if getattr(session, _SHUT, False):
        setattr(session, _SHUT, False)  # one answer: a Session may be used again
        return False
    return any(pool_manager_is_open(m) for m in _managers_of(session))


REQUESTS_SESSION = Kind(
    "requests.Session",
    "requests",
    close=_close_session,
    is_open=_session_is_open,
    remote=lambda session: [r for m in _managers_of(session) for r in pool_manager_remote(m)],
    alive=reconnects,
)


def patch_requests(requests: ModuleType) -> None:
    import wrapt
    from requests import sessions as module

    # Tracked once: its adapters' PoolManagers are closed through the Session.
    track = tracker("requests", REQUESTS_SESSION, whole=True)
    wrapt.wrap_function_wrapper(module, "Session.__init__", track)
    register_kind(module.Session, REQUESTS_SESSION)


INTEGRATION = Integration("requests", hooks={"requests": patch_requests})
