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
from lambda_conn._kinds import SHUT, Kind, reconnects, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


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


def _close_session(session: Any) -> object:
    """``session.close()`` (each adapter's close clears its pool managers, closing their
    pools' idle connections), then the connections still out with an unread response.

    One walk over the adapters: requests' own ``Session.close()`` is only that loop of
    ``adapter.close()``, so it is run here in the same pass (a subclass's own ``close()``
    is called as it is). No list is built and no instance ``__dict__`` read (reading one
    makes CPython build it): a scope's close of a Session should cost about what
    ``close()`` does.
    """
    own_close = type(session).close is not _SESSION_CLOSE
    if own_close:
        session.close()
    for adapter in session.adapters.values():
        if not own_close:
            adapter.close()
        conns = getattr(getattr(adapter, "poolmanager", None), _CONNS, None)
        if conns is not None:  # made once the manager made a pool
            close_open(conns)
        proxies = getattr(adapter, "proxy_manager", None)
        if proxies:
            for proxy in proxies.values():
                close_open(getattr(proxy, _CONNS, None))
    return SHUT  # every close succeeded (close_open raises for one that failed)


def _session_is_open(session: Any) -> bool:
    return any(pool_manager_is_open(m) for m in _managers_of(session))


REQUESTS_SESSION = Kind(
    "requests.Session",
    "requests",
    close=_close_session,
    is_open=_session_is_open,
    remote=lambda session: [r for m in _managers_of(session) for r in pool_manager_remote(m)],
    alive=reconnects,
)


_SESSION_CLOSE: Any = None  # requests.Session.close, once requests is imported


def patch_requests(requests: ModuleType) -> None:
    global _SESSION_CLOSE
    import wrapt
    from requests import sessions as module

    _SESSION_CLOSE = module.Session.close

    # Tracked once: its adapters' PoolManagers are closed through the Session.
    track = tracker("requests", REQUESTS_SESSION, whole=True)
    wrapt.wrap_function_wrapper(module, "Session.__init__", track)
    register_kind(module.Session, REQUESTS_SESSION)


INTEGRATION = Integration("requests", hooks={"requests": patch_requests})
